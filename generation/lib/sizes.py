"""Byte and pixel counts as people read them, in error messages."""

from __future__ import annotations


def megabytes(n: int) -> str:
    value = n / (1024 * 1024)
    # "30 MB", "2.5 MB": whole numbers from 10 up or when the decimal would be .0
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
    return f"{text} MB"


def megapixels(n: int) -> str:
    return f"{n / 1_000_000:.1f} megapixels"
