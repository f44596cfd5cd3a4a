"""What every trainer adapter reads from a trainer's registry row (generation/providers/training.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from generation.lib.dataset import CaptionTrigger
from generation.providers.training import TrainerSpec, progress_from_logs, validate_trainer_model
from models_registry.seed import MODELS
from tests.generation.providers import api_model


def seeded(key: str):
    row = next(m for m in MODELS if m["key"] == key)
    fields = {name: row[name] for name in ("input_schema", "capabilities")}
    return api_model(key, row["provider"], tasks=row["tasks"], **fields)


class TestSpecAndRegistry:
    def test_each_seeded_trainer_reads_its_fields(self):
        fast, portrait = (
            TrainerSpec.of(seeded("fal-ai/flux-lora-fast-training")),
            TrainerSpec.of(seeded("fal-ai/flux-lora-portrait-trainer")),
        )
        flux2 = TrainerSpec.of(seeded("fal-ai/flux-2-trainer"))
        assert (fast.zip_field, fast.trigger_field, fast.caption_trigger) == (
            "images_data_url",
            "trigger_word",
            CaptionTrigger.LITERAL,
        )
        assert (portrait.trigger_field, portrait.caption_trigger, portrait.steps_default) == (
            "trigger_phrase",
            CaptionTrigger.PLACEHOLDER,
            2500,
        )
        assert (flux2.zip_field, flux2.trigger_field, flux2.min_images) == ("image_data_url", None, 10)

    def test_the_price_follows_the_steps(self):
        turbo = TrainerSpec.of(seeded("fal-ai/turbo-flux-trainer"))
        assert turbo.price(None) == Decimal("2.4000")
        assert turbo.price(1500) == Decimal("3.6000")
        assert TrainerSpec.of(seeded("fal-ai/flux-2-trainer")).price(2000) == Decimal("12.8000")

    def test_every_seeded_trainer_is_valid(self):
        for row in MODELS:
            if "lora_training" in row["tasks"]:
                assert validate_trainer_model(seeded(row["key"])) == {}, row["key"]

    def test_bad_rows_are_refused(self):
        model = api_model(
            "fal-ai/new-trainer",
            "fal",
            tasks=["lora_training"],
            input_schema={"properties": {"zip_url": {"type": "string"}}},
            capabilities={"training": {"caption_trigger": "inline", "min_images": 0, "price": 1}},
        )
        errors = validate_trainer_model(model)
        assert "ZIP field" in errors["input_schema"]
        assert "unknown key(s) price" in errors["capabilities"]
        assert "caption_trigger is one of literal, placeholder" in errors["capabilities"]
        assert "min_images is a positive integer" in errors["capabilities"]


class TestProgress:
    @pytest.mark.parametrize(
        ("messages", "expected"),
        [
            (["step 3/12"], 0.25),
            (["Training 40%"], 0.4),
            (["step 10/100", "saving checkpoint"], 0.1),
            (["epoch 2/1"], None),
            ([], None),
        ],
    )
    def test_progress_from_logs(self, messages, expected):
        assert progress_from_logs([{"message": m} for m in messages]) == expected

    def test_progress_tolerates_no_logs(self):
        assert progress_from_logs(None) is None
        assert progress_from_logs(["step 1/2", {"message": None}]) is None

    def test_progress_from_a_log_text(self):
        text = "Loading\nflux_train_replicate:  40%|████      | 400/1000 [03:12<04:48]\r"
        assert progress_from_logs(text) == 0.4
