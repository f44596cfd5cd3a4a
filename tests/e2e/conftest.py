"""Browser tests: Playwright (sync API) driving Debian's chromium against the live server.

Jobs run on a Celery worker of this package's own, on a queue of its own, so that its simulated
provider failures (OFFLINE_FAILURE_RATE) and latency never depend on which worker picks a job up:
the session-wide `celery_worker` may be running on the default queue at the same time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.test import override_settings

from generation.models import JobMode
from generation.prompts import build_prompt
from generation.providers.offline import fails

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))

# The e2e worker's simulated provider: fails ~30% of images, deterministically per (prompt, index,
# attempt), and takes this long per request so the progress bar is on screen for a while.
FAILURE_RATE = 0.3
LATENCY_SECONDS = 0.6


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which Django's async-safety check
    # mistakes for async code; the tests only ever touch the database between browser calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextmanager
def worker_on_own_queue(
    django_db_blocker, *, failure_rate: float, latency: float = LATENCY_SECONDS
) -> Iterator[object]:
    """A worker with simulated failures, consuming a queue that only this module's jobs go to."""
    from studio.celery import app
    from tests.worker import start_worker, stop_worker

    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    # The live server runs in this process: its job_create enqueues through this app's config.
    # The app reads its settings from Django's under the CELERY_ namespace, and celery 5.6 prefers
    # that key to the lowercase name: set the key it reads.
    app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue), django_db_blocker.unblock():
            process = start_worker(
                name="e2e",
                concurrency=4,
                extra_env={
                    # The worker enqueues its own next steps on its default queue: the same one.
                    "CELERY_DEFAULT_QUEUE": queue,
                    "OFFLINE_FAILURE_RATE": str(failure_rate),
                    "OFFLINE_LATENCY_SECONDS": str(latency),
                },
            )
        yield process
        stop_worker(process)
    finally:
        app.conf.CELERY_TASK_DEFAULT_QUEUE = previous


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    with worker_on_own_queue(django_db_blocker, failure_rate=FAILURE_RATE) as process:
        yield process


@pytest.fixture
def page(browser, live_server, e2e_worker) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports whatever the Content-Security-Policy blocked (an inline style or script,
    # htmx's eval) on the console: every page must run under the policy without one.
    violations: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    tab.on("console", on_console)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not violations, f"Content-Security-Policy violations: {violations}"


@pytest.fixture
def screenshot() -> Callable[[object, str], Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(tab, name: str, *, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"e2e-{name}.png"
        if full_page:
            # A full-page shot of a scrolled page draws the sticky top bar mid-page.
            tab.evaluate("window.scrollTo(0, 0)")
        tab.screenshot(path=str(path), full_page=full_page)
        return path

    return take


def htmx_idle(tab) -> None:
    """Wait until htmx has no request in flight and has settled the last swap.

    A swapped-in control gets its htmx triggers only when the swap settles; a person never acts
    inside those milliseconds, but a test can, and its event would then be lost.
    """
    tab.wait_for_function(
        "() => window.htmx && !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )


def login(tab, username: str, password: str) -> None:
    tab.goto("/accounts/login/")
    tab.get_by_label("Username").fill(username)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(lambda url: urlparse(url).path == "/")


def prompt_where(condition: Callable[[str], bool], *, stem: str = "portrait") -> str:
    """The first "<stem> N" whose final prompt makes `condition` true (searching keeps tests deterministic)."""
    for n in range(5000):
        prompt = f"{stem} {n}"
        if condition(prompt):
            return prompt
    raise AssertionError("no prompt found")


def fails_at(final_prompt: str, index: int, attempt: int = 1) -> bool:
    return fails(final_prompt, index, attempt, FAILURE_RATE)


def final_prompt(prompt: str, mode: str = JobMode.T2I, enhance: bool = True) -> str:
    return build_prompt(prompt=prompt, mode=mode, character=None, enhance=enhance)
