"""When an HTTP answer is worth asking again, and how long it asks us to wait."""

from __future__ import annotations

import email.utils
import math
import time

# 4xx answers that say "not now" rather than "never": timeouts, conflicts, too early, too many.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 425, 429})


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_CLIENT_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header value in seconds (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
