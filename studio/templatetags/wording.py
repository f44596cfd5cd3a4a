"""The studio's wording (studio/wording.py) as template filters, for pages that show raw times."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django import template

from studio import wording

register = template.Library()


@register.filter
def ago(when: datetime | None) -> str:
    return wording.ago(when) if when else ""


@register.filter
def money(amount: Decimal | None) -> str:
    return wording.money(Decimal(amount or 0))
