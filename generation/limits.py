"""Per-provider concurrency and rate limits, shared by every worker through the Django cache.

Concurrency is a set of lease keys `limit:<provider>:<n>`: a call holds one for its duration and
`cache.add` (atomic on Redis) decides who gets it. A lease lives LEASE_SECONDS and the process
that holds it renews it while the call runs, so a worker killed mid-call frees its capacity within
LEASE_SECONDS instead of blocking the provider for minutes. A lease's value names its holder (our
request id), so the sweeper can tell a submit still in flight from one whose worker died.
A 429 from a provider sets a cool-down that holds every worker back until its Retry-After passed.
A provider's rate (calls per second) is a token bucket as GCRA computes it: a burst of up to `rate`
calls goes at once and the next ones follow one every 1/rate s, where a fixed one-second window
would hold the 11th call of a burst of 12 until the next second began.

A holder may hand its lease on instead of releasing it (hand_over): the lease then names the next
request, whose submit adopts it (provider_slot), so a slot freed by a synchronous call goes to the
oldest waiter and no newcomer can take it in between. A handed lease nobody adopts lapses within
LEASE_SECONDS, as a killed holder's does.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache

from generation.providers.kinds import PROVIDER_KINDS

logger = logging.getLogger(__name__)

LEASE_SECONDS = 15
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3


# For a kind no longer in the table (a registry row of a removed provider): the sweeper still
# asks about its requests.
UNKNOWN_KIND_CONCURRENCY = 4


def concurrency_for(provider: str) -> int:
    """Calls in flight at once: <KIND>_CONCURRENCY from the environment, else the kind's row."""
    override = settings.PROVIDER_CONCURRENCY.get(provider)
    if override is not None:
        return int(override)
    kind = PROVIDER_KINDS.get(provider)
    return kind.concurrency if kind else UNKNOWN_KIND_CONCURRENCY


def rate_per_second(provider: str) -> int | None:
    """Calls started per second, None for no limit: <KIND>_RATE_PER_SECOND, else the kind's row."""
    override = settings.PROVIDER_RATE_PER_SECOND.get(provider)
    if override is not None:
        return int(override)
    kind = PROVIDER_KINDS.get(provider)
    return kind.rate_per_second if kind else None


def _lease_keys(provider: str) -> list[str]:
    return [f"limit:{provider}:{n}" for n in range(concurrency_for(provider))]


def cooldown_remaining(provider: str) -> float:
    until = cache.get(f"cooldown:{provider}")
    return max(0.0, float(until) - time.time()) if until else 0.0


def cooldown(provider: str, seconds: float) -> None:
    """Hold every worker off `provider` for `seconds` (after a 429)."""
    until = time.time() + seconds
    current = cache.get(f"cooldown:{provider}")
    if not current or float(current) < until:
        cache.set(f"cooldown:{provider}", until, timeout=int(seconds) + 1)


def count_in_window(name: str, window_seconds: int, now: float | None = None) -> int:
    """Count one more event in the current fixed window of `window_seconds`, shared by every
    process: `cache.add` creates the window's counter and `cache.incr` bumps it, both atomic on
    Redis. 0 when the key expired between the two (a new window has just begun)."""
    now = time.time() if now is None else now
    key = f"{name}:{int(now // window_seconds)}"
    cache.add(key, 0, timeout=window_seconds + 5)
    try:
        return cache.incr(key)
    except ValueError:
        return 0


# GCRA on Redis, atomically: KEYS[1] holds the theoretical arrival time (TAT) in seconds of Redis's
# own clock, so workers' clocks do not matter. ARGV: the emission interval (1/rate) and the burst
# tolerance. Returns "0" when the call may go, else a refusal.
_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return '1' end
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval), 'PX', math.ceil((tat + interval - now) * 1000) + 1000)
return '0'
"""


def _rate_ok(provider: str) -> bool:
    per_second = rate_per_second(provider)
    return not per_second or take_rate_token(f"rate:{provider}", per_second)


def take_rate_token(name: str, per_second: float) -> bool:
    """Whether one more call fits `per_second` (bursts of up to `per_second` calls), counting it if so."""
    interval = 1.0 / per_second
    tolerance = interval * (per_second - 1)
    get_client = getattr(getattr(cache, "_cache", None), "get_client", None)  # Django's RedisCache
    if get_client is not None:
        key = cache.make_and_validate_key(name)
        return get_client(key, write=True).eval(_GCRA, 1, key, interval, tolerance) in (b"0", "0")
    # Another cache (make run's files, one machine): the same arithmetic, not atomic.
    now = time.time()
    tat = max(float(cache.get(name) or now), now)
    if tat - now > tolerance:
        return False
    cache.set(name, tat + interval, timeout=int(tat + interval - now) + 2)
    return True


class _Renewer:
    """One daemon thread per process that keeps this process's leases alive while their calls run."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, key: str, token: str) -> None:
        with self._lock:
            self._held[key] = token
            # Renew the new lease on this round's cadence, not after a sleep begun before it existed.
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()

    def discard(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            self._wake.wait(RENEW_EVERY_SECONDS)
            self._wake.clear()
            with self._lock:
                held = dict(self._held)
            for key, token in held.items():
                try:
                    if cache.get(key) == token:
                        cache.touch(key, LEASE_SECONDS)
                except Exception:  # a broker/cache blip: the lease may lapse, the next round retries
                    logger.warning("could not renew provider lease %s", key, exc_info=True)


_renewer = _Renewer()


@contextmanager
def provider_slot(provider: str, holder: str = "") -> Iterator[bool]:
    """Yield True with a concurrency lease held, or False when the provider is at its limit.

    `holder` (a ProviderRequest id) is recorded in the lease for submit_in_flight().
    """
    # The start time tells waiters when this slot is likely to free (slot_free_in).
    token = _token(holder)
    held = _adopt(provider, holder, token) if holder else None
    if cooldown_remaining(provider) > 0 or not _rate_ok(provider):
        if held is not None:
            _release(held, token)
        yield False
        return
    if held is None:
        for key in _lease_keys(provider):
            if cache.add(key, token, timeout=LEASE_SECONDS):
                held = key
                break
    if held is None:
        yield False
        return
    _renewer.add(held, token)
    try:
        yield True
    finally:
        _renewer.discard(held)
        _release(held, token)


# The last part of a handed lease's value, where a held one has its random part: a lease handed to
# a request is told from one that request holds already (a second delivery of its step must not
# adopt or give back the lease its first delivery is calling under).
HANDED = "handed"


def _token(holder: str, end: str = "") -> str:
    return f"{holder}:{time.time():.3f}:{end or uuid.uuid4().hex}"


def _handed_to(provider: str, holder: str, *, handed: bool = True) -> tuple[str, str] | None:
    """The lease (key, value) handed to `holder` (or, `handed` False, the one it holds)."""
    prefix = f"{holder}:"
    for key, value in cache.get_many(_lease_keys(provider)).items():
        value = str(value)
        if value.startswith(prefix) and value.endswith(f":{HANDED}") == handed:
            return key, value
    return None


def _adopt(provider: str, holder: str, token: str) -> str | None:
    """Take over a lease handed to `holder` (hand_over) under `token`; its key, or None."""
    handed = _handed_to(provider, holder)
    if handed is None:
        return None
    # Only `holder` adopts a lease that names it, so nobody else writes this key meanwhile.
    cache.set(handed[0], token, timeout=LEASE_SECONDS)
    return handed[0]


def hand_over(provider: str, holder: str, to_holder: str) -> bool:
    """Hand the lease `holder` holds (inside provider_slot) to `to_holder`, whose next
    provider_slot adopts it, instead of releasing it when the call ends. False when `holder`
    holds none (it lapsed): `to_holder` then competes for a slot as usual."""
    held = _handed_to(provider, holder, handed=False)
    if held is None:
        return False
    _renewer.discard(held[0])
    # Its start is now: waiters count the next call from here (slot_free_in).
    cache.set(held[0], _token(to_holder, HANDED), timeout=LEASE_SECONDS)
    return True


def give_back(provider: str, holder: str) -> None:
    """Release a lease handed to `holder` that it will not use (its job was canceled meanwhile)."""
    handed = _handed_to(provider, holder)
    if handed is not None:
        _release(*handed)


def _release(key: str, token: str) -> None:
    # Runs after the provider answered: a cache error here must not lose that answer. An
    # unreleased lease lapses by itself within LEASE_SECONDS.
    try:
        if cache.get(key) == token:
            cache.delete(key)
    except Exception:
        logger.warning("could not release provider lease %s; it lapses in %s s", key, LEASE_SECONDS, exc_info=True)


def slot_free_in(provider: str, position: int, call_seconds: float) -> float:
    """Seconds until the `position`-th waiter (1 = next) for `provider` may find a slot free, when
    calls take about `call_seconds`: the held leases end in the order they started, then every
    slot serves one call after another. 0 when a slot is free now."""
    now = time.time()
    keys = _lease_keys(provider)
    starts = []
    for value in cache.get_many(keys).values():
        try:
            starts.append(float(str(value).split(":")[1]))
        except (IndexError, ValueError):
            starts.append(now)  # a lease of an older version: assume it just began
    if len(starts) < len(keys):
        return 0.0
    ends = sorted(max(now, start + call_seconds) for start in starts)
    rounds, index = divmod(max(0, position - 1), len(ends))
    return ends[index] - now + rounds * call_seconds


def submit_in_flight(provider: str, holder: str) -> bool:
    """Whether a live worker is calling `provider` for `holder` right now (it holds a lease)."""
    prefix = f"{holder}:"
    return any(str(value).startswith(prefix) for value in cache.get_many(_lease_keys(provider)).values())
