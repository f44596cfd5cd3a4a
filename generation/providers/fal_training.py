"""fal.ai LoRA trainers (docs/providers.md §7.3) and fal storage's upload (§7.2).

A training runs on the same queue API as a generation (§1.2 submit/status/result/cancel, §1.5
webhooks), so FalTrainer is the fal adapter with another input and another output: the dataset ZIP's
URL and the trigger word in, the `diffusers_lora_file` out. What a lost submit answer, a webhook or a
cancel mean is the same as for images; only the pace differs (a training runs minutes: polls every
15 s, with `logs=true` for progress).

The trainers differ in field names and in how they treat the trigger word and captions (§7.3, §7.7):
TrainerSpec reads them from the registry row, whose input_schema lists the trainer's fields and whose
`training` capability says how the captions carry the trigger, the advised image count and the price.

FalStorage gives a dataset ZIP a URL a trainer can fetch: `POST {FAL_REST_URL}/storage/upload/initiate`
with the key, then a `PUT` of the bytes to the signed `upload_url` it answers, without the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar
from urllib.parse import urlsplit

import requests
from django.conf import settings

from generation.lib import http as http_lib
from generation.lib.dataset import CaptionTrigger
from generation.providers.base import ProviderError, ProviderResult, ResultStatus, TrainedLora, TrainingRequest
from generation.providers.fal import Fal
from generation.providers.http_api import HttpApi, sanitize_message, url_origin
from models_registry.capabilities import schema_properties

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# The ZIP's field, per trainer: images_data_url (flux-lora-fast-training, portrait, turbo) or
# image_data_url (flux-2-trainer, singular). First found in the schema wins.
ZIP_FIELDS = ("images_data_url", "image_data_url")
# The trigger's field: trigger_word (fast-training) or trigger_phrase (portrait, turbo); flux-2 has none.
TRIGGER_FIELDS = ("trigger_word", "trigger_phrase")
# Fields the trainer client fills itself; request.params never overrides them.
MANAGED_FIELDS = frozenset({*ZIP_FIELDS, *TRIGGER_FIELDS, "steps", "default_caption", "data_archive_format"})
# The `training` capability's keys (models_registry.capabilities lists the capability itself).
TRAINING_KEYS = {
    "caption_trigger": "how captions carry the trigger: literal or placeholder",
    "min_images": "the trainer's advised least number of images",
    "price_per_1000_steps": "USD per 1000 steps, as a decimal string",
}
# fal-js switches to a multipart upload above 90 MB (§7.2); a character's dataset is a few MB.
UPLOAD_MAX_BYTES = 90 * 1024 * 1024
# fal logs progress as free text [NV: its exact wording]: "step 120/1000", "Training 12%", ...
_STEP = re.compile(r"(\d+)\s*/\s*(\d+)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TrainerSpec:
    """What one trainer takes, read from its registry row."""

    zip_field: str
    trigger_field: str | None
    caption_trigger: CaptionTrigger
    steps_default: int | None
    steps_min: int | None
    steps_max: int | None
    min_images: int
    price_per_1000_steps: Decimal

    @classmethod
    def of(cls, model: ApiModel) -> TrainerSpec:
        properties = schema_properties(model.input_schema)
        training = (model.capabilities or {}).get("training") or {}
        steps = properties.get("steps") if isinstance(properties.get("steps"), dict) else {}
        zip_field = next((f for f in ZIP_FIELDS if f in properties), ZIP_FIELDS[0])
        return cls(
            zip_field=zip_field,
            trigger_field=next((f for f in TRIGGER_FIELDS if f in properties), None),
            caption_trigger=CaptionTrigger(training.get("caption_trigger", CaptionTrigger.LITERAL)),
            steps_default=_int(steps.get("default")),
            steps_min=_int(steps.get("minimum")),
            steps_max=_int(steps.get("maximum")),
            min_images=_int(training.get("min_images")) or 1,
            price_per_1000_steps=Decimal(str(training.get("price_per_1000_steps", "0"))),
        )

    def steps_for(self, wanted: int | None) -> int | None:
        """The steps to train: `wanted`, else the trainer's default; a permanent error out of range."""
        steps = wanted if wanted is not None else self.steps_default
        if steps is None:
            return None
        low, high = self.steps_min or 1, self.steps_max
        if steps < low or (high is not None and steps > high):
            raise ProviderError(f"Steps must be between {low} and {high or 'any number'}, not {steps}.", permanent=True)
        return steps

    def price(self, steps: int | None) -> Decimal:
        """What the trainer charges for `steps` (its default when None), in USD: fal prices per step."""
        return (self.price_per_1000_steps * (self.steps_for(steps) or 0) / 1000).quantize(Decimal("0.0001"))


def progress_from_logs(logs: Any) -> float | None:
    """The share done, 0..1, that the newest log line saying one tells ("step 120/1000", "40%")."""
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs):
        message = str(entry.get("message") or "") if isinstance(entry, dict) else ""
        if match := _STEP.search(message):
            done, total = int(match.group(1)), int(match.group(2))
            if total > 0 and done <= total:
                return done / total
        elif match := _PERCENT.search(message):
            percent = float(match.group(1))
            if percent <= 100:
                return percent / 100
    return None


def _lora_from_output(body: dict[str, Any]) -> TrainedLora | None:
    lora, config = body.get("diffusers_lora_file"), body.get("config_file")
    if not isinstance(lora, dict) or not isinstance(lora.get("url"), str) or not lora["url"]:
        return None
    return TrainedLora(
        url=lora["url"],
        file_name=str(lora.get("file_name") or ""),
        content_type=str(lora.get("content_type") or ""),
        file_size=_int(lora.get("file_size")),
        config_url=str(config.get("url") or "") if isinstance(config, dict) else "",
    )


class FalTrainer(Fal):
    """A fal LoRA trainer on the queue API: submit(TrainingRequest), then poll/cancel/adopt as Fal."""

    default_poll_interval = 15.0  # §7.3: trainings run minutes; poll every 10-15 s
    status_logs = "true"  # progress is in the logs

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        errors: dict[str, str] = {}
        properties = schema_properties(model.input_schema)
        if not any(f in properties for f in ZIP_FIELDS):
            errors["input_schema"] = f"A trainer's schema names its ZIP field: one of {', '.join(ZIP_FIELDS)}."
        training = (model.capabilities or {}).get("training")
        problems = []
        if isinstance(training, dict):
            unknown = sorted(set(training) - set(TRAINING_KEYS))
            if unknown:
                problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(TRAINING_KEYS)})")
            if training.get("caption_trigger", "literal") not in set(CaptionTrigger):
                problems.append(f"caption_trigger is one of {', '.join(CaptionTrigger)}")
            if "min_images" in training and not (_int(training["min_images"]) or 0) >= 1:
                problems.append("min_images is a positive integer")
            try:
                if Decimal(str(training.get("price_per_1000_steps", "0"))) < 0:
                    raise InvalidOperation
            except InvalidOperation:
                problems.append('price_per_1000_steps is a decimal string such as "2.40"')
        if problems:
            errors["capabilities"] = "The training capability: " + "; ".join(problems) + "."
        return errors

    def build_input(self, request: TrainingRequest) -> dict[str, Any]:  # type: ignore[override]
        spec = TrainerSpec.of(self.model)
        properties = schema_properties(self.model.input_schema)
        payload: dict[str, Any] = {spec.zip_field: request.dataset_url}
        if spec.trigger_field:
            payload[spec.trigger_field] = request.trigger_word
        elif "default_caption" in properties:
            # flux-2-trainer: no trigger field, and a run whose image lacks a caption fails without it.
            payload["default_caption"] = request.trigger_word
        steps = spec.steps_for(request.steps)
        if steps is not None and "steps" in properties:
            payload["steps"] = steps
        if "data_archive_format" in properties and not urlsplit(request.dataset_url).path.lower().endswith(".zip"):
            payload["data_archive_format"] = "zip"  # §7.2: an opaque (presigned) URL leaves the trainer guessing
        for name, value in request.params.items():
            if name in properties and name not in MANAGED_FIELDS:
                payload[name] = value
        return payload

    def pending_result(self, body: dict[str, Any], response: requests.Response) -> ProviderResult:
        result = super().pending_result(body, response)
        result.progress = progress_from_logs(body.get("logs"))
        return result

    def result_from_output(self, body: dict[str, Any]) -> ProviderResult:
        lora = _lora_from_output(body)
        if lora is None:
            # Billed, and nothing to show for it: a second run would bill again for the same answer.
            return ProviderResult(
                status=ResultStatus.FAILED, error="fal.ai finished the training without a LoRA file.", permanent=True
            )
        return ProviderResult(status=ResultStatus.SUCCEEDED, lora=lora, progress=1.0)


class FalStorage(HttpApi):
    """fal storage's two-step upload (docs/providers.md §7.2): initiate with the key, PUT without it."""

    api_label = "fal.ai storage"
    secret_setting = "FAL_KEY"  # noqa: S105 - the name of the setting, not a secret
    base_url_setting = "FAL_REST_URL"
    error_message = Fal.error_message
    max_bytes: ClassVar[int] = UPLOAD_MAX_BYTES

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {settings.FAL_KEY}"}

    def configuration_hint(self) -> str:
        return "Set FAL_KEY to upload training datasets to fal.ai storage."

    def upload(
        self, data: bytes | BinaryIO, *, file_name: str, size: int, content_type: str = "application/zip"
    ) -> str:
        """Upload `data` (`size` bytes) and return the public file_url a trainer can fetch.

        Every failure is a ProviderError; nothing is billed by an upload, so all but a refusal are
        retryable and a retry starts again from initiate (a signed URL may have expired).
        """
        if size > self.max_bytes:
            raise ProviderError(
                f"The dataset is {size // (1024 * 1024)} MB; fal.ai storage takes at most "
                f"{self.max_bytes // (1024 * 1024)} MB in one upload.",
                permanent=True,
            )
        url = f"{self.api_base_url().rstrip('/')}/storage/upload/initiate"
        body = self.json(
            self.http(
                "POST",
                url,
                params={"storage_type": settings.FAL_STORAGE_TYPE},
                json={"content_type": content_type, "file_name": file_name},
            )
        )
        upload_url, file_url = body.get("upload_url"), body.get("file_url")
        if not isinstance(upload_url, str) or not isinstance(file_url, str) or url_origin(file_url) is None:
            raise ProviderError(f"{self.api_label} answered the upload without its upload_url and file_url.")
        try:
            http_lib.upload(upload_url, data, content_type=content_type, trusted=self.fetch_trusted_hosts())
        except http_lib.UnsafeURLError as exc:
            message = f"{self.api_label} gave an upload URL that may not be used: {exc}"
            raise ProviderError(message, permanent=True) from None
        except http_lib.DownloadError as exc:
            message = sanitize_message(str(exc), [self.api_secret()])
            raise ProviderError(
                f"{self.api_label}: the upload failed. {message}", permanent=exc.permanent, status_code=exc.status
            ) from None
        return file_url
