"""Batch Mode: jobs collected in a draft, sent as one provider batch at half price, polled from the
database until it ends, and their images stored like any job's.

    job_create(batch=True) -> batch_add_job      the job joins the user's draft for its model
    batch_submit                                 draft -> submitting -> pending (intent first)
    batches_sweep (beat)                         sends drafts due by size or age, polls what is
                                                 due, recovers a create whose answer was lost
    batch_poll                                   state and counts; at the end batch_finish stores
                                                 each result in exactly its slot, fails the rest
                                                 and closes the jobs (refunding those with no image)

Creating a provider batch is not idempotent (docs/providers.md 3.3): the create is recorded as
sent (create_sent_at) before it goes, and a batch left SUBMITTING without a name is looked up by
its display name before anything is sent again. Every poll is due at next_poll_at, which grows
with the batch's age; a countdown carries only waits below settings.PIPELINE_MAX_COUNTDOWN, and
beat finds the longer ones, so no message ever waits near the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation import enqueue
from generation.models import (
    FINAL_SLOT_STATUSES,
    SENT_BATCH_STATES,
    Batch,
    BatchInput,
    BatchState,
    GenerationJob,
    ImageSlot,
    JobStatus,
    ProviderRequest,
    SlotStatus,
)
from generation.providers import get_batch_client
from generation.providers.base import ProviderError
from generation.services.finish import job_finish_if_done, slot_fail
from generation.services.runs import build_request
from generation.services.store import slot_store

logger = logging.getLogger(__name__)

# A step found due less than this far ahead runs now.
DUE_TOLERANCE_SECONDS = 0.5

_PROVIDER_STATES = {
    "PENDING": BatchState.PENDING,
    "RUNNING": BatchState.RUNNING,
    "SUCCEEDED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED,
    "CANCELLED": BatchState.CANCELLED,
    "EXPIRED": BatchState.EXPIRED,
}
# Why an image got nothing, by how its batch ended.
_NO_RESULT = {
    BatchState.SUCCEEDED: "Google's batch returned no result for this image.",
    BatchState.FAILED: "Google's batch failed",
    BatchState.CANCELLED: "The batch was cancelled before this image was made.",
    BatchState.EXPIRED: "Google did not run the batch within 48 hours (it expired).",
}
LOST_CREATE_FOUND = "Google did not answer when the batch was sent; it was found by its name and not sent twice."
LOST_CREATE_WAITING = "Waiting for Google to confirm the batch…"
LOST_CREATE_NOT_FOUND = (
    "Google did not answer when the batch was sent, and no batch of that name appeared. It was not sent "
    "again, so it cannot be billed twice: Retry failed makes these images in the normal lane."
)


class BatchError(Exception):
    """Something the user asked of a batch that cannot be done, with a message to show as is."""


def poll_interval(age_seconds: float) -> float:
    """Seconds until the next poll of a batch this old: seconds at first, up to ten minutes later."""
    return max(float(settings.BATCH_POLL_MIN_SECONDS), min(float(settings.BATCH_POLL_MAX_SECONDS), age_seconds / 10))


def _countdown_for(wait: float) -> float | None:
    """A countdown for a wait the broker may carry, else None (beat finds it when due)."""
    return round(max(0.0, wait), 3) if wait <= settings.PIPELINE_MAX_COUNTDOWN else None


# --- the draft -------------------------------------------------------------------------------


def batch_add_job(*, job: GenerationJob) -> Batch:
    """Put a new job into its owner's draft for its model (inside job_create's transaction).

    Each of its images is one request of the batch, keyed `<job id>-<index>`. A draft that reaches
    settings.BATCH_AUTO_SUBMIT_REQUESTS is sent once this transaction commits.
    """
    batch = (
        Batch.objects.select_for_update()
        .filter(owner_id=job.owner_id, model_id=job.model_id, state=BatchState.DRAFT)
        .first()
    )
    if batch is None:
        try:
            with transaction.atomic():
                batch = Batch.objects.create(owner_id=job.owner_id, model_id=job.model_id)
        except IntegrityError:  # a concurrent job opened it first
            batch = Batch.objects.select_for_update().get(
                owner_id=job.owner_id, model_id=job.model_id, state=BatchState.DRAFT
            )
    GenerationJob.objects.filter(pk=job.pk).update(batch=batch)
    job.batch = batch
    for slot in ImageSlot.objects.filter(job=job):
        ImageSlot.objects.filter(pk=slot.pk).update(batch_key=f"{job.pk}-{slot.index}")
    size = ImageSlot.objects.filter(job__batch=batch, job__status=JobStatus.QUEUED).count()
    Batch.objects.filter(pk=batch.pk).update(request_count=size, updated_at=timezone.now())
    if size >= settings.BATCH_AUTO_SUBMIT_REQUESTS:
        enqueue.batch_submit(batch.pk)
    return batch


def batch_request_submit(*, batch: Batch) -> None:
    """The user's "Submit batch now"."""
    if batch.state != BatchState.DRAFT:
        raise BatchError("This batch was already sent.")
    enqueue.batch_submit(batch.pk)


# --- sending -----------------------------------------------------------------------------------


def batch_submit(batch_id: uuid.UUID | str) -> float | None:
    """Send a draft as one provider batch. Returns the countdown of its first poll, or None."""
    now = timezone.now()
    claimed = Batch.objects.filter(pk=batch_id, state=BatchState.DRAFT).update(
        state=BatchState.SUBMITTING, create_sent_at=None, error="", updated_at=now
    )
    if not claimed:
        return None
    batch = Batch.objects.select_related("model").get(pk=batch_id)
    slots = list(
        ImageSlot.objects.filter(job__batch=batch, job__status=JobStatus.QUEUED, status=SlotStatus.PENDING)
        .select_related("job", "job__model")
        .order_by("job__created_at", "index")
    )
    if not slots:
        batch.delete()  # every job was removed or canceled meanwhile
        return None
    client = get_batch_client(batch.model)
    lines = []
    for slot in slots:
        # An unsaved request of one slot: the same provider call the normal lane would build.
        probe = ProviderRequest(
            job=slot.job, model=batch.model, provider=batch.model.provider, slot_indexes=[slot.index]
        )
        lines.append(client.line(slot.batch_key, build_request(probe, slot.job)))
    # The intent, committed before the create goes: from here a lost answer is looked for, not resent.
    # Conditional: a batch the sweep already took back to the draft (this worker looked dead) is
    # not sent from here.
    intended = Batch.objects.filter(pk=batch.pk, state=BatchState.SUBMITTING, create_sent_at__isnull=True).update(
        create_sent_at=timezone.now(), request_count=len(lines)
    )
    if not intended:
        return None
    try:
        status, input_file = client.create(display_name=batch.display_name, lines=lines, input_file=batch.input_file)
    except ProviderError as exc:
        return _create_failed(batch, exc)
    return _batch_sent(batch, status, input_file=input_file)


def _create_failed(batch: Batch, exc: ProviderError) -> float | None:
    if exc.may_have_been_received:
        # Google may hold it: batches_sweep looks it up by name once the grace has passed.
        Batch.objects.filter(pk=batch.pk).update(error=LOST_CREATE_WAITING)
        logger.warning("batch %s: the create's answer was lost (%s); it will be looked up by name", batch.pk, exc)
        return None
    if exc.permanent:
        Batch.objects.filter(pk=batch.pk).update(
            state=BatchState.FAILED, error=exc.message[:300], ended_at=timezone.now()
        )
        _close_jobs(Batch.objects.get(pk=batch.pk), BatchState.FAILED, exc.message)
        return None
    # Nothing reached Google: back to the draft, which the sweep sends again by size or age.
    Batch.objects.filter(pk=batch.pk).update(
        state=BatchState.DRAFT, create_sent_at=None, error=f"Could not send the batch: {exc.message}"[:300]
    )
    return None


def _batch_sent(batch: Batch, status, *, input_file: str, note: str = "") -> float | None:
    now = timezone.now()
    state = _PROVIDER_STATES.get(status.state, BatchState.PENDING)
    if state not in SENT_BATCH_STATES:
        state = BatchState.RUNNING  # already ended: the first poll reads its results
    first = poll_interval(0)
    with transaction.atomic():
        sent = Batch.objects.filter(pk=batch.pk, state=BatchState.SUBMITTING).update(
            state=state,
            name=status.name,
            provider_state=status.raw_state,
            input_mode=BatchInput.FILE if input_file else BatchInput.INLINE,
            input_file=input_file,
            submitted_at=now,
            next_poll_at=now + timedelta(seconds=first),
            error=note,
            updated_at=now,
        )
        if not sent:
            return None
        jobs = GenerationJob.objects.filter(batch=batch, status=JobStatus.QUEUED)
        ImageSlot.objects.filter(job__in=jobs, status=SlotStatus.PENDING).update(
            status=SlotStatus.RUNNING, attempts=F("attempts") + 1
        )
        jobs.update(status=JobStatus.RUNNING, started_at=now, updated_at=now)
    return _countdown_for(first)


def batch_recover(batch_id: uuid.UUID | str) -> float | None:
    """A batch left SUBMITTING: find it by its display name. Creation is not idempotent, so a
    create that may have reached Google is never sent again: it is looked for until
    BATCH_LOST_CREATE_GIVE_UP_SECONDS, then its images fail (refunded, Retry failed offered)."""
    batch = Batch.objects.select_related("model").filter(pk=batch_id, state=BatchState.SUBMITTING, name="").first()
    if batch is None:
        return None
    if batch.create_sent_at is None:
        # The worker died before the create went: nothing was sent.
        Batch.objects.filter(pk=batch.pk, state=BatchState.SUBMITTING).update(state=BatchState.DRAFT)
        return None
    try:
        found = get_batch_client(batch.model).find(batch.display_name)
    except ProviderError as exc:
        logger.warning("batch %s: could not list batches to find it (%s)", batch.pk, exc)
        return None
    if found is not None:
        return _batch_sent(batch, found, input_file=batch.input_file, note=LOST_CREATE_FOUND)
    waited = (timezone.now() - batch.create_sent_at).total_seconds()
    if waited < settings.BATCH_LOST_CREATE_GIVE_UP_SECONDS:
        return None  # Google's list may not show it yet: the next sweep looks again
    logger.warning("batch %s: not found by its name %.0f s after its lost create; failing it", batch.pk, waited)
    batch_finish(batch, state=BatchState.FAILED, error=LOST_CREATE_NOT_FOUND)
    return None


# --- polling and the end ---------------------------------------------------------------------


def batch_poll(batch_id: uuid.UUID | str) -> float | None:
    """Look at a sent batch when it is due; returns the countdown of the next look, or None."""
    batch = Batch.objects.select_related("model").filter(pk=batch_id).first()
    if batch is None or batch.state not in (BatchState.PENDING, BatchState.RUNNING) or not batch.name:
        return None
    now = timezone.now()
    if batch.next_poll_at and (batch.next_poll_at - now).total_seconds() > DUE_TOLERANCE_SECONDS:
        return _countdown_for((batch.next_poll_at - now).total_seconds())
    age = (now - (batch.submitted_at or batch.created_at)).total_seconds()
    wait = poll_interval(age)
    # Due again later whatever happens below: a crash here costs one interval.
    Batch.objects.filter(pk=batch.pk).update(
        polls=F("polls") + 1, next_poll_at=now + timedelta(seconds=wait), updated_at=now
    )
    client = get_batch_client(batch.model)
    try:
        status = client.get(batch.name)
    except ProviderError as exc:
        if exc.permanent:
            Batch.objects.filter(pk=batch.pk).update(error=f"Google no longer knows this batch: {exc.message}"[:300])
            batch_finish(batch, state=BatchState.FAILED, error=exc.message)
            return None
        return _countdown_for(wait)
    Batch.objects.filter(pk=batch.pk).update(
        provider_state=status.raw_state,
        request_count=status.request_count or batch.request_count,
        succeeded_count=status.succeeded_count,
        failed_count=status.failed_count,
        output_file=status.responses_file,
    )
    state = _PROVIDER_STATES.get(status.state)
    if state in (BatchState.PENDING, BatchState.RUNNING):
        Batch.objects.filter(pk=batch.pk, state__in=[BatchState.PENDING, BatchState.RUNNING]).update(state=state)
        return _countdown_for(wait)
    if state is None or (state == BatchState.SUCCEEDED and not status.has_results):
        # Key on done and state: results may trail the first SUCCEEDED answer.
        return _countdown_for(wait)
    batch_finish(batch, state=state, status=status, client=client, error=status.error)
    return None


def batch_finish(batch: Batch, *, state: str, status=None, client=None, error: str = "") -> None:
    """Store each result in exactly its slot, fail the slots that got none, close the jobs, and
    end the batch (once; a second run finds the slots final and stores nothing)."""
    if status is not None and status.has_results:
        slots = {
            s.batch_key: s
            for s in ImageSlot.objects.filter(job__batch=batch).exclude(batch_key="").select_related("job")
        }
        for result in client.results(status):
            slot = slots.pop(result.key, None)
            if slot is None or slot.status in FINAL_SLOT_STATUSES:
                continue  # an unknown key, a repeated line or an image stored by an earlier run
            if result.image is not None:
                slot_store(job=slot.job, slot=slot, image=result.image, model=batch.model)
            else:
                slot_fail(slot.pk, slot.job_id, result.error, permanent=result.permanent)
    _close_jobs(batch, state, error)
    counts = ImageSlot.objects.filter(job__batch=batch).aggregate(
        ok=Count("id", filter=Q(status=SlotStatus.SUCCEEDED)), bad=Count("id", filter=Q(status=SlotStatus.FAILED))
    )
    if state == BatchState.SUCCEEDED and counts["bad"]:
        state = BatchState.PARTIAL
    now = timezone.now()
    Batch.objects.filter(pk=batch.pk, state__in=[BatchState.PENDING, BatchState.RUNNING, BatchState.SUBMITTING]).update(
        state=state,
        succeeded_count=counts["ok"],
        failed_count=counts["bad"],
        error=(error or "")[:300],
        ended_at=now,
        next_poll_at=None,
        updated_at=now,
    )
    if client is not None and batch.name:
        # Its results are stored: Google keeps a finished batch (and its prompts) until it is deleted.
        try:
            client.delete(batch.name)
        except ProviderError as exc:
            logger.warning("batch %s: could not delete %s at Google (%s)", batch.pk, batch.name, exc)


def _close_jobs(batch: Batch, state: str, error: str) -> None:
    reason = _NO_RESULT.get(state, _NO_RESULT[BatchState.FAILED])
    if state == BatchState.FAILED and error:
        reason = f"{reason}: {error}"[:300]
    elif state == BatchState.FAILED:
        reason += "."
    for slot in ImageSlot.objects.filter(job__batch=batch).exclude(status__in=FINAL_SLOT_STATUSES):
        slot_fail(slot.pk, slot.job_id, reason)
    for job_id in GenerationJob.objects.filter(batch=batch).values_list("pk", flat=True):
        # Refunds a job that got no image (finish.job_finish_if_done).
        job_finish_if_done(job_id)


def batch_cancel(*, batch: Batch) -> None:
    """The user's cancel of a sent batch: asked of Google by a task; the poller sees it end."""
    if batch.state not in (BatchState.PENDING, BatchState.RUNNING) or not batch.name:
        raise BatchError("Only a batch that was sent and has not ended can be cancelled.")
    Batch.objects.filter(pk=batch.pk).update(cancel_requested=True, updated_at=timezone.now())
    enqueue.batch_cancel(batch.pk)


def batch_provider_cancel(batch_id: uuid.UUID | str) -> float | None:
    batch = Batch.objects.select_related("model").filter(pk=batch_id).first()
    if batch is None or not batch.name or batch.is_final:
        return None
    try:
        get_batch_client(batch.model).cancel(batch.name)
    except ProviderError as exc:
        Batch.objects.filter(pk=batch.pk).update(cancel_requested=False, error=f"Could not cancel: {exc.message}"[:300])
        return None
    # Look soon: the cancel shows in the next poll.
    Batch.objects.filter(pk=batch.pk).update(next_poll_at=timezone.now())
    return 0.0


# --- beat --------------------------------------------------------------------------------------


@dataclass
class BatchSweep:
    submit: list[str] = field(default_factory=list)
    poll: list[str] = field(default_factory=list)
    recover: list[str] = field(default_factory=list)


def batches_sweep(now=None) -> BatchSweep:
    """What beat sends: drafts due by size or age, polls that are due, lost creates to look up."""
    now = now or timezone.now()
    plan = BatchSweep()
    old_enough = now - timedelta(minutes=settings.BATCH_AUTO_SUBMIT_MINUTES)
    drafts = Batch.objects.filter(state=BatchState.DRAFT).filter(
        Q(created_at__lt=old_enough) | Q(request_count__gte=settings.BATCH_AUTO_SUBMIT_REQUESTS)
    )
    plan.submit = [str(pk) for pk in drafts.values_list("pk", flat=True)]
    due = Batch.objects.filter(state__in=[BatchState.PENDING, BatchState.RUNNING]).filter(
        Q(next_poll_at__lte=now) | Q(next_poll_at__isnull=True)
    )
    plan.poll = [str(pk) for pk in due.values_list("pk", flat=True)]
    grace = now - timedelta(seconds=settings.BATCH_LOST_CREATE_GRACE_SECONDS)
    lost = Batch.objects.filter(state=BatchState.SUBMITTING, name="").filter(
        Q(create_sent_at__lt=grace) | Q(create_sent_at__isnull=True, updated_at__lt=grace)
    )
    plan.recover = [str(pk) for pk in lost.values_list("pk", flat=True)]
    return plan


# --- notifications -----------------------------------------------------------------------------


def batches_take_notifications(user) -> list[Batch]:
    """Batches that ended since the user's last page: each is toasted once."""
    ended = list(
        Batch.objects.filter(owner=user, ended_at__isnull=False, notified_at__isnull=True).select_related("model")
    )
    if ended:
        Batch.objects.filter(pk__in=[b.pk for b in ended]).update(notified_at=timezone.now())
    return ended


def batches_mark_seen(user) -> None:
    """The user looked at the queue: the badge clears."""
    Batch.objects.filter(owner=user, ended_at__isnull=False, seen_at__isnull=True).update(seen_at=timezone.now())
