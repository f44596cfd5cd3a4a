"""Prompt building (PromptBuilder): the character, the user's words, scene, outfit, style and quality;
the generation settings of a quality preset; and the negative prompt from the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation import modes
from generation.models import JobMode
from models_registry.models import ContentMode, NegativePrompt

if TYPE_CHECKING:
    from models_registry.models import ApiModel
    from studio.models import Character

# Applied in MODIFY and text-to-image when enhancement is on; COPY turns it off so nothing
# pulls the output away from the reference.
ENHANCEMENT = "detailed character portrait, soft cinematic lighting, sharp focus, high quality"
COPY_PROMPT = "an exact copy of the reference image"

_APPEARANCE_ORDER = ("gender", "age", "ethnicity", "body", "hair_color", "hair_style", "eye_color", "features")

# The quality presets of the product notes (fast previews, high final output), sent as the
# fal/Replicate field names; generation.providers.inputs passes them only to a model whose input
# schema has them. COPY asks for near-identity: guidance 1.0 and few steps whatever the preset.
QUALITY_FAST, QUALITY_HIGH = "fast", "high"
QUALITY_PRESETS: dict[str, dict[str, float | int]] = {
    QUALITY_FAST: {"num_inference_steps": 15, "guidance_scale": 7.0},
    QUALITY_HIGH: {"num_inference_steps": 25, "guidance_scale": 7.5},
}
COPY_SETTINGS: dict[str, float | int] = {"num_inference_steps": 15, "guidance_scale": 1.0}


def character_description(character: Character | None) -> str:
    """The character's appearance as prompt words ("red hair, green eyes"); its style is the builder's."""
    if character is None:
        return ""
    appearance = character.appearance or {}
    parts = []
    for key in _APPEARANCE_ORDER:
        value = appearance.get(key)
        if not value:
            continue
        if key == "hair_color":
            parts.append(f"{value} hair")
        elif key == "eye_color":
            parts.append(f"{value} eyes")
        else:
            parts.append(str(value))
    return ", ".join(parts)


def character_style(character: Character | None) -> str:
    return str((character.identity or {}).get("style") or "") if character is not None else ""


def character_content_mode(character: Character | None) -> str:
    mode = (character.identity or {}).get("content_mode") if character is not None else None
    return mode if mode in ContentMode.values else ContentMode.SFW


@dataclass(frozen=True)
class Shot:
    """One image of a profile picture set: its name on the card and what the builder adds for it."""

    name: str
    direction: str = ""
    scene: str = ""
    outfit: str = ""


class PromptBuilder:
    """The notes' prompt design: character + scene + outfit + style + quality, in that order.

    The user's own words (the direction) follow the character. The mode decides what may go in:
    image-to-video carries the action only (the video model takes identity from its source image),
    COPY carries the user's words or COPY_PROMPT and no enhancement, MODIFY and text-to-image
    carry everything with the enhancement terms when enhancement is on.
    """

    def __init__(self, *, mode: str = JobMode.T2I, enhance: bool = True) -> None:
        self.mode = mode
        self.enhance = modes.enhancement_for(mode, enhance)
        self._character = ""
        self._direction = ""
        self._scene = ""
        self._outfit = ""
        self._style = ""

    def add_character(self, character: Character | None) -> PromptBuilder:
        self._character = character_description(character)
        # The character's default style unless a style is chosen for this generation.
        self._style = self._style or character_style(character)
        return self

    def add_direction(self, text: str) -> PromptBuilder:
        self._direction = (text or "").strip()
        return self

    def add_scene(self, text: str) -> PromptBuilder:
        self._scene = (text or "").strip()
        return self

    def add_outfit(self, text: str) -> PromptBuilder:
        self._outfit = (text or "").strip()
        return self

    def add_style(self, text: str) -> PromptBuilder:
        if (text or "").strip():
            self._style = text.strip()
        return self

    def build(self) -> str:
        if self.mode == JobMode.I2V:
            return self._direction
        if self.mode == JobMode.I2I_COPY:
            return self._direction or COPY_PROMPT
        parts = [self._character, self._direction, self._scene, self._outfit, self._style]
        if self.enhance:
            parts.append(ENHANCEMENT)
        return ", ".join(p for p in parts if p)


def build_prompt(
    *,
    prompt: str,
    mode: str,
    character: Character | None = None,
    enhance: bool = True,
    scene: str = "",
    outfit: str = "",
    style: str = "",
) -> str:
    """The prompt sent to the provider (PromptBuilder in its order)."""
    return (
        PromptBuilder(mode=mode, enhance=enhance)
        .add_style(style)
        .add_character(character)
        .add_direction(prompt)
        .add_scene(scene)
        .add_outfit(outfit)
        .build()
    )


def shot_prompts(
    shots: Sequence[Shot],
    *,
    prompt: str,
    mode: str,
    character: Character | None,
    enhance: bool,
    scene: str = "",
    outfit: str = "",
    style: str = "",
) -> list[dict[str, str]]:
    """A profile set's images: each shot's name and prompt (its framing and expression, then the
    user's words; its own scene and outfit, else the job's)."""
    return [
        {
            "name": shot.name,
            "prompt": build_prompt(
                prompt=", ".join(p for p in (shot.direction, prompt) if p),
                mode=mode,
                character=character,
                enhance=enhance,
                scene=shot.scene or scene,
                outfit=shot.outfit or outfit,
                style=style,
            ),
        }
        for shot in shots
    ]


def generation_settings(*, mode: str, quality: str = QUALITY_FAST) -> dict[str, float | int]:
    """Steps and guidance for a job: COPY's near-identity settings, else the quality preset's."""
    if mode == JobMode.I2I_COPY:
        return dict(COPY_SETTINGS)
    return dict(QUALITY_PRESETS.get(quality, QUALITY_PRESETS[QUALITY_FAST]))


def with_trigger_words(prompt: str, trigger_words: list[str]) -> str:
    """`prompt` led by each LoRA's trigger word it does not already hold as a word: the trigger is
    what calls the trained identity up (docs/providers.md §7.1 step 6, §7.6)."""
    words = {word.strip(",.;:!?()[]\"'").lower() for word in prompt.split()}
    missing = [t for t in dict.fromkeys(w.strip() for w in trigger_words) if t and t.lower() not in words]
    return ", ".join([*missing, prompt] if prompt else missing)


def negative_prompt_for(*, model: ApiModel, mode: str, content_mode: str = "sfw") -> str:
    """The most specific active negative prompt: one for the model key, its provider, or '*'."""
    candidates = NegativePrompt.objects.filter(
        is_active=True,
        content_mode=content_mode,
        generation_mode=modes.rules_for(mode).negative_family,
        model_type__in=[model.key, model.provider, "*"],
    )
    specificity = {model.key: 0, model.provider: 1, "*": 2}
    best = sorted(candidates, key=lambda n: (specificity[n.model_type], -n.priority, n.id))
    return best[0].text if best else ""
