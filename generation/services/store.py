"""Storing one generated image: fetch or decode, verify, re-encode, thumbnail, record."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid

from django.db import DatabaseError, IntegrityError, transaction

from generation import events
from generation.lib.http import DownloadError, UnsafeURLError, fetch
from generation.lib.imaging import InvalidImage, process_image
from generation.models import FINAL_SLOT_STATUSES, GenerationJob, ImageSlot
from generation.providers import get_provider
from generation.providers.base import GeneratedImage
from generation.services.finish import slot_fail, slot_succeed
from models_registry.models import ApiModel
from studio.models import AssetSource, WorkspaceAsset

logger = logging.getLogger(__name__)


def slot_store(*, job: GenerationJob, slot: ImageSlot, image: GeneratedImage, model: ApiModel | None = None) -> bool:
    """Store `image` as the asset of (job, slot.index) and mark the slot succeeded.

    `model` is the model that made the image, when a fallback made it instead of the job's own.

    Idempotent: a second delivery finds the asset and stores nothing. An image that cannot be
    downloaded or is not a real, allowed image fails the slot with a clear error and leaves
    nothing in storage. Returns whether the slot succeeded.
    """
    if slot.status in FINAL_SLOT_STATUSES:
        return False
    if WorkspaceAsset.objects.filter(job=job, batch_index=slot.index).exists():
        return slot_succeed(slot.pk, job.pk, owner_id=job.owner_id)
    started = time.monotonic()
    try:
        # Only the serving provider's own trusted host may be private (its ComfyUI server, the simulator).
        trusted = get_provider(model or job.model).fetch_trusted_hosts()
        data = image.data if image.data is not None else _download(image.url or "", trusted)
        processed = process_image(data)
    except (DownloadError, UnsafeURLError) as exc:
        slot_fail(slot.pk, job.pk, "The provider's image could not be downloaded.", str(exc))
        return False
    except InvalidImage as exc:
        slot_fail(slot.pk, job.pk, "The provider returned something that is not a usable image.", str(exc))
        return False

    served_by = model or job.model
    asset = WorkspaceAsset.with_files(
        processed,
        stem=str(slot.index),
        id=slot_asset_id(job.pk, slot.index),
        owner_id=job.owner_id,
        job=job,
        character_id=job.character_id,
        batch_index=slot.index,
        source=AssetSource.GENERATED,
        seed=image.seed,
        metadata={**image.metadata, "model": served_by.key, "provider": served_by.provider},
    )
    events.image_stored(
        job_id=job.pk,
        slot_index=slot.index,
        provider=served_by.provider,
        seconds=time.monotonic() - started,
        size=len(data),
    )
    try:
        # The asset and the slot's outcome in one transaction: one commit per image, not two, and
        # never an asset whose slot still runs.
        with transaction.atomic():
            asset.save(force_insert=True)
            return slot_succeed(slot.pk, job.pk, provider=served_by.provider, owner_id=job.owner_id)
    except IntegrityError:
        # A concurrent delivery stored this slot first, under the same file names: its row points
        # at the files this call wrote over, so they stay.
        pass
    except BaseException:
        # A dropped database connection: no row points at the files. Remove them if the database
        # can still say so; otherwise the re-drive writes the same names again and records them.
        _drop_unrecorded_files(asset)
        raise
    return slot_succeed(slot.pk, job.pk, provider=served_by.provider, owner_id=job.owner_id)


def _download(url: str, trusted: list[str]) -> bytes:
    """The image at `url`, streamed to a temporary file under the byte cap and read back once."""
    with tempfile.TemporaryFile() as spool:
        fetch(url, trusted=trusted, into=spool)
        spool.seek(0)
        return spool.read()


def slot_asset_id(job_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id, and so the storage folder, of a job's image: the same on every attempt to store it."""
    return uuid.uuid5(job_id, f"slot-{index}")


def _drop_unrecorded_files(asset: WorkspaceAsset) -> None:
    try:
        recorded = WorkspaceAsset.objects.filter(pk=asset.pk).exists()
    except DatabaseError:
        return
    if not recorded:
        asset.delete_files()
