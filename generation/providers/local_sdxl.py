"""The local GPU worker as a provider: SDXL on the studio's own GPU (Procfile `worker-gpu`).

Unlike the hosted providers there is no HTTP API: a submit hands the request to the GPU worker's
queue (generation.gpu.batches runs it, batched with other jobs' requests) and answers PENDING;
the ordinary worker's polls are the watchdog. A poll reads only the cache: the GPU workers'
heartbeat (generation.heartbeat.gpu_workers) and the claim a GPU worker holds on the request while
it runs it. It answers

- PENDING while a live GPU worker holds the claim, or while the request waits its turn;
- PENDING and "send it again" when the claim's worker died mid-batch, or the queue message seems
  lost: the request goes back on the GPU queue, and nothing was stored for it yet;
- FAILED (not permanent, so the pipeline moves the images to the next model of the chain) when no
  GPU worker beats, or when the request waited LOCAL_GPU_MAX_WAIT_SECONDS for the GPU.

It imports no torch: the web and the ordinary workers load it.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import cache

from generation import heartbeat
from generation.providers.base import GenerationRequest, Provider, ProviderResult, ResultStatus
from generation.providers.inputs import ensure_batch_fits

# How often the ordinary worker looks at a request the GPU runs.
POLL_SECONDS = 1.0
# An unclaimed request is sent to the GPU queue again after this long (a lost message).
RESEND_SECONDS = 20.0
# A claim outlives its batch only when the worker died; the heartbeat tells that much sooner.
CLAIM_SECONDS = 900
# ProviderResult.metadata flag: put the request on the GPU queue (generation.services.runs).
SEND_TO_GPU = "send_to_gpu"


def claim_key(request_id: str) -> str:
    return f"gpu-claim:{request_id}"


def read_claim(request_id: str) -> dict | None:
    claim = cache.get(claim_key(request_id))
    return claim if isinstance(claim, dict) else None


def claim_alive(claim: dict, workers: list[heartbeat.WorkerSeen] | None = None) -> bool:
    """Whether the GPU worker process that claimed a request still beats (same host, same pid: a
    restarted worker has a new pid and takes the request again)."""
    workers = heartbeat.gpu_workers() if workers is None else workers
    return any(w.hostname == claim.get("host") and w.pid == claim.get("pid") for w in workers)


class LocalSdxl(Provider):
    name = "local"
    asynchronous = True
    default_poll_interval: ClassVar[float] = POLL_SECONDS

    def is_configured(self) -> bool:
        return bool(settings.LOCAL_SDXL_MODEL) or bool(heartbeat.gpu_workers())

    def configuration_hint(self) -> str:
        return "Set LOCAL_SDXL_MODEL and start the GPU worker (Procfile worker-gpu)."

    def health_check(self) -> bool:
        # Routing caches this (generation.services.routing.HEALTH_CACHE_SECONDS); a worker that
        # dies meanwhile is caught by the polls below within POLL_SECONDS.
        return bool(heartbeat.gpu_workers())

    def submit(self, request: GenerationRequest) -> ProviderResult:
        ensure_batch_fits(self.model, request)
        now = time.time()
        return ProviderResult(
            status=ResultStatus.PENDING,
            external_id=f"gpu-{request.request_id}",
            handles={"queued_at": now, "sent_at": now},
            poll_after=POLL_SECONDS,
            metadata={SEND_TO_GPU: True},
        )

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        now = time.time()
        workers = heartbeat.gpu_workers()
        claim = read_claim(request.request_id)
        if claim is not None and claim_alive(claim, workers):
            return self._pending(external_id, handles)
        if not workers:
            return ProviderResult(
                status=ResultStatus.FAILED, external_id=external_id, error="The local GPU worker is not running."
            )
        queued_at = float(handles.get("queued_at", now))
        if claim is None and now - queued_at > settings.LOCAL_GPU_MAX_WAIT_SECONDS:
            return ProviderResult(
                status=ResultStatus.FAILED,
                external_id=external_id,
                error=f"The local GPU was busy for more than {settings.LOCAL_GPU_MAX_WAIT_SECONDS:g} seconds.",
            )
        if claim is not None or now - float(handles.get("sent_at", queued_at)) > RESEND_SECONDS:
            # Its worker died mid-batch (nothing was stored for it), or its message was lost.
            return self._pending(external_id, {**handles, "sent_at": now}, send=True)
        return self._pending(external_id, handles)

    def recover(self, request: GenerationRequest) -> ProviderResult | None:
        # Submitting only queues: a submit whose answer was lost cost nothing, so queue it now.
        return self.submit(request)

    def cancel(self, external_id: str, handles: dict[str, Any]) -> None:
        # A batch in flight finishes; generation.gpu.batches stores nothing for a closed request.
        return None

    @staticmethod
    def _pending(external_id: str, handles: dict[str, Any], *, send: bool = False) -> ProviderResult:
        return ProviderResult(
            status=ResultStatus.PENDING,
            external_id=external_id,
            handles=handles,
            poll_after=POLL_SECONDS,
            metadata={SEND_TO_GPU: True} if send else {},
        )
