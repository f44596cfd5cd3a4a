"""Per-provider concurrency and rate limits, shared by every worker through the Django cache.

Concurrency is a set of lease keys `limit:<provider>:<n>`: a call holds one for its duration and
`cache.add` (atomic on Redis) decides who gets it. Leases expire on their own, so a worker killed
mid-call cannot leak capacity for longer than LEASE_SECONDS. A 429 from a provider sets a
cool-down that holds every worker back until the provider's Retry-After has passed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache

LEASE_SECONDS = 120


def concurrency_for(provider: str) -> int:
    return int(settings.PROVIDER_CONCURRENCY.get(provider, settings.PROVIDER_CONCURRENCY.get("default", 4)))


def cooldown_remaining(provider: str) -> float:
    until = cache.get(f"cooldown:{provider}")
    return max(0.0, float(until) - time.time()) if until else 0.0


def cooldown(provider: str, seconds: float) -> None:
    """Hold every worker off `provider` for `seconds` (after a 429)."""
    until = time.time() + seconds
    current = cache.get(f"cooldown:{provider}")
    if not current or float(current) < until:
        cache.set(f"cooldown:{provider}", until, timeout=int(seconds) + 1)


def _rate_ok(provider: str) -> bool:
    per_second = settings.PROVIDER_RATE_PER_SECOND.get(provider)
    if not per_second:
        return True
    key = f"rate:{provider}:{int(time.time())}"
    cache.add(key, 0, timeout=2)
    try:
        return cache.incr(key) <= per_second
    except ValueError:  # the window's key expired between add and incr
        return True


@contextmanager
def provider_slot(provider: str) -> Iterator[bool]:
    """Yield True with a concurrency lease held, or False when the provider is at its limit."""
    if cooldown_remaining(provider) > 0 or not _rate_ok(provider):
        yield False
        return
    token = uuid.uuid4().hex
    held = None
    for n in range(concurrency_for(provider)):
        key = f"limit:{provider}:{n}"
        if cache.add(key, token, timeout=LEASE_SECONDS):
            held = key
            break
    if held is None:
        yield False
        return
    try:
        yield True
    finally:
        if cache.get(held) == token:
            cache.delete(held)
