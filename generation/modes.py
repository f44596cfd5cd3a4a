"""The job modes' vocabulary: what each mode asks of the registry, the prompt and the references.

One home for the product notes' rules, so the prompt bar (StudioState), job_create, the prompt
builder and routing agree:

- a reference set makes the job image-to-image, MODIFY by default (reference strength 0.5);
- COPY keeps the reference (strength 0.95, at most 0.05 denoise) and turns enhancement off;
- the slider's reference strength reaches the worker as denoise, its opposite.
"""

from __future__ import annotations

from dataclasses import dataclass

from generation.models import JobMode
from models_registry.models import GenerationMode, Task

MODIFY_REFERENCE_STRENGTH = 0.5
COPY_REFERENCE_STRENGTH = 0.95
# The worker clamps COPY to at most this much change, whatever the slider says.
COPY_MAX_DENOISE = 0.05


@dataclass(frozen=True)
class ModeRules:
    """What one job mode needs: its registry task, its negative-prompt family, and its reference rules."""

    task: str
    negative_family: str
    uses_references: bool
    allows_enhancement: bool = True
    # COPY may leave the prompt empty: the reference says it all (generation.prompts.COPY_PROMPT).
    prompt_required: bool = True
    default_strength: float = MODIFY_REFERENCE_STRENGTH
    max_denoise: float = 1.0


RULES: dict[str, ModeRules] = {
    JobMode.T2I: ModeRules(task=Task.T2I, negative_family=GenerationMode.TXT2IMG, uses_references=False),
    JobMode.I2I_MODIFY: ModeRules(task=Task.I2I, negative_family=GenerationMode.I2I, uses_references=True),
    JobMode.I2I_COPY: ModeRules(
        task=Task.I2I,
        negative_family=GenerationMode.I2I,
        uses_references=True,
        allows_enhancement=False,
        prompt_required=False,
        default_strength=COPY_REFERENCE_STRENGTH,
        max_denoise=COPY_MAX_DENOISE,
    ),
    # Video models take their identity from the source image (generation.prompts.build_prompt).
    JobMode.I2V: ModeRules(task=Task.I2V, negative_family=GenerationMode.I2I, uses_references=True),
}


def rules_for(mode: str) -> ModeRules:
    """The rules of a JobMode value; KeyError for one that is not."""
    return RULES[mode]


def job_mode_for(*, has_references: bool, copy: bool) -> str:
    """The prompt bar's job mode: text-to-image without a reference, else MODIFY or COPY."""
    if not has_references:
        return JobMode.T2I
    return JobMode.I2I_COPY if copy else JobMode.I2I_MODIFY


def registry_task(mode: str, *, references: int = 0) -> str:
    """The registry task a job of `mode` needs: i2i_multi when an image-to-image job carries two references."""
    task = rules_for(mode).task
    if task == Task.I2I and references >= 2:
        return Task.I2I_MULTI
    return task


def enhancement_for(mode: str, requested: bool) -> bool:
    """Whether prompt enhancement applies: what the user asked, except where the mode forbids it (COPY)."""
    return requested and rules_for(mode).allows_enhancement


def default_strength(mode: str) -> float:
    """The reference strength a mode starts at when the user has not moved the slider."""
    return rules_for(mode).default_strength


def denoise_for(mode: str, reference_strength: float) -> float:
    """How far the output may move from the reference (the product notes' conversion)."""
    denoise = min(1.0 - reference_strength, rules_for(mode).max_denoise)
    return round(max(0.0, min(1.0, denoise)), 4)
