"""The stale-job sweeper (Celery beat): the database is the source of truth, the broker only a
doorbell. Lost messages, killed workers and missed webhooks are all found here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from generation.models import (
    FINAL_SLOT_STATUSES,
    GenerationJob,
    ImageSlot,
    JobStatus,
    ProviderRequest,
    RequestStatus,
)
from generation.services.finish import job_finish_if_done, slot_fail

logger = logging.getLogger(__name__)

MAX_DISPATCH_ATTEMPTS = 5


@dataclass
class SweepPlan:
    dispatch: list[str] = field(default_factory=list)
    submit: list[str] = field(default_factory=list)
    poll: list[str] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)


def jobs_sweep(now=None) -> SweepPlan:  # noqa: ANN001
    """Find stuck work and say what to enqueue again; fail what is past its deadline."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SWEEP_STALE_SECONDS)
    deadline = now - timedelta(seconds=settings.JOB_DEADLINE_SECONDS)
    plan = SweepPlan()

    # Queued jobs whose dispatch message never arrived (crash between commit and enqueue).
    for job in GenerationJob.objects.filter(status=JobStatus.QUEUED, updated_at__lt=stale):
        if job.dispatch_attempts >= MAX_DISPATCH_ATTEMPTS:
            _fail_open_slots(job, "The job could not be started. Your credit was refunded.")
            plan.failed_jobs.append(str(job.pk))
        else:
            GenerationJob.objects.filter(pk=job.pk).update(dispatch_attempts=F("dispatch_attempts") + 1, updated_at=now)
            plan.dispatch.append(str(job.pk))

    for job in GenerationJob.objects.filter(status=JobStatus.RUNNING):
        started = job.started_at or job.created_at
        if started < deadline:
            minutes = settings.JOB_DEADLINE_SECONDS // 60
            _fail_open_slots(job, f"The provider did not finish within {minutes} minutes.")
            plan.failed_jobs.append(str(job.pk))
            continue
        if job_finish_if_done(job.pk):
            continue  # every slot had ended but the job was never closed
        if (
            ImageSlot.objects.filter(job=job, status="pending", request__isnull=True).exists()
            and job.updated_at < stale
        ):
            plan.dispatch.append(str(job.pk))

    for request in ProviderRequest.objects.filter(
        status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED], updated_at__lt=stale, job__status=JobStatus.RUNNING
    ):
        if request.status == RequestStatus.PENDING:
            plan.submit.append(str(request.pk))
        elif request.external_id:
            plan.poll.append(str(request.pk))
        elif request.updated_at < now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT):
            # Submitted with no id for longer than a task may live: its worker died mid-call.
            # Sync providers are simply asked again; the attempt counter bounds it.
            ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED).update(
                status=RequestStatus.PENDING, updated_at=now
            )
            plan.submit.append(str(request.pk))
        ProviderRequest.objects.filter(pk=request.pk).update(updated_at=now)
    if plan.dispatch or plan.submit or plan.poll or plan.failed_jobs:
        logger.info("sweeper: %s", plan)
    return plan


def _fail_open_slots(job: GenerationJob, error: str) -> None:
    for slot in ImageSlot.objects.filter(job=job).exclude(status__in=FINAL_SLOT_STATUSES):
        slot_fail(slot.pk, job.pk, error)
    ProviderRequest.objects.filter(job=job, status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED]).update(
        status=RequestStatus.FAILED, error=error[:300]
    )
    job_finish_if_done(job.pk)
