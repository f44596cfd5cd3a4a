"""What a user does to a job after pressing Generate: retry its failed images, or cancel it."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from generation import enqueue
from generation.models import (
    ACTIVE_JOB_STATUSES,
    FINAL_SLOT_STATUSES,
    Batch,
    BatchState,
    GenerationJob,
    ImageSlot,
    JobStatus,
    ProviderRequest,
    RequestStatus,
    SlotStatus,
)
from generation.services.batches import BatchError
from generation.services.credits import credits_refund
from generation.services.jobs import JobRequestError

logger = logging.getLogger(__name__)


def job_retry_failed(*, job: GenerationJob) -> int:
    """Run the failed images of a finished job again: only those indexes, and no new credit.

    Returns how many images were queued again.
    """
    if job.status not in (JobStatus.PARTIAL, JobStatus.FAILED):
        raise JobRequestError("Only a job with failed images can be retried.", code="not_retryable")
    # A refused prompt or invalid input would be refused the same way again: only the others run.
    retryable = ImageSlot.objects.filter(job=job, status=SlotStatus.FAILED, failed_permanently=False)
    if not retryable.exists():
        raise JobRequestError(
            "The provider refused these images; retrying would be refused the same way. Change the prompt "
            "or the references and generate again.",
            code="not_retryable",
        )
    with transaction.atomic():
        reopened = GenerationJob.objects.filter(pk=job.pk, status__in=[JobStatus.PARTIAL, JobStatus.FAILED]).update(
            status=JobStatus.RUNNING, finished_at=None, updated_at=timezone.now()
        )
        if not reopened:
            return 0
        count = retryable.update(status=SlotStatus.PENDING, request=None, error="", details="")
        GenerationJob.objects.filter(pk=job.pk).update(failed_count=F("failed_count") - count, errors=[])
        enqueue.dispatch(job.pk)
    return count


def job_cancel(*, job: GenerationJob) -> bool:
    """Stop a queued or running job: remaining images are canceled, provider requests too where
    the API allows. Images that already arrived are kept. Returns whether this call canceled it."""
    with transaction.atomic():
        canceled = GenerationJob.objects.filter(pk=job.pk, status__in=ACTIVE_JOB_STATUSES).update(
            status=JobStatus.CANCELED, finished_at=timezone.now(), updated_at=timezone.now()
        )
        if not canceled:
            return False
        ImageSlot.objects.filter(job=job).exclude(status__in=FINAL_SLOT_STATUSES).update(status=SlotStatus.CANCELED)
        to_cancel = list(
            ProviderRequest.objects.filter(job=job, status=RequestStatus.SUBMITTED)
            .exclude(external_id="")
            .values_list("pk", flat=True)
        )
        ProviderRequest.objects.filter(job=job, status__in=[RequestStatus.PENDING, RequestStatus.SUBMITTED]).update(
            status=RequestStatus.CANCELED, updated_at=timezone.now()
        )
        succeeded = ImageSlot.objects.filter(job=job, status=SlotStatus.SUCCEEDED).count()
        GenerationJob.objects.filter(pk=job.pk).update(succeeded_count=succeeded)
        if succeeded == 0:
            credits_refund(job=job, note="canceled before any image arrived")
        for request_id in to_cancel:
            enqueue.provider_cancel(request_id)
    return True


def job_remove_from_batch(*, job: GenerationJob) -> None:
    """Take a job out of a Batch Mode draft that was not sent: it is canceled and its credit refunded."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=job.batch_id).first()
        if batch is None or batch.state != BatchState.DRAFT:
            raise BatchError("This batch was already sent: only a draft's jobs can be removed.")
        job_cancel(job=job)
        GenerationJob.objects.filter(pk=job.pk).update(batch=None)
        left = ImageSlot.objects.filter(job__batch=batch, job__status=JobStatus.QUEUED).count()
        if left:
            Batch.objects.filter(pk=batch.pk).update(request_count=left, updated_at=timezone.now())
        else:
            batch.delete()


def request_provider_cancel(request_id: str) -> None:
    from generation.providers import get_provider
    from generation.providers.base import ProviderError

    request = ProviderRequest.objects.select_related("model").filter(pk=request_id).first()
    if request is None or not request.external_id:
        return
    try:
        get_provider(request.model).cancel(request.external_id, request.handles)
    except ProviderError as exc:
        # Best effort: the job is already canceled on our side and its results will be ignored.
        logger.info("could not cancel %s request %s: %s", request.provider, request.external_id, exc)
