"""Operations: what staff see of the pipeline's trouble, and re-driving a stuck job by hand.

A re-drive sends the same messages the sweeper would (generation.services.sweeper.jobs_sweep), for
one job and at once rather than when its due times pass: every step is idempotent, so a message
sent twice costs a look at the database, never a second generation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Max, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from generation import enqueue
from generation.models import (
    ACTIVE_JOB_STATUSES,
    GenerationJob,
    ImageSlot,
    JobStatus,
    ProviderRequest,
    RequestStatus,
    SlotStatus,
)
from generation.providers.kinds import PROVIDER_KINDS
from generation.services.finish import job_finish_if_done
from generation.services.sweeper import SweepPlan, plan_request_step

logger = logging.getLogger(__name__)

# A job is stuck when nothing of it (the job, or any of its provider requests) changed for this
# many sweep intervals: the sweeper should have re-driven it well before.
STUCK_SWEEPS = 4
FAILURE_WINDOW = timedelta(hours=24)


def stuck_after() -> timedelta:
    return timedelta(seconds=STUCK_SWEEPS * settings.SWEEP_INTERVAL_SECONDS)


def stuck_jobs(now: datetime | None = None, *, limit: int = 50) -> QuerySet[GenerationJob]:
    """Active jobs with no change for stuck_after(), oldest activity first, annotated with
    `last_activity` (the newest updated_at of the job and its requests)."""
    now = now or timezone.now()
    return (
        GenerationJob.objects.filter(status__in=ACTIVE_JOB_STATUSES)
        .annotate(last_activity=Greatest("updated_at", Coalesce(Max("requests__updated_at"), "updated_at")))
        .filter(last_activity__lt=now - stuck_after())
        .select_related("model", "owner")
        .order_by("last_activity")[:limit]
    )


@dataclass(frozen=True)
class FailureGroup:
    provider: str
    error: str
    count: int
    newest: datetime

    @property
    def label(self) -> str:
        kind = PROVIDER_KINDS.get(self.provider)
        return kind.label if kind else self.provider


def recent_failures(now: datetime | None = None) -> list[FailureGroup]:
    """Images that failed in the last 24 hours, grouped by provider and error text, newest first.
    The provider is the one its request went to; an image that failed before any request (the
    job could not start) counts under its job's model's provider."""
    since = (now or timezone.now()) - FAILURE_WINDOW
    rows = (
        ImageSlot.objects.filter(status=SlotStatus.FAILED, updated_at__gte=since)
        .values(kind=Coalesce("request__provider", "job__model__provider"), message=F("error"))
        .annotate(count=Count("id"), newest=Max("updated_at"))
        .order_by("-newest", "kind", "message")
    )
    return [FailureGroup(row["kind"], row["message"], row["count"], row["newest"]) for row in rows]


class RedriveError(Exception):
    """The job cannot be re-driven; the message says why, for staff."""


def job_redrive(job_id: object, *, now: datetime | None = None) -> SweepPlan:
    """Send a stuck job's open work through the sweeper's path again and return what was sent.

    A queued job, or one with images no request covers, is dispatched; a pending request is
    submitted; a submitted one with the provider's id is polled; one without it (its answer was
    lost) is recovered, unless a live worker is still in that submit call. Raises RedriveError when
    the job is missing or has ended (or turns out to have nothing left to run, and is closed here).
    """
    now = now or timezone.now()
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is None:
        raise RedriveError("No such job.")
    if job.status not in ACTIVE_JOB_STATUSES:
        raise RedriveError(f"The job has already ended ({job.get_status_display().lower()}).")
    if job_finish_if_done(job.pk):
        raise RedriveError("Every image of the job had ended: it is closed now.")

    plan = SweepPlan()
    unassigned = ImageSlot.objects.filter(job=job, status=SlotStatus.PENDING, request__isnull=True)
    if job.status == JobStatus.QUEUED or unassigned.exists():
        plan.dispatch.append(str(job.pk))
    requests = ProviderRequest.objects.filter(job=job, status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED])
    for request in requests:
        plan_request_step(plan, request)
    # As the sweeper does: the steps are due now, and the job leaves the stuck list until it sticks again.
    ProviderRequest.objects.filter(pk__in=[*plan.submit, *plan.poll, *plan.recover]).update(due_at=now)
    GenerationJob.objects.filter(pk=job.pk).update(updated_at=now)
    enqueue.sweep(plan)
    logger.info("job %s re-driven by staff: %s", job.pk, plan)
    return plan
