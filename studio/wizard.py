"""The character wizard's vocabulary and state: its steps, the options each answer may take, and
what a session remembers between steps (so a reload, Back or Next never loses an answer).

The views (studio/views_characters.py) only load, validate with studio.forms and save it; the
character itself is created by studio.services.character_create when the base-image step starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SESSION_KEY = "character_wizard"

STEP_NAME, STEP_APPEARANCE, STEP_IDENTITY, STEP_BASE = 1, 2, 3, 4
STEPS = (
    (STEP_NAME, "Name"),
    (STEP_APPEARANCE, "Appearance"),
    (STEP_IDENTITY, "Identity"),
    (STEP_BASE, "Base images"),
)

# (value stored on the character, label shown). The values are the words the prompt builder
# writes (generation.prompts.character_description), so they stay short and descriptive.
GENDER = [("woman", "Woman"), ("man", "Man"), ("androgynous person", "Androgynous")]
AGE = [
    ("young adult", "18-25"),
    ("adult in their thirties", "26-39"),
    ("middle-aged adult", "40-59"),
    ("older adult", "60+"),
]
ETHNICITY = [
    ("East Asian", "East Asian"),
    ("South Asian", "South Asian"),
    ("Southeast Asian", "Southeast Asian"),
    ("Black", "Black"),
    ("White", "White"),
    ("Latin American", "Latin American"),
    ("Middle Eastern", "Middle Eastern"),
    ("mixed heritage", "Mixed"),
]
BODY = [
    ("slim", "Slim"),
    ("athletic", "Athletic"),
    ("average build", "Average"),
    ("curvy", "Curvy"),
    ("muscular", "Muscular"),
]
HAIR_COLOR = [
    ("black", "Black"),
    ("brown", "Brown"),
    ("blonde", "Blonde"),
    ("red", "Red"),
    ("ginger", "Ginger"),
    ("silver", "Silver"),
    ("pink", "Pink"),
    ("blue", "Blue"),
    ("green", "Green"),
    ("purple", "Purple"),
]
HAIR_STYLE = [
    ("long straight hair", "Long, straight"),
    ("long wavy hair", "Long, wavy"),
    ("curly hair", "Curly"),
    ("bob cut", "Bob"),
    ("short hair", "Short"),
    ("ponytail", "Ponytail"),
    ("braids", "Braids"),
    ("buzz cut", "Buzz cut"),
]
EYE_COLOR = [
    ("brown", "Brown"),
    ("blue", "Blue"),
    ("green", "Green"),
    ("amber", "Amber"),
    ("grey", "Grey"),
    ("violet", "Violet"),
]
STYLE = [
    ("photorealistic", "Photorealistic"),
    ("anime", "Anime"),
    ("3D render", "3D"),
    ("illustration", "Illustration"),
]
CONTENT_MODE = [("sfw", "SFW"), ("nsfw", "NSFW (adults only)")]

APPEARANCE_KEYS = ("gender", "age", "ethnicity", "body", "hair_color", "hair_style", "eye_color", "features")
IDENTITY_KEYS = ("personality", "style", "content_mode")


@dataclass
class WizardState:
    """The answers so far and where the user is; kept in the session as a plain dict."""

    step: int = STEP_NAME
    name: str = ""
    appearance: dict[str, str] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    # Set once the base-image step created the character and its job.
    character_id: str | None = None
    job_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WizardState:
        data = data or {}
        step = data.get("step")
        return cls(
            step=step if step in dict(STEPS) else STEP_NAME,
            name=str(data.get("name") or ""),
            appearance={k: str(v) for k, v in (data.get("appearance") or {}).items() if k in APPEARANCE_KEYS},
            identity={k: str(v) for k, v in (data.get("identity") or {}).items() if k in IDENTITY_KEYS},
            character_id=data.get("character_id") or None,
            job_id=data.get("job_id") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "appearance": dict(self.appearance),
            "identity": dict(self.identity),
            "character_id": self.character_id,
            "job_id": self.job_id,
        }

    def initial_for(self, step: int) -> dict[str, str]:
        """What a step's form shows: the answers already given."""
        if step == STEP_NAME:
            return {"name": self.name}
        if step == STEP_APPEARANCE:
            return dict(self.appearance)
        if step == STEP_IDENTITY:
            return {"content_mode": "sfw", "style": "photorealistic", **self.identity}
        return {}

    def take(self, step: int, cleaned: dict[str, Any]) -> None:
        """Keep a step's validated answers (empty optional answers are left out)."""
        if step == STEP_NAME:
            self.name = cleaned["name"]
        elif step == STEP_APPEARANCE:
            self.appearance = {k: cleaned[k] for k in APPEARANCE_KEYS if cleaned.get(k)}
        elif step == STEP_IDENTITY:
            self.identity = {k: cleaned[k] for k in IDENTITY_KEYS if cleaned.get(k)}

    @property
    def steps(self) -> list[tuple[int, str]]:
        return list(STEPS)
