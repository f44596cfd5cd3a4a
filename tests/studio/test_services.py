"""The studio's rules without HTTP: batch plans and prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from studio.selectors import batch_plan, chip_counts, money
from tests.factories import offline_model


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("max_images", "count", "plan"),
    [
        (4, 4, "1 request, 4 images"),
        (1, 4, "4 requests"),
        (1, 1, "1 request"),
        (2, 4, "2 requests, 4 images"),
        (10, 10, "1 request, 10 images"),
    ],
)
def test_batch_plans(max_images, count, plan):
    assert batch_plan(offline_model(max_images=max_images), count) == plan


@pytest.mark.django_db
def test_chips_add_a_higher_native_maximum():
    assert chip_counts(offline_model(max_images=10)) == [1, 2, 4, 10]
    assert chip_counts(offline_model(max_images=1)) == [1, 2, 4]


def test_money():
    assert money(Decimal("0.0400")) == "$0.04"
    assert money(Decimal("0.004")) == "$0.004"
    assert money(Decimal("0.1340")) == "$0.134"
    assert money(Decimal("2.5")) == "$2.50"
    assert money(Decimal("0")) == "$0.00"
