"""The front door in a real browser, under the Content-Security-Policy (the `page` fixture fails on
any violation Chromium logs): the admin works, and a locked-out login says so on the login page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.factories import offline_model

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


def submit_login(page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_the_admin_works_under_the_policy(page, transactional_db, screenshot):
    get_user_model().objects.create_superuser("staff", email="staff@example.com", password="staff-password")
    offline_model(display_name="Offline engine")

    page.goto("/admin/login/")
    submit_login(page, "staff", "staff-password")
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()

    page.goto("/admin/models_registry/apimodel/")
    page.locator("#result_list tbody th a").first.click()
    expect(page.locator("#apimodel_form")).to_be_visible()
    # The admin's own scripts (select filters, collapsible fieldsets) loaded from 'self' and ran.
    page.wait_for_function("() => window.django && window.django.jQuery")
    screenshot(page, "admin-change-form")


def test_a_locked_login_says_why_on_the_login_page(page, transactional_db, screenshot, settings):
    get_user_model().objects.create_user("alice", password="alice-password")

    page.goto("/accounts/login/")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        submit_login(page, "alice", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed log-in attempts")

    submit_login(page, "alice", "alice-password")
    expect(page.get_by_role("alert")).to_contain_text("Logging in is locked for 15 minutes")
    assert page.url.endswith("/accounts/login/")
    screenshot(page, "login-locked")
