"""No worker running: the studio says generations are paused instead of showing jobs queued for ever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from generation import heartbeat
from generation.models import GenerationJob, JobStatus
from tests.studio.helpers import htmx, make_job

pytestmark = pytest.mark.django_db

PAUSED = "Generations are paused: no worker is running."


@pytest.fixture(autouse=True)
def no_sweep_yet():
    cache.delete(heartbeat.LAST_SWEEP_KEY)
    yield
    cache.delete(heartbeat.LAST_SWEEP_KEY)


def waiting_job(owner, model, *, seconds: float):
    job = make_job(owner, model, status=JobStatus.QUEUED, pending=(0, 1, 2, 3))
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))
    return job


def test_a_job_waiting_with_no_worker_says_so_on_the_page_and_its_card(alice_client, alice, model):
    job = waiting_job(alice, model, seconds=heartbeat.silence_limit() + 5)
    page = alice_client.get(reverse("studio:home")).content.decode()
    assert PAUSED in page
    assert "celery -A studio worker" not in page  # how to start one is for staff
    card = alice_client.get(reverse("studio:job-card", args=[job.pk]), **htmx()).content.decode()
    assert PAUSED in card and "Generating 0/4" not in card


def test_a_young_job_or_a_recent_sweep_shows_no_notice(alice_client, alice, model):
    job = waiting_job(alice, model, seconds=2)
    assert PAUSED not in alice_client.get(reverse("studio:home")).content.decode()  # not judged yet
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    heartbeat.record_sweep()  # a worker ran the sweeper just now: the job only waits on its provider
    page = alice_client.get(reverse("studio:home")).content.decode()
    assert PAUSED not in page and "Generating 0/4..." in page


def test_staff_see_anyones_waiting_jobs_and_how_to_start_a_worker(client, alice, bob, staff, model):
    waiting_job(bob, model, seconds=heartbeat.silence_limit() + 5)
    client.force_login(alice)
    assert PAUSED not in client.get(reverse("studio:home")).content.decode()  # not her job
    client.force_login(staff)
    page = client.get(reverse("studio:home")).content.decode()
    assert PAUSED in page and "celery -A studio worker" in page
