"""The prompt bar's state: the two reference slots, MODIFY/COPY, strength, enhancement, model and count.

It is kept per browser session so that every control also works as a plain form post without
JavaScript; `StudioState` holds the rules, the views only load and save it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from generation import modes
from generation.prompts import QUALITY_FAST, QUALITY_PRESETS

MODE_MODIFY = "modify"
MODE_COPY = "copy"
PROMPT_MAX_LENGTH = 2000
REFERENCE_SLOTS = 2
# A scene, outfit or style: a preset's text or the user's own words.
PART_MAX_LENGTH = 200

# The session key of the selected character (studio.views; studio.live reads it for each card).
CHARACTER_SESSION_KEY = "studio_character"


def _clean_uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError, AttributeError):
        return None


def _clean_strength(value: Any, default: float) -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError):
        return default
    if strength != strength:  # NaN
        return default
    return round(max(0.0, min(1.0, strength)), 2)


@dataclass
class StudioState:
    """What the prompt bar shows: kept in the session, so it survives page loads and plain form posts.

    Reference rules (the product notes): the first image fills ref1, the second ref2, a further one
    replaces ref2 and keeps ref1. A new reference starts MODIFY at 0.5 with enhancement on;
    MODIFY -> COPY sets 0.95 and turns enhancement off; COPY -> MODIFY sets 0.5 and turns it back on.
    """

    refs: list[str | None] = field(default_factory=lambda: [None] * REFERENCE_SLOTS)
    mode: str = MODE_MODIFY
    strength: float = modes.MODIFY_REFERENCE_STRENGTH
    enhance: bool = True
    model_id: int | None = None
    images: int = 1
    prompt: str = ""
    # Batch Mode: Generate adds the job to the model's batch (on models with a batch lane).
    batch: bool = False
    # The selected character's locked portrait, placed as ref1 by follow_portrait, and whether the
    # user removed it for the next run only.
    portrait: str | None = None
    portrait_off: bool = False
    scene: str = ""
    outfit: str = ""
    style: str = ""
    quality: str = QUALITY_FAST

    # -- persistence ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StudioState:
        state = cls()
        data = data or {}
        refs = list(data.get("refs") or [])[:REFERENCE_SLOTS]
        refs += [None] * (REFERENCE_SLOTS - len(refs))
        state.refs = [_clean_uuid(r) if r else None for r in refs]
        state.mode = data.get("mode") if data.get("mode") in (MODE_MODIFY, MODE_COPY) else MODE_MODIFY
        state.strength = _clean_strength(data.get("strength"), modes.MODIFY_REFERENCE_STRENGTH)
        state.enhance = bool(data.get("enhance", True))
        model_id = data.get("model_id")
        state.model_id = model_id if isinstance(model_id, int) else None
        images = data.get("images")
        state.images = images if isinstance(images, int) and images >= 1 else 1
        state.prompt = str(data.get("prompt") or "")[:PROMPT_MAX_LENGTH]
        state.batch = bool(data.get("batch", False))
        state.portrait = _clean_uuid(data.get("portrait")) if data.get("portrait") else None
        state.portrait_off = bool(data.get("portrait_off"))
        for name in ("scene", "outfit", "style"):
            setattr(state, name, str(data.get(name) or "")[:PART_MAX_LENGTH])
        state.quality = data.get("quality") if data.get("quality") in QUALITY_PRESETS else QUALITY_FAST
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "refs": list(self.refs),
            "mode": self.mode,
            "strength": self.strength,
            "enhance": self.enhance,
            "model_id": self.model_id,
            "images": self.images,
            "prompt": self.prompt,
            "batch": self.batch,
            "portrait": self.portrait,
            "portrait_off": self.portrait_off,
            "scene": self.scene,
            "outfit": self.outfit,
            "style": self.style,
            "quality": self.quality,
        }

    def update_from_form(self, data: Any) -> None:
        """Take over what the prompt form currently shows (a QueryDict), ignoring what does not parse.

        Controls posted with the form (swap, clear, model change...) must not lose what the user
        typed or picked meanwhile. The reference slots are never taken from the client: they change
        only through the reference actions, which check ownership.
        """
        if "prompt" in data:
            self.prompt = str(data.get("prompt", ""))[:PROMPT_MAX_LENGTH]
        if "model" in data:
            try:
                self.model_id = int(data.get("model"))
            except (TypeError, ValueError):
                pass
        if "images" in data:
            try:
                self.images = max(1, int(data.get("images")))
            except (TypeError, ValueError):
                pass
        for name in ("scene", "outfit", "style"):
            if name in data:
                setattr(self, name, str(data.get(name, "")).strip()[:PART_MAX_LENGTH])
        if data.get("quality") in QUALITY_PRESETS:
            self.quality = data.get("quality")
        # The form always carries this marker, so an unchecked box (which posts nothing) reads as off.
        if "enhance_present" in data or "enhance" in data:
            self.enhance = data.get("enhance") in ("on", "true", "1")
        if "batch_present" in data or "batch" in data:
            self.batch = data.get("batch") in ("on", "true", "1")
        if self.has_references:
            if data.get("mode") in (MODE_MODIFY, MODE_COPY):
                self.mode = data.get("mode")
            if "strength" in data:
                self.strength = _clean_strength(data.get("strength"), self.strength)

    # -- references ----------------------------------------------------------------------
    @property
    def references(self) -> list[str]:
        return [r for r in self.refs if r]

    @property
    def has_references(self) -> bool:
        return any(self.refs)

    def add_reference(self, asset_id: uuid.UUID | str, slot: int | None = None) -> None:
        """Put an image in slot 1 or 2, or (slot None) in the first free slot, else replace ref2."""
        asset_id = str(asset_id)
        if slot not in (1, 2):
            slot = 1 if self.refs[0] is None else 2
        if self.refs[slot - 1] == asset_id:
            return
        other = 2 - slot  # index of the other slot
        if self.refs[other] == asset_id:
            if slot == 2:
                # The same image twice wastes a reference slot (the pipeline drops the duplicate anyway).
                return
            self.refs[other] = None  # moved from ref2 up to ref1
        self.refs[slot - 1] = asset_id
        self._reset_mode()

    def swap_references(self) -> None:
        self.refs = [self.refs[1], self.refs[0]]

    def clear_reference(self, slot: int | None = None) -> None:
        cleared = [self.refs[slot - 1]] if slot in (1, 2) else list(self.refs)
        if self.portrait and self.portrait in cleared:
            self.portrait_off = True  # removed for the next run; follow_portrait brings it back after
        if slot in (1, 2):
            self.refs[slot - 1] = None
        else:
            self.refs = [None] * REFERENCE_SLOTS
        if not self.has_references:
            self._reset_mode()

    def keep_only(self, existing: set[str]) -> None:
        """Drop references to images that were deleted (or never were the user's)."""
        had_references = self.has_references
        self.refs = [r if r in existing else None for r in self.refs]
        if had_references and not self.has_references:
            self._reset_mode()

    # -- the selected character's portrait -----------------------------------------------------
    def follow_portrait(self, portrait: str | None) -> None:
        """Make the selected character's locked portrait reference 1 (None: no character or no portrait).

        Another character's portrait placed before leaves the slots; one the user removed stays
        out until the next run (after_run). An image the user put in ref1 moves to ref2.
        """
        portrait = str(portrait) if portrait else None
        if self.portrait != portrait:
            if self.portrait in self.refs:
                self.refs = [r for r in self.refs if r != self.portrait] + [None]
                if not self.has_references:
                    self._reset_mode()
            self.portrait, self.portrait_off = portrait, False
        if portrait is None or self.portrait_off or portrait in self.refs:
            return
        others = [r for r in self.refs if r and r != portrait]
        self.refs = [portrait, others[0] if others else None]
        self._reset_mode()

    def after_run(self) -> None:
        """A generation was made: a portrait removed for that run is used again from the next one."""
        self.portrait_off = False

    # -- MODIFY / COPY -------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in (MODE_MODIFY, MODE_COPY) or mode == self.mode:
            return
        self.mode = mode
        self._apply_mode_defaults()

    def _reset_mode(self) -> None:
        self.mode = MODE_MODIFY
        self._apply_mode_defaults()

    def _apply_mode_defaults(self) -> None:
        """Entering MODIFY or COPY sets that mode's strength and enhancement (generation.modes)."""
        rules = modes.rules_for(modes.job_mode_for(has_references=True, copy=self.mode == MODE_COPY))
        self.strength = rules.default_strength
        self.enhance = rules.allows_enhancement

    @property
    def job_mode(self) -> str:
        return modes.job_mode_for(has_references=self.has_references, copy=self.mode == MODE_COPY)
