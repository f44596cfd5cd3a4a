"""Job progress published to the owner's channel once the change commits (generation.progress)."""

from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings

from generation import progress
from generation.models import JobStatus
from generation.services.control import job_cancel
from generation.services.finish import job_finish_if_done, slot_fail, slot_succeed
from tests.factories import offline_model
from tests.studio.helpers import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def listen():
    """Subscribe to a user's channel; returns a function that collects what arrives within a moment."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)

    def subscribe(user):
        pubsub.subscribe(progress.channel(user.pk))

        def received(wait: float = 0.3) -> list[str]:
            messages, deadline = [], time.monotonic() + wait
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.05)
                if message:
                    messages.append(message["data"].decode())
            return messages

        return received

    yield subscribe
    pubsub.close()
    client.close()


def test_each_slot_outcome_and_the_end_reach_the_owner_after_commit(
    alice, bob, listen, django_capture_on_commit_callbacks
):
    job = make_job(alice, offline_model(), status=JobStatus.RUNNING, pending=(2, 3))
    alices, bobs = listen(alice), listen(bob)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        slot_succeed(job.slots.get(index=2).pk, job.pk)
    assert alices() == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert alices() == [str(job.pk)]

    with django_capture_on_commit_callbacks(execute=True):
        slot_fail(job.slots.get(index=3).pk, job.pk, "Safety filter blocked it.")
        job_finish_if_done(job.pk)
    assert alices() == [str(job.pk), str(job.pk)]
    assert bobs() == []  # another user's channel hears nothing of alice's jobs


def test_a_cancel_is_published(alice, listen, django_capture_on_commit_callbacks):
    job = make_job(alice, offline_model(), status=JobStatus.RUNNING, pending=(3,))
    received = listen(alice)
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job=job)
    assert received() == [str(job.pk)]


def test_a_redis_outage_never_fails_the_pipeline(alice, settings, django_capture_on_commit_callbacks, caplog):
    job = make_job(alice, offline_model(), status=JobStatus.RUNNING, pending=(3,))
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    progress._client.cache_clear()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert slot_succeed(job.slots.get(index=3).pk, job.pk)
    finally:
        progress._client.cache_clear()
    assert "could not publish progress" in caplog.text


def test_without_redis_nothing_is_published(alice, settings, django_capture_on_commit_callbacks):
    settings.REDIS_URL = ""
    job = make_job(alice, offline_model(), status=JobStatus.RUNNING, pending=(3,))
    with django_capture_on_commit_callbacks() as callbacks:
        slot_succeed(job.slots.get(index=3).pk, job.pk)
    assert callbacks == []
