"""Live progress in a real browser, on ASGI: one x4 job whose images take 1, 2, 3 and 4 s appear one
by one, each pushed by the live stream (studio.live) rather than polled."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.e2e.conftest import login, worker_on_own_queue
from tests.factories import offline_model

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

LATENCIES = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def staggered_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    """A worker whose offline engine takes 1, 2, 3 and 4 s for images 0..3, on a queue of its own."""
    env = {"OFFLINE_IMAGE_LATENCIES": ",".join(str(s) for s in LATENCIES), "OFFLINE_FAILURE_RATE": "0"}
    # More threads than the job has requests: with acks_late and a prefetch of one per thread, a
    # full worker fetches the polls only seconds late (kombu's Redis QoS).
    with worker_on_own_queue("e2e-live", django_db_blocker, concurrency=8, env=env) as process:
        yield process


@pytest.fixture
def live_page(browser, asgi_server, staggered_worker) -> Iterator[object]:
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=asgi_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    if previous is not None:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
    assert not errors, f"JavaScript errors on the page: {errors}"


# Records, in the page, when each image of the first card became visible and how many times the
# card was fetched by polling; the live stream swaps the card without any request.
RECORDER = """() => {
  window.arrivals = [];
  window.cardPolls = 0;
  const started = performance.now();
  new MutationObserver(() => {
    const card = document.querySelector("article.job-card");
    const count = card ? card.querySelectorAll(".tile img").length : 0;
    while (window.arrivals.length < count) window.arrivals.push((performance.now() - started) / 1000);
  }).observe(document.body, { childList: true, subtree: true });
  document.body.addEventListener("htmx:beforeRequest", (event) => {
    if (/\\/jobs\\/[^/]+\\/card/.test(event.detail.pathInfo.requestPath)) window.cardPolls += 1;
  });
}"""


def test_four_images_with_latencies_of_1_to_4_s_appear_one_by_one(live_page, transactional_db, screenshot):
    get_user_model().objects.create_user("alice", password="alice-password")
    # One request per image (fan-out), so each image arrives after its own latency.
    model = offline_model(max_images=1, display_name="Offline engine")
    page = live_page
    login(page, "alice", "alice-password")
    page.get_by_label("Model").select_option(str(model.pk))
    page.get_by_label("Prompt", exact=True).fill("silver hair, one by one")
    page.locator("label[for=images-4]").click()
    page.evaluate(RECORDER)
    page.get_by_role("button", name="Generate").click()

    card = page.locator("article.job-card").first
    expect(card.locator(".tile img")).to_have_count(2, timeout=10_000)
    expect(card.locator(".progress-label")).to_contain_text("Generating")
    screenshot(page, "live-02-two-of-four")
    page.set_viewport_size({"width": 390, "height": 844})
    card.scroll_into_view_if_needed()
    screenshot(page, "live-02-two-of-four-phone", full_page=False)
    page.set_viewport_size({"width": 1360, "height": 900})

    expect(card).to_have_attribute("data-status", "succeeded", timeout=15_000)
    expect(card.locator(".tile img")).to_have_count(4)
    arrivals = page.evaluate("window.arrivals")
    assert len(arrivals) == 4, arrivals
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # Each image on screen about a second after the one before: one by one, not together.
    assert all(0.5 < gap < 1.6 for gap in gaps), arrivals
    # Pushed, not polled: the 5 s backstop poll fired at most once over the job's ~4 s.
    assert page.evaluate("window.cardPolls") <= 1
    # The stream ends once nothing runs (sse-close): the gallery has no open connection left.
    expect(page.locator("#gallery-jobs")).not_to_have_attribute("sse-connect", "")
    screenshot(page, "live-03-done")
