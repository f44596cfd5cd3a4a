"""Writes of the studio: characters, uploads, asset deletion, ZIP downloads, and the prompt bar's rules.

The prompt bar's state (the two reference slots, MODIFY/COPY, strength, enhancement, the chosen
model and count) is kept per browser session so that every control also works as a plain form post
without JavaScript; `StudioState` holds the rules, the views only load and save it.
"""

from __future__ import annotations

import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from generation.imaging import process_image
from generation.models import GenerationJob, JobMode
from generation.services.jobs import COPY_REFERENCE_STRENGTH, MODIFY_REFERENCE_STRENGTH
from studio.models import AssetKind, AssetSource, Character, WorkspaceAsset
from studio.throttle import rate_limit

MODE_MODIFY = "modify"
MODE_COPY = "copy"
PROMPT_MAX_LENGTH = 2000
REFERENCE_SLOTS = 2

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


# --- The prompt bar's state -----------------------------------------------------------------


def _clean_uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError, AttributeError):
        return None


def _clean_strength(value: Any, default: float) -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError):
        return default
    if strength != strength:  # NaN
        return default
    return round(max(0.0, min(1.0, strength)), 2)


@dataclass
class StudioState:
    """What the prompt bar shows: kept in the session, so it survives page loads and plain form posts.

    Reference rules (the product notes): the first image fills ref1, the second ref2, a further one
    replaces ref2 and keeps ref1. A new reference starts MODIFY at 0.5 with enhancement on;
    MODIFY -> COPY sets 0.95 and turns enhancement off; COPY -> MODIFY sets 0.5 and turns it back on.
    """

    refs: list[str | None] = field(default_factory=lambda: [None] * REFERENCE_SLOTS)
    mode: str = MODE_MODIFY
    strength: float = MODIFY_REFERENCE_STRENGTH
    enhance: bool = True
    model_id: int | None = None
    images: int = 1
    prompt: str = ""

    # -- persistence ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StudioState:
        state = cls()
        data = data or {}
        refs = list(data.get("refs") or [])[:REFERENCE_SLOTS]
        refs += [None] * (REFERENCE_SLOTS - len(refs))
        state.refs = [_clean_uuid(r) if r else None for r in refs]
        state.mode = data.get("mode") if data.get("mode") in (MODE_MODIFY, MODE_COPY) else MODE_MODIFY
        state.strength = _clean_strength(data.get("strength"), MODIFY_REFERENCE_STRENGTH)
        state.enhance = bool(data.get("enhance", True))
        model_id = data.get("model_id")
        state.model_id = model_id if isinstance(model_id, int) else None
        images = data.get("images")
        state.images = images if isinstance(images, int) and images >= 1 else 1
        state.prompt = str(data.get("prompt") or "")[:PROMPT_MAX_LENGTH]
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "refs": list(self.refs),
            "mode": self.mode,
            "strength": self.strength,
            "enhance": self.enhance,
            "model_id": self.model_id,
            "images": self.images,
            "prompt": self.prompt,
        }

    def update_from_form(self, data: Any) -> None:
        """Take over what the prompt form currently shows (a QueryDict), ignoring what does not parse.

        Controls posted with the form (swap, clear, model change...) must not lose what the user
        typed or picked meanwhile. The reference slots are never taken from the client: they change
        only through the reference actions, which check ownership.
        """
        if "prompt" in data:
            self.prompt = str(data.get("prompt", ""))[:PROMPT_MAX_LENGTH]
        if "model" in data:
            try:
                self.model_id = int(data.get("model"))
            except (TypeError, ValueError):
                pass
        if "images" in data:
            try:
                self.images = max(1, int(data.get("images")))
            except (TypeError, ValueError):
                pass
        # The form always carries this marker, so an unchecked box (which posts nothing) reads as off.
        if "enhance_present" in data or "enhance" in data:
            self.enhance = data.get("enhance") in ("on", "true", "1")
        if self.has_references:
            if data.get("mode") in (MODE_MODIFY, MODE_COPY):
                self.mode = data.get("mode")
            if "strength" in data:
                self.strength = _clean_strength(data.get("strength"), self.strength)

    # -- references ----------------------------------------------------------------------
    @property
    def references(self) -> list[str]:
        return [r for r in self.refs if r]

    @property
    def has_references(self) -> bool:
        return any(self.refs)

    def add_reference(self, asset_id: uuid.UUID | str, slot: int | None = None) -> None:
        """Put an image in slot 1 or 2, or (slot None) in the first free slot, else replace ref2."""
        asset_id = str(asset_id)
        if slot not in (1, 2):
            slot = 1 if self.refs[0] is None else 2
        if self.refs[slot - 1] == asset_id:
            return
        other = 2 - slot  # index of the other slot
        if self.refs[other] == asset_id:
            if slot == 2:
                # The same image twice wastes a reference slot (the pipeline drops the duplicate anyway).
                return
            self.refs[other] = None  # moved from ref2 up to ref1
        self.refs[slot - 1] = asset_id
        self._reset_mode()

    def swap_references(self) -> None:
        self.refs = [self.refs[1], self.refs[0]]

    def clear_reference(self, slot: int | None = None) -> None:
        if slot in (1, 2):
            self.refs[slot - 1] = None
        else:
            self.refs = [None] * REFERENCE_SLOTS
        if not self.has_references:
            self._reset_mode()

    def keep_only(self, existing: set[str]) -> None:
        """Drop references to images that were deleted (or never were the user's)."""
        had_references = self.has_references
        self.refs = [r if r in existing else None for r in self.refs]
        if had_references and not self.has_references:
            self._reset_mode()

    # -- MODIFY / COPY -------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in (MODE_MODIFY, MODE_COPY) or mode == self.mode:
            return
        self.mode = mode
        if mode == MODE_COPY:
            self.strength = COPY_REFERENCE_STRENGTH
            self.enhance = False
        else:
            self.strength = MODIFY_REFERENCE_STRENGTH
            self.enhance = True

    def _reset_mode(self) -> None:
        self.mode = MODE_MODIFY
        self.strength = MODIFY_REFERENCE_STRENGTH
        self.enhance = True

    @property
    def job_mode(self) -> str:
        if not self.has_references:
            return JobMode.T2I
        return JobMode.I2I_COPY if self.mode == MODE_COPY else JobMode.I2I_MODIFY
