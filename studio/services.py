"""Writes of the studio: characters, uploads, asset deletion and ZIP downloads.

The prompt bar's rules live in studio.prompt_bar.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from generation.imaging import process_image
from generation.models import GenerationJob
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


def character_create(*, owner, name: str) -> Character:  # noqa: ANN001
    """Raises ValidationError for a bad name, or one the owner already uses (whatever its case)."""
    character = Character(owner=owner, name=name.strip())
    character.full_clean()
    _character_save(character)
    return character


def character_rename(*, character: Character, name: str) -> Character:
    character.name = name.strip()
    character.full_clean()
    _character_save(character, update_fields=["name", "updated_at"])
    return character


def character_delete(*, character: Character) -> None:
    # Its jobs and images stay in the gallery (their FKs are SET_NULL): deleting a character must
    # never destroy paid-for images.
    character.delete()


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


def upload_create(*, owner, data: bytes, character: Character | None = None) -> WorkspaceAsset:  # noqa: ANN001
    """Store an uploaded reference image after validating and re-encoding it.

    Raises generation.imaging.InvalidImage (its message is fit for the user) for anything that is
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


# --- Download names -------------------------------------------------------------------------


def job_file_stem(job: GenerationJob) -> str:
    """What a job's downloads are named after: its character (else its prompt) and its short id."""
    subject = job.character.name if job.character_id else job.prompt
    # ASCII, at most 40 characters, cut at a word: a prompt can be 2,000 characters of anything.
    slug = slugify(subject)
    if len(slug) > 40:
        slug = slug[:40].rsplit("-", 1)[0]
    return f"{slug or 'portrait'}-{job.pk.hex[:8]}"


def asset_file_name(asset: WorkspaceAsset) -> str:
    """The one name an image downloads under, alone or in its job's ZIP: "mira-1a2b3c4d-02.png".

    Numbered by batch index, so the ZIP lists the images in the gallery's order.
    """
    extension = asset.file.name.rsplit(".", 1)[-1] if "." in asset.file.name else "png"
    if asset.job_id is None:
        return f"upload-{asset.pk.hex[:8]}.{extension}"
    return f"{job_file_stem(asset.job)}-{asset.batch_index + 1:02d}.{extension}"


# --- ZIP of a job's images ------------------------------------------------------------------


class _ZipSink:
    """A write-only, unseekable file for zipfile: it collects bytes until the generator takes them.

    Having no tell()/seek() makes zipfile write data descriptors instead of seeking back, which is
    what lets the archive stream out while it is being written, in constant memory.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        chunks, self._chunks = self._chunks, []
        if chunks:
            yield b"".join(chunks)


def job_zip_stream(assets: Iterable[WorkspaceAsset], *, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """The bytes of a ZIP of `assets`, produced as it is written (images are already compressed, so STORED).

    Entries are named by asset_file_name(): load the assets with their job and its character.
    """
    sink = _ZipSink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for asset in assets:
            info = zipfile.ZipInfo(asset_file_name(asset), date_time=asset.created_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            with asset.file.open("rb") as source, archive.open(info, mode="w") as target:
                while chunk := source.read(chunk_size):
                    target.write(chunk)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()
