from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from models_registry.models import ApiModel


def make(**kwargs) -> ApiModel:
    defaults = {"key": "x/model", "display_name": "X", "provider": "fal", "tasks": ["t2i"]}
    return ApiModel(**{**defaults, **kwargs})


def schema(**properties) -> dict:
    return {"type": "object", "properties": properties}


class TestMaxImages:
    def test_it_reads_the_schemas_num_images_maximum(self):
        assert make(input_schema=schema(num_images={"type": "integer", "maximum": 4})).max_images == 4

    def test_the_capability_override_wins_over_the_schema(self):
        model = make(input_schema=schema(num_images={"maximum": 4}), capabilities={"max_images": 2})
        assert model.max_images == 2

    def test_it_is_one_without_num_images(self):
        assert make(input_schema=schema(prompt={"type": "string"})).max_images == 1
        assert make(input_schema={}).max_images == 1

    def test_it_is_one_when_num_images_has_no_maximum(self):
        assert make(input_schema=schema(num_images={"type": "integer"})).max_images == 1

    def test_batches_natively_only_above_one(self):
        assert make(input_schema=schema(num_images={"maximum": 10})).batches_natively is True
        assert make(input_schema=schema()).batches_natively is False

    def test_a_higher_native_maximum_allows_every_count_up_to_it(self):
        assert make(input_schema=schema(num_images={"maximum": 10})).allowed_counts == list(range(1, 11))
        assert make(provider="gemini").allowed_counts == [1, 2, 4]

    def test_requests_take_at_most_max_images_each(self):
        four = make(input_schema=schema(num_images={"maximum": 4}))
        assert four.request_chunks([1, 2, 3, 4, 5]) == [[1, 2, 3, 4], [5]]
        assert make(input_schema=schema()).request_chunks([1, 2]) == [[1], [2]]


class TestImageField:
    def test_requires_image_urls_array_forces_the_array(self):
        model = make(
            input_schema=schema(image_url={"type": "string"}), capabilities={"requires_image_urls_array": True}
        )
        assert model.image_field == "image_urls"

    def test_it_prefers_image_urls_in_the_schema(self):
        assert make(input_schema=schema(image_urls={}, image_url={})).image_field == "image_urls"

    def test_it_uses_image_url_next(self):
        assert make(input_schema=schema(image_url={})).image_field == "image_url"

    def test_it_falls_back_to_image(self):
        assert make(input_schema=schema(prompt={})).image_field == "image"


class TestValidation:
    @pytest.mark.parametrize("maximum", [0, -1, "4", 2.5, True, None])
    def test_a_num_images_maximum_must_be_a_positive_integer(self, maximum):
        model = make(input_schema=schema(num_images={"maximum": maximum}))
        with pytest.raises(ValidationError) as exc:
            model.clean_fields()
        assert "input_schema" in exc.value.message_dict

    def test_an_unknown_capability_is_rejected(self):
        with pytest.raises(ValidationError) as exc:
            make(capabilities={"max_imagez": 2}).clean_fields()
        assert 'Unknown capability "max_imagez"' in str(exc.value)

    def test_a_capability_of_the_wrong_type_is_rejected(self):
        with pytest.raises(ValidationError) as exc:
            make(capabilities={"requires_image_urls_array": "yes"}).clean_fields()
        assert "must be true or false" in str(exc.value)

    def test_unknown_tasks_are_rejected(self):
        with pytest.raises(ValidationError) as exc:
            make(tasks=["t2i", "upscale"]).clean_fields()
        assert "upscale" in str(exc.value)


class TestTrainerRows:
    """A lora_training row is checked by its kind's trainer adapter (generation/providers/fal_training.py)."""

    def test_a_trainer_row_without_a_zip_field_is_refused(self):
        model = make(tasks=["lora_training"], input_schema=schema(prompt={"type": "string"}))
        assert model.is_trainer
        with pytest.raises(ValidationError) as caught:
            model.clean()
        assert "ZIP field" in str(caught.value.message_dict["input_schema"])

    def test_a_trainer_row_of_a_kind_that_trains_nothing_is_refused(self):
        model = make(provider="gemini", tasks=["lora_training"])
        with pytest.raises(ValidationError) as caught:
            model.clean()
        assert caught.value.message_dict["provider"] == ["Google Gemini has no LoRA trainer."]

    def test_an_unknown_training_key_is_refused(self):
        model = make(
            tasks=["lora_training"],
            input_schema=schema(images_data_url={"type": "string"}),
            capabilities={"training": {"price_per_step": "0.002"}},
        )
        with pytest.raises(ValidationError) as caught:
            model.clean()
        assert "unknown key(s) price_per_step" in str(caught.value.message_dict["capabilities"])

    def test_an_image_model_is_no_trainer(self):
        assert not make().is_trainer
        make(input_schema=schema(num_images={"maximum": 4})).clean()
