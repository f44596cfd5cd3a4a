from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import models
from django.db.models.functions import Lower

if TYPE_CHECKING:
    from generation.lib.imaging import ProcessedImage


class Character(models.Model):
    """A user's character: the wizard's config plus the portrait that locks its look."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="characters")
    name = models.CharField(max_length=100)
    # The character wizard's answers: appearance (hair, eyes, build, ...) and identity (age,
    # personality, style). Free-form JSON so the wizard can grow without migrations.
    appearance = models.JSONField(default=dict, blank=True)
    identity = models.JSONField(default=dict, blank=True)
    locked_reference = models.ForeignKey(
        "studio.WorkspaceAsset",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The portrait every image-to-image generation of this character starts from.",
    )
    # The token a LoRA of this character is trained on and called up by (docs/providers.md §7.6);
    # empty until the dataset page sets it (studio.dataset.default_trigger_word proposes one).
    trigger_word = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        indexes = [models.Index(fields=["owner", "name"])]
        constraints = [
            # "Mira" and "mira" in one sidebar cannot be told apart; another user's Mira is theirs.
            models.UniqueConstraint(
                Lower("name"),
                "owner",
                name="character_unique_owner_name_ci",
                violation_error_message="You already have a character with this name.",
            ),
            # Two characters answering to one trigger word would call up each other's LoRA.
            models.UniqueConstraint(
                Lower("trigger_word"),
                "owner",
                name="character_unique_owner_trigger_ci",
                condition=~models.Q(trigger_word=""),
                violation_error_message="Another of your characters already uses this trigger word.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


def asset_upload_to(asset: WorkspaceAsset, filename: str) -> str:
    return f"assets/{asset.owner_id}/{asset.id}/{filename}"


def thumbnail_upload_to(asset: WorkspaceAsset, filename: str) -> str:
    return f"assets/{asset.owner_id}/{asset.id}/thumb-{filename}"


class AssetKind(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"


class AssetSource(models.TextChoices):
    GENERATED = "generated", "Generated"
    UPLOAD = "upload", "Uploaded"


class WorkspaceAsset(models.Model):
    """One stored image or video: a generated result (job + batch_index) or an upload."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assets")
    job = models.ForeignKey(
        "generation.GenerationJob", null=True, blank=True, on_delete=models.CASCADE, related_name="assets"
    )
    character = models.ForeignKey(Character, null=True, blank=True, on_delete=models.SET_NULL, related_name="assets")
    batch_index = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=10, choices=AssetKind.choices, default=AssetKind.IMAGE)
    source = models.CharField(max_length=10, choices=AssetSource.choices, default=AssetSource.GENERATED)
    file = models.FileField(upload_to=asset_upload_to, max_length=300)
    thumbnail = models.FileField(upload_to=thumbnail_upload_to, max_length=300, blank=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    content_type = models.CharField(max_length=50, default="image/png")
    bytes = models.PositiveBigIntegerField(default=0)
    seed = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "batch_index"]
        constraints = [
            # A task delivered twice must never store a second image for the same slot.
            models.UniqueConstraint(fields=["job", "batch_index"], name="asset_unique_job_batch_index"),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @classmethod
    def with_files(
        cls, processed: ProcessedImage, *, stem: str, id: uuid.UUID | None = None, **fields: Any
    ) -> WorkspaceAsset:
        """A new, unsaved asset whose image and thumbnail are already written to storage.

        Save it with force_insert; if that fails, call delete_files() so no file outlives a row
        that was never written. With a given `id` (a generated image's, derived from its job and
        index) the files have fixed names and are written over whatever a killed store left there,
        so storing the image again leaves no orphan behind.
        """
        asset = cls(
            id=id or uuid.uuid4(),
            width=processed.width,
            height=processed.height,
            content_type=processed.content_type,
            bytes=len(processed.data),
            **fields,
        )
        for field, name, data in (
            (asset.file, f"{stem}.{processed.extension}", processed.data),
            (asset.thumbnail, f"{stem}.jpg", processed.thumbnail),
        ):
            if id is not None:
                field.storage.delete(field.field.generate_filename(asset, name))
            field.save(name, ContentFile(data), save=False)
        return asset

    def delete_files(self) -> None:
        self.file.delete(save=False)
        self.thumbnail.delete(save=False)


class PresetKind(models.TextChoices):
    SCENE = "scene", "Scene"
    OUTFIT = "outfit", "Outfit"
    STYLE = "style", "Style"


class PromptPreset(models.Model):
    """A curated scene, outfit or style for the prompt bar's pickers; staff edit them in admin and
    every user sees the active ones. `text` is what the prompt builder writes."""

    kind = models.CharField(max_length=10, choices=PresetKind.choices)
    name = models.CharField(max_length=60)
    text = models.CharField(max_length=200, help_text="The words added to the prompt.")
    position = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["kind", "position", "name"]
        constraints = [models.UniqueConstraint(fields=["kind", "name"], name="preset_unique_kind_name")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.name}"


class ProfileSet(models.Model):
    """A named set of profile pictures ("Dating profile"): 4 to 8 shots, made as one job."""

    MIN_SHOTS, MAX_SHOTS = 4, 8

    name = models.CharField(max_length=60, unique=True)
    description = models.CharField(max_length=200, blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class ProfileShot(models.Model):
    """One shot recipe of a set: the builder adds its framing and expression as the direction, then
    its scene and outfit."""

    profile_set = models.ForeignKey(ProfileSet, on_delete=models.CASCADE, related_name="shots")
    name = models.CharField(max_length=60, help_text="Shown on the image, e.g. “Coffee date”.")
    framing = models.CharField(max_length=100, help_text="e.g. head and shoulders, three-quarter body")
    scene = models.CharField(max_length=150, blank=True)
    outfit = models.CharField(max_length=150, blank=True)
    expression = models.CharField(max_length=100, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class DatasetItem(models.Model):
    """One image of a character's LoRA training dataset: a sheet image or one the user added from the
    gallery, whether it goes into the training, and its caption (trigger word + what varies)."""

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="dataset_items")
    asset = models.ForeignKey(WorkspaceAsset, on_delete=models.CASCADE, related_name="dataset_items")
    included = models.BooleanField(default=True)
    caption = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["character", "asset"], name="dataset_item_unique_asset")]

    def __str__(self) -> str:
        return f"dataset image {self.asset_id} of {self.character_id}"
