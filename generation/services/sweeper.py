"""The stale-job sweeper (Celery beat): the database is the source of truth, the broker only a
doorbell. Lost messages, killed workers and missed webhooks are all found here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from generation import events, heartbeat, limits
from generation.models import (
    FINAL_SLOT_STATUSES,
    OPEN_BATCH_STATES,
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
    recover: list[str] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)


def jobs_sweep(now=None) -> SweepPlan:
    """Find stuck work and say what to enqueue again; fail what is past its deadline.

    Every in-flight state has an owner here, found within a sweep or two: a step whose due time
    passed (its message was lost, its worker died) is re-driven; a submit with no provider id
    and no live worker behind it is recovered (runs.request_recover).
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SWEEP_STALE_SECONDS)
    overdue = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    deadline = now - timedelta(seconds=settings.JOB_DEADLINE_SECONDS)
    plan = SweepPlan()
    heartbeat.record_sweep(now.timestamp())

    # Jobs in a batch that has not ended are the batch poller's (services.batches): a day in a
    # draft or at Google is normal there.
    jobs = GenerationJob.objects.exclude(batch__state__in=OPEN_BATCH_STATES)
    # Queued jobs whose dispatch message never arrived (crash between commit and enqueue).
    for job in jobs.filter(status=JobStatus.QUEUED, updated_at__lt=stale):
        if job.dispatch_attempts >= MAX_DISPATCH_ATTEMPTS:
            _fail_open_slots(job, "The job could not be started. Your credit was refunded.")
            plan.failed_jobs.append(str(job.pk))
        else:
            GenerationJob.objects.filter(pk=job.pk).update(dispatch_attempts=F("dispatch_attempts") + 1, updated_at=now)
            plan.dispatch.append(str(job.pk))

    for job in jobs.filter(status=JobStatus.RUNNING):
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

    running = ProviderRequest.objects.filter(job__status=JobStatus.RUNNING)
    redriven = []
    # Rows from before due times existed have none: their age decides, as it used to.
    due = Q(due_at__lt=overdue) | Q(due_at__isnull=True, updated_at__lt=stale)
    for request in running.filter(due, status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED]).exclude(
        status=RequestStatus.SUBMITTED, external_id=""
    ):
        plan_request_step(plan, request)
        redriven.append(request.pk)
    # Marked as just due, so the next sweep leaves them to the message sent now unless that is lost too.
    ProviderRequest.objects.filter(pk__in=redriven).update(due_at=now)

    sent = Q(sent_at__lt=overdue) | Q(sent_at__isnull=True, updated_at__lt=stale)
    for request in running.filter(sent, status=RequestStatus.SUBMITTED, external_id=""):
        plan_request_step(plan, request)
    if plan.dispatch or plan.submit or plan.poll or plan.recover or plan.failed_jobs:
        logger.info("sweeper: %s", plan)
    for kind in ("dispatch", "submit", "poll", "recover", "failed_jobs"):
        events.sweeper_recovered(kind, len(getattr(plan, kind)))
    return plan


def plan_request_step(plan: SweepPlan, request: ProviderRequest) -> None:
    """Add an open request's next step to `plan`: submit a pending one, poll one that has the
    provider's id, recover one whose submit answer was lost. A submit still in flight is left to
    its worker, which renews the lease that names the request while the call runs."""
    if request.status == RequestStatus.PENDING:
        plan.submit.append(str(request.pk))
    elif request.external_id:
        plan.poll.append(str(request.pk))
    elif not limits.submit_in_flight(request.provider, str(request.pk)):
        plan.recover.append(str(request.pk))


def _fail_open_slots(job: GenerationJob, error: str) -> None:
    for slot in ImageSlot.objects.filter(job=job).exclude(status__in=FINAL_SLOT_STATUSES):
        slot_fail(slot.pk, job.pk, error)
    ProviderRequest.objects.filter(job=job, status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED]).update(
        status=RequestStatus.FAILED, error=error[:300]
    )
    job_finish_if_done(job.pk)
