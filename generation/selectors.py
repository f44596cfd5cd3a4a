"""Reads of jobs for pages and the JSON API, with a fixed number of queries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Prefetch, QuerySet, Sum
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from generation import heartbeat
from generation.models import (
    ACTIVE_JOB_STATUSES,
    Batch,
    GenerationJob,
    ImageSlot,
    JobStatus,
    LoraTraining,
    SlotStatus,
    TrainingStatus,
)
from generation.providers.base import LoraWeight
from generation.providers.kinds import PROVIDER_KINDS
from models_registry.models import ApiModel
from studio.models import WorkspaceAsset


def jobs_for_user(user) -> QuerySet[GenerationJob]:
    """A user's jobs, newest first, with model, slots and assets loaded in three queries.

    What a card reads, and no more, for a full gallery page of 50 jobs and 200 images:
    - `unsucceeded_slots`: every job has a slot per image from the start (services.jobs), and a
      succeeded one says nothing that its image does not; a page of finished jobs loads none.
    - `asset_list`: the images' ids, places, sizes, seeds and types.
    Both are plain lists: a prefetch into the related managers builds a queryset per job to hold them.
    """
    return (
        GenerationJob.objects.filter(owner=user)
        .select_related("model", "character")
        .prefetch_related(
            Prefetch(
                "slots",
                queryset=ImageSlot.objects.exclude(status=SlotStatus.SUCCEEDED)
                .only("job_id", "index", "status", "error", "details", "failed_permanently")
                .order_by("index"),
                to_attr="unsucceeded_slots",
            ),
            Prefetch(
                "assets",
                queryset=WorkspaceAsset.objects.only(
                    "job_id", "batch_index", "width", "height", "seed", "content_type"
                ).order_by("batch_index"),
                to_attr="asset_list",
            ),
        )
        .order_by("-created_at")
    )


def job_for_user(user, job_id: uuid.UUID | str) -> GenerationJob:
    """The user's job or 404: another user's job does not exist for them."""
    return get_object_or_404(jobs_for_user(user), pk=job_id)


def job_payload(job: GenerationJob) -> dict[str, Any]:
    """The job as the studio's JSON API returns it (the product's batch response fields)."""
    slots, assets = job.unsucceeded_slots, job.asset_list
    errors = [
        {"index": s.index, "error": s.error, "details": s.details} for s in slots if s.status == SlotStatus.FAILED
    ]
    # The stored counters (generation.services.finish) count the outcomes; canceled slots are done too.
    done = job.done_count + sum(1 for s in slots if s.status == SlotStatus.CANCELED)
    return {
        "id": str(job.pk),
        "status": job.status,
        "mode": job.mode,
        "model": job.model.key,
        "prompt": job.prompt,
        "requested": job.images_requested,
        "progress": {"done": done, "total": job.images_requested},
        "success": job.succeeded_count,
        "failed": job.failed_count,
        "errors": errors,
        "images": [
            {
                "id": str(a.pk),
                "index": a.batch_index,
                "url": reverse("studio:asset-file", args=[a.pk]),
                "thumbnail_url": reverse("studio:asset-thumbnail", args=[a.pk]),
                "width": a.width,
                "height": a.height,
                "seed": a.seed,
                "content_type": a.content_type,
            }
            for a in assets
        ],
        "provider": job.provider,
        "fallback_attempted": job.fallback_attempted,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def waiting_on_a_worker(job: GenerationJob) -> bool:
    """Whether an active job waits because no worker runs (none has swept for a while), rather
    than on its provider. A job younger than the silence limit is not judged yet."""
    if not job.is_active:
        return False
    old_enough = timezone.now() - job.created_at > timedelta(seconds=heartbeat.silence_limit())
    return old_enough and heartbeat.workers_silent()


def generations_paused_for(user) -> bool:
    """Whether to tell `user` that generations are paused: no worker runs while jobs wait, theirs
    (or anyone's, for staff, who run the workers)."""
    if not heartbeat.workers_silent():
        return False
    cutoff = timezone.now() - timedelta(seconds=heartbeat.silence_limit())
    waiting = GenerationJob.objects.filter(status__in=ACTIVE_JOB_STATUSES, created_at__lt=cutoff)
    if not user.is_staff:
        waiting = waiting.filter(owner=user)
    return waiting.exists()


# --- Batch Mode (generation.services.batches) ----------------------------------------------------


@dataclass
class BatchRow:
    """A batch as the queue page shows it."""

    batch: Batch
    jobs: list[GenerationJob]
    images: int
    estimate: Decimal
    actual: Decimal


def batch_rows(user) -> list[BatchRow]:
    """The user's drafts and sent batches, newest first, each with its jobs and costs (three queries)."""
    batches = list(
        Batch.objects.filter(owner=user)
        .select_related("model")
        .prefetch_related(Prefetch("jobs", queryset=GenerationJob.objects.order_by("created_at")))
        .order_by("-created_at")[:100]
    )
    rows = []
    for batch in batches:
        jobs = [j for j in batch.jobs.all() if j.status != JobStatus.CANCELED or batch.is_final]
        images = sum(j.images_requested for j in jobs)
        factor = PROVIDER_KINDS[batch.model.provider].batch_price_factor
        estimate = batch.model.price_per_image * images * factor
        actual = sum((j.cost for j in jobs), Decimal("0"))
        rows.append(BatchRow(batch=batch, jobs=jobs, images=images, estimate=estimate, actual=actual))
    return rows


def batch_for_user(user, batch_id: uuid.UUID | str) -> Batch:
    """The user's batch or 404."""
    return get_object_or_404(Batch.objects.select_related("model"), owner=user, pk=batch_id)


def batches_unseen_count(user) -> int:
    """Batches that ended since the user last looked at the queue (the badge)."""
    return Batch.objects.filter(owner=user, ended_at__isnull=False, seen_at__isnull=True).count()


# --- Spend ---------------------------------------------------------------------------------------


@dataclass
class Spend:
    """What a user's images cost over a period, by day and by model, and what Batch Mode saved."""

    total: Decimal
    saved: Decimal
    images: int
    batch_images: int
    by_day: list[tuple[date, Decimal]]
    by_model: list[tuple[str, Decimal]]


def spend_for(*, user=None, since: datetime) -> Spend:
    """Spend from the stored images since `since`: each at its model's registry price, halved (the
    kind's batch_price_factor) for batch images, as finish.job_finish_if_done costs a job.
    `user` None: every user's (admin's totals)."""
    assets = WorkspaceAsset.objects.filter(job__isnull=False, created_at__gte=since)
    if user is not None:
        assets = assets.filter(owner=user)
    rows = assets.values_list("created_at", "metadata__model", "metadata__batch")
    prices = {m.key: m for m in ApiModel.objects.all()}
    by_day: dict[date, Decimal] = {}
    by_model: dict[str, Decimal] = {}
    total = saved = Decimal("0")
    images = batch_images = 0
    for created_at, key, batch in rows:
        model = prices.get(key)
        if model is None:
            continue
        price = model.price_per_image
        if batch:
            full = price
            price = price * PROVIDER_KINDS[model.provider].batch_price_factor
            saved += full - price
            batch_images += 1
        images += 1
        total += price
        day = timezone.localtime(created_at).date()
        by_day[day] = by_day.get(day, Decimal("0")) + price
        by_model[model.display_name] = by_model.get(model.display_name, Decimal("0")) + price
    return Spend(
        total=total,
        saved=saved,
        images=images,
        batch_images=batch_images,
        by_day=sorted(by_day.items()),
        by_model=sorted(by_model.items(), key=lambda item: -item[1]),
    )


def month_start(now: datetime | None = None) -> datetime:
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spend_by_user(*, since: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """Staff's view: each user's spend since `since` (jobs' recorded cost), highest first."""
    return list(
        GenerationJob.objects.filter(created_at__gte=since, cost__gt=0)
        .values("owner__username")
        .annotate(total=Sum("cost"), jobs=Count("id"))
        .order_by("-total")[:limit]
    )


# --- LoRAs -------------------------------------------------------------------------------------


def ready_lora(character) -> LoraTraining | None:
    """The character's newest ready LoRA, or None."""
    return (
        LoraTraining.objects.filter(character=character, status=TrainingStatus.SUCCEEDED)
        .exclude(lora_file="")
        .order_by("-finished_at")
        .first()
    )


def lora_weight(training: LoraTraining, *, scale: float = 1.0) -> LoraWeight:
    """The LoRA as a generation applies it: a URL a hosted model can fetch (a presigned copy of ours
    on S3, else the trainer's own file URL), the scale, and the trigger word for the prompt."""
    storage = training.lora_file.storage
    if getattr(storage, "querystring_auth", False):
        path = storage.url(training.lora_file.name, expire=3600)
    else:
        path = str((training.config or {}).get("lora_url") or "") or training.lora_file.name
    return LoraWeight(path=path, scale=scale, trigger_word=training.trigger_word)
