"""Job progress for the browser: "this job changed", published the moment it is committed.

A slot stored or failed, a job finished, canceled or retried: generation.events (and
services.control for the user's own actions) call job_changed, which publishes the job's id on its
owner's Redis pub/sub channel once the transaction commits. studio.live streams each user's own
channel to the page as server-sent events. The message carries only an id; the stream reads the
job itself, scoped to the signed-in user, so nothing about a job travels through Redis.

Without REDIS_URL (`make run`) nothing is published and the page polls instead
(studio.live.is_live). Publishing never fails the pipeline: a lost message costs at most the
page's backstop poll (LIVE_BACKSTOP_POLL in templates/studio/_gallery.html).
"""

from __future__ import annotations

import functools
import logging
import uuid

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

# Connecting and publishing are quick on a healthy Redis; a hung one must not hold a worker thread.
REDIS_TIMEOUT_SECONDS = 0.5


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def channel(owner_id: int) -> str:
    """The pub/sub channel of one user's jobs (the cache's key prefix keeps test runs apart)."""
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or ""
    return f"{prefix}:progress:{owner_id}"


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def job_changed(job_id: uuid.UUID, *, owner_id: int | None = None) -> None:
    """Tell the owner's open pages that the job changed, after the current transaction commits."""
    if not enabled():
        return
    transaction.on_commit(lambda: _publish(job_id, owner_id))


def _publish(job_id: uuid.UUID, owner_id: int | None) -> None:
    from generation.models import GenerationJob

    try:
        if owner_id is None:
            owner_id = GenerationJob.objects.filter(pk=job_id).values_list("owner_id", flat=True).first()
            if owner_id is None:
                return
        _client().publish(channel(owner_id), str(job_id))
    except redis.RedisError as exc:
        logger.warning("could not publish progress of job %s: %s", job_id, exc)
