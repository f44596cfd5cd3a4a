"""How numbers and times read on the studio's pages: "3 images", "$0.04", "2 minutes ago"."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.timesince import timesince


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def money(amount: Decimal) -> str:
    """$0.04, $0.004, $0.134, $0.00: at least two decimals, no trailing zeros beyond them."""
    text = f"{amount.normalize():f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"${whole}.{fraction}"


def ago(when: datetime, now: datetime | None = None) -> str:
    """ "just now" under a minute, else the largest unit: "3 hours ago" (not "3 hours, 2 minutes")."""
    now = now or timezone.now()
    if now - when < timedelta(minutes=1):
        return "just now"
    return timesince(when, now).split(",")[0] + " ago"
