"""The GPU worker's service: run the local model's waiting requests, several jobs' in one call.

A gpu_batch_task names one request; the worker then drains what waits. Each round takes the
oldest waiting request (the named one first), adds every other waiting request whose call
settings are equal (model, size, steps, guidance, txt2img or img2img, and img2img's strength)
until the model's batch limit (the registry row's max_images, which staff set) is full, claims
them, makes one pipeline call, and hands each request its own images in its own order through
generation.services.runs.request_apply_result, the path every provider's result takes.

A claim is a cache entry naming this worker process (generation.providers.local_sdxl); while it
is held the request's polls wait. A worker killed mid-batch leaves claims whose process no longer
beats: the polls send those requests to the queue again and another worker reclaims them. Nothing
was stored for them, and request_apply_result stores a slot at most once, so no asset is doubled.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from generation import events
from generation.gpu.params import PlannedRequest, plan_request
from generation.models import ACTIVE_JOB_STATUSES, ProviderRequest, RequestStatus
from generation.providers.base import GeneratedImage, ProviderError, ProviderResult, ResultStatus
from generation.providers.local_sdxl import CLAIM_SECONDS, claim_alive, claim_key, read_claim
from generation.providers.offline import encode_png
from generation.services import runs

logger = logging.getLogger(__name__)

PROVIDER = "local"
# Waiting requests looked at per round: enough to fill any batch, few enough to read quickly.
SCAN_LIMIT = 64
# Rounds per task: a busy queue is drained by the tasks its requests sent, not by one task forever.
MAX_ROUNDS = 16

_runner = None
_identity: dict = {}


def start_worker(source: str | None = None):
    """Load the pipeline (at worker start: the first beat then says the model is loaded)."""
    global _runner
    from generation.gpu.runner import SdxlRunner

    source = source or settings.LOCAL_SDXL_MODEL
    if not source:
        raise ImproperlyConfigured("The GPU worker needs LOCAL_SDXL_MODEL: a diffusers folder or .safetensors file.")
    started = time.monotonic()
    _runner = SdxlRunner.load(source, config=settings.LOCAL_SDXL_CONFIG)
    logger.info("GPU worker: %s loaded on %s in %.1fs", source, _runner.device, time.monotonic() - started)
    return _runner


def use_runner(runner) -> None:
    """Hand this process a runner already loaded (tests, the benchmark)."""
    global _runner
    _runner = runner


def runner():
    return _runner if _runner is not None else start_worker()


def identity() -> dict:
    """This worker process, as heartbeat.record_worker names it (Celery's hostname when known)."""
    if not _identity:
        _identity.update(host=f"celery@{socket.gethostname()}", pid=os.getpid())
    return _identity


def set_identity(host: str, pid: int) -> None:
    _identity.update(host=host, pid=pid)


def worker_details() -> dict:
    """What the GPU worker says in its beat: its model and device, and the images waiting."""
    if _runner is None:
        return {}
    waiting = ProviderRequest.objects.filter(
        provider=PROVIDER, status=RequestStatus.SUBMITTED, job__status__in=ACTIVE_JOB_STATUSES
    ).count()
    return {"gpu": True, **_runner.describe(), "waiting": waiting}


@dataclass
class Claimed:
    request: ProviderRequest
    planned: PlannedRequest


def run_batches(request_id: str | None = None) -> int:
    """Run batches until nothing claimable waits (at most MAX_ROUNDS); returns the calls made."""
    calls = 0
    for _ in range(MAX_ROUNDS):
        batch = claim_batch(request_id)
        request_id = None
        if not batch:
            break
        run_batch(batch)
        calls += 1
    return calls


def _waiting(first: str | None) -> list[ProviderRequest]:
    waiting = list(
        ProviderRequest.objects.select_related("job", "model")
        .filter(provider=PROVIDER, status=RequestStatus.SUBMITTED, job__status__in=ACTIVE_JOB_STATUSES)
        .exclude(external_id="")
        .order_by("sent_at", "created_at")[:SCAN_LIMIT]
    )
    if first is not None:
        waiting.sort(key=lambda r: str(r.pk) != str(first))
    return waiting


def _try_claim(request: ProviderRequest) -> bool:
    key = claim_key(str(request.pk))
    me = identity()
    claim = {"host": me["host"], "pid": me["pid"], "at": time.time()}
    if cache.add(key, claim, timeout=CLAIM_SECONDS):
        return True
    held = read_claim(str(request.pk))
    if held is None or claim_alive(held):
        return False
    # Its worker died mid-batch: take it over (only one of several takers wins the add).
    cache.delete(key)
    return cache.add(key, claim, timeout=CLAIM_SECONDS)


def _release(request: ProviderRequest) -> None:
    cache.delete(claim_key(str(request.pk)))


def claim_batch(first: str | None = None) -> list[Claimed]:
    """Claim the next batch: the first claimable request and those that can share its call."""
    batch: list[Claimed] = []
    images = 0
    multiple = runner().size_multiple
    for request in _waiting(first):
        claim = read_claim(str(request.pk))
        if claim is not None and claim_alive(claim):
            continue
        try:
            planned = plan_request(
                runs.build_request(request, request.job),
                mode=request.job.mode,
                model_key=request.model.key,
                size_multiple=multiple,
            )
        except ProviderError as exc:
            # Settings this pipeline cannot run (steps x denoise < 1, a bad size): a clear error now.
            if _try_claim(request):
                _apply(request, ProviderResult(status=ResultStatus.FAILED, error=str(exc), permanent=exc.permanent))
            continue
        if batch and (planned.settings != batch[0].planned.settings or request.model_id != batch[0].request.model_id):
            continue
        limit = max(1, request.model.max_images)
        if batch and images + len(planned.seeds) > limit:
            continue
        if not _try_claim(request):
            continue
        request.refresh_from_db(fields=["status"])
        if request.status != RequestStatus.SUBMITTED:  # closed meanwhile (a fallback, a cancel)
            _release(request)
            continue
        batch.append(Claimed(request, planned))
        images += len(planned.seeds)
        if images >= limit:
            break
    return batch


def run_batch(batch: list[Claimed]) -> None:
    """One pipeline call for the batch; each request gets its own images, in its own order."""
    from generation.gpu.runner import ImageJob

    call = batch[0].planned.settings
    images = [
        ImageJob(item.planned.prompt, item.planned.negative_prompt, seed, item.planned.reference)
        for item in batch
        for seed in item.planned.seeds
    ]
    started = time.monotonic()
    try:
        outputs = runner().generate_splitting(call, images)
    except Exception as exc:
        seconds = time.monotonic() - started
        logger.exception("GPU batch of %d image(s) failed", len(images))
        for item in batch:
            events.provider_call(
                PROVIDER,
                "gpu",
                seconds,
                "error",
                "gpu",
                job_id=item.request.job_id,
                request_id=item.request.pk,
                error=str(exc),
            )
            # Not permanent: the images move to the next model of the chain.
            _apply(item.request, ProviderResult(status=ResultStatus.FAILED, error=f"The local GPU failed: {exc}"[:300]))
        return
    seconds = time.monotonic() - started
    position = 0
    for item in batch:
        count = len(item.planned.seeds)
        mine = outputs[position : position + count]
        position += count
        result = ProviderResult(
            status=ResultStatus.SUCCEEDED,
            external_id=item.request.external_id,
            images=[
                GeneratedImage(
                    data=encode_png(image),
                    content_type="image/png",
                    seed=seed,
                    width=image.width,
                    height=image.height,
                    metadata={
                        "engine": "local-sdxl",
                        "steps": call.steps,
                        "denoising_steps": item.planned.denoising_steps,
                        "guidance": call.guidance,
                        "denoise": call.strength,
                        "batch_images": len(images),
                        "batch_requests": len(batch),
                        **item.planned.notes,
                    },
                )
                for image, seed in zip(mine, item.planned.seeds, strict=True)
            ],
        )
        events.provider_call(
            PROVIDER, "gpu", seconds, events.OK, job_id=item.request.job_id, request_id=item.request.pk
        )
        _apply(item.request, result)


def _apply(request: ProviderRequest, result: ProviderResult) -> None:
    try:
        request.refresh_from_db()
        if request.status == RequestStatus.SUBMITTED:
            runs.request_apply_result(request, result)
    finally:
        _release(request)
