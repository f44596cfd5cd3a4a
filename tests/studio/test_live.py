"""The live stream of job cards (studio.live): per user, change by change, the final state, then idle."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from generation import progress
from generation.models import GenerationJob, JobStatus
from generation.services.finish import job_finish_if_done, slot_fail, slot_succeed
from studio import live
from studio.job_cards import stream_position
from tests.studio.helpers import make_job

# The stream reads the database from other threads: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = reverse("studio:job-events")


class Events:
    """The stream's chunks (one event or comment each), read with a timeout."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks = aiter(response.streaming_content)

    async def next(self, *, timeout: float = 5.0, comments: bool = False) -> str:
        while True:
            chunk = (await asyncio.wait_for(anext(self.chunks), timeout)).decode()
            if comments or not (chunk.startswith("retry:") or chunk.startswith(":")):
                return chunk

    async def until(self, text: str) -> str:
        while True:
            event = await self.next()
            if text in event:
                return event

    async def ended(self, *, timeout: float = 5.0) -> bool:
        try:
            await asyncio.wait_for(anext(self.chunks), timeout)
        except StopAsyncIteration:
            return True
        return False


async def connect(user, **headers) -> tuple[object, Events]:
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(EVENTS, headers=headers)
    return response, Events(response) if response.streaming else None


def run(scenario) -> None:
    async def scenario_then_close():
        try:
            await asyncio.wait_for(scenario(), 30)
        finally:
            # The scenario's own database calls ran on asgiref's thread: its connection must not
            # outlive the test (the test database is dropped at the end).
            await sync_to_async(connections.close_all)()

    asyncio.run(scenario_then_close())


def test_each_stored_slot_reaches_the_page_then_the_final_card_then_idle(alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(2, 3))
    slots = {s.index: s.pk for s in job.slots.all()}

    async def scenario():
        response, events = await connect(alice)
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
        assert "no-store" in response["Cache-Control"]

        first = await events.next()
        assert first.startswith(f"event: job-{job.pk}\nid: ")
        assert "Generating 2/4..." in first and f'sse-swap="job-{job.pk}"' in first
        assert all(line.startswith(("event:", "id:", "data:")) for line in first.strip().splitlines())

        await sync_to_async(slot_succeed)(slots[2], job.pk)
        assert "Generating 3/4..." in await events.next()

        await sync_to_async(slot_fail)(slots[3], job.pk, "Safety filter blocked it.")
        await sync_to_async(job_finish_if_done)(job.pk)
        final = await events.until("Generated 3 of 4 images. 1 failed.")
        assert "sse-swap" not in final and "hx-trigger" not in final
        assert 'id="credits"' in final and 'hx-swap-oob="true"' in final  # a refund shows at once

        assert (await events.next()).startswith("event: idle")
        assert await events.ended()

    run(scenario)


def test_another_users_job_never_reaches_the_stream(alice, bob, model, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.2)
    mine = make_job(alice, model, status=JobStatus.RUNNING, pending=(3,))
    theirs = make_job(bob, model, status=JobStatus.RUNNING, pending=(3,))
    their_slot = theirs.slots.get(index=3).pk

    async def scenario():
        _, events = await connect(alice)
        assert f"job-{mine.pk}" in await events.next()
        # Even published on alice's own channel, bob's job id reads as nothing for her.
        publisher = redis.Redis.from_url(settings.REDIS_URL)
        publisher.publish(progress.channel(alice.pk), str(theirs.pk))
        publisher.close()
        await sync_to_async(slot_succeed)(their_slot, theirs.pk)
        for _ in range(4):
            chunk = await events.next(comments=True)
            assert str(theirs.pk) not in chunk

    run(scenario)


def test_a_reconnect_gets_the_final_card_of_a_job_that_ended_meanwhile(alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(3,))
    seen = stream_position(timezone.now())
    # The job ends while the browser is away: no running job is left to stream.
    slot_succeed(job.slots.get(index=3).pk, job.pk)
    job_finish_if_done(job.pk)
    old = make_job(alice, model)
    GenerationJob.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    async def scenario():
        _, events = await connect(alice, **{"Last-Event-ID": seen})
        final = await events.next()
        assert f"event: job-{job.pk}" in final and "Generated 4 of 4 images." in final
        assert (await events.next()).startswith("event: idle")  # the job that ended long ago is not resent
        assert await events.ended()

    run(scenario)


def test_with_nothing_running_it_says_idle_and_ends(alice, model):
    make_job(alice, model)

    async def scenario():
        _, events = await connect(alice)
        assert (await events.next()).startswith("event: idle")
        assert await events.ended()

    run(scenario)


def test_a_silent_stream_rereads_running_jobs_and_catches_a_lost_message(alice, model, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.2)
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(3,))

    async def scenario():
        _, events = await connect(alice)
        await events.next()
        # Stored while Redis lost the message: only the heartbeat's re-read can find it.
        await sync_to_async(GenerationJob.objects.filter(pk=job.pk).update)(status=JobStatus.SUCCEEDED)
        assert "Generated" in await events.until(f"job-{job.pk}")

    run(scenario)


def test_without_redis_it_answers_204_so_the_browser_does_not_reconnect(alice, settings):
    settings.REDIS_URL = ""

    async def scenario():
        response, _ = await connect(alice)
        assert response.status_code == 204

    run(scenario)


def test_it_needs_a_login():
    async def scenario():
        response = await AsyncClient().get(EVENTS)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    run(scenario)


def test_on_wsgi_it_answers_204_and_the_page_polls_instead(alice_client):
    # runserver and the test server would hold a thread per stream and deliver it only at its end.
    assert alice_client.get(EVENTS).status_code == 204


def test_with_redis_away_it_ends_asking_the_browser_to_wait_longer(alice, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port

    async def scenario():
        response, events = await connect(alice)
        assert response.status_code == 200
        assert await events.next(comments=True) == f"retry: {live.RECONNECT_AFTER_REDIS_ERROR_MILLISECONDS}\n\n"
        assert await events.ended()

    run(scenario)
    assert "live stream of user" in caplog.text
