"""Provider leases: short-lived, renewed while the call runs, named after their holder."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from django.core.cache import cache

from generation import limits

pytestmark = pytest.mark.django_db

PROVIDER = "limits-test"


@pytest.fixture(autouse=True)
def one_slot(settings, monkeypatch):
    settings.PROVIDER_CONCURRENCY = {**settings.PROVIDER_CONCURRENCY, PROVIDER: 1}
    monkeypatch.setattr(limits, "LEASE_SECONDS", 1)
    monkeypatch.setattr(limits, "RENEW_EVERY_SECONDS", 0.2)
    cache.delete_many([f"limit:{PROVIDER}:0", f"cooldown:{PROVIDER}"])
    yield
    cache.delete_many([f"limit:{PROVIDER}:0", f"cooldown:{PROVIDER}"])


def test_a_killed_holders_lease_lapses_within_the_lease_time():
    dying = limits.provider_slot(PROVIDER, holder="req-1")
    assert dying.__enter__() is True  # and its worker is killed: no exit, no release
    limits._renewer.discard(f"limit:{PROVIDER}:0")  # a killed process renews nothing
    with limits.provider_slot(PROVIDER) as got:
        assert got is False
    time.sleep(1.3)
    with limits.provider_slot(PROVIDER) as got:
        assert got is True


def test_a_live_holders_lease_is_renewed_past_the_lease_time():
    with limits.provider_slot(PROVIDER, holder="req-1") as got:
        assert got
        time.sleep(1.5)
        assert limits.submit_in_flight(PROVIDER, "req-1")
        with limits.provider_slot(PROVIDER) as other:
            assert other is False
    assert not limits.submit_in_flight(PROVIDER, "req-1")


def test_the_lease_names_its_holder_only():
    with limits.provider_slot(PROVIDER, holder="req-1"):
        assert limits.submit_in_flight(PROVIDER, "req-1")
        assert not limits.submit_in_flight(PROVIDER, "req-2")
        assert not limits.submit_in_flight(PROVIDER, "req")


def test_a_cache_error_when_releasing_does_not_escape():
    failing = mock.patch("generation.limits.cache.delete", side_effect=ConnectionError("redis went away"))
    with failing, limits.provider_slot(PROVIDER, holder="req-1") as got:
        assert got
