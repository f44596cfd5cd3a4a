"""Running a job: plan provider requests, submit them, poll them, and apply their results.

Every step is keyed on ids and guarded by conditional UPDATEs, so a task delivered twice, a
sweeper re-drive or a late webhook can run any step again without a second asset, a second
charge or a finished job moving back.
"""

from __future__ import annotations

import logging
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from generation import limits
from generation.models import (
    ACTIVE_JOB_STATUSES,
    GenerationJob,
    ImageSlot,
    JobStatus,
    ProviderRequest,
    RequestStatus,
    SlotStatus,
)
from generation.providers import get_provider
from generation.providers.base import GenerationRequest, ProviderError, ProviderResult, Reference, ResultStatus
from generation.services.finish import job_finish_if_done, slot_fail
from generation.services.store import slot_store
from studio.models import WorkspaceAsset

logger = logging.getLogger(__name__)

# A provider at its concurrency limit is tried again this soon (plus jitter).
LIMIT_WAIT_SECONDS = 0.25


@dataclass(frozen=True)
class Next:
    """What the task should do after a step: nothing, submit again later, or poll later."""

    action: str = "done"  # "done" | "submit" | "poll"
    countdown: float = 0.0


DONE = Next()


def _countdown(seconds: float) -> float:
    return round(max(0.0, min(float(seconds), settings.PIPELINE_MAX_COUNTDOWN)), 3)


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
    chunk = max(1, job.model.max_images)
    created: list[uuid.UUID] = []
    with transaction.atomic():
        slots = list(
            ImageSlot.objects.select_for_update()
            .filter(job=job, status=SlotStatus.PENDING, request__isnull=True)
            .order_by("index")
        )
        for start in range(0, len(slots), chunk):
            group = slots[start : start + chunk]
            request = ProviderRequest.objects.create(
                job=job, model=job.model, provider=job.model.provider, slot_indexes=[s.index for s in group]
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
        # Presigned storage (S3) gives a fresh short-lived URL on every call; local disk gives none.
        url = asset.file.url if getattr(asset.file.storage, "querystring_auth", False) else None
        references.append(Reference(data=data, content_type=asset.content_type, url=url, key=asset.file.name))
    return references


def build_request(request: ProviderRequest, job: GenerationJob) -> GenerationRequest:
    slots = list(ImageSlot.objects.filter(job=job, index__in=request.slot_indexes).order_by("index"))
    indexes = [s.index for s in slots]
    params = {k: v for k, v in (job.params or {}).items() if k not in {"seed", "denoise", "reference_strength"}}
    params["attempt"] = max((s.attempts for s in slots), default=1)
    base_seed = (job.params or {}).get("seed")
    return GenerationRequest(
        prompt=job.final_prompt or job.prompt,
        num_images=len(indexes),
        negative_prompt=job.negative_prompt,
        # One seed per request: fan-out requests must not all draw the same picture.
        seed=None if base_seed is None else (int(base_seed) + (indexes[0] if indexes else 0)) % 2**31,
        references=_references(job) if job.references else [],
        strength=(job.params or {}).get("denoise"),
        params=params,
        batch_indexes=indexes,
        request_id=str(request.pk),
    )


# --- submit and poll ------------------------------------------------------------------------


def request_submit(request_id: uuid.UUID | str) -> Next:
    request = ProviderRequest.objects.select_related("job", "model").filter(pk=request_id).first()
    if request is None:
        return DONE
    job = request.job
    if job.status not in ACTIVE_JOB_STATUSES:
        _request_close(request, RequestStatus.CANCELED)
        return DONE
    if request.status == RequestStatus.SUBMITTED and request.external_id:
        return Next("poll", 0)  # a duplicate delivery: resume waiting, never create twice
    if request.status != RequestStatus.PENDING:
        return DONE

    with limits.provider_slot(request.provider) as got_slot:
        if not got_slot:
            wait = max(LIMIT_WAIT_SECONDS, limits.cooldown_remaining(request.provider))
            return Next("submit", _countdown(wait + random.uniform(0, LIMIT_WAIT_SECONDS)))
        claimed = ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.SUBMITTED, attempts=F("attempts") + 1, updated_at=timezone.now()
        )
        if not claimed:
            return DONE
        request.refresh_from_db()
        provider = get_provider(request.model)
        try:
            result = provider.submit(build_request(request, job))
        except ProviderError as exc:
            return _request_error(request, exc)
    return _request_progress(request, result)


def request_poll(request_id: uuid.UUID | str) -> Next:
    request = ProviderRequest.objects.select_related("job", "model").filter(pk=request_id).first()
    if request is None or request.status != RequestStatus.SUBMITTED:
        return DONE
    job = request.job
    if job.status not in ACTIVE_JOB_STATUSES:
        _request_close(request, RequestStatus.CANCELED)
        return DONE
    ProviderRequest.objects.filter(pk=request.pk).update(polls=F("polls") + 1, updated_at=timezone.now())
    provider = get_provider(request.model)
    try:
        result = provider.poll(build_request(request, job), request.external_id, request.handles)
    except ProviderError as exc:
        if exc.permanent:
            return _request_error(request, exc)
        # A failed status check says nothing about the generation itself: just look again later.
        return Next("poll", backoff_seconds(min(request.polls + 1, 5), exc.retry_after))
    return _request_progress(request, result)


def _request_progress(request: ProviderRequest, result: ProviderResult) -> Next:
    if result.status == ResultStatus.PENDING:
        ProviderRequest.objects.filter(pk=request.pk).update(
            external_id=result.external_id or request.external_id,
            handles=result.handles or request.handles,
            updated_at=timezone.now(),
        )
        interval = (
            result.poll_after if result.poll_after is not None else get_provider(request.model).default_poll_interval
        )
        return Next("poll", _countdown(interval))
    request_apply_result(request, result)
    return DONE


def _request_error(request: ProviderRequest, exc: ProviderError) -> Next:
    """Retry a transient error with backoff; fail the request's slots on a permanent one."""
    if exc.retry_after and exc.status_code == 429:
        limits.cooldown(request.provider, exc.retry_after)
    attempts = ProviderRequest.objects.values_list("attempts", flat=True).get(pk=request.pk)
    if exc.may_have_been_received and get_provider(request.model).asynchronous:
        # A queue API may have accepted the submit we lost the answer to: submitting again could
        # run and bill a second generation, so the user decides (Retry failed) instead.
        _request_fail(
            request,
            "The provider stopped answering while the request was sent; it was not repeated, to avoid "
            "paying twice. Use Retry failed to try again.",
            str(exc),
        )
        return DONE
    if not exc.permanent and attempts < settings.PIPELINE_MAX_ATTEMPTS:
        ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED).update(
            status=RequestStatus.PENDING, error=str(exc)[:300], updated_at=timezone.now()
        )
        logger.info("provider %s: retrying request %s after: %s", request.provider, request.pk, exc)
        return Next("submit", backoff_seconds(attempts, exc.retry_after))
    message = str(exc) if exc.permanent else f"The provider kept failing: {exc}"
    _request_fail(request, message, exc.details)
    return DONE


def _request_close(request: ProviderRequest, status: str, error: str = "") -> None:
    ProviderRequest.objects.filter(pk=request.pk).exclude(
        status__in=[RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELED]
    ).update(status=status, error=error[:300], updated_at=timezone.now())


def _request_fail(request: ProviderRequest, error: str, details: str = "") -> None:
    _request_close(request, RequestStatus.FAILED, error)
    for slot in ImageSlot.objects.filter(job_id=request.job_id, request=request):
        slot_fail(slot.pk, request.job_id, error, details)
    job_finish_if_done(request.job_id)


def request_apply_result(request: ProviderRequest, result: ProviderResult) -> None:
    """Store what a finished provider call returned, one asset per image, in batch order."""
    job = GenerationJob.objects.select_related("model").get(pk=request.job_id)
    if result.status != ResultStatus.SUCCEEDED:
        if result.status == ResultStatus.CANCELED and job.status == JobStatus.CANCELED:
            _request_close(request, RequestStatus.CANCELED)
            return
        _request_fail(request, result.error or "The provider could not make this image.")
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
    _store_all(job, work)
    _request_close(request, RequestStatus.SUCCEEDED)
    job_finish_if_done(job.pk)


def _store_all(job: GenerationJob, work: list) -> None:
    """Store several images at once: decoding and encoding release the GIL, and a native x4 should
    cost about what x1 does."""
    if len(work) <= 1 or connection.vendor == "sqlite":
        for slot, image in work:
            slot_store(job=job, slot=slot, image=image)
        return

    def store(item: tuple) -> None:
        try:
            slot_store(job=job, slot=item[0], image=item[1])
        finally:
            close_old_connections()
            connection.close()

    with ThreadPoolExecutor(max_workers=min(4, len(work))) as pool:
        list(pool.map(store, work))
