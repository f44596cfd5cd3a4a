"""A character sheet's plan (issue 11, the RYLA image-generation note): 7-16 shots of the same
character, each one angle, expression and framing on a plain background under one lighting, so that
only the identity stays constant across a LoRA's training images (docs/providers.md §7.6).

Each shot has a name (shown on the card) and the words of what varies, which become both the shot's
prompt direction and its training caption (the caption adds the trigger word in front).
"""

from __future__ import annotations

from dataclasses import dataclass

from generation.prompts import Shot

SHEET_MIN_IMAGES, SHEET_DEFAULT_IMAGES, SHEET_MAX_IMAGES = 7, 12, 16
SHEET_TITLE = "Character sheet"
# What keeps the identity: every shot is an edit of the locked portrait, not a new person.
SAME_PERSON = "the same person as in the reference image, same face and hair"

# (angle, expression, framing, background, lighting), in the order shots are taken: the first seven
# already cover every angle, four expressions and all framings, so a short sheet is still varied.
_SHOTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("front view", "neutral expression", "close-up", "plain light grey background", "soft studio lighting"),
    (
        "three-quarter view from the left",
        "smiling",
        "head and shoulders",
        "plain white background",
        "natural window light",
    ),
    ("three-quarter view from the right", "laughing", "half body", "plain beige background", "warm golden light"),
    (
        "left profile",
        "serious expression",
        "head and shoulders",
        "plain dark grey background",
        "dramatic side lighting",
    ),
    (
        "front view, seen from slightly above",
        "surprised expression",
        "close-up",
        "plain pale blue background",
        "cool overcast light",
    ),
    (
        "front view, seen from slightly below",
        "smiling",
        "full body",
        "plain sage green background",
        "soft studio lighting",
    ),
    ("right profile", "neutral expression", "half body", "plain white background", "warm golden light"),
    (
        "three-quarter view from the left",
        "serious expression",
        "full body",
        "plain light grey background",
        "cool overcast light",
    ),
    ("front view", "laughing", "half body", "plain dark grey background", "natural window light"),
    (
        "three-quarter view from the right",
        "surprised expression",
        "head and shoulders",
        "plain pale blue background",
        "soft studio lighting",
    ),
    ("front view", "smiling", "head and shoulders", "plain beige background", "dramatic side lighting"),
    (
        "three-quarter view from the right",
        "neutral expression",
        "close-up",
        "plain sage green background",
        "natural window light",
    ),
    ("left profile", "smiling", "half body", "plain white background", "cool overcast light"),
    (
        "front view, seen from slightly above",
        "serious expression",
        "head and shoulders",
        "plain beige background",
        "warm golden light",
    ),
    (
        "three-quarter view from the left",
        "laughing",
        "close-up",
        "plain pale blue background",
        "dramatic side lighting",
    ),
    (
        "front view, seen from slightly below",
        "neutral expression",
        "full body",
        "plain dark grey background",
        "natural window light",
    ),
)


@dataclass(frozen=True)
class SheetShot:
    angle: str
    expression: str
    framing: str
    background: str
    lighting: str

    @property
    def name(self) -> str:
        """The card's label, e.g. "Front view · neutral expression · close-up"."""
        return " · ".join((self.angle, self.expression, self.framing)).capitalize()

    @property
    def varies(self) -> str:
        """What differs between the sheet's images: the training caption after the trigger word."""
        return ", ".join((self.angle, self.expression, self.framing, self.background, self.lighting))

    def shot(self) -> Shot:
        """The shot as job_create takes it: its direction, with the background as its scene."""
        return Shot(
            name=self.name,
            direction=f"{SAME_PERSON}, {self.angle}, {self.expression}, {self.framing}, {self.lighting}",
            scene=self.background,
        )


def sheet_plan(count: int = SHEET_DEFAULT_IMAGES) -> list[SheetShot]:
    """The first `count` shots; ValueError outside SHEET_MIN_IMAGES..SHEET_MAX_IMAGES."""
    if not SHEET_MIN_IMAGES <= count <= SHEET_MAX_IMAGES:
        raise ValueError(f"A character sheet has {SHEET_MIN_IMAGES} to {SHEET_MAX_IMAGES} images, not {count}.")
    return [SheetShot(*row) for row in _SHOTS[:count]]


def sheet_caption(varies: str, *, trigger_word: str, subject: str = "") -> str:
    """A training caption: the trigger word (and the subject's class word, "woman"), then what varies."""
    lead = f"{trigger_word} {subject}".strip() if trigger_word else subject
    return ", ".join(p for p in (lead, varies) if p)
