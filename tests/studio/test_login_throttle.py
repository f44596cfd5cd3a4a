"""Login throttling (django-axes): after LOGIN_FAILURE_LIMIT failures from one address or for one
username, the studio and the admin login are locked for the cool-off, and the login page says so."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.db.models import F
from django.test import Client
from django.urls import reverse

from studio.throttle import client_ip

pytestmark = pytest.mark.django_db

LOGIN = reverse("login")
ADMIN_LOGIN = reverse("admin:login")
WRONG = "not-the-password"


def attempt(client, url: str = LOGIN, username: str = "alice", password: str = WRONG, times: int = 1):
    for _ in range(times):
        response = client.post(url, {"username": username, "password": password})
    return response


def cool_off_passes(settings) -> None:
    """Every recorded failure becomes older than the cool-off, as if that long had gone by."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))


def test_the_last_allowed_failure_locks_with_a_clear_message_on_the_login_page(client, alice, settings):
    assert settings.AXES_FAILURE_LIMIT == 5 and settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60

    before = attempt(client, times=4)
    assert before.status_code == 200 and b"didn't match" in before.content

    locked = attempt(client)
    assert locked.status_code == 429
    html = locked.content.decode()
    assert "Too many failed log-in attempts. Logging in is locked for 15 minutes" in html
    assert "didn't match" not in html  # no password was checked
    # Still the login page, form and all, not a bare error text.
    assert 'id="login-title"' in html and 'name="password"' in html and 'role="alert"' in html


def test_a_correct_password_is_refused_while_locked_and_works_after_the_cool_off(client, alice, settings):
    attempt(client, times=5)

    refused = attempt(client, password="alice-password")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session

    cool_off_passes(settings)
    accepted = attempt(client, password="alice-password")
    assert accepted.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_admin_login_is_throttled_too_and_says_why(client, staff):
    before = attempt(client, ADMIN_LOGIN, username="staff", times=4)
    assert before.status_code == 200

    locked = attempt(client, ADMIN_LOGIN, username="staff")
    assert locked.status_code == 429
    assert b"Too many failed log-in attempts" in locked.content
    assert b'class="errornote"' in locked.content  # the admin's own login page shows it

    refused = attempt(client, ADMIN_LOGIN, username="staff", password="staff-password")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_locked_username_is_refused_from_another_address_too(client, alice):
    attempt(client, times=5)

    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    assert attempt(elsewhere, password="alice-password").status_code == 429


def test_another_user_at_another_address_is_unaffected(client, alice, bob):
    attempt(client, times=5)

    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    response = attempt(elsewhere, username="bob", password="bob-password")
    assert response.status_code == 302
    assert elsewhere.session["_auth_user_id"] == str(bob.pk)


def test_the_locked_address_is_the_one_our_proxies_saw(settings, rf):
    request = rf.get("/", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.5", REMOTE_ADDR="192.0.2.1")

    settings.TRUSTED_PROXY_COUNT = 0
    assert client_ip(request) == "192.0.2.1"  # no proxy: X-Forwarded-For is the client's own words
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.5"  # what our proxy appended, not what the client wrote
    settings.TRUSTED_PROXY_COUNT = 3
    assert client_ip(request) == "192.0.2.1"  # fewer entries than proxies: the header is not ours
