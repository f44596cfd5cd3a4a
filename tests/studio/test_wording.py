"""How numbers read on the studio's pages."""

from __future__ import annotations

from decimal import Decimal

from studio.wording import money


def test_money():
    assert money(Decimal("0.0400")) == "$0.04"
    assert money(Decimal("0.004")) == "$0.004"
    assert money(Decimal("0.1340")) == "$0.134"
    assert money(Decimal("2.5")) == "$2.50"
    assert money(Decimal("0")) == "$0.00"


def test_times_read_as_just_now_then_their_largest_unit():
    from datetime import timedelta

    from django.utils import timezone

    from studio.wording import ago

    now = timezone.now()
    assert ago(now - timedelta(seconds=20), now) == "just now"
    assert ago(now - timedelta(hours=3, minutes=2), now) == "3\xa0hours ago"  # timesince keeps the unit on the number
