"""Prompt building: the user's words, the character's identity, and the negative prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generation import modes
from generation.models import JobMode
from models_registry.models import NegativePrompt

if TYPE_CHECKING:
    from models_registry.models import ApiModel
    from studio.models import Character

# Applied in MODIFY and text-to-image when enhancement is on; COPY turns it off so nothing
# pulls the output away from the reference.
ENHANCEMENT = "detailed character portrait, soft cinematic lighting, sharp focus, high quality"
COPY_PROMPT = "an exact copy of the reference image"

_APPEARANCE_ORDER = ("gender", "age", "ethnicity", "body", "hair_color", "hair_style", "eye_color", "features")


def character_description(character: Character | None) -> str:
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
    style = (character.identity or {}).get("style")
    if style:
        parts.append(str(style))
    return ", ".join(parts)


def build_prompt(*, prompt: str, mode: str, character: Character | None = None, enhance: bool = True) -> str:
    """The prompt sent to the provider.

    Video models take their identity from the source image, so i2v gets the user's action only.
    """
    prompt = prompt.strip()
    if mode == JobMode.I2V:
        return prompt
    if mode == JobMode.I2I_COPY:
        return prompt or COPY_PROMPT
    parts = [character_description(character), prompt]
    if modes.enhancement_for(mode, enhance):
        parts.append(ENHANCEMENT)
    return ", ".join(p for p in parts if p)


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
