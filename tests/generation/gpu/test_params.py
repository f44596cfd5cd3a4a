"""A request as a pipeline call's settings: presets, COPY's clamp, steps x strength, sizes, seeds."""

from __future__ import annotations

import pytest

from generation.gpu import params
from generation.models import JobMode
from generation.providers.base import GenerationRequest, ProviderError, Reference


def request(**kwargs) -> GenerationRequest:
    defaults = {"prompt": "a knight", "negative_prompt": "blurry", "num_images": 1, "seed": 100}
    return GenerationRequest(**{**defaults, **kwargs})


def reference() -> Reference:
    return Reference(data=b"png", content_type="image/png")


def plan(req: GenerationRequest, mode: str = JobMode.T2I, multiple: int = 8) -> params.PlannedRequest:
    return params.plan_request(req, mode=mode, model_key="local/sdxl", size_multiple=multiple)


def test_the_presets_are_the_notes_modify_copy_and_fast():
    assert (plan(request(), JobMode.T2I).settings.steps, plan(request()).settings.guidance) == (25, 7.5)
    modify = plan(request(references=[reference()], denoise=0.5), JobMode.I2I_MODIFY).settings
    assert (modify.steps, modify.guidance, modify.strength) == (25, 7.5, 0.5)
    fast = plan(request(params={"quality": "fast"})).settings
    assert (fast.steps, fast.guidance) == (15, 7.0)
    copy = plan(request(references=[reference()], denoise=0.05), JobMode.I2I_COPY)
    assert copy.settings.guidance == 1.0


def test_copy_is_clamped_to_five_percent_denoise_whatever_it_is_given():
    copy = plan(request(references=[reference()], denoise=0.6), JobMode.I2I_COPY)
    assert copy.settings.strength == 0.05
    # COPY's 15 steps at 0.05 would run none: the schedule is stretched so exactly one denoises.
    assert copy.settings.steps == 20 and copy.denoising_steps == 1
    assert copy.notes["stretched_from"] == 15


def test_steps_times_strength_below_one_is_a_clear_permanent_error():
    with pytest.raises(ProviderError) as caught:
        plan(request(references=[reference()], denoise=0.1, params={"steps": 4}), JobMode.I2I_MODIFY)
    assert caught.value.permanent
    assert "steps x denoise must be at least 1" in str(caught.value) and "use 10 steps" in str(caught.value)
    with pytest.raises(ProviderError, match="leaves nothing to change"):
        plan(request(references=[reference()], denoise=0.0), JobMode.I2I_MODIFY)
    assert (
        plan(request(references=[reference()], denoise=0.25, params={"steps": 4}), JobMode.I2I_MODIFY).denoising_steps
        == 1
    )


def test_sizes_round_to_the_models_multiple_and_bad_ones_are_refused():
    settings = plan(request(params={"width": 1000, "height": 770}), multiple=64).settings
    assert (settings.width, settings.height) == (1024, 768)
    assert (plan(request()).settings.width, plan(request()).settings.height) == (1024, 1024)
    with pytest.raises(ProviderError, match="too large"):
        plan(request(params={"width": 4096, "height": 1024}))
    with pytest.raises(ProviderError, match="steps"):
        plan(request(params={"steps": 0}))
    with pytest.raises(ProviderError, match="Unknown quality"):
        plan(request(params={"quality": "ultra"}))


def test_every_image_has_its_own_seed_and_calls_group_by_strength():
    assert plan(request(num_images=3, seed=2**31 - 1)).seeds == [2**31 - 1, 0, 1]
    a = plan(request(references=[reference()], denoise=0.5), JobMode.I2I_MODIFY).settings
    b = plan(request(references=[reference()], denoise=0.5, prompt="other"), JobMode.I2I_MODIFY).settings
    c = plan(request(references=[reference()], denoise=0.4), JobMode.I2I_MODIFY).settings
    assert a == b and a != c


def test_image_to_image_needs_its_reference():
    with pytest.raises(ProviderError, match="needs a reference"):
        plan(request(denoise=0.5), JobMode.I2I_MODIFY)
