"""The gallery's live progress: each user's job cards pushed to the page as server-sent events.

The page (templates/studio/_gallery.html) connects with htmx's SSE extension while one of its jobs
runs; every running card swaps itself for the event named after it (`job-<id>`). The pipeline
publishes "job X changed" on its owner's Redis channel (generation.progress); this stream reads
the job again, scoped to the signed-in user, and sends the card as it now is. Another user's
job id, even if one reached this channel, reads as nothing.

- Nothing is lost between subscribing and reading: the stream subscribes first, then reads.
- A reconnect (a network blip, a server restart) resends every job that runs or changed since the
  last event the browser saw (its Last-Event-ID, or the page's `since`), so a job that ended
  meanwhile still shows its final card.
- Silence for HEARTBEAT_SECONDS re-reads the running jobs (a message lost with a Redis restart)
  and keeps proxies from closing an idle connection.
- When none of the user's jobs runs, the stream says `idle` and ends (the page's sse-close); a
  job started later opens it again (static/studio/studio.js). It also ends after
  MAX_STREAM_SECONDS, and the browser reconnects, so no connection lives for ever.

Served on ASGI (Procfile `web`), where an open stream costs no thread. Without Redis (`make run`)
and under WSGI the page never connects and its running cards poll instead (is_live).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta

import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET

from generation import progress
from generation.models import ACTIVE_JOB_STATUSES
from generation.services.credits import credit_account
from studio.job_cards import JobCard, job_card, parse_stream_position, stream_position
from studio.prompt_bar import CHARACTER_SESSION_KEY
from studio.selectors import gallery_jobs

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
MAX_STREAM_SECONDS = 300.0
# How long the browser waits before reconnecting after the stream ends or drops (the SSE `retry`).
RECONNECT_MILLISECONDS = 1000
RECONNECT_AFTER_REDIS_ERROR_MILLISECONDS = 15_000
# Cards changed this long before the last event seen are sent again on a reconnect: the web's
# and the workers' clocks may differ a little, and a card sent twice only swaps in twice.
CLOCK_MARGIN = timedelta(seconds=5)
# A catch-up never sends more cards than one gallery page shows.
CATCH_UP_LIMIT = 50


def is_live(request: HttpRequest) -> bool:
    """Whether this page gets pushed progress: Redis is configured and the page is served on ASGI.

    Under WSGI (runserver, the test server) an open stream would hold a thread and reach the
    browser only when it ends, so the page's running cards poll instead.
    """
    return progress.enabled() and isinstance(request, ASGIRequest)


def card_event(card: JobCard, html: str, position: str) -> str:
    """One server-sent event: named after the card it replaces, data on as many lines as the HTML."""
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: job-{card.job.pk}\nid: {position}\n{data}\n\n"


@require_GET
async def job_events(request: HttpRequest) -> HttpResponse:
    """The signed-in user's job cards as server-sent events (see the module's docstring)."""
    user = await request.auser()
    if not is_live(request):
        # No Redis (nothing would ever be published) or no ASGI: 204 tells EventSource to stop.
        return HttpResponse(status=204)
    seen = request.headers.get("Last-Event-ID") or request.GET.get("since")
    since = parse_stream_position(seen)
    response = StreamingHttpResponse(_stream(request, user, since), content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    # A buffering proxy (nginx) would hold the events back until the stream ends.
    response["X-Accel-Buffering"] = "no"
    return response


async def _stream(request: HttpRequest, user, since: datetime | None) -> AsyncIterator[str]:
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(progress.channel(user.pk))
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        async for event in _events(request, user, since, pubsub):
            yield event
    except redis.RedisError as exc:
        # Redis is away: the cards' backstop poll carries on; the browser tries again later.
        logger.warning("live stream of user %s stopped: %s", user.pk, exc)
        yield f"retry: {RECONNECT_AFTER_REDIS_ERROR_MILLISECONDS}\n\n"
    finally:
        with contextlib.suppress(redis.RedisError):
            await pubsub.aclose()
            await client.aclose()


async def _events(request: HttpRequest, user, since: datetime | None, pubsub) -> AsyncIterator[str]:
    """The stream's events once subscribed: the catch-up, then each change, until idle."""
    read = sync_to_async(_read_cards, thread_sensitive=False)
    started = time.monotonic()
    sent: dict[uuid.UUID, str] = {}
    running: set[uuid.UUID] = set()
    cutoff = since - CLOCK_MARGIN if since else None
    batch = await read(request, user, ids=None, since=cutoff)
    while True:
        for job_id, version, active, event in batch:
            if active:
                running.add(job_id)
            else:
                running.discard(job_id)
            if sent.get(job_id) != version:
                sent[job_id] = version
                yield event
        changed = await _changed_jobs(pubsub, wait=0 if not running else HEARTBEAT_SECONDS)
        if not running and not changed:
            yield "event: idle\ndata: \n\n"
            return
        if time.monotonic() - started > MAX_STREAM_SECONDS:
            return
        if not changed:
            # Silence: keep the connection warm and look at the running jobs again.
            yield ": heartbeat\n\n"
            changed = set(running)
        batch = await read(request, user, ids=changed, since=None)


async def _changed_jobs(pubsub, *, wait: float) -> set[uuid.UUID]:
    """The job ids published within `wait` seconds, and any published right behind the first."""
    changed: set[uuid.UUID] = set()
    timeout = wait
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if message is None:
            return changed
        try:
            changed.add(uuid.UUID(message["data"].decode()))
        except (ValueError, AttributeError):
            pass
        timeout = 0


def _read_cards(
    request: HttpRequest, user, *, ids: Iterable[uuid.UUID] | None, since: datetime | None
) -> list[tuple[uuid.UUID, str, bool, str]]:
    """(job id, version, running, event) of the user's jobs named by `ids`, or else of those running
    or changed since `since`: one read of the gallery's (three queries), one render."""
    try:
        return _render_cards(request, user, ids=ids, since=since)
    finally:
        # An open stream must not hold a database connection while it waits (a pooled one goes
        # back to the pool): one per stream would soon use up PostgreSQL's max_connections.
        connection.close()


def _render_cards(
    request: HttpRequest, user, *, ids: Iterable[uuid.UUID] | None, since: datetime | None
) -> list[tuple[uuid.UUID, str, bool, str]]:
    jobs = gallery_jobs(user)
    if ids is not None:
        jobs = jobs.filter(pk__in=list(ids))
    else:
        recent = Q(status__in=ACTIVE_JOB_STATUSES)
        if since is not None:
            recent |= Q(updated_at__gte=since)
        jobs = jobs.filter(recent)
    position = stream_position(timezone.now())
    context = {"has_character": _has_character(request), "live": True}
    cards = [job_card(job) for job in jobs[:CATCH_UP_LIMIT]]
    balance = credit_account(user).balance if any(not card.is_active for card in cards) else None
    out = []
    for card in cards:
        html = render_to_string("studio/_gallery.html#job-card", {**context, "card": card}, request=request)
        if not card.is_active:
            # The job ended: a refund (every image failed) changes the balance in the top bar.
            html += render_to_string("studio/_prompt_bar.html#credits-oob", {"credits": balance})
        out.append((card.job.pk, card.version, card.is_active, card_event(card, html, position)))
    return out


def _has_character(request: HttpRequest) -> bool:
    """Read from the session as it is now: the user may select a character while the stream runs."""
    session: SessionBase = request.session.__class__(request.session.session_key)
    return bool(session.get(CHARACTER_SESSION_KEY))
