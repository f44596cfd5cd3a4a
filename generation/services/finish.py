"""Slot outcomes and the end of a job, counted in the database (never with Celery chords)."""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import nullcontext
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation import events
from generation.models import (
    ACTIVE_JOB_STATUSES,
    FINAL_SLOT_STATUSES,
    GenerationJob,
    ImageSlot,
    JobStatus,
    SlotStatus,
)
from generation.providers.kinds import PROVIDER_KINDS
from generation.services.credits import credits_refund
from models_registry.models import ApiModel
from studio.models import WorkspaceAsset


def slot_succeed(slot_id: int, job_id: uuid.UUID, *, provider: str | None = None, owner_id: int | None = None) -> bool:
    """Mark a slot succeeded once; the job's counter moves only for the update that won.

    `provider` (the one that served the image) and `owner_id` spare the store path two reads per
    image when the caller knows them. Inside the caller's transaction (store.slot_store records
    the asset and the outcome in one) it adds no savepoint of its own."""
    with transaction.atomic(savepoint=False):
        won = (
            ImageSlot.objects.filter(pk=slot_id)
            .exclude(status__in=FINAL_SLOT_STATUSES)
            .update(status=SlotStatus.SUCCEEDED, error="", details="")
        )
        if won:
            GenerationJob.objects.filter(pk=job_id).update(
                succeeded_count=F("succeeded_count") + 1, updated_at=timezone.now()
            )
    if won:
        provider = provider or _slot_provider(slot_id)
        events.slot_outcome(job_id=job_id, slot_id=slot_id, provider=provider, outcome="succeeded", owner_id=owner_id)
    return bool(won)


def slot_fail(slot_id: int, job_id: uuid.UUID, error: str, details: str = "", *, permanent: bool = False) -> bool:
    """Mark a slot failed once; `permanent`: a retry would fail the same way (no "Retry failed")."""
    with transaction.atomic():
        won = (
            ImageSlot.objects.filter(pk=slot_id)
            .exclude(status__in=FINAL_SLOT_STATUSES)
            .update(status=SlotStatus.FAILED, error=error[:300], details=details[:5000], failed_permanently=permanent)
        )
        if won:
            GenerationJob.objects.filter(pk=job_id).update(
                failed_count=F("failed_count") + 1, updated_at=timezone.now()
            )
    if won:
        provider = _slot_provider(slot_id)
        events.slot_outcome(job_id=job_id, slot_id=slot_id, provider=provider, outcome="failed", error=error)
    return bool(won)


def _slot_provider(slot_id: int) -> str:
    """The provider the slot's latest request went to, else the job's (a slot failed before any request)."""
    request_provider, job_provider = ImageSlot.objects.values_list("request__provider", "job__provider").get(pk=slot_id)
    return request_provider or job_provider


def job_errors(job_id: uuid.UUID) -> list[dict]:
    """[{index, error, details}] of the failed slots, as the product's batch response has them."""
    return [
        {"index": s.index, "error": s.error, "details": s.details}
        for s in ImageSlot.objects.filter(job_id=job_id, status=SlotStatus.FAILED).order_by("index")
    ]


def _served_costs(job: GenerationJob) -> dict[str, Decimal]:
    """What the stored images cost by provider, each at the price of the model that made it (a
    fallback model may have served some of them)."""
    served = Counter(WorkspaceAsset.objects.filter(job=job).values_list("metadata__model", "metadata__batch"))
    keys = {key for key, _ in served if key}
    priced = {job.model.key: (job.model.price_per_image, job.model.provider)}
    if keys - set(priced):
        # A fallback model served some: its own price (the job's model is loaded already).
        models = ApiModel.objects.filter(key__in=keys).values_list("key", "price_per_image", "provider")
        priced.update({key: (price, provider) for key, price, provider in models})
    costs: dict[str, Decimal] = {}
    for (key, batch), count in served.items():
        price, provider = priced.get(key, (job.model.price_per_image, job.model.provider))
        if batch:
            # Made through the provider's batch lane (services.batches), at its batch price.
            price = price * PROVIDER_KINDS[provider].batch_price_factor
        costs[provider] = costs.get(provider, Decimal("0")) + price * count
    return costs


def job_finish_if_done(job_id: uuid.UUID, *, job: GenerationJob | None = None) -> str | None:
    """Close the job when no slot is left to run: succeeded, partial or failed.

    The final UPDATE is conditional on the job still being active, so a finished job never moves
    back and only one caller refunds a job where every image failed. Returns the final status
    when this call closed the job. `job`: the caller's copy with its model, spared a read (only
    its owner, kind, provider, model and creation time are used, none of which the pipeline
    changes behind it).
    """
    counts = ImageSlot.objects.filter(job_id=job_id).aggregate(
        total=Count("id"),
        open=Count("id", filter=~Q(status__in=FINAL_SLOT_STATUSES)),
        succeeded=Count("id", filter=Q(status=SlotStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=SlotStatus.FAILED)),
    )
    if counts["open"] or not counts["total"]:
        return None
    if counts["succeeded"] == counts["total"]:
        final = JobStatus.SUCCEEDED
    elif counts["succeeded"]:
        final = JobStatus.PARTIAL
    else:
        final = JobStatus.FAILED
    if job is None or job.pk != job_id:
        job = GenerationJob.objects.select_related("model").get(pk=job_id)
    costs = _served_costs(job)
    # A refund commits with the close; a job with images has only the one UPDATE to commit.
    with transaction.atomic() if final == JobStatus.FAILED else nullcontext():
        closed = GenerationJob.objects.filter(pk=job_id, status__in=ACTIVE_JOB_STATUSES).update(
            status=final,
            succeeded_count=counts["succeeded"],
            failed_count=counts["failed"],
            errors=job_errors(job_id) if counts["failed"] else [],
            cost=sum(costs.values(), Decimal("0")),
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        if closed and final == JobStatus.FAILED:
            credits_refund(job=job, note="every image failed")
    if closed:
        events.job_finished(job, status=final, spend_by_provider=costs)
    return final if closed else None
