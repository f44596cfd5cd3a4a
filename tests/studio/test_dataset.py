"""studio.dataset: trigger words, the sheet's images joining the dataset with captions, include/exclude,
caption edits, warnings and the images the ZIP is built from."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError

from generation.lib.dataset import CaptionTrigger, dataset_zip_bytes
from generation.models import GenerationJob, JobKind
from studio.dataset import (
    character_set_trigger_word,
    dataset_add_asset,
    dataset_images,
    dataset_item_update,
    dataset_state,
    dataset_sync,
    default_trigger_word,
    trigger_word_of,
)
from studio.models import DatasetItem
from tests.studio.helpers import make_asset, make_character, make_job

pytestmark = pytest.mark.django_db


def make_sheet(owner, model, character, *, images=4, captions=None):
    job = make_job(owner, model, images=images, prompt="")
    captions = captions or [f"angle {i}, plain grey background" for i in range(images)]
    GenerationJob.objects.filter(pk=job.pk).update(
        kind=JobKind.CHARACTER_SHEET,
        character=character,
        params={"shots": [{"name": f"Shot {i}", "prompt": "p"} for i in range(images)], "captions": captions},
    )
    return job


def test_the_default_trigger_word_comes_from_the_name_and_is_valid(alice):
    aria = make_character(alice, "Ária Lee")
    word = default_trigger_word(aria)
    assert word.startswith("arialee_") and len(word) == len("arialee_") + 2
    assert trigger_word_of(aria) == word
    digits = make_character(alice, "42")
    assert default_trigger_word(digits).startswith("char42_")


@pytest.mark.parametrize("bad", ["", "a", "two words", "9lives", "x" * 33, "mira-k7"])
def test_a_malformed_trigger_word_is_refused_with_a_clear_message(alice, bad):
    aria = make_character(alice, "Aria")
    with pytest.raises(ValidationError, match="one token of 2 to 32"):
        character_set_trigger_word(character=aria, trigger_word=bad)
    aria.refresh_from_db()
    assert aria.trigger_word == ""


def test_a_trigger_word_is_unique_among_the_owners_characters_whatever_its_case(alice, bob):
    character_set_trigger_word(character=make_character(alice, "Aria"), trigger_word="aria_k7")
    with pytest.raises(ValidationError, match="already uses this trigger word"):
        character_set_trigger_word(character=make_character(alice, "Mira"), trigger_word="ARIA_K7")
    # Another user's character may use it.
    character_set_trigger_word(character=make_character(bob, "Aria"), trigger_word="aria_k7")


def test_the_sheet_joins_the_dataset_captioned_and_a_new_trigger_rewrites_the_captions(alice, model):
    aria = make_character(alice, "Aria", appearance={"gender": "woman"})
    make_sheet(alice, model, aria, images=3)
    dataset_sync(aria)
    dataset_sync(aria)  # idempotent

    items = list(DatasetItem.objects.filter(character=aria))
    trigger = trigger_word_of(aria)
    assert [i.caption for i in items] == [f"{trigger} woman, angle {n}, plain grey background" for n in range(3)]

    character_set_trigger_word(character=aria, trigger_word="aria_k7")
    assert [i.caption for i in DatasetItem.objects.filter(character=aria)] == [
        f"aria_k7 woman, angle {n}, plain grey background" for n in range(3)
    ]


def test_include_exclude_and_captions(alice, model):
    aria = make_character(alice, "Aria")
    make_sheet(alice, model, aria, images=2)
    dataset_sync(aria)
    first, second = DatasetItem.objects.filter(character=aria)

    dataset_item_update(item=first, included=False)
    dataset_item_update(item=second, caption="  aria_k7 woman,\n laughing  ")
    with pytest.raises(ValidationError, match="cannot be empty"):
        dataset_item_update(item=second, caption="   ")

    images = dataset_images(aria)
    assert [i.caption for i in images] == ["aria_k7 woman, laughing"]
    assert images[0].label == "Shot 1"


def test_warnings_for_too_few_images_and_small_ones(alice, model):
    aria = make_character(alice, "Aria")
    make_sheet(alice, model, aria, images=3)  # 64x80 images
    dataset_sync(aria)
    state = dataset_state(aria, min_images=10)
    assert state.included == 3
    assert state.warnings == [
        "3 images included: this trainer advises at least 10.",
        "3 included images are under 1024 px on the short side: "
        "trainers never upscale, so the LoRA learns them blurry.",
    ]
    assert all(row.small for row in state.rows)


def test_a_gallery_image_is_added_with_its_prompt_but_not_another_users(alice, bob, model):
    aria = make_character(alice, "Aria")
    character_set_trigger_word(character=aria, trigger_word="aria_k7")
    job = make_job(alice, model, images=1, prompt="on a beach at sunset")
    item = dataset_add_asset(character=aria, asset=job.assets.get())
    assert item.caption == "aria_k7 person, on a beach at sunset"
    with pytest.raises(ValidationError):
        dataset_add_asset(character=aria, asset=make_asset(bob))


def test_the_zip_of_the_dataset_is_flat_with_captions_and_a_manifest(alice, model):
    aria = make_character(alice, "Aria")
    character_set_trigger_word(character=aria, trigger_word="aria_k7")
    make_sheet(alice, model, aria, images=3)
    dataset_sync(aria)
    dataset_item_update(item=DatasetItem.objects.filter(character=aria).first(), included=False)

    data = dataset_zip_bytes(dataset_images(aria), trigger_word="aria_k7", caption_trigger=CaptionTrigger.LITERAL)

    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["01.png", "01.txt", "02.png", "02.txt", "manifest.json"]
    assert archive.read("01.txt").decode() == "aria_k7 person, angle 1, plain grey background"
