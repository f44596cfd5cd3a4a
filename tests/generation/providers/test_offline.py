"""The offline engine renders real, deterministic portraits and does real image-to-image."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from generation.providers.base import GenerationRequest, ProviderError, Reference, ResultStatus
from generation.providers.offline import OfflineEngine, fails
from models_registry.models import ApiModel
from tests.factories import png_bytes

# As seed_models registers it: four images a request.
ENGINE = OfflineEngine(
    ApiModel(
        key="offline/portrait-engine",
        provider="offline",
        tasks=["t2i", "i2i"],
        input_schema={"properties": {"num_images": {"type": "integer", "maximum": 4}}},
    )
)


def test_a_request_for_more_images_than_the_model_makes_at_once_is_refused():
    with pytest.raises(ProviderError, match="makes at most 4 image"):
        ENGINE.submit(GenerationRequest(prompt="x", num_images=5, params={"simulate": {"latency": 0}}))


def run(prompt: str = "girl with silver hair", *, n: int = 1, seed: int = 1, **kwargs) -> list[Image.Image]:
    params = {"simulate": {"latency": 0}, **kwargs.pop("params", {})}
    request = GenerationRequest(prompt=prompt, num_images=n, seed=seed, params=params, **kwargs)
    result = ENGINE.submit(request)
    assert result.status == ResultStatus.SUCCEEDED
    images = []
    for image in result.images:
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.format == "PNG" and image.content_type == "image/png"
        images.append(decoded.convert("RGB"))
    return images


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b.resize(a.size))).mean) / 3


def test_the_same_prompt_seed_and_index_give_the_same_pixels():
    assert difference(run()[0], run()[0]) == 0


def test_prompts_and_batch_indexes_give_visibly_different_portraits():
    one, two = run(n=2)
    assert difference(one, two) > 2
    assert difference(run("old man with black hair in a forest")[0], one) > 20


def test_copy_is_nearly_the_reference_and_modify_visibly_changes_it():
    reference = Image.open(io.BytesIO(png_bytes((512, 640), (30, 140, 200)))).convert("RGB")
    ref = Reference(data=png_bytes((512, 640), (30, 140, 200)), content_type="image/png")
    copy = run(references=[ref], denoise=0.05)[0]
    modify = run(references=[ref], denoise=0.5)[0]
    assert difference(copy, reference) < 8
    assert difference(modify, reference) > 4 * difference(copy, reference)


def test_submit_is_pending_until_the_latency_has_passed():
    request = GenerationRequest(prompt="x", num_images=1, params={"simulate": {"latency": 30}}, request_id="r1")
    pending = ENGINE.submit(request)
    assert pending.status == ResultStatus.PENDING and 29 < pending.poll_after <= 30
    assert ENGINE.poll(request, pending.external_id, pending.handles).status == ResultStatus.PENDING
    done = ENGINE.poll(request, pending.external_id, {"ready_at": 0})
    assert done.status == ResultStatus.SUCCEEDED and len(done.images) == 1


def test_simulated_failures_are_per_image_and_stable_per_attempt():
    request = GenerationRequest(
        prompt="x", num_images=4, batch_indexes=[0, 1, 2, 3], params={"simulate": {"latency": 0, "fail_indexes": [2]}}
    )
    images = ENGINE.submit(request).images
    assert [bool(i.error) for i in images] == [False, False, True, False]
    retry = GenerationRequest(
        prompt="x",
        num_images=1,
        batch_indexes=[2],
        params={"attempt": 2, "simulate": {"latency": 0, "fail_indexes": [2]}},
    )
    assert not ENGINE.submit(retry).images[0].error
    assert fails("p", 1, 1, 0.5) == fails("p", 1, 1, 0.5)
    assert not fails("p", 1, 1, 0.0) and fails("p", 1, 1, 1.0)


def test_each_colour_lands_on_the_feature_it_is_written_before():
    from generation.providers.offline import _EYES, _HAIR, render_portrait

    image = render_portrait("young woman, red hair, long wavy hair, green eyes", seed=3, index=0)
    pixels = image.convert("RGB").getcolors(image.width * image.height)
    colours = {colour for _, colour in pixels}

    def near(target):
        return any(sum(abs(a - b) for a, b in zip(c, target, strict=True)) < 30 for c in colours)

    assert near(_HAIR["red"]) and near(_EYES["green"])
    assert not near(_EYES["red"])  # today's bug: red eyes from "red hair"


def test_the_second_reference_changes_the_output():
    red = Reference(data=png_bytes((512, 640), (220, 30, 30)), content_type="image/png")
    blue = Reference(data=png_bytes((512, 640), (30, 30, 220)), content_type="image/png")
    one = run(references=[red], denoise=0.05)[0]
    both = run(references=[red, blue], denoise=0.05)[0]
    assert difference(one, both) > 20
