"""When to look at a queued provider request again, when its provider did not say.

A fixed tick wastes up to a whole tick after the image is ready (fal at 1 s: 138-1093 ms as the
latency varied). Each model's recent requests teach how long it takes: the first poll goes just
before the expected finish, and the gaps then grow with the lateness, so a slow outlier costs a
few polls more, not a late pick-up. A model with no history yet is polled at a quarter of the time
it has run so far (at most 25 % late), within the provider's usual interval.

The history is a hint kept in the cache (a few floats per model); losing it costs one job's
worth of learning. A provider's own Retry-After (ProviderResult.poll_after) always wins
(generation.services.runs), and the pipeline keeps every countdown under the broker's visibility
timeout (runs._schedule).
"""

from __future__ import annotations

from django.core.cache import cache

# Durations kept per model; the shortest of them is the expected finish: a poll that comes early
# costs one cheap request, one that comes late costs the user's time. Few, so a model that got
# faster or slower is followed within a few jobs.
HISTORY = 4
# A request found done at its first poll may have finished well before: it is recorded this much
# shorter, so the schedule keeps probing earlier until a first poll finds a request still running.
DONE_AT_FIRST_LOOK = 0.9
# The first poll goes this much before the expected finish: polling exactly at it would learn a
# duration a round trip longer each time.
LEAD_SECONDS = 0.05
# Past the expected finish the gap starts here and grows by this share of the lateness.
MIN_GAP_SECONDS = 0.05
GAP_GROWTH = 0.25
# Without history: the first look, and the share of the time run so far until the next.
FIRST_LOOK_SECONDS = 0.5
UNKNOWN_GROWTH = 0.25
CACHE_SECONDS = 7 * 24 * 3600


# What is timed: a request from its submit until a poll found it done ("finish"), or how long a
# submit held its provider slot ("call": a synchronous provider's whole generation;
# generation.limits.slot_free_in).
FINISH = "finish"
CALL = "call"


def _key(model_id: int, what: str = FINISH) -> str:
    return f"poll-schedule:{what}:{model_id}"


def record_duration(model_id: int, seconds: float, what: str = FINISH, *, first_look: bool = False) -> None:
    """Remember how long a request (or a call) of this model took; `first_look` when the request
    was found done by its first poll (it may have taken less)."""
    if seconds <= 0:
        return
    if first_look:
        seconds *= DONE_AT_FIRST_LOOK
    recent = [*(cache.get(_key(model_id, what)) or []), round(float(seconds), 3)][-HISTORY:]
    cache.set(_key(model_id, what), recent, timeout=CACHE_SECONDS)


def expected_seconds(model_id: int, what: str = FINISH) -> float | None:
    """The model's expected duration from its recent requests, None without any."""
    recent = cache.get(_key(model_id, what)) or []
    if not recent:
        return None
    # A slot's waiter that comes early is refused and waits a whole call more: for calls, the
    # longest recent one.
    return max(recent) if what == CALL else min(recent)


def next_poll_in(*, model_id: int, elapsed: float, interval: float) -> float:
    """Seconds until the next poll of a request that has run `elapsed` seconds since its submit.

    `interval` is the provider's usual poll interval: no gap grows beyond it.
    """
    expected = expected_seconds(model_id)
    if expected is None:
        if elapsed < FIRST_LOOK_SECONDS:
            return min(interval, FIRST_LOOK_SECONDS - elapsed)
        return min(interval, max(MIN_GAP_SECONDS, UNKNOWN_GROWTH * elapsed))
    first = max(0.0, expected - LEAD_SECONDS)
    if elapsed < first - MIN_GAP_SECONDS:
        return first - elapsed
    lateness = max(0.0, elapsed - first)
    return min(interval, MIN_GAP_SECONDS + GAP_GROWTH * lateness)
