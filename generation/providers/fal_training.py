"""fal.ai LoRA trainers (docs/providers.md §7.3) and fal storage's upload (§7.2).

A training runs on the same queue API as a generation (§1.2 submit/status/result/cancel, §1.5
webhooks), so FalTrainer is the fal adapter with another input and another output: the dataset ZIP's
URL and the trigger word in, the `diffusers_lora_file` out. What a lost submit answer, a webhook or a
cancel mean is the same as for images; only the pace differs (a training runs minutes: polls every
15 s, with `logs=true` for progress).

The trainers differ in field names and in how they treat the trigger word and captions (§7.3, §7.7);
generation/providers/training.py reads them from the registry row, for every trainer adapter.

FalStorage gives a dataset ZIP a URL a trainer can fetch: `POST {FAL_REST_URL}/storage/upload/initiate`
with the key, then a `PUT` of the bytes to the signed `upload_url` it answers, without the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import requests
from django.conf import settings

from generation.lib import http as http_lib
from generation.providers.base import ProviderError, ProviderResult, ResultStatus, TrainedLora, TrainingRequest
from generation.providers.fal import Fal
from generation.providers.http_api import HttpApi, sanitize_message, url_origin
from generation.providers.training import int_or_none, progress_from_logs, training_inputs, validate_trainer_model

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# fal-js switches to a multipart upload above 90 MB (§7.2); a character's dataset is a few MB.
UPLOAD_MAX_BYTES = 90 * 1024 * 1024


def _lora_from_output(body: dict[str, Any]) -> TrainedLora | None:
    lora, config = body.get("diffusers_lora_file"), body.get("config_file")
    if not isinstance(lora, dict) or not isinstance(lora.get("url"), str) or not lora["url"]:
        return None
    return TrainedLora(
        url=lora["url"],
        file_name=str(lora.get("file_name") or ""),
        content_type=str(lora.get("content_type") or ""),
        file_size=int_or_none(lora.get("file_size")),
        config_url=str(config.get("url") or "") if isinstance(config, dict) else "",
    )


class FalTrainer(Fal):
    """A fal LoRA trainer on the queue API: submit(TrainingRequest), then poll/cancel/adopt as Fal."""

    default_poll_interval = 15.0  # §7.3: trainings run minutes; poll every 10-15 s
    fixed_poll_interval = default_poll_interval
    status_logs = "true"  # progress is in the logs

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        return validate_trainer_model(model)

    def build_input(self, request: TrainingRequest) -> dict[str, Any]:  # type: ignore[override]
        return training_inputs(self.model, request)

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
