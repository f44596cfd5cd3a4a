"""How numbers read on the studio's pages: "3 images", "$0.04"."""

from __future__ import annotations

from decimal import Decimal


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def money(amount: Decimal) -> str:
    """$0.04, $0.004, $0.134, $0.00: at least two decimals, no trailing zeros beyond them."""
    text = f"{amount.normalize():f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"${whole}.{fraction}"
