"""Running a job: plan provider requests, submit them, poll them, and apply their results.

Every step is keyed on ids and guarded by conditional UPDATEs, so a task delivered twice, a
sweeper re-drive or a late webhook can run any step again without a second asset, a second
charge or a finished job moving back.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from generation import enqueue, events, limits, poll_schedule
from generation.lib import presign
from generation.models import (
    ACTIVE_JOB_STATUSES,
    FINAL_SLOT_STATUSES,
    GenerationJob,
    ImageSlot,
    JobStatus,
    LoraTraining,
    ProviderRequest,
    RequestStatus,
    SlotStatus,
)
from generation.providers import get_provider
from generation.providers.base import (
    GenerationRequest,
    LoraWeight,
    ProviderError,
    ProviderResult,
    Reference,
    ResultStatus,
)
from generation.providers.local_sdxl import SEND_TO_GPU
from generation.selectors import lora_weight
from generation.services import routing
from generation.services.finish import job_finish_if_done, slot_fail
from generation.services.store import slot_store
from generation.services.webhooks import WEBHOOK_POLL_SECONDS, webhook_url_for
from models_registry.models import ApiModel
from studio.models import WorkspaceAsset

logger = logging.getLogger(__name__)

# A provider at its concurrency limit is tried again this soon (plus jitter) while its calls'
# length is unknown; then when a slot is expected to free, plus a margin (_slot_wait).
LIMIT_WAIT_SECONDS = 0.25
SLOT_MARGIN_SECONDS = 0.03
SLOT_MIN_WAIT_SECONDS = 0.02
# A presigned reference URL with less life than this left is signed again, for this long: a
# provider may hold the request in its queue for minutes before it fetches the reference.
REFERENCE_URL_MIN_SECONDS = 300
REFERENCE_URL_EXPIRE_SECONDS = 3600


@dataclass(frozen=True)
class Next:
    """What the task should do after a step: nothing, submit again later, or poll later."""

    action: str = "done"  # "done" | "submit" | "poll"
    countdown: float = 0.0
    # A poll the learnt schedule expects to find the request done any moment (request_poll may
    # take it within its own task rather than as a message of its own).
    imminent: bool = False


DONE = Next()

# A step found due less than this far in the future runs now: countdowns are not exact.
DUE_TOLERANCE_SECONDS = 1.0
# The write that records a provider's id is retried across a dropped database connection for
# about this long: losing it would leave a billed generation nobody fetches.
SAVE_RETRY_SECONDS = 5.0

LOST_SUBMIT_ERROR = (
    "The connection to the provider broke while the request was sent; it was not repeated, to avoid "
    "paying twice. Use Retry failed to try again."
)


def _countdown(seconds: float) -> float:
    return round(max(0.0, min(float(seconds), settings.PIPELINE_MAX_COUNTDOWN)), 3)


# Follow-up polls the learnt schedule places this close together run in the same task, for at most
# INLINE_POLL_SECONDS in all: a poll as a task of its own costs a broker round trip and the
# countdown's imprecision (tens of ms each) just when the request is about to finish. The task
# holds its image-queue thread for that long at most (generation.enqueue.IMAGE_TASKS).
# Within the task the looks come every INLINE_POLL_GAP at most (a status GET costs a few ms), not
# at the schedule's growing gaps, which are sized for a task each. A look costs about 6 ms of the
# worker's time; at 40 ms apart the image waited 23 ms on average after it was ready, at 20 ms
# 13 ms, at 10 ms about 8 ms (issue 9's x1 overhead). A provider that pushes its status changes
# (Provider.wait_for_end: fal's status stream) is waited on instead: about 2 ms, in two looks.
INLINE_POLL_MAX_GAP = 0.15
INLINE_POLL_SECONDS = 0.6
INLINE_POLL_GAP = 0.01


def _schedule(request_id: uuid.UUID, step: Next, *, due_in: float | None = None) -> Next:
    """Record when `step` is due (the sweeper re-drives it when it is overdue) and return it with
    a countdown the broker can carry. `due_in` may be longer than any countdown (a provider's
    Retry-After of minutes): the step then runs early, finds itself not yet due and waits again."""
    wait = step.countdown if due_in is None else max(0.0, float(due_in))
    ProviderRequest.objects.filter(pk=request_id).update(
        due_at=timezone.now() + timedelta(seconds=wait), updated_at=timezone.now()
    )
    return Next(step.action, _countdown(wait), step.imminent)


def _not_yet_due(request: ProviderRequest) -> float:
    """Seconds until the request's next step is due, 0 when it is due now."""
    if request.due_at is None:
        return 0.0
    remaining = (request.due_at - timezone.now()).total_seconds()
    return remaining if remaining > DUE_TOLERANCE_SECONDS else 0.0


def _write_through_reconnects(write: Callable[[], int]) -> int:
    """Run one UPDATE that must not be lost, reconnecting while the database drops connections."""
    deadline = time.monotonic() + SAVE_RETRY_SECONDS
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() > deadline:
                raise
            connection.close()
            time.sleep(0.25)


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never below the provider's Retry-After."""
    ceiling = settings.PIPELINE_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after:
        delay = max(delay, retry_after)
    return _countdown(delay)


# --- dispatch -------------------------------------------------------------------------------


def job_dispatch(job_id: uuid.UUID | str) -> list[uuid.UUID]:
    """Plan provider requests for the job's unassigned slots and return their ids to submit.

    Native multi-image models get chunks of at most max_images slots per request; models that
    make one image per call get one request per slot. All of them run concurrently.
    """
    job = GenerationJob.objects.select_related("model").filter(pk=job_id).first()
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return []
    now = timezone.now()
    GenerationJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, updated_at=now, dispatch_attempts=F("dispatch_attempts") + 1
    )
    with transaction.atomic():
        slots = list(
            ImageSlot.objects.select_for_update()
            .filter(job=job, status=SlotStatus.PENDING, request__isnull=True)
            .order_by("index")
        )
        if slots and routing.tried_models(job):
            # A fresh run on the job's own model (Retry failed): the whole fallback chain is open again.
            locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
            params = {k: v for k, v in (locked.params or {}).items() if k != "tried_models"}
            GenerationJob.objects.filter(pk=job.pk).update(params=params)
        return _plan_requests(job=job, model=job.model, slots=slots)


def _plan_requests(*, job: GenerationJob, model: ApiModel, slots: list[ImageSlot]) -> list[uuid.UUID]:
    """Create the requests that run `slots` on `model` (inside the caller's transaction)."""
    created: list[uuid.UUID] = []
    # A profile set's shots each have their own prompt (job_create's `shots`): one request each.
    groups = [[slot] for slot in slots] if (job.params or {}).get("shots") else model.request_chunks(slots)
    for group in groups:
        request = ProviderRequest.objects.create(
            job=job, model=model, provider=model.provider, slot_indexes=[s.index for s in group], due_at=timezone.now()
        )
        ImageSlot.objects.filter(pk__in=[s.pk for s in group]).update(
            request=request, status=SlotStatus.RUNNING, attempts=F("attempts") + 1
        )
        created.append(request.pk)
    return created


# --- building the provider call -------------------------------------------------------------


def _references(job: GenerationJob) -> list[Reference]:
    ids = [r["asset"] for r in job.references or []]
    assets = {str(a.id): a for a in WorkspaceAsset.objects.filter(owner_id=job.owner_id, id__in=ids)}
    seen: set[str] = set()
    references = []
    for asset_id in ids:
        asset = assets.get(asset_id)
        # The same stored file twice (ref1 == ref2) wastes a reference slot and confuses models.
        if asset is None or asset.file.name in seen:
            continue
        seen.add(asset.file.name)
        with asset.file.open("rb") as fh:
            data = fh.read()
        url = _reference_url(asset.file)
        references.append(Reference(data=data, content_type=asset.content_type, url=url, key=asset.file.name))
    return references


def _reference_url(file) -> str | None:
    """A presigned URL the provider can fetch, with at least REFERENCE_URL_MIN_SECONDS to live.

    Local disk gives none (adapters send the bytes instead).
    """
    storage = file.storage
    if not getattr(storage, "querystring_auth", False):
        return None
    url = file.url
    if presign.expires_within(url, seconds=REFERENCE_URL_MIN_SECONDS):
        # The storage's own expiry is short (or its URLs are cached): sign this one for longer.
        url = storage.url(file.name, expire=REFERENCE_URL_EXPIRE_SECONDS)
    return url


def _request_prompt(job: GenerationJob, indexes: list[int]) -> str:
    """The job's final prompt, or for a profile set the prompt of the one shot this request makes."""
    shots = (job.params or {}).get("shots") or []
    if shots and indexes and indexes[0] < len(shots):
        return shots[indexes[0]]["prompt"]
    return job.final_prompt or job.prompt


def build_request(request: ProviderRequest, job: GenerationJob) -> GenerationRequest:
    slots = list(ImageSlot.objects.filter(job=job, index__in=request.slot_indexes).order_by("index"))
    indexes = [s.index for s in slots]
    params = {k: v for k, v in (job.params or {}).items() if k not in {"seed", "denoise", "reference_strength"}}
    params["attempt"] = max((s.attempts for s in slots), default=1)
    # This request's own submit count (1 on the first): adapters whose every answer is billed limit
    # how often a garbled answer is asked for again (gemini.MALFORMED_RESUBMITS).
    params["submit_attempt"] = max(1, request.attempts)
    if request.sent_at is not None:
        # When the submit went out: an adapter looking for a lost submit ignores older ones.
        params["sent_at"] = request.sent_at.timestamp()
    base_seed = (job.params or {}).get("seed")
    params.pop("shots", None)
    lora = params.pop("lora", None)
    return GenerationRequest(
        prompt=_request_prompt(job, indexes),
        num_images=len(indexes),
        negative_prompt=job.negative_prompt,
        # One seed per request: fan-out requests must not all draw the same picture.
        seed=None if base_seed is None else (int(base_seed) + (indexes[0] if indexes else 0)) % 2**31,
        references=_references(job) if job.references else [],
        denoise=(job.params or {}).get("denoise"),
        params=params,
        batch_indexes=indexes,
        request_id=str(request.pk),
        webhook_url=webhook_url_for(request),
        loras=_loras(job, lora),
    )


def _loras(job: GenerationJob, lora: dict | None) -> list[LoraWeight]:
    """The job's LoRA (job_create's `lora`), its URL made now: a presigned one must be fresh."""
    if not lora:
        return []
    training = LoraTraining.objects.filter(pk=lora.get("training"), owner_id=job.owner_id).first()
    if training is None or not training.is_ready:
        raise ProviderError("The character's LoRA is gone: generate without it.", permanent=True)
    return [lora_weight(training, scale=float(lora.get("scale", 1.0)))]


# --- submit and poll ------------------------------------------------------------------------


def request_submit(request_id: uuid.UUID | str) -> Next:
    request = ProviderRequest.objects.select_related("job", "model").filter(pk=request_id).first()
    if request is None:
        return DONE
    job = request.job
    if job.status not in ACTIVE_JOB_STATUSES:
        _request_close(request, RequestStatus.CANCELED)
        limits.give_back(request.provider, str(request.pk))
        return DONE
    if request.status == RequestStatus.SUBMITTED and request.external_id:
        return Next("poll", 0)  # a duplicate delivery: resume waiting, never create twice
    if request.status != RequestStatus.PENDING:
        return DONE
    if _route_away(request):
        limits.give_back(request.provider, str(request.pk))
        return DONE

    # The lease names this request while the call runs: the sweeper tells a submit in flight from
    # one whose worker died by it (limits.submit_in_flight).
    with limits.provider_slot(request.provider, holder=str(request.pk)) as got_slot:
        if not got_slot:
            wait = _slot_wait(request)
            logger.info("provider %s: no free slot for request %s; again in %.2f s", request.provider, request.pk, wait)
            return _schedule(request.pk, Next("submit", wait))
        held_since = time.monotonic()
        now = timezone.now()
        claimed = ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.SUBMITTED, attempts=F("attempts") + 1, sent_at=now, due_at=None, updated_at=now
        )
        if not claimed:
            return DONE
        # What the claim wrote, without reading the row again: only the claim changes a pending row.
        request.status, request.attempts, request.sent_at = RequestStatus.SUBMITTED, request.attempts + 1, now
        request.due_at, request.updated_at = None, now
        provider = get_provider(request.model)
        try:
            result = _provider_call(request, "submit", lambda: provider.submit(build_request(request, job)))
        except ProviderError as exc:
            if not provider.asynchronous and exc.status_code != 429:
                _hand_over_slot(request)  # a 429 holds everyone back (_request_error): no hand-over
            return _request_error(request, exc)
        if result.external_id:
            # Before the lease goes: from here on a crash costs a poll, not a lost generation.
            _save_provider_id(request, result)
        # How long the slot was held, for the waiters' estimate of when one frees (_slot_wait).
        poll_schedule.record_duration(request.model_id, time.monotonic() - held_since, poll_schedule.CALL)
        if not provider.asynchronous:
            # Before the images are stored: the next call need not wait for that.
            _hand_over_slot(request)
    return _request_progress(request, result)


def _hand_over_slot(request: ProviderRequest) -> None:
    """The slot a synchronous call held for seconds is done: hand its lease to the oldest request
    waiting for one and send that now (limits.hand_over), rather than release it for whoever asks
    first, so a waiter is never refused a slot that freed for it. Its own delayed step (the
    backstop, _slot_wait) still comes, finds it sent and does nothing. A request waiting out a
    provider's error (its error is set) is left to its backoff. With no waiter the lease is
    released as usual when the call's provider_slot ends."""
    now = timezone.now()
    waiting = ProviderRequest.objects.filter(
        provider=request.provider, status=RequestStatus.PENDING, error="", due_at__gt=now
    )
    for request_id in waiting.order_by("created_at").values_list("pk", flat=True)[:2]:
        # Conditional: of two workers releasing at once, each wakes a different waiter.
        if ProviderRequest.objects.filter(pk=request_id, due_at__gt=now).update(due_at=now, updated_at=now):
            limits.hand_over(request.provider, str(request.pk), str(request_id))
            enqueue.submit([request_id])
            return


def _slot_wait(request: ProviderRequest) -> float:
    """How long a submit refused a provider slot waits before it tries again: until a slot is
    expected to free for it, counting the requests already waiting ahead of it, so a waiter tries
    about once instead of every quarter second while a synchronous call (Gemini) holds the slot.
    A provider whose calls are not timed yet, or a rate limit or cool-down, gets the short wait."""
    cooling = limits.cooldown_remaining(request.provider)
    call_seconds = poll_schedule.expected_seconds(request.model_id, poll_schedule.CALL)
    if cooling > 0 or call_seconds is None:
        return max(LIMIT_WAIT_SECONDS, cooling) + random.uniform(0, LIMIT_WAIT_SECONDS)
    # First come, first served: every older request still to be sent goes first (those being sent
    # right now included), so waiters refused at the same moment spread over the coming releases
    # instead of all trying the first. One overdue for the sweeper is not waited for.
    ahead = ProviderRequest.objects.filter(
        provider=request.provider,
        status=RequestStatus.PENDING,
        created_at__lt=request.created_at,
        due_at__gt=timezone.now() - timedelta(seconds=settings.SWEEP_GRACE_SECONDS),
    ).count()
    free_in = limits.slot_free_in(request.provider, ahead + 1, call_seconds)
    if not get_provider(request.model).asynchronous:
        # A synchronous call hands its slot to the oldest waiter when it ends (_hand_over_slot):
        # this step is only the backstop (a lost hand-over, a holder that died), a whole call
        # after the expected release so that it does not race the hand-over and be refused.
        free_in += call_seconds
    # A little after the expected release, so the slot is free when the step runs; never 0, so a
    # rate-limited provider is not asked in a tight loop.
    return max(SLOT_MIN_WAIT_SECONDS, free_in + SLOT_MARGIN_SECONDS)


def _provider_call(request: ProviderRequest, op: str, call: Callable[[], ProviderResult | None]):
    """Run one provider API call and report it (generation.events): its duration and outcome."""
    started = time.monotonic()
    try:
        result = call()
    except ProviderError as exc:
        kind = events.error_class(exc)
        seconds = time.monotonic() - started
        events.provider_call(
            request.provider, op, seconds, kind, kind, job_id=request.job_id, request_id=request.pk, error=str(exc)
        )
        raise
    seconds = time.monotonic() - started
    events.provider_call(request.provider, op, seconds, events.OK, job_id=request.job_id, request_id=request.pk)
    return result


def _save_provider_id(request: ProviderRequest, result: ProviderResult) -> None:
    _write_through_reconnects(
        lambda: ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED).update(
            external_id=result.external_id, handles=result.handles or request.handles, updated_at=timezone.now()
        )
    )
    request.external_id = result.external_id
    request.handles = result.handles or request.handles


def request_poll(request_id: uuid.UUID | str, *, now_anyway: bool = False) -> Next:
    """Ask the provider how the request is doing. `now_anyway` (a webhook said it ended) looks
    even while a provider's Retry-After is still running."""
    request = ProviderRequest.objects.select_related("job", "model").filter(pk=request_id).first()
    if request is None or request.status != RequestStatus.SUBMITTED or not request.external_id:
        return DONE
    job = request.job
    if job.status not in ACTIVE_JOB_STATUSES:
        _request_close(request, RequestStatus.CANCELED)
        return DONE
    wait = 0.0 if now_anyway else _not_yet_due(request)
    if wait:
        return Next("poll", _countdown(wait))  # a long Retry-After: not yet
    deadline = time.monotonic() + INLINE_POLL_SECONDS
    built: list[GenerationRequest] = []  # the call is built once for the looks of this task
    waited = False
    while True:
        step = _poll_once(request, job, built)
        if (
            now_anyway
            or not step.imminent
            or step.countdown > INLINE_POLL_MAX_GAP
            or time.monotonic() + step.countdown > deadline
        ):
            return step
        # Once a task: a provider that pushes its status changes is waited on rather than polled,
        # so the end is seen when it comes, not up to a gap later.
        if waited or not get_provider(request.model).wait_for_end(
            request.handles, timeout=max(0.0, deadline - time.monotonic())
        ):
            time.sleep(min(step.countdown, INLINE_POLL_GAP))
        waited = True
        request.polls += 1


def _poll_once(request: ProviderRequest, job: GenerationJob, built: list[GenerationRequest]) -> Next:
    ProviderRequest.objects.filter(pk=request.pk).update(polls=F("polls") + 1, updated_at=timezone.now())
    provider = get_provider(request.model)

    def poll() -> ProviderResult:
        if not built:
            built.append(build_request(request, job))
        return provider.poll(built[0], request.external_id, request.handles)

    try:
        result = _provider_call(request, "poll", poll)
    except ProviderError as exc:
        if exc.permanent:
            return _request_error(request, exc)
        if exc.retry_after and exc.status_code == 429:
            limits.cooldown(request.provider, exc.retry_after)
        # A failed status check says nothing about the generation itself: just look again later,
        # no sooner than the provider asked (a Retry-After of minutes is kept, not cut).
        delay = max(backoff_seconds(min(request.polls + 1, 5)), exc.retry_after or 0.0)
        return _schedule(request.pk, Next("poll"), due_in=delay)
    return _request_progress(request, result)


def _awaiting_webhook(request: ProviderRequest) -> bool:
    """Whether a lost submit's webhook may still come: it was sent with one, not long ago."""
    if not webhook_url_for(request) or request.sent_at is None:
        return False
    return timezone.now() - request.sent_at < timedelta(seconds=settings.LOST_SUBMIT_WEBHOOK_WAIT_SECONDS)


def request_recover(request_id: uuid.UUID | str) -> Next:
    """A submit whose worker died, or whose answer was lost, before the provider's id was saved.

    A synchronous provider is simply asked again (the attempt counter bounds it). A queue API may
    have accepted the lost submit, and a second one could run and bill a second generation: the
    adapter may find the first again (Provider.recover); otherwise the images fail at once, with
    Retry failed offered, rather than wait for the job's deadline.
    """
    request = ProviderRequest.objects.select_related("job", "model").filter(pk=request_id).first()
    if request is None or request.status != RequestStatus.SUBMITTED:
        return DONE
    if request.external_id:
        return _schedule(request.pk, Next("poll"))
    provider = get_provider(request.model)
    if not provider.asynchronous:
        reopened = ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED, external_id="").update(
            status=RequestStatus.PENDING, updated_at=timezone.now()
        )
        return _schedule(request.pk, Next("submit")) if reopened else DONE
    try:
        found = _provider_call(request, "recover", lambda: provider.recover(build_request(request, request.job)))
    except ProviderError as exc:
        logger.info("provider %s: could not look for lost request %s: %s", request.provider, request.pk, exc)
        found = None
    if found is None and _awaiting_webhook(request):
        return DONE  # its webhook names our request; webhooks.webhook_receive adopts it when it comes
    if found is None:
        logger.warning("provider %s: request %s lost its submit answer; failing it", request.provider, request.pk)
        _request_fail(request, LOST_SUBMIT_ERROR)
        return DONE
    if found.external_id:
        _save_provider_id(request, found)
    return _request_progress(request, found)


def _request_progress(request: ProviderRequest, result: ProviderResult) -> Next:
    if result.status == ResultStatus.PENDING:
        if result.metadata.get(SEND_TO_GPU):
            # The local GPU worker runs it (generation.providers.local_sdxl); its polls are the watchdog.
            enqueue.gpu_batch(request.pk)
        interval = result.poll_after if result.poll_after is not None else _poll_in(request)
        if webhook_url_for(request):
            # The webhook announces the end; polling is only the safety net if it never comes.
            interval = max(interval, WEBHOOK_POLL_SECONDS)
        imminent = result.poll_after is None and _finish_expected_by(request, interval)
        # The provider's id and handles and when the poll is due, in one UPDATE (as _schedule does).
        now = timezone.now()
        ProviderRequest.objects.filter(pk=request.pk).update(
            external_id=result.external_id or request.external_id,
            handles=result.handles or request.handles,
            due_at=now + timedelta(seconds=max(0.0, float(interval))),
            updated_at=now,
        )
        return Next("poll", _countdown(interval), imminent)
    if result.status == ResultStatus.SUCCEEDED and request.sent_at and get_provider(request.model).asynchronous:
        # A failure may come back at once: only a finished image teaches how long the model takes.
        seconds = (timezone.now() - request.sent_at).total_seconds()
        # request.polls was read before this poll counted itself: 0 means this was the first look.
        poll_schedule.record_duration(request.model_id, seconds, first_look=request.polls == 0)
    if result.external_id and result.external_id != request.external_id:
        # Finished within the submit call (Replicate's Prefer: wait): keep the provider's id for
        # support and billing questions all the same.
        ProviderRequest.objects.filter(pk=request.pk).update(external_id=result.external_id)
        request.external_id = result.external_id
    request_apply_result(request, result)
    return DONE


def _finish_expected_by(request: ProviderRequest, interval: float) -> bool:
    """Whether the model's learnt duration says the request finishes by its next poll."""
    expected = poll_schedule.expected_seconds(request.model_id)
    if expected is None or request.sent_at is None:
        return False
    elapsed = (timezone.now() - request.sent_at).total_seconds()
    return elapsed + interval >= expected - poll_schedule.LEAD_SECONDS


def _poll_in(request: ProviderRequest) -> float:
    """When to look at a pending request again, its provider having said nothing."""
    elapsed = (timezone.now() - request.sent_at).total_seconds() if request.sent_at else 0.0
    interval = get_provider(request.model).default_poll_interval
    return poll_schedule.next_poll_in(model_id=request.model_id, elapsed=elapsed, interval=interval)


def _request_error(request: ProviderRequest, exc: ProviderError) -> Next:
    """Retry a transient error with backoff; when retries run out on an outage, move the slots to
    the next model of the fallback chain; fail them on a permanent error or with nowhere to go."""
    if exc.retry_after and exc.status_code == 429:
        limits.cooldown(request.provider, exc.retry_after)
    attempts = ProviderRequest.objects.values_list("attempts", flat=True).get(pk=request.pk)
    if exc.may_have_been_received and get_provider(request.model).asynchronous:
        # A queue API may have accepted the submit we lost the answer to: submitting again could
        # run and bill a second generation. Find it again if the adapter can, else fail now.
        return request_recover(request.pk)
    if not exc.permanent and attempts < settings.PIPELINE_MAX_ATTEMPTS:
        ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED).update(
            status=RequestStatus.PENDING, error=str(exc)[:300], updated_at=timezone.now()
        )
        logger.info("provider %s: retrying request %s after: %s", request.provider, request.pk, exc)
        return _schedule(request.pk, Next("submit", backoff_seconds(attempts, exc.retry_after)))
    message = str(exc) if exc.permanent else f"The provider kept failing: {exc}"
    if not exc.permanent:
        if exc.status_code is None or exc.status_code >= 500:
            # Down, not refusing (connection errors, 5xx): spare the next jobs the same retries.
            routing.provider_mark_unhealthy(request.provider)
        # Down, or rate-limiting us for longer than the retries (a 429 storm): run these images
        # on the next model of the chain. Safety blocks and bad input are permanent and stay.
        if _request_fallback(request, message):
            return DONE
    _request_fail(request, message, exc.details, permanent=exc.permanent)
    return DONE


def _request_close(request: ProviderRequest, status: str, error: str = "") -> bool:
    """Close the request unless it is closed already; True for the call that closed it."""
    return bool(
        ProviderRequest.objects.filter(pk=request.pk)
        .exclude(status__in=[RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELED])
        .update(status=status, error=error[:300], updated_at=timezone.now())
    )


def _request_fail(request: ProviderRequest, error: str, details: str = "", *, permanent: bool = False) -> None:
    """Fail the request's open slots; `permanent` when the same request would fail again (a
    refused prompt, invalid input): the card then offers no Retry failed for them."""
    _request_close(request, RequestStatus.FAILED, error)
    for slot in ImageSlot.objects.filter(job_id=request.job_id, request=request):
        slot_fail(slot.pk, request.job_id, error, details, permanent=permanent)
    job_finish_if_done(request.job_id)


def request_apply_result(request: ProviderRequest, result: ProviderResult) -> None:
    """Store what a finished provider call returned, one asset per image, in batch order."""
    job = GenerationJob.objects.select_related("model").get(pk=request.job_id)
    if result.status != ResultStatus.SUCCEEDED:
        if result.status == ResultStatus.CANCELED and job.status == JobStatus.CANCELED:
            _request_close(request, RequestStatus.CANCELED)
            return
        error = result.error or "The provider could not make this image."
        # The provider took the request and says a retry may work (an infrastructure failure, a
        # timeout): another model may. A refusal of the prompt or input is permanent and stays.
        if result.status == ResultStatus.FAILED and not result.permanent and _request_fallback(request, error):
            return
        _request_fail(request, error, permanent=result.permanent)
        return
    slots = list(ImageSlot.objects.filter(job=job, request=request).order_by("index"))
    work = []
    for position, slot in enumerate(slots):
        image = result.images[position] if position < len(result.images) else None
        if image is None:
            got = len(result.images)
            slot_fail(slot.pk, job.pk, f"The provider returned {got} of {len(slots)} images.")
        elif image.error:
            slot_fail(slot.pk, job.pk, image.error)
        else:
            work.append((slot, image))
    _store_all(job, work, model=request.model)
    _request_close(request, RequestStatus.SUCCEEDED)
    if (
        request.provider != job.provider
        and ImageSlot.objects.filter(job=job, request=request, status=SlotStatus.SUCCEEDED).exists()
    ):
        # After a fallback the job names the provider that served its latest images.
        GenerationJob.objects.filter(pk=job.pk).update(provider=request.provider)
        job.provider = request.provider
    job_finish_if_done(job.pk, job=job)


# Store threads live as long as the worker: each keeps its database connection across jobs (a
# fresh PostgreSQL connection per image cost more CPU than the image). Created on first use.
STORE_THREADS = 4
_store_pool: ThreadPoolExecutor | None = None
_store_pool_lock = threading.Lock()


def _store_executor() -> ThreadPoolExecutor:
    global _store_pool
    with _store_pool_lock:
        if _store_pool is None:
            _store_pool = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="store")
        return _store_pool


def store_pool_shutdown() -> None:
    """Stop the store threads; their connections close with them (a test run's last step, so its
    database can be dropped)."""
    global _store_pool
    with _store_pool_lock:
        pool, _store_pool = _store_pool, None
    if pool is not None:
        pool.shutdown(wait=True)
        gc.collect()  # the threads' connections, left behind in their thread-locals


def _store_all(job: GenerationJob, work: list, *, model: ApiModel) -> None:
    """Store several images at once: decoding and encoding release the GIL, and a native x4 should
    cost about what x1 does."""
    if len(work) <= 1 or connection.vendor == "sqlite":
        for slot, image in work:
            slot_store(job=job, slot=slot, image=image, model=model)
        return

    def store(item: tuple) -> None:
        # As a task does (studio/celery.py): drop a connection that died or outlived CONN_MAX_AGE,
        # keep a good one for the next job.
        close_old_connections()
        try:
            slot_store(job=job, slot=item[0], image=item[1], model=model)
        finally:
            close_old_connections()

    list(_store_executor().map(store, work))


# --- fallback -------------------------------------------------------------------------------


def _route_away(request: ProviderRequest) -> bool:
    """Before a submit: move the request to the next model when its provider is unconfigured,
    paused by staff or unhealthy. True when the request was dealt with here (moved, or failed for
    want of a key or because staff paused its provider)."""
    provider = get_provider(request.model)
    configured = provider.is_configured()
    paused = routing.paused_providers().get(request.provider)
    if configured and paused is None and routing.provider_healthy(request.provider):
        return False
    name = request.model.display_name
    if not configured:
        error = f"{name} is not set up on this server."
    elif paused is not None:
        error = f"{name} is paused by staff{': ' + paused if paused else ''}."
    else:
        error = f"{name} is not answering right now."
    if _request_fallback(request, error):
        return True
    if not configured:
        _request_fail(request, f"{error} {provider.configuration_hint()}".strip())
        return True
    if paused is not None:
        # Staff paused it (a billing problem, say): unlike a health mark, never call it anyway.
        _request_fail(request, error)
        return True
    # Unhealthy with nowhere else to go: the mark is only a hint, so try the provider anyway.
    return False


def _request_fallback(request: ProviderRequest, error: str) -> bool:
    """Close the request and run its open slots on the next model of the task's fallback chain.

    Returns False when there is no next model (the caller fails the slots as before). The request
    is closed and its slots re-planned in one transaction, conditional on the request still being
    open, so a duplicate delivery of the step re-plans nothing.
    """
    job = GenerationJob.objects.select_related("model").get(pk=request.job_id)
    # First outside the lock: a health probe may take seconds, and the job row must not wait on it.
    if job.status not in ACTIVE_JOB_STATUSES or routing.next_model(job=job, failed_model=request.model) is None:
        return False
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=request.job_id)
        # Again under the lock: a sibling request's fallback may have used up a model meanwhile.
        model = routing.next_model(job=job, failed_model=request.model)
        if model is None or job.status not in ACTIVE_JOB_STATUSES:
            return False
        if not _request_close(request, RequestStatus.FAILED, error):
            return True  # another delivery of this step closed the request first
        slots = list(
            ImageSlot.objects.select_for_update()
            .filter(job=job, request=request)
            .exclude(status__in=FINAL_SLOT_STATUSES)
            .order_by("index")
        )
        # Only models that failed count as tried: a sibling request of this job (a fan-out) may
        # still move to `model` when it fails in turn.
        tried = list(dict.fromkeys([*routing.tried_models(job), request.model.key]))
        GenerationJob.objects.filter(pk=job.pk).update(
            params={**(job.params or {}), "tried_models": tried}, fallback_attempted=True, updated_at=timezone.now()
        )
        created = _plan_requests(job=job, model=model, slots=slots)
        enqueue.submit(created)
    logger.warning(
        "job %s: %s request %s failed (%s); %d image(s) moved to %s",
        job.pk,
        request.provider,
        request.pk,
        error,
        len(slots),
        model.key,
    )
    return True
