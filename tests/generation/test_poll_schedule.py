from __future__ import annotations

import pytest
from django.core.cache import cache

from generation import poll_schedule
from generation.poll_schedule import LEAD_SECONDS, MIN_GAP_SECONDS, expected_seconds, next_poll_in, record_duration

MODEL = 987654


@pytest.fixture(autouse=True)
def _fresh_history():
    cache.delete(poll_schedule._key(MODEL))
    yield
    cache.delete(poll_schedule._key(MODEL))


def polls_until(done_at: float, *, interval: float = 1.0) -> tuple[float, int]:
    """Walk the schedule from a submit at 0 to the first poll at or after `done_at`."""
    elapsed, polls = 0.0, 0
    while elapsed < done_at:
        elapsed += next_poll_in(model_id=MODEL, elapsed=elapsed, interval=interval)
        polls += 1
    return elapsed, polls


def test_without_history_it_is_never_more_than_a_quarter_late_and_stays_within_the_interval():
    for done_at in (0.3, 1.0, 2.0, 2.95, 10.0):
        found, _ = polls_until(done_at)
        assert found - done_at <= max(0.5, 0.25 * done_at) + 1e-9
    assert next_poll_in(model_id=MODEL, elapsed=60.0, interval=1.0) == 1.0


@pytest.mark.parametrize("latency", [1.5, 1.8, 2.0, 2.3, 2.6, 2.95])
def test_with_history_the_first_poll_comes_just_before_the_expected_finish(latency):
    for _ in range(5):
        record_duration(MODEL, latency + 0.02)

    found, polls = polls_until(latency)

    assert found - latency <= MIN_GAP_SECONDS + 0.02 + 1e-9
    assert polls <= 3
    assert next_poll_in(model_id=MODEL, elapsed=0.0, interval=1.0) == pytest.approx(latency + 0.02 - LEAD_SECONDS)


def test_past_the_expected_finish_the_gaps_grow_up_to_the_interval():
    record_duration(MODEL, 2.0)
    gaps = []
    elapsed = 2.0
    for _ in range(20):
        gap = next_poll_in(model_id=MODEL, elapsed=elapsed, interval=1.0)
        gaps.append(gap)
        elapsed += gap
    assert gaps == sorted(gaps) and gaps[0] < 0.2 and gaps[-1] == 1.0


def test_the_expected_duration_is_the_shortest_recent_one_and_follows_a_change_within_a_few_jobs():
    for seconds in [5.0, 3.0, 2.0, 4.0]:
        record_duration(MODEL, seconds)
    assert expected_seconds(MODEL) == 2.0
    for _ in range(poll_schedule.HISTORY):
        record_duration(MODEL, 7.0)  # the model got slower
    assert expected_seconds(MODEL) == 7.0
    assert len(cache.get(poll_schedule._key(MODEL))) == poll_schedule.HISTORY
    assert expected_seconds(MODEL + 1) is None


def test_a_request_done_at_its_first_look_teaches_an_earlier_first_poll():
    record_duration(MODEL, 2.0, first_look=True)
    assert expected_seconds(MODEL) == pytest.approx(2.0 * poll_schedule.DONE_AT_FIRST_LOOK)
