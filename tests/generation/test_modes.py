"""generation.modes: each job mode's task, negative-prompt family and reference rules, once each."""

from __future__ import annotations

from generation import modes
from generation.models import JobMode
from models_registry.models import GenerationMode, Task


def test_a_reference_makes_the_job_image_to_image_modify_by_default():
    assert modes.job_mode_for(has_references=False, copy=True) == JobMode.T2I
    assert modes.job_mode_for(has_references=True, copy=False) == JobMode.I2I_MODIFY
    assert modes.job_mode_for(has_references=True, copy=True) == JobMode.I2I_COPY


def test_each_mode_needs_its_registry_task_and_two_references_need_i2i_multi():
    assert modes.registry_task(JobMode.T2I) == Task.T2I
    assert modes.registry_task(JobMode.I2I_MODIFY) == modes.registry_task(JobMode.I2I_COPY) == Task.I2I
    assert modes.registry_task(JobMode.I2I_COPY, references=2) == Task.I2I_MULTI
    assert modes.registry_task(JobMode.I2V, references=2) == Task.I2V


def test_text_to_image_has_its_own_negative_prompts_and_every_other_mode_shares_i2i():
    assert modes.rules_for(JobMode.T2I).negative_family == GenerationMode.TXT2IMG
    others = {modes.rules_for(mode).negative_family for mode in (JobMode.I2I_MODIFY, JobMode.I2I_COPY, JobMode.I2V)}
    assert others == {GenerationMode.I2I}


def test_only_text_to_image_takes_no_reference():
    assert [mode for mode in JobMode.values if not modes.rules_for(mode).uses_references] == [JobMode.T2I]


def test_copy_turns_enhancement_off_and_may_go_without_a_prompt():
    assert modes.enhancement_for(JobMode.I2I_COPY, True) is False
    assert modes.enhancement_for(JobMode.I2I_MODIFY, True) is True
    assert modes.enhancement_for(JobMode.I2I_MODIFY, False) is False
    assert [mode for mode in JobMode.values if not modes.rules_for(mode).prompt_required] == [JobMode.I2I_COPY]


def test_modify_starts_at_half_strength_and_copy_at_095():
    assert modes.default_strength(JobMode.I2I_MODIFY) == 0.5
    assert modes.default_strength(JobMode.I2I_COPY) == 0.95


def test_denoise_is_the_opposite_of_the_strength_and_copy_changes_at_most_005():
    assert modes.denoise_for(JobMode.I2I_MODIFY, 0.3) == 0.7
    assert modes.denoise_for(JobMode.I2I_COPY, 0.2) == 0.05
    assert modes.denoise_for(JobMode.I2I_COPY, 1.0) == 0.0
