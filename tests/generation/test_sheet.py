"""A character sheet's plan: shots x captions (generation.sheet)."""

from __future__ import annotations

import pytest

from generation.sheet import SAME_PERSON, SHEET_MAX_IMAGES, SHEET_MIN_IMAGES, sheet_caption, sheet_plan


@pytest.mark.parametrize("count", [SHEET_MIN_IMAGES, 12, SHEET_MAX_IMAGES])
def test_the_plan_has_the_asked_number_of_distinct_shots(count):
    plan = sheet_plan(count)
    assert len(plan) == count
    assert len({s.name for s in plan}) == count
    assert len({(s.angle, s.expression, s.framing) for s in plan}) == count


@pytest.mark.parametrize("count", [0, 6, 17])
def test_a_count_outside_7_to_16_is_refused(count):
    with pytest.raises(ValueError, match="7 to 16"):
        sheet_plan(count)


def test_even_the_shortest_sheet_varies_angle_expression_framing_and_keeps_plain_backgrounds():
    plan = sheet_plan(SHEET_MIN_IMAGES)
    assert {"front view", "left profile", "right profile"} <= {s.angle for s in plan}
    assert any("from the left" in s.angle for s in plan) and any("from the right" in s.angle for s in plan)
    assert any("above" in s.angle for s in plan) and any("below" in s.angle for s in plan)
    assert {s.framing for s in plan} == {"close-up", "head and shoulders", "half body", "full body"}
    assert len({s.expression for s in plan}) == 5
    assert all(s.background.startswith("plain ") for s in plan)
    assert len({s.lighting for s in plan}) >= 4


def test_each_shot_is_an_edit_of_the_same_person_with_its_background_as_the_scene():
    shot = sheet_plan(12)[1]
    as_job = shot.shot()
    assert as_job.name == "Three-quarter view from the left · smiling · head and shoulders"
    assert as_job.direction.startswith(SAME_PERSON)
    assert "smiling" in as_job.direction and "natural window light" in as_job.direction
    assert as_job.scene == "plain white background"


def test_the_caption_leads_with_the_trigger_and_the_subject_then_what_varies():
    shot = sheet_plan(12)[3]
    caption = sheet_caption(shot.varies, trigger_word="aria_3f", subject="woman")
    assert caption == (
        "aria_3f woman, left profile, serious expression, head and shoulders, plain dark grey background, "
        "dramatic side lighting"
    )
