"""Whether any worker is running: every sweep (sent by beat, run by a worker) leaves its time here.

Pages read it to say "Generations are paused: no worker is running" instead of showing jobs
queued for ever when the worker (or beat) is down.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

LAST_SWEEP_KEY = "sweeper:last-run"


def record_sweep(at: float | None = None) -> None:
    cache.set(LAST_SWEEP_KEY, at if at is not None else time.time(), timeout=None)


def last_sweep_age(now: float | None = None) -> float | None:
    """Seconds since a worker last ran the sweeper, None when none has since the cache was new."""
    last = cache.get(LAST_SWEEP_KEY)
    if last is None:
        return None
    return max(0.0, (now if now is not None else time.time()) - float(last))


def silence_limit() -> float:
    """How long without a sweep means no worker: three missed sweeps, not one late one."""
    return 3.0 * settings.SWEEP_INTERVAL_SECONDS


def workers_silent(now: float | None = None) -> bool:
    age = last_sweep_age(now)
    return age is None or age > silence_limit()
