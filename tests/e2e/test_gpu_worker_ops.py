"""The operations page's GPU workers section in a browser, as staff, on desktop and on a phone."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from generation import heartbeat
from tests.e2e.conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


def test_staff_see_the_gpu_worker_and_when_there_is_none(page, transactional_db, screenshot):
    get_user_model().objects.create_superuser("ops", email="ops@example.com", password="ops-password")
    heartbeat.forget_worker("celery@gpu-box")
    login(page, "ops", "ops-password")
    page.goto("/ops/")
    section = page.locator("section[aria-labelledby='ops-gpu']")
    expect(section).to_contain_text("No GPU worker is running")

    details = {"gpu": True, "model": "sdxl-base-1.0", "device": "cuda:0", "waiting": 3}
    heartbeat.record_worker(hostname="celery@gpu-box", queues=["gpu"], running=1, pid=7, details=details)
    page.reload()
    row = section.locator("tbody tr")
    expect(row).to_contain_text("celery@gpu-box")
    expect(row).to_contain_text("sdxl-base-1.0 on cuda:0")
    section.scroll_into_view_if_needed()
    screenshot(page, "ops-gpu-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    heartbeat.record_worker(hostname="celery@gpu-box", queues=["gpu"], running=1, pid=7, details=details)
    page.reload()
    expect(section.locator("tbody tr")).to_contain_text("celery@gpu-box")
    screenshot(page, "ops-gpu-phone")
    heartbeat.forget_worker("celery@gpu-box")
