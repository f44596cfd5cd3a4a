"""The studio's rules without HTTP: reference slots, MODIFY/COPY, batch plans and prices."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from generation.models import JobMode
from studio.selectors import batch_plan, chip_counts, money
from studio.services import StudioState
from tests.factories import offline_model

A, B, C = (str(uuid.uuid4()) for _ in range(3))


def test_references_fill_ref1_then_ref2_then_replace_ref2():
    state = StudioState()
    state.add_reference(A)
    state.add_reference(B)
    state.add_reference(C)
    assert state.refs == [A, C]
    assert state.job_mode == JobMode.I2I_MODIFY


def test_the_same_image_never_fills_both_slots():
    state = StudioState()
    state.add_reference(A)
    state.add_reference(A)
    state.add_reference(A, slot=2)
    assert state.refs == [A, None]


def test_mode_switches_set_strength_and_enhancement():
    state = StudioState()
    state.add_reference(A)
    assert (state.mode, state.strength, state.enhance) == ("modify", 0.5, True)
    state.set_mode("copy")
    assert (state.strength, state.enhance, state.job_mode) == (0.95, False, JobMode.I2I_COPY)
    state.set_mode("modify")
    assert (state.strength, state.enhance) == (0.5, True)


def test_clearing_the_last_reference_goes_back_to_text_to_image():
    state = StudioState()
    state.add_reference(A)
    state.set_mode("copy")
    state.clear_reference(1)
    assert state.job_mode == JobMode.T2I and state.mode == "modify"


def test_state_survives_the_session_and_ignores_garbage():
    state = StudioState.from_dict({"refs": ["nope", A, B], "mode": "weird", "strength": "nan", "images": -3})
    assert state.refs == [None, A]
    assert (state.mode, state.strength, state.images) == ("modify", 0.5, 1)
    assert StudioState.from_dict(state.to_dict()) == state


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
