"""One provider request as a pipeline call's settings: steps and guidance per mode and quality,
the denoise strength, the size, and one seed per image. No torch here: the adapter's tests and the
batching service read it without the GPU worker's dependencies.

The product notes (I2I system note, "Mode Implementation" and "Quality Settings"):
MODIFY 25 steps at guidance 7.5, COPY 15 steps at guidance 1.0 with at most 0.05 denoise, the fast
preset 15 steps at 7.0. The reference strength to denoise mapping and COPY's clamp are
generation.modes' (denoise_for, ModeRules.max_denoise); this module only applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from generation import modes
from generation.models import JobMode
from generation.prompts import QUALITY_HIGH, QUALITY_PRESETS, generation_settings
from generation.providers.base import GenerationRequest, ProviderError
from generation.providers.comfyui import requested_size

# The default size when neither the request nor the registry row names one (SDXL's native size).
DEFAULT_SIZE = 1024
MAX_STEPS = 150
MAX_SIDE = 2048

TXT2IMG = "txt2img"
IMG2IMG = "img2img"


@dataclass(frozen=True)
class CallSettings:
    """What one pipeline call shares: requests with equal settings may run in one call."""

    model: str
    kind: str  # TXT2IMG | IMG2IMG
    width: int
    height: int
    steps: int
    guidance: float
    # img2img only: img2img batches group by strength (one strength per pipeline call).
    strength: float | None = None


@dataclass
class PlannedRequest:
    """One provider request's part of a call: its own prompts, seeds and reference."""

    settings: CallSettings
    prompt: str
    negative_prompt: str
    seeds: list[int]
    reference: bytes | None = None
    # Steps that actually denoise (img2img runs int(steps * strength) of them).
    denoising_steps: int = 0
    notes: dict = field(default_factory=dict)


def preset(mode: str, quality: str) -> tuple[int, float]:
    """(steps, guidance) for a job mode and quality preset: the studio's own (generation.prompts)."""
    if mode != JobMode.I2I_COPY and quality not in QUALITY_PRESETS:
        raise ProviderError(f"Unknown quality {quality!r}: use {' or '.join(QUALITY_PRESETS)}.", permanent=True)
    settings = generation_settings(mode=mode, quality=quality)
    return int(settings["num_inference_steps"]), float(settings["guidance_scale"])


def denoise_strength(mode: str, denoise: float | None) -> float:
    """The img2img strength: the job's denoise (generation.modes.denoise_for made it from the
    slider), clamped again to the mode's maximum so COPY never moves more than COPY_MAX_DENOISE."""
    if denoise is None:
        return modes.denoise_for(mode, modes.default_strength(mode))
    return round(max(0.0, min(float(denoise), modes.rules_for(mode).max_denoise, 1.0)), 4)


def validate_steps(steps: int, strength: float) -> int:
    """img2img runs int(steps * strength) denoising steps; diffusers fails obscurely on 0
    (docs/providers.md section 5.1), so say plainly what to change. Returns the denoising steps."""
    run = int(steps * strength)
    if run >= 1:
        return run
    if strength <= 0:
        message = "A reference strength of 1 leaves nothing to change: lower it, or use COPY."
    else:
        message = (
            f"{steps} steps at denoise {strength:g} run no denoising step (steps x denoise must be at least 1): "
            f"use {math.ceil(1 / strength)} steps or more, or lower the reference strength."
        )
    raise ProviderError(message, permanent=True)


def _int_param(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProviderError(f'"{name}" must be a whole number from {low} to {high}.', permanent=True)
    return int(value)


def plan_request(request: GenerationRequest, *, mode: str, model_key: str, size_multiple: int) -> PlannedRequest:
    """The call settings and per-image inputs of one provider request. Raises a permanent
    ProviderError, with what to change, for settings the pipeline cannot run."""
    params = request.params or {}
    quality = str(params.get("quality") or QUALITY_HIGH)
    steps, guidance = preset(mode, quality)
    uses_reference = modes.rules_for(mode).uses_references
    strength = denoise_strength(mode, request.denoise) if uses_reference else None
    notes: dict = {"quality": quality}
    if "steps" in params:
        steps = _int_param(params, "steps", steps, 1, MAX_STEPS)
    elif strength is not None and int(steps * strength) < 1 and strength > 0:
        # COPY's 15 steps at 0.05 would run none: the schedule is stretched so exactly the
        # steps the preset means to skip are skipped and at least one denoises (the time is
        # that of the steps run, not of the schedule's length).
        notes["stretched_from"] = steps
        steps = min(MAX_STEPS, math.ceil(1 / strength))
    if "guidance" in params:
        value = params["guidance"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 30:
            raise ProviderError('"guidance" must be a number from 0 to 30.', permanent=True)
        guidance = float(value)
    denoising = validate_steps(steps, strength) if strength is not None else steps
    try:
        width, height = requested_size(
            params, {"width": DEFAULT_SIZE, "height": DEFAULT_SIZE, "size_multiple": size_multiple}
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"Invalid image size: {exc}", permanent=True) from exc
    if max(width, height) > MAX_SIDE:
        raise ProviderError(f"The image size {width}x{height} is too large: at most {MAX_SIDE} a side.", permanent=True)
    reference = request.references[0].data if uses_reference and request.references else None
    if uses_reference and reference is None:
        raise ProviderError("Image-to-image needs a reference image.", permanent=True)
    base_seed = request.seed if request.seed is not None else 0
    return PlannedRequest(
        settings=CallSettings(
            model=model_key,
            kind=IMG2IMG if uses_reference else TXT2IMG,
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            strength=strength,
        ),
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        # One seed per image, so image k of any batch equals a single run with its seed.
        seeds=[(base_seed + k) % 2**31 for k in range(request.num_images)],
        reference=reference,
        denoising_steps=denoising,
        notes=notes,
    )
