"""What every LoRA trainer adapter shares (docs/providers.md §7.3): the trainer's fields and prices read
from its registry row (TrainerSpec), the training input built from a TrainingRequest, and the row's check.

The trainers differ in field names and in how they treat the trigger word and captions (§7.7): the row's
input_schema lists the trainer's own fields, and its `training` capability says how the captions carry
the trigger, the advised image count and the price per 1000 steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from generation.lib.dataset import CaptionTrigger
from generation.providers.base import ProviderError, TrainingRequest
from models_registry.capabilities import schema_properties

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# The ZIP's field, per trainer: images_data_url (flux-lora-fast-training, portrait, turbo),
# image_data_url (flux-2-trainer, singular) or input_images (Replicate's ostris trainer). First found wins.
ZIP_FIELDS = ("images_data_url", "image_data_url", "input_images")
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

# Trainers log progress as free text [NV: fal's exact wording]: "step 120/1000", "Training 12%", and
# ai-toolkit's progress bar on Replicate, "flux_train_replicate:  12%|█▏   | 120/1000".
_STEP = re.compile(r"(\d+)\s*/\s*(\d+)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def int_or_none(value: Any) -> int | None:
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
            steps_default=int_or_none(steps.get("default")),
            steps_min=int_or_none(steps.get("minimum")),
            steps_max=int_or_none(steps.get("maximum")),
            min_images=int_or_none(training.get("min_images")) or 1,
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


def training_inputs(model: ApiModel, request: TrainingRequest) -> dict[str, Any]:
    """The trainer's input: the ZIP's URL and the trigger in the trainer's own fields, the steps in its
    range, and params only where its schema has them. Raises a permanent ProviderError for steps out of range."""
    spec = TrainerSpec.of(model)
    properties = schema_properties(model.input_schema)
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


def validate_trainer_model(model: ApiModel) -> dict[str, str]:
    """Errors, by ApiModel field name, in a trainer row (ApiModel.clean shows them in admin)."""
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
        if "min_images" in training and not (int_or_none(training["min_images"]) or 0) >= 1:
            problems.append("min_images is a positive integer")
        try:
            if Decimal(str(training.get("price_per_1000_steps", "0"))) < 0:
                raise InvalidOperation
        except InvalidOperation:
            problems.append('price_per_1000_steps is a decimal string such as "2.40"')
    if problems:
        errors["capabilities"] = "The training capability: " + "; ".join(problems) + "."
    return errors


def progress_from_logs(logs: Any) -> float | None:
    """The share done, 0..1, that the newest log line saying one tells ("step 120/1000", "40%"): fal's
    list of {message} objects, or Replicate's logs text."""
    if isinstance(logs, str):
        logs = [{"message": line} for line in re.split(r"[\r\n]+", logs)]
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
