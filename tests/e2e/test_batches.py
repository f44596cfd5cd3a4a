"""Batch Mode in a browser: toggle it on a Gemini model (simulated key), add three jobs, submit the
batch, watch its state change on the queue page, see the notification and the images, and the
spend page's 50% saving; on desktop and on a phone.

The worker here talks to the provider simulator's Batch API (tests/simulator/gemini_batch.py); no
beat runs, so the poll chain's short countdowns alone carry the batch to its end.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from playwright.sync_api import expect

from generation.models import Batch, BatchState, GenerationJob, JobStatus
from models_registry.models import ApiModel
from tests.e2e.conftest import htmx_idle, login

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
BATCH_SWITCH = "Batch mode · half price · results later (up to 24 h)"


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup, django_db_blocker, simulator_server):
    """This module's worker: on a queue of its own, pointed at the simulator, polling batches fast."""
    from studio.celery import app
    from tests.worker import start_worker, stop_worker

    queue = f"e2e-batch-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    overrides = override_settings(CELERY_TASK_DEFAULT_QUEUE=queue, **simulator_server.settings_overrides())
    overrides.enable()
    try:
        with django_db_blocker.unblock():
            process = start_worker(
                name="e2e-batch",
                concurrency=2,
                extra_env={
                    **simulator_server.worker_env(),
                    "CELERY_DEFAULT_QUEUE": queue,
                    "BATCH_POLL_MIN_SECONDS": "0.5",
                },
            )
        yield process
        stop_worker(process)
    finally:
        overrides.disable()
        app.conf.CELERY_TASK_DEFAULT_QUEUE = previous


def test_batch_mode_from_the_prompt_bar_to_the_spend_page(
    page, browser, live_server, transactional_db, screenshot, simulator_server
):
    sim = simulator_server
    sim.reset()
    # Each phase outlasts two refreshes of the queue page (every 3 s).
    sim.configure(gemini_batch_pending_seconds=7, gemini_batch_running_seconds=7)
    get_user_model().objects.create_user("alice", password="alice-password")
    gemini = ApiModel.objects.create(
        key="gemini-2.5-flash-image",
        display_name="Gemini 2.5 Flash Image",
        provider="gemini",
        tasks=["t2i"],
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
        capabilities={"batch_api": True},
        price_per_image=Decimal("0.0400"),
    )

    login(page, "alice", "alice-password")
    page.get_by_label("Model").select_option(str(gemini.pk))
    htmx_idle(page)
    switch = page.get_by_label(BATCH_SWITCH)
    expect(switch).not_to_be_checked()
    page.get_by_text(BATCH_SWITCH).click()  # the label, as a person clicks the switch
    expect(switch).to_be_checked()
    generate = page.locator("#generate-btn")
    expect(generate).to_have_text("Add to batch")
    screenshot(page, "batch-01-prompt-bar")

    prompts = ["watercolor fox knight", "watercolor owl mage", "watercolor cat bard"]
    for prompt in prompts:
        page.locator("#prompt-text").fill(prompt)
        generate.click()
        expect(page.locator(".job-card", has_text=prompt)).to_be_visible()
        htmx_idle(page)
    cards = page.locator(".job-card")
    expect(cards).to_have_count(3)
    expect(cards.first).to_contain_text("via Batch API · 50%")
    expect(cards.first).to_contain_text("Waiting in your batch queue")
    assert not sim.calls_for("gemini", "batch_create")  # nothing sent yet

    page.get_by_role("link", name="Batch queue").click()
    draft = page.locator(".batch-card[data-state=draft]")
    expect(draft).to_contain_text("3 images in 3 jobs")
    expect(draft).to_contain_text("estimated $0.06 (half price)")
    for prompt in prompts:
        expect(draft).to_contain_text(prompt)
    screenshot(page, "batch-02-queue-draft")

    draft.get_by_role("button", name="Submit batch now").click()
    expect(page.locator(".flash-success")).to_contain_text("Sending the batch of 3 images")
    sent = page.locator(".batch-card").first
    # The list refreshes itself: pending, then running, as the simulator moves the batch on.
    expect(sent.locator(".batch-state")).to_have_text("Pending", timeout=15_000)
    screenshot(page, "batch-03-queue-pending")
    expect(sent.locator(".batch-state")).to_have_text("Running", timeout=15_000)
    screenshot(page, "batch-04-queue-running")

    # Leave for the studio: the batch ends meanwhile, polled on the server.
    page.goto("/")
    batch = Batch.objects.get()
    for _ in range(200):
        batch.refresh_from_db()
        if batch.is_final:
            break
        page.wait_for_timeout(100)
    assert batch.state == BatchState.SUCCEEDED
    page.reload()
    toast = page.locator(".toast")
    expect(toast).to_contain_text("Your batch of 3 images on Gemini 2.5 Flash Image ended: succeeded")
    expect(page.locator("#batch-queue-link .nav-badge")).to_have_text("1")
    for prompt in prompts:
        card = page.locator(".job-card", has_text=prompt)
        expect(card.locator("img")).to_have_count(1)
        expect(card).to_contain_text("$0.02")  # half of $0.04
    assert all(j.status == JobStatus.SUCCEEDED for j in GenerationJob.objects.all())
    screenshot(page, "batch-05-studio-notified")

    page.locator("#batch-queue-link").click()
    done = page.locator(".batch-card").first
    expect(done.locator(".batch-state")).to_have_text("Succeeded")
    expect(done).to_contain_text("3 succeeded, 0 failed")
    expect(done).to_contain_text("actual $0.06")
    expect(page.locator("#batch-queue-link .nav-badge")).to_have_count(0)
    screenshot(page, "batch-06-queue-succeeded")

    page.get_by_role("link", name="Spend").click()
    expect(page.locator("#spend-total")).to_have_text("$0.06")
    expect(page.locator("#spend-saved")).to_have_text("$0.06")
    expect(page.locator(".spend-bar[height]:not([height='0.0'])")).to_have_count(1)
    screenshot(page, "batch-07-spend")

    # The same pages on a phone.
    phone = browser.new_context(base_url=live_server.url, **PHONE)
    tab = phone.new_page()
    login(tab, "alice", "alice-password")
    for path, name in (("/batches/", "batch-08-phone-queue"), ("/spend/", "batch-09-phone-spend")):
        tab.goto(path)
        assert tab.evaluate("document.documentElement.scrollWidth") <= 390, path
        screenshot(tab, name)
    tab.goto("/")
    expect(tab.get_by_label(BATCH_SWITCH)).to_be_visible()
    screenshot(tab, "batch-10-phone-studio")
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390
    phone.close()
