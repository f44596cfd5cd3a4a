"""The operations page in a browser, as staff, while a batch runs: every section, pausing and
resuming a provider, and re-driving a stuck job; on desktop and on a phone."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from generation.models import GenerationJob, ImageSlot, JobMode, JobStatus, SlotStatus
from generation.services.jobs import job_create
from models_registry.models import ApiModel
from tests.e2e.conftest import login
from tests.factories import offline_model, wait_for_job
from tests.studio.helpers import make_job

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


def lost_dispatch(job: GenerationJob) -> GenerationJob:
    """Running, its images waiting for requests that were never planned, unchanged for ten minutes."""
    ImageSlot.objects.filter(job=job).update(status=SlotStatus.PENDING)
    GenerationJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    return job


def test_staff_watch_a_running_batch_pause_a_provider_and_redrive_a_stuck_job(page, transactional_db, screenshot):
    staff = get_user_model().objects.create_superuser("ops", email="ops@example.com", password="ops-password")
    # One image a request: a batch of four is four requests for the worker.
    model = offline_model(display_name="Offline engine", max_images=1)
    ApiModel.objects.create(
        key="gemini-e2e", display_name="Gemini test", provider="gemini", tasks=["t2i"], price_per_image=Decimal("0.04")
    )
    # Earlier trouble today: failed images, grouped on the page.
    make_job(staff, model, images=3, failed=(0, 1), error="Offline answered HTTP 503", with_files=False)
    # A job whose dispatch message was lost long ago (no beat runs here to find it).
    stuck = lost_dispatch(make_job(staff, model, images=2, status=JobStatus.RUNNING, pending=(0, 1)))

    login(page, "ops", "ops-password")
    page.get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()

    # Pause a provider with a reason; its row says so and offers Resume.
    page.get_by_label("Provider", exact=True).select_option("offline")
    page.get_by_label("Reason", exact=True).fill("maintenance until 14:00")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash-success")).to_contain_text("Offline engine is paused")
    offline_row = page.locator("#provider-offline")
    expect(offline_row.locator(".ops-status")).to_have_text("paused")
    expect(offline_row).to_contain_text("maintenance until 14:00")

    # The studio shows the paused model disabled with the reason.
    page.goto("/")
    option = page.get_by_label("Model").locator("option", has_text="Offline engine")
    expect(option).to_be_disabled()
    expect(option).to_contain_text("Paused by staff: maintenance until 14:00")

    page.goto("/ops/")
    page.locator("#provider-offline").get_by_role("button", name="Resume").click()
    expect(page.locator(".flash-success")).to_contain_text("Offline engine is resumed")
    expect(page.locator("#provider-offline .ops-status")).not_to_have_text("paused")

    # Re-drive sends the lost dispatch; the worker then runs the job to its end.
    page.locator(f"#stuck-{stuck.pk}").get_by_role("button", name="Re-drive").click()
    expect(page.locator(".flash-success")).to_contain_text("1 message sent")
    expect(page.locator(f"#stuck-{stuck.pk}")).to_have_count(0)
    for _ in range(150):
        stuck.refresh_from_db()
        if stuck.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            break
        page.wait_for_timeout(200)
    assert stuck.status not in (JobStatus.QUEUED, JobStatus.RUNNING)

    # A running batch: six jobs of four images, twenty-four requests for a worker of four threads,
    # and another stuck job for the picture.
    still_stuck = lost_dispatch(make_job(staff, model, images=2, status=JobStatus.RUNNING, pending=(0, 1)))
    batch = [
        job_create(user=staff, model=model, prompt=f"ops batch {n}", images=4, mode=JobMode.T2I, references=[])
        for n in range(6)
    ]
    page.reload()
    live = page.locator("#ops-live")
    expect(live.locator("section", has_text="Workers").locator("tbody tr")).not_to_have_count(0)
    # Still running: messages wait on the worker's queue.
    expect(live.locator("section", has_text="Queues").locator("tbody tr td").nth(1)).not_to_have_text("0")
    expect(live).to_contain_text("Offline answered HTTP 503")
    expect(page.locator(f"#stuck-{still_stuck.pk}")).to_be_visible()
    screenshot(page, "14-operations")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("heading", name="Operations")).to_be_in_viewport()
    screenshot(page, "14b-operations-phone")
    # The worker is still writing the batch: the test database is flushed only once it is done
    # (a flush racing the worker's inserts deadlocked in one run of ten).
    for job in batch:
        wait_for_job(job, timeout=60)
