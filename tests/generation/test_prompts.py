"""Prompt building: the trigger words of a character's LoRA (docs/providers.md §7.1, §7.6)."""

from __future__ import annotations

import pytest

from generation.prompts import with_trigger_words


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
