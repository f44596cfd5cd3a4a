"""The spend page's chart: one bar per day of the month, as server-rendered SVG (no script, no
charting library), scaled to the month's highest day."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from generation.selectors import Spend
from studio.wording import money

WIDTH, HEIGHT = 620, 160
AXIS = 20  # room under the bars for day labels


@dataclass(frozen=True)
class Bar:
    day: int
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    top: str  # the highest day's spend, the scale's top


def spend_chart(spend: Spend, *, since: datetime) -> Chart:
    days = calendar.monthrange(since.year, since.month)[1]
    amounts = {day.day: amount for day, amount in spend.by_day if day.month == since.month}
    top = max(amounts.values(), default=Decimal("0"))
    slot = WIDTH / days
    plot = HEIGHT - AXIS
    bars = []
    for day in range(1, days + 1):
        amount = amounts.get(day, Decimal("0"))
        height = float(amount / top) * (plot - 4) if top else 0.0
        bars.append(
            Bar(
                day=day,
                x=round((day - 1) * slot + 1, 1),
                y=round(plot - height, 1),
                width=round(slot - 2, 1),
                height=round(height, 1),
                label=f"{since.strftime('%b')} {day}: {money(amount)}",
            )
        )
    return Chart(bars=bars, width=WIDTH, height=HEIGHT, top=money(top))
