"""Writes of the studio: characters (create, rename, delete, lock a portrait) and assets (upload, delete).

The prompt bar's rules live in studio.prompt_bar; downloads (one image, a job's ZIP) in studio.files.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from generation.lib.imaging import process_image
from generation.models import LoraTraining
from generation.services.trainings import training_files
from studio.models import AssetKind, AssetSource, Character, WorkspaceAsset
from studio.throttle import rate_limit

# --- Characters -----------------------------------------------------------------------------


def _character_save(character: Character, **kwargs: Any) -> None:
    """Save a validated character; a same-name one created meanwhile is the same ValidationError.

    full_clean() checks the per-owner unique name, but two posts at once can both pass it.
    """
    try:
        with transaction.atomic():
            character.save(**kwargs)
    except IntegrityError as exc:
        constraint = next((c for c in Character._meta.constraints if c.name in str(exc)), None)
        if constraint is None:
            raise
        raise ValidationError(constraint.get_violation_error_message(), code="unique") from exc


def character_create(
    *, owner, name: str, appearance: dict[str, str] | None = None, identity: dict[str, str] | None = None
) -> Character:
    """Raises ValidationError for a bad name, or one the owner already uses (whatever its case).

    `appearance` and `identity` are the wizard's answers (studio.wizard), already validated.
    """
    character = Character(owner=owner, name=name.strip(), appearance=appearance or {}, identity=identity or {})
    character.full_clean()
    _character_save(character)
    return character


def character_update(
    *, character: Character, name: str, appearance: dict[str, str], identity: dict[str, str]
) -> Character:
    """The character page's edit: every wizard answer at once; ValidationError for a name in use."""
    character.name = name.strip()
    character.appearance = appearance
    character.identity = identity
    character.full_clean()
    _character_save(character, update_fields=["name", "appearance", "identity", "updated_at"])
    return character


def character_rename(*, character: Character, name: str) -> Character:
    character.name = name.strip()
    character.full_clean()
    _character_save(character, update_fields=["name", "updated_at"])
    return character


def character_delete(*, character: Character) -> None:
    """Delete a character with its LoRA trainings, and their files once the deletion has committed:
    a LoRA is a model of the character's face, and must not outlive it in storage.

    Its jobs and images stay in the gallery (their FKs are SET_NULL): deleting a character must
    never destroy paid-for images. ValidationError while one of its LoRAs is still training: that
    is canceled first (on its dataset page), so nothing runs on, and bills, for a character that is gone.
    """
    trainings = list(character.trainings.all())
    if any(training.is_active for training in trainings):
        raise ValidationError(
            f"{character.name} is still training a LoRA: cancel the training on the dataset page, or wait "
            "until it ends, then delete."
        )
    storage = LoraTraining._meta.get_field("lora_file").storage
    names = [name for training in trainings for name in training_files(training)]
    with transaction.atomic():
        character.delete()
        # storage.delete ignores a name with no file (the dataset ZIP fal storage took instead).
        transaction.on_commit(lambda: [storage.delete(name) for name in names])


def character_lock_portrait(*, character: Character, asset: WorkspaceAsset) -> Character:
    """Make `asset` the portrait every image-to-image generation of `character` starts from."""
    if asset.owner_id != character.owner_id:
        # Views scope both by owner already; this guards any other caller.
        raise ValueError("A character can only lock a portrait of its own owner.")
    if asset.kind != AssetKind.IMAGE:
        raise ValueError("Only an image can be a portrait.")
    character.locked_reference = asset
    character.save(update_fields=["locked_reference", "updated_at"])
    return character


# --- Assets ---------------------------------------------------------------------------------


def upload_create(*, owner, data: bytes, character: Character | None = None) -> WorkspaceAsset:
    """Store an uploaded reference image after validating and re-encoding it.

    Raises generation.lib.imaging.InvalidImage (its message is fit for the user) for anything that is
    not a PNG, JPEG or WebP within settings.UPLOAD_MAX_BYTES and settings.IMAGE_MAX_PIXELS, and
    ValidationError (code "rate_limited") past the owner's uploads per minute; either way nothing is stored.
    What is stored is a full re-encode of the pixels, never the bytes the browser sent.
    """
    rate_limit(user=owner, action="upload")  # before decoding: the decoder is what a flood would load
    processed = process_image(
        data, max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.IMAGE_MAX_PIXELS, reencode=True
    )
    asset = WorkspaceAsset.with_files(
        processed, stem="upload", owner=owner, character=character, source=AssetSource.UPLOAD, kind=AssetKind.IMAGE
    )
    try:
        asset.save(force_insert=True)
    except Exception:
        # Nothing in storage may outlive a row that was never written.
        asset.delete_files()
        raise
    return asset


def asset_delete(*, asset: WorkspaceAsset) -> None:
    """Delete the row, then its files once the deletion has committed.

    A character that had it as its portrait loses the portrait (SET_NULL); the job's slot stays
    succeeded, and the gallery shows the image as deleted.
    """
    storage = asset.file.storage
    names = [name for name in (asset.file.name, asset.thumbnail.name) if name]
    with transaction.atomic():
        asset.delete()
        # Deleting files first would leave a row pointing at nothing if the transaction rolled back.
        transaction.on_commit(lambda: [storage.delete(name) for name in names])
