"""generation.lib.retry and generation.lib.sizes: the one copy of each rule the HTTP clients share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from generation.lib.retry import is_retryable_status, parse_retry_after
from generation.lib.sizes import megabytes, megapixels


def test_it_parses_retry_after_seconds_and_dates():
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 <= parse_retry_after(later) <= 120


def test_only_server_errors_and_not_now_answers_are_worth_another_try():
    assert all(is_retryable_status(s) for s in (408, 409, 425, 429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 413, 422))


def test_sizes_read_as_people_write_them():
    assert megabytes(30 * 1024 * 1024) == "30 MB"
    assert megabytes(int(2.5 * 1024 * 1024)) == "2.5 MB"
    assert megabytes(2 * 1024 * 1024) == "2 MB"
    assert megapixels(16_777_216) == "16.8 megapixels"
