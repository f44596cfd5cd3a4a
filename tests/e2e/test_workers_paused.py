"""No worker running, in the browser: the notice and the waiting card, on desktop and on a phone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import expect

from generation import heartbeat
from generation.models import GenerationJob, JobStatus
from tests.e2e.conftest import login
from tests.factories import offline_model
from tests.studio.helpers import make_job

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


def test_jobs_waiting_on_no_worker_say_generations_are_paused(page, transactional_db, screenshot):
    user = get_user_model().objects.create_user("alice", password="alice-password")
    job = make_job(user, offline_model(display_name="Offline engine"), status=JobStatus.QUEUED, pending=(0, 1, 2, 3))
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    cache.delete(heartbeat.LAST_SWEEP_KEY)  # no worker has run the sweeper

    login(page, "alice", "alice-password")
    notice = page.get_by_role("alert").filter(has_text="Generations are paused: no worker is running.")
    expect(notice).to_be_visible()
    expect(page.locator(f"#job-{job.pk} .progress-label.is-paused")).to_contain_text("This job starts when one does")
    screenshot(page, "13-no-worker")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(notice).to_be_in_viewport()
    screenshot(page, "13b-no-worker-phone", full_page=False)
