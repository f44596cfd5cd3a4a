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
