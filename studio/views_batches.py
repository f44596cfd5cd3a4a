"""Batch Mode's pages: the batch queue (drafts and sent batches, with Submit now, cancel and removing
a draft's job) and the spend page (what every image cost this month, and what Batch Mode saved).

The queue's live part is one {% partialdef %} the page polls while a batch is open, as job cards do;
the actions are plain POST forms that redirect back with a message, so they work without JavaScript.
Every batch and job is the user's own: another user's id answers 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from generation.models import BatchState
from generation.selectors import batch_for_user, batch_rows, job_for_user, month_start, spend_for
from generation.services.batches import BatchError, batch_cancel, batch_request_submit, batches_mark_seen
from generation.services.control import job_remove_from_batch
from studio.spend_chart import spend_chart
from studio.wording import plural


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@require_GET
def batches_page(request: HtmxHttpRequest) -> HttpResponse:
    rows = batch_rows(request.user)
    # The user is looking at the queue: the badge on its link clears.
    batches_mark_seen(request.user)
    context = {
        "drafts": [r for r in rows if r.batch.state == BatchState.DRAFT],
        "sent": [r for r in rows if r.batch.state != BatchState.DRAFT],
        # Refresh while anything may change: a draft being sent, a batch at the provider.
        "live": any(not r.batch.is_final for r in rows),
        "now": timezone.now(),
    }
    template = "studio/batches.html#batch-live" if request.htmx else "studio/batches.html"
    return render(request, template, context)


def _act(request: HtmxHttpRequest, action: Callable[[], None], done: str) -> HttpResponse:
    """Run one of the user's batch actions; its refusal (BatchError) is the message instead."""
    try:
        action()
    except BatchError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect(reverse("studio:batches"))


@require_POST
def batch_submit_view(request: HtmxHttpRequest, batch_id: uuid.UUID) -> HttpResponse:
    batch = batch_for_user(request.user, batch_id)
    done = f"Sending the batch of {plural(batch.request_count, 'image')} to the provider."
    return _act(request, lambda: batch_request_submit(batch=batch), done)


@require_POST
def batch_cancel_view(request: HtmxHttpRequest, batch_id: uuid.UUID) -> HttpResponse:
    batch = batch_for_user(request.user, batch_id)
    done = "Cancelling the batch. Images that got none are refunded when it ends."
    return _act(request, lambda: batch_cancel(batch=batch), done)


@require_POST
def batch_job_remove(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = job_for_user(request.user, job_id)
    return _act(request, lambda: job_remove_from_batch(job=job), "Removed from the batch; its credit is back.")


@require_GET
def spend_page(request: HtmxHttpRequest) -> HttpResponse:
    since = month_start()
    spend = spend_for(user=request.user, since=since)
    context = {"spend": spend, "since": since, "chart": spend_chart(spend, since=since)}
    return render(request, "studio/spend.html", context)
