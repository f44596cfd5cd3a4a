"""Reads of jobs for pages and the JSON API, with a fixed number of queries."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from generation import heartbeat
from generation.models import ACTIVE_JOB_STATUSES, GenerationJob, ImageSlot, SlotStatus
from studio.models import WorkspaceAsset


def jobs_for_user(user) -> QuerySet[GenerationJob]:
    """A user's jobs, newest first, with model, slots and assets loaded in three queries."""
    return (
        GenerationJob.objects.filter(owner=user)
        .select_related("model", "character")
        .prefetch_related(
            Prefetch("slots", queryset=ImageSlot.objects.order_by("index")),
            Prefetch("assets", queryset=WorkspaceAsset.objects.order_by("batch_index")),
        )
        .order_by("-created_at")
    )


def job_for_user(user, job_id: uuid.UUID | str) -> GenerationJob:
    """The user's job or 404: another user's job does not exist for them."""
    return get_object_or_404(jobs_for_user(user), pk=job_id)


def job_payload(job: GenerationJob) -> dict[str, Any]:
    """The job as the studio's JSON API returns it (the product's batch response fields)."""
    slots = list(job.slots.all())
    assets = list(job.assets.all())
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
