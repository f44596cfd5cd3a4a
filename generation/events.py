"""Pipeline events: the one place the pipeline reports what happened.

Each function writes one log line on the `generation.events` logger, with the job, slot and request
ids, the provider, the duration and the outcome as fields (one JSON object per line when
LOG_FORMAT=json, studio/log_format.py), and moves the Prometheus metrics in generation.metrics. Ids go
only in the log line, never in a metric label. A slot's outcome and a job finished also reach the
owner's open pages (generation.progress); a new job's card comes with the answer to Generate.

Provider error text passes through http_api.sanitize_message before it is logged: a provider may
echo a key or a presigned URL back.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from generation import metrics, progress
from generation.providers.base import ProviderError
from generation.providers.http_api import sanitize_message

if TYPE_CHECKING:
    from generation.models import GenerationJob

logger = logging.getLogger("generation.events")

OK = "ok"
PERMANENT = "permanent"
RETRYABLE = "retryable"
RATE_LIMITED = "rate_limited"


def _report(event: str, **fields: Any) -> None:
    fields = {key: str(value) if isinstance(value, uuid.UUID) else value for key, value in fields.items()}
    text = " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, ""))
    logger.info("%s %s", event, text, extra={"event": event, **fields})


def error_class(exc: ProviderError) -> str:
    """permanent, rate_limited (a 429) or retryable: what the pipeline does next depends on it."""
    if exc.permanent:
        return PERMANENT
    if exc.status_code == 429:
        return RATE_LIMITED
    return RETRYABLE


def job_created(job: GenerationJob) -> None:
    metrics.JOBS_CREATED.labels(kind=job.kind).inc()
    _report(
        "job_created",
        job_id=job.pk,
        kind=job.kind,
        provider=job.provider,
        model=job.model.key,
        images=job.images_requested,
    )


def job_finished(job: GenerationJob, *, status: str, spend_by_provider: dict[str, Decimal]) -> None:
    """A job closed with `status`; `spend_by_provider` is what its stored images cost, in USD."""
    metrics.JOBS_FINISHED.labels(status=status, kind=job.kind).inc()
    for provider, usd in spend_by_provider.items():
        if usd:
            metrics.SPEND_USD.labels(provider=provider).inc(float(usd))
    seconds = round((timezone.now() - job.created_at).total_seconds(), 3) if job.created_at else None
    _report(
        "job_finished",
        job_id=job.pk,
        kind=job.kind,
        status=status,
        provider=job.provider,
        seconds=seconds,
        usd=str(sum(spend_by_provider.values(), Decimal("0"))),
    )
    progress.job_changed(job.pk, owner_id=job.owner_id)


def slot_outcome(
    *, job_id: uuid.UUID, slot_id: int, provider: str, outcome: str, error: str = "", owner_id: int | None = None
) -> None:
    """One image ended: outcome is "succeeded" or "failed"; `owner_id` spares progress a read."""
    metrics.IMAGES.labels(provider=provider, outcome=outcome).inc()
    _report("slot_" + outcome, job_id=job_id, slot_id=slot_id, provider=provider, outcome=outcome, error=_safe(error))
    progress.job_changed(job_id, owner_id=owner_id)


def image_stored(*, job_id: uuid.UUID, slot_index: int, provider: str, seconds: float, size: int) -> None:
    metrics.IMAGE_STORE_SECONDS.labels(provider=provider).observe(seconds)
    _report(
        "image_stored", job_id=job_id, slot_index=slot_index, provider=provider, seconds=round(seconds, 3), bytes=size
    )


def provider_call(
    provider: str,
    op: str,
    seconds: float,
    outcome: str,
    error_class: str = "",
    *,
    job_id: uuid.UUID | None = None,
    request_id: uuid.UUID | None = None,
    error: str = "",
) -> None:
    """One call to a provider's API: op is submit, poll or recover; outcome ok or the error class."""
    metrics.PROVIDER_CALL_SECONDS.labels(provider=provider, op=op, outcome=outcome).observe(seconds)
    if error_class:
        metrics.PROVIDER_ERRORS.labels(provider=provider, op=op, error_class=error_class).inc()
    _report(
        "provider_call",
        job_id=job_id,
        request_id=request_id,
        provider=provider,
        op=op,
        seconds=round(seconds, 3),
        outcome=outcome,
        error_class=error_class,
        error=_safe(error),
    )


def sweeper_recovered(kind: str, n: int) -> None:
    """The sweeper found `n` pieces of lost work; kind: dispatch, submit, poll, recover or failed_jobs."""
    if n:
        metrics.SWEEPER_RECOVERIES.labels(kind=kind).inc(n)
        _report("sweeper_recovered", kind=kind, n=n)


def credits(kind: str, n: int, *, job_id: uuid.UUID | None = None) -> None:
    """`n` credits moved for a job; kind: charged or refunded."""
    metrics.CREDITS.labels(kind=kind).inc(n)
    _report("credits", kind=kind, n=n, job_id=job_id)


def _safe(text: str) -> str:
    return sanitize_message(text) if text else ""
