"""PromptBuilder: the notes' order and mode rules, quality settings, and negative prompt selection;
the trigger words of a character's LoRA (docs/providers.md §7.1, §7.6)."""

from __future__ import annotations

import pytest

from generation.models import JobMode
from generation.prompts import (
    COPY_PROMPT,
    ENHANCEMENT,
    PromptBuilder,
    build_prompt,
    generation_settings,
    negative_prompt_for,
    with_trigger_words,
)
from models_registry.models import NegativePrompt
from studio.models import Character
from tests.factories import offline_model

ARIA = Character(
    name="Aria",
    appearance={"gender": "woman", "hair_color": "red", "eye_color": "green"},
    identity={"style": "anime", "content_mode": "nsfw"},
)


def test_the_parts_come_in_the_notes_order():
    prompt = (
        PromptBuilder(mode=JobMode.T2I)
        .add_character(ARIA)
        .add_direction("reading a book")
        .add_scene("in a cosy café")
        .add_outfit("wearing a knit sweater")
        .add_style("illustration")
        .build()
    )
    assert prompt == (
        "woman, red hair, green eyes, reading a book, in a cosy café, wearing a knit sweater, illustration, "
        + ENHANCEMENT
    )


def test_the_characters_own_style_applies_unless_one_is_chosen():
    assert build_prompt(prompt="smiling", mode=JobMode.T2I, character=ARIA, enhance=False).endswith("smiling, anime")
    chosen = build_prompt(prompt="smiling", mode=JobMode.T2I, character=ARIA, enhance=False, style="3D render")
    assert chosen.endswith("smiling, 3D render") and "anime" not in chosen


def test_modify_enhances_copy_never_does_and_keeps_to_the_users_words():
    modify = build_prompt(prompt="at the beach", mode=JobMode.I2I_MODIFY, character=ARIA, scene="on a beach")
    assert modify.startswith("woman, red hair") and modify.endswith(ENHANCEMENT)
    copy = build_prompt(prompt="", mode=JobMode.I2I_COPY, character=ARIA, scene="on a beach", enhance=True)
    assert copy == COPY_PROMPT


def test_image_to_video_carries_the_action_only_never_identity():
    video = build_prompt(prompt="turns and waves", mode=JobMode.I2V, character=ARIA, scene="on a beach", style="anime")
    assert video == "turns and waves"


def test_quality_presets_and_copy_settings():
    assert generation_settings(mode=JobMode.T2I, quality="fast") == {"num_inference_steps": 15, "guidance_scale": 7.0}
    assert generation_settings(mode=JobMode.I2I_MODIFY, quality="high") == {
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
    }
    assert generation_settings(mode=JobMode.I2I_COPY, quality="high") == {
        "num_inference_steps": 15,
        "guidance_scale": 1.0,
    }


@pytest.mark.django_db
def test_the_negative_prompt_follows_model_type_content_mode_and_generation_mode():
    model = offline_model()
    NegativePrompt.objects.all().delete()
    NegativePrompt.objects.create(model_type="*", content_mode="sfw", generation_mode="txt2img", text="generic t2i")
    NegativePrompt.objects.create(model_type="*", content_mode="sfw", generation_mode="i2i", text="short i2i")
    NegativePrompt.objects.create(model_type="offline", content_mode="nsfw", generation_mode="txt2img", text="nsfw")
    assert negative_prompt_for(model=model, mode=JobMode.T2I) == "generic t2i"
    assert negative_prompt_for(model=model, mode=JobMode.I2I_MODIFY) == "short i2i"
    assert negative_prompt_for(model=model, mode=JobMode.T2I, content_mode="nsfw") == "nsfw"


@pytest.mark.parametrize(
    ("prompt", "triggers", "expected"),
    [
        ("woman laughing in the rain", ["mira_k7"], "mira_k7, woman laughing in the rain"),
        ("mira_k7 woman, laughing", ["mira_k7"], "mira_k7 woman, laughing"),
        ("portrait of Mira_K7.", ["mira_k7"], "portrait of Mira_K7."),
        ("a mira_k7s fan", ["mira_k7"], "mira_k7, a mira_k7s fan"),
        ("two friends", ["mira_k7", "ohwx", "mira_k7", ""], "mira_k7, ohwx, two friends"),
        ("", ["mira_k7"], "mira_k7"),
        ("no lora", [], "no lora"),
    ],
)
def test_with_trigger_words(prompt, triggers, expected):
    assert with_trigger_words(prompt, triggers) == expected
