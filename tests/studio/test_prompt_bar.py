"""The prompt bar's rules without HTTP: reference slots, MODIFY/COPY, and what the session keeps."""

from __future__ import annotations

import uuid

from generation.models import JobMode
from studio.prompt_bar import StudioState

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


class TestPortrait:
    portrait = str(uuid.uuid4())

    def test_the_selected_characters_portrait_becomes_ref1_and_moves_an_image_to_ref2(self):
        state = StudioState()
        own = str(uuid.uuid4())
        state.add_reference(own)
        state.follow_portrait(self.portrait)
        assert state.refs == [self.portrait, own]
        assert state.job_mode == JobMode.I2I_MODIFY

    def test_removed_it_stays_out_for_one_run_only(self):
        state = StudioState()
        state.follow_portrait(self.portrait)
        state.clear_reference(1)
        state.follow_portrait(self.portrait)
        assert state.refs == [None, None]
        state.after_run()
        state.follow_portrait(self.portrait)
        assert state.refs[0] == self.portrait

    def test_another_characters_portrait_leaves_the_slots(self):
        state = StudioState()
        state.follow_portrait(self.portrait)
        state.follow_portrait(None)
        assert state.refs == [None, None]
        assert StudioState.from_dict(state.to_dict()).portrait is None
