from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from generation.providers.kinds import PROVIDER_KINDS, provider_choices
from models_registry.capabilities import (
    schema_properties,
    validate_capabilities,
    validate_input_schema,
)

# Every model offers x1, x2 and x4: a batch larger than one request makes runs as several requests.
STANDARD_COUNTS = (1, 2, 4)


class Modality(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"


class Task(models.TextChoices):
    T2I = "t2i", "Text to image"
    I2I = "i2i", "Image to image"
    I2I_MULTI = "i2i_multi", "Image to image, several references"
    I2V = "i2v", "Image to video"
    # Trains a LoRA from a dataset ZIP (docs/providers.md §7); run by the kind's trainer adapter
    # (generation/providers/kinds.py), never offered as an image model.
    LORA_TRAINING = "lora_training", "LoRA training"


def validate_tasks(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError('Tasks must be a non-empty list, e.g. ["t2i", "i2i"].', code="tasks_type")
    unknown = [task for task in value if task not in Task.values]
    if unknown:
        raise ValidationError(
            "Unknown task(s): %(unknown)s. Known: %(known)s.",
            code="unknown_task",
            params={"unknown": ", ".join(map(str, unknown)), "known": ", ".join(Task.values)},
        )


class ApiModelQuerySet(models.QuerySet["ApiModel"]):
    def active(self) -> ApiModelQuerySet:
        return self.filter(is_active=True)


class ApiModel(models.Model):
    """One model a provider serves, as staff configure it (the product's api_models table)."""

    key = models.CharField(max_length=200, unique=True, help_text="The provider's model id, e.g. fal-ai/flux-2/flash.")
    display_name = models.CharField(max_length=120)
    # The kinds of generation/providers/kinds.py, read on every use: a new kind needs no migration.
    provider = models.CharField(max_length=20, choices=provider_choices)
    modality = models.CharField(max_length=10, choices=Modality.choices, default=Modality.IMAGE)
    tasks = models.JSONField(
        default=list, validators=[validate_tasks], help_text='Any of "t2i", "i2i", "i2i_multi", "i2v".'
    )
    input_schema = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_input_schema],
        help_text="The provider's JSON Schema for the input, e.g. "
        '{"properties": {"num_images": {"type": "integer", "minimum": 1, "maximum": 4}}}.',
    )
    capabilities = models.JSONField(
        default=dict, blank=True, validators=[validate_capabilities], help_text="Overrides and flags."
    )
    price_per_image = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="USD per generated image.",
    )
    is_active = models.BooleanField(default=True)
    priority = models.IntegerField(default=0, help_text="Higher comes first in the studio's model list.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ApiModelQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "display_name"]
        verbose_name = "API model"

    def __str__(self) -> str:
        return f"{self.display_name} ({self.key})"

    def clean(self) -> None:
        """What the provider's adapter says it cannot run (e.g. more images a request than it makes)."""
        # Imported here: the registry app must load without the pipeline's modules.
        from generation.providers import adapter_class, trainer_class

        well_formed = isinstance(self.capabilities, dict) and isinstance(self.input_schema, dict)
        if self.provider not in PROVIDER_KINDS or not well_formed:
            return  # the field validators already report an unknown provider or malformed JSON
        if self.is_trainer:
            trainer = trainer_class(self.provider)
            if trainer is None:
                raise ValidationError({"provider": f"{self.get_provider_display()} has no LoRA trainer."})
            errors = trainer.validate_model(self)
        else:
            errors = adapter_class(self.provider).validate_model(self)
        if errors:
            raise ValidationError(errors)

    @property
    def max_images(self) -> int:
        """Images one request can return: the staff override, else the schema's maximum, else 1."""
        override = (self.capabilities or {}).get("max_images")
        if isinstance(override, int) and not isinstance(override, bool) and override >= 1:
            return override
        num_images = schema_properties(self.input_schema).get("num_images")
        if isinstance(num_images, dict):
            maximum = num_images.get("maximum")
            if isinstance(maximum, int) and not isinstance(maximum, bool) and maximum >= 1:
                return maximum
        return 1

    @property
    def allowed_counts(self) -> list[int]:
        """Images one job may ask for: x1, x2, x4 on every model, plus every count up to a higher
        native maximum (Seedream: 10). job_create checks it; the prompt bar offers it as chips."""
        counts = set(STANDARD_COUNTS)
        if self.max_images > max(STANDARD_COUNTS):
            counts.update(range(1, self.max_images + 1))
        return sorted(counts)

    def request_chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        """`items` (a job's slots, or its batch indexes) in order, split into requests of at most
        max_images each: one request for a native batch, one per item on a one-image model."""
        size = self.max_images
        return [items[start : start + size] for start in range(0, len(items), size)]

    @property
    def image_field(self) -> str:
        """The input field that carries reference images for this model."""
        properties = schema_properties(self.input_schema)
        if (self.capabilities or {}).get("requires_image_urls_array") or "image_urls" in properties:
            return "image_urls"
        if "image_url" in properties:
            return "image_url"
        return "image"

    @property
    def batches_natively(self) -> bool:
        return self.max_images > 1

    @property
    def is_offline_preview(self) -> bool:
        return self.provider == "offline" or bool((self.capabilities or {}).get("offline_preview"))

    def supports(self, task: str) -> bool:
        return task in (self.tasks or [])

    @property
    def takes_loras(self) -> bool:
        """Whether the model applies trained LoRAs: its schema has a `loras` list (fal-ai/flux-lora)."""
        return isinstance(schema_properties(self.input_schema).get("loras"), dict)

    @property
    def is_trainer(self) -> bool:
        """A LoRA trainer: run by its kind's trainer adapter, and never an image model."""
        return self.supports(Task.LORA_TRAINING)


class ContentMode(models.TextChoices):
    SFW = "sfw", "SFW"
    NSFW = "nsfw", "NSFW"


class GenerationMode(models.TextChoices):
    TXT2IMG = "txt2img", "Text to image"
    I2I = "i2i", "Image to image"


class NegativePrompt(models.Model):
    """Negative prompt terms per model family; i2i keeps them short so they do not fight the edit."""

    model_type = models.CharField(max_length=50, help_text='A model family such as "sdxl" or "flux", or "*" for all.')
    content_mode = models.CharField(max_length=10, choices=ContentMode.choices, default=ContentMode.SFW)
    generation_mode = models.CharField(max_length=10, choices=GenerationMode.choices)
    text = models.TextField()
    priority = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-priority", "id"]
        indexes = [
            # The prompt builder's lookup: one family, one content mode, one generation mode.
            models.Index(fields=["model_type", "content_mode", "generation_mode", "is_active"]),
        ]

    def __str__(self) -> str:
        return f"{self.model_type}/{self.content_mode}/{self.generation_mode}: {self.text[:40]}"


# The tasks staff order a fallback chain for (image models only; video has no alternatives yet).
FALLBACK_TASKS = [(task.value, task.label) for task in (Task.T2I, Task.I2I, Task.I2I_MULTI)]


class FallbackChain(models.Model):
    """Per task, the models a job moves to, in order, when its provider is down or keeps failing."""

    task = models.CharField(max_length=20, choices=FALLBACK_TASKS, unique=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task"]

    def __str__(self) -> str:
        return f"{self.get_task_display()} fallback chain"

    def ordered_models(self) -> list[ApiModel]:
        return [entry.model for entry in self.entries.select_related("model").order_by("position", "id")]


class FallbackEntry(models.Model):
    chain = models.ForeignKey(FallbackChain, on_delete=models.CASCADE, related_name="entries")
    model = models.ForeignKey(ApiModel, on_delete=models.CASCADE, related_name="fallback_entries")
    # Not unique: staff reorder rows in one admin save, which would trip a unique (chain, position).
    position = models.PositiveSmallIntegerField(default=0, help_text="Lower is tried first.")

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "fallback entries"
        constraints = [
            models.UniqueConstraint(fields=["chain", "model"], name="fallback_entry_unique_chain_model"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.model_id}"

    def clean(self) -> None:
        # In an admin inline the chain may be the unsaved parent, and a blank row has no model yet.
        try:
            chain = self.chain
        except FallbackChain.DoesNotExist:
            chain = None
        try:
            model = self.model
        except ApiModel.DoesNotExist:
            return
        if chain is not None and chain.task and not model.supports(chain.task):
            raise ValidationError(
                {"model": f"{model.display_name} cannot do {chain.get_task_display().lower()}."},
                code="task_unsupported",
            )


class ProviderPause(models.Model):
    """A provider kind staff paused (maintenance, a billing problem): while the row exists, routing
    sends new work down the fallback chain and the prompt bar shows its models disabled. Requests
    already submitted finish normally. Deleting the row resumes the provider."""

    # A kind of generation/providers/kinds.py, like ApiModel.provider: one pause per kind.
    kind = models.CharField(max_length=20, choices=provider_choices, unique=True)
    reason = models.CharField(max_length=200, blank=True, help_text="Shown to users on the paused models.")
    paused_at = models.DateTimeField(auto_now_add=True)
    paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return f"{self.kind} paused"
