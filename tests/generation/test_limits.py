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


def test_a_waiter_learns_when_the_held_slot_frees_and_later_waiters_wait_whole_calls_more():
    with limits.provider_slot(PROVIDER, holder="req-1") as got:
        assert got is True
        # The call began just now and takes about 2 s: the next waiter's slot frees in ~2 s, the
        # one after it in ~4 s (one slot, one call after another).
        assert limits.slot_free_in(PROVIDER, 1, 2.0) == pytest.approx(2.0, abs=0.1)
        assert limits.slot_free_in(PROVIDER, 2, 2.0) == pytest.approx(4.0, abs=0.1)
        # A call running longer than expected: its slot is expected to free any moment.
        time.sleep(0.01)
        assert limits.slot_free_in(PROVIDER, 1, 0.001) == 0.0
    assert limits.slot_free_in(PROVIDER, 1, 2.0) == 0.0  # released: free now


@pytest.mark.parametrize("backend", ["redis", "files"])
def test_a_rate_lets_a_burst_of_rate_calls_go_at_once_then_one_every_interval(backend, settings, tmp_path):
    if backend == "files":
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
        }
    else:
        assert "RedisCache" in settings.CACHES["default"]["BACKEND"]
    name = f"rate:test-{backend}-{time.monotonic_ns()}"
    # A burst of 10 at 10 a second goes at once; a fixed one-second window would hold the 11th
    # until the next second began, the token bucket only for 1/rate.
    assert all(limits.take_rate_token(name, 10) for _ in range(10))
    assert not limits.take_rate_token(name, 10)
    time.sleep(0.12)
    assert limits.take_rate_token(name, 10)
    assert not limits.take_rate_token(name, 10)
    # Sustained, it is 10 a second: after a quiet second the whole burst is back.
    time.sleep(1.05)
    assert sum(limits.take_rate_token(name, 10) for _ in range(12)) == 10


def test_a_handed_lease_goes_to_the_named_waiter_not_to_a_newcomer():
    with limits.provider_slot(PROVIDER, holder="req-1") as got:
        assert got is True
        assert limits.hand_over(PROVIDER, "req-1", "req-2")
    # The call ended, but its slot was handed on, not released: nobody else gets it.
    with limits.provider_slot(PROVIDER, holder="req-3") as newcomer:
        assert newcomer is False
    with limits.provider_slot(PROVIDER, holder="req-2") as waiter:
        assert waiter is True
        assert limits.submit_in_flight(PROVIDER, "req-2")
        # A second delivery of the waiter's step neither adopts nor gives back the lease in use.
        limits.give_back(PROVIDER, "req-2")
        assert limits.submit_in_flight(PROVIDER, "req-2")
    with limits.provider_slot(PROVIDER, holder="req-3") as newcomer:
        assert newcomer is True


def test_a_handed_lease_its_waiter_will_not_use_is_given_back_or_lapses():
    with limits.provider_slot(PROVIDER, holder="req-1"):
        limits.hand_over(PROVIDER, "req-1", "req-2")
    limits.give_back(PROVIDER, "req-2")  # its job was canceled meanwhile
    with limits.provider_slot(PROVIDER) as got:
        assert got is True
    with limits.provider_slot(PROVIDER, holder="req-1"):
        limits.hand_over(PROVIDER, "req-1", "req-4")
    time.sleep(1.3)  # req-4's step never came: the lease lapses like a killed holder's
    with limits.provider_slot(PROVIDER) as got:
        assert got is True


def test_a_waiter_under_a_cool_down_gives_its_handed_lease_back():
    with limits.provider_slot(PROVIDER, holder="req-1"):
        limits.hand_over(PROVIDER, "req-1", "req-2")
    limits.cooldown(PROVIDER, 5)
    with limits.provider_slot(PROVIDER, holder="req-2") as got:
        assert got is False
    cache.delete(f"cooldown:{PROVIDER}")
    with limits.provider_slot(PROVIDER, holder="req-3") as got:
        assert got is True


def test_hand_over_without_a_held_lease_says_so():
    assert not limits.hand_over(PROVIDER, "req-1", "req-2")
