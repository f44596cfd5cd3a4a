"""The operations page for staff: workers, queues, providers (with pause and resume), stuck jobs
(with re-drive) and recent failures.

The live part is one {% partialdef %} the page polls every 2 s, as job cards do; the actions are
plain POST forms that redirect back with a message, so they work without JavaScript. Anyone not
staff gets 404 (the page does not exist for them); LoginRequiredMiddleware sends anonymous users
to the login page first.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from generation import heartbeat, limits, queues
from generation.providers.kinds import PROVIDER_KINDS
from generation.services import ops, routing
from studio.wording import plural

logger = logging.getLogger(__name__)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _require_staff(request: HttpRequest) -> None:
    if not (request.user.is_authenticated and request.user.is_staff):
        raise Http404


@dataclass(frozen=True)
class ProviderRow:
    kind: str
    label: str
    status: str
    cooldown: float
    pause_reason: str | None

    @property
    def paused(self) -> bool:
        return self.pause_reason is not None


def _provider_rows() -> list[ProviderRow]:
    pauses = routing.paused_providers()
    return [
        ProviderRow(
            kind=kind.key,
            label=kind.label,
            status=routing.provider_status(kind.key),
            cooldown=limits.cooldown_remaining(kind.key),
            pause_reason=pauses.get(kind.key),
        )
        for kind in PROVIDER_KINDS.values()
    ]


def _queue_depths() -> tuple[dict[str, int], str]:
    """The depths, or none and why: the page must still show the rest when the broker is down."""
    try:
        return queues.queue_depths(), ""
    except Exception as exc:  # any broker or connection error: shown, not raised
        logger.warning("queue depths unavailable: %s", exc)
        return {}, f"The broker did not answer: {exc}"


def _queue_rows(depths: dict[str, int], workers: list) -> list[dict[str, Any]]:
    """Each queue with its depth and how many live workers consume it: image work waits forever on
    an image queue no worker consumes (the Procfile's `worker-images`)."""
    return [
        {
            "name": name,
            "depth": depth,
            "workers": sum(name in worker.queues for worker in workers),
            "images": name == queues.image_queue(),
        }
        for name, depth in depths.items()
    ]


def _live_context() -> dict[str, Any]:
    depths, queue_error = _queue_depths()
    workers = heartbeat.workers_seen()
    return {
        "workers": workers,
        "queue_rows": _queue_rows(depths, workers),
        "gpu_workers": heartbeat.gpu_workers(),
        "sweep_age": heartbeat.last_sweep_age(),
        "queue_error": queue_error,
        "providers": _provider_rows(),
        "stuck": list(ops.stuck_jobs()),
        "stuck_after": int(ops.stuck_after().total_seconds()),
        "failures": ops.recent_failures(),
    }


@require_GET
def ops_page(request: HtmxHttpRequest) -> HttpResponse:
    """The page; polled every 2 s by htmx for its live part only."""
    _require_staff(request)
    context = _live_context()
    if request.htmx:
        return render(request, "studio/ops.html#ops-live", context)
    context["kinds"] = list(PROVIDER_KINDS.values())
    return render(request, "studio/ops.html", context)


@require_POST
def ops_pause(request: HtmxHttpRequest) -> HttpResponse:
    _require_staff(request)
    kind = request.POST.get("kind", "")
    try:
        routing.provider_pause(kind, reason=request.POST.get("reason", ""), by=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{PROVIDER_KINDS[kind].label} is paused: new work goes to the next model.")
    return redirect("studio:ops")


@require_POST
def ops_resume(request: HtmxHttpRequest) -> HttpResponse:
    _require_staff(request)
    kind = request.POST.get("kind", "")
    if kind not in PROVIDER_KINDS:
        messages.error(request, f"Unknown provider: {kind!r}.")
    elif routing.provider_resume(kind):
        messages.success(request, f"{PROVIDER_KINDS[kind].label} is resumed.")
    else:
        messages.error(request, f"{PROVIDER_KINDS[kind].label} was not paused.")
    return redirect("studio:ops")


@require_POST
def ops_redrive(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    _require_staff(request)
    try:
        plan = ops.job_redrive(job_id)
    except ops.RedriveError as exc:
        messages.error(request, f"Job {job_id}: {exc}")
    else:
        sent = len(plan.dispatch) + len(plan.submit) + len(plan.poll) + len(plan.recover)
        messages.success(request, f"Job {job_id} re-driven: {plural(sent, 'message')} sent.")
    return redirect("studio:ops")
