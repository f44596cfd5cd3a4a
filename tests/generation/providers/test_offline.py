"""The offline engine renders real, deterministic portraits and does real image-to-image."""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile

import pytest
from PIL import Image, ImageChops, ImageStat

from generation.providers.base import (
    GenerationRequest,
    LoraWeight,
    ProviderError,
    ProviderResult,
    Reference,
    ResultStatus,
    TrainingRequest,
)
from generation.providers.offline import RENDER_LEAD_SECONDS, OfflineEngine, OfflineTrainer, fails, identity_for
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
    assert pending.status == ResultStatus.PENDING and 29 < pending.poll_after + RENDER_LEAD_SECONDS <= 30
    assert ENGINE.poll(request, pending.external_id, pending.handles).status == ResultStatus.PENDING
    done = ENGINE.poll(request, pending.external_id, {"ready_at": 0})
    assert done.status == ResultStatus.SUCCEEDED and len(done.images) == 1


def test_the_image_is_made_within_the_latency_and_answered_when_it_is_due(monkeypatch):
    request = GenerationRequest(prompt="x", num_images=4, params={"simulate": {"latency": 0.3}}, request_id="r1")

    def slow_render(self, request):
        time.sleep(0.05)  # a render that takes half the lead, whatever the machine's load
        return ProviderResult(status=ResultStatus.SUCCEEDED, external_id=request.request_id)

    sent = time.time()
    pending = ENGINE.submit(request)
    # Asked for a little before the due moment, so the render fits inside the latency.
    assert pending.poll_after == pytest.approx(0.3 - RENDER_LEAD_SECONDS, abs=0.02)
    time.sleep(pending.poll_after)
    monkeypatch.setattr(OfflineEngine, "_render", slow_render)

    done = ENGINE.poll(request, pending.external_id, pending.handles)
    assert done.status == ResultStatus.SUCCEEDED
    # Answered when due, not a render after it (0.35 s and more).
    assert 0.3 <= time.time() - sent < 0.34


def test_per_image_latencies_make_each_request_wait_for_its_slowest_image(settings):
    def latency(**fields) -> float:
        request = GenerationRequest(prompt="x", request_id="r1", **fields)
        return ENGINE.submit(request).poll_after + RENDER_LEAD_SECONDS

    simulate = {"simulate": {"latency": 9, "latencies": [1, 2, 3, 4]}}
    assert 0.9 < latency(num_images=1, batch_indexes=[0], params=simulate) <= 1
    assert 2.9 < latency(num_images=1, batch_indexes=[2], params=simulate) <= 3
    assert 3.9 < latency(num_images=4, params=simulate) <= 4
    # An index past the list takes the single latency; the setting serves when the job names none.
    assert 8.9 < latency(num_images=1, batch_indexes=[5], params=simulate) <= 9
    settings.OFFLINE_IMAGE_LATENCIES = [0.5, 6.0]
    assert 5.9 < latency(num_images=1, batch_indexes=[1], params={}) <= 6


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


# --- the simulated LoRA: training, and generation that keeps the trained identity ----------------

TRAINER = OfflineTrainer(
    ApiModel(
        key="offline/lora-trainer",
        provider="offline",
        tasks=["lora_training"],
        input_schema={"properties": {"images_data_url": {}, "steps": {"default": 100, "minimum": 1, "maximum": 1000}}},
    )
)


def training(latency: float, **fields) -> TrainingRequest:
    params = {"simulate": {"latency": latency}}
    return TrainingRequest(dataset_url="", trigger_word="mira_k7", params=params, request_id="t1", **fields)


def colour_count(image: Image.Image, colour: list[int]) -> int:
    counts = {pixel: count for count, pixel in image.getcolors(maxcolors=1 << 20)}
    return counts.get(tuple(colour), 0)


def test_a_training_reports_progress_then_yields_a_small_safetensors_file():
    request = training(0.6, steps=300)
    started = TRAINER.submit(request)
    assert started.status == ResultStatus.PENDING and started.progress is not None and started.progress < 0.2
    assert started.external_id == "t1" and 0 < started.poll_after <= 0.6
    time.sleep(0.3)
    halfway = TRAINER.poll(request, started.external_id, started.handles)
    assert halfway.status == ResultStatus.PENDING and 0.3 < halfway.progress < 0.9
    time.sleep(0.35)
    done = TRAINER.poll(request, started.external_id, started.handles)

    assert done.status == ResultStatus.SUCCEEDED and done.progress == 1.0
    lora = done.lora
    assert lora.file_name == "pytorch_lora_weights.safetensors" and lora.file_size == len(lora.data) < 2048
    header_length = struct.unpack("<Q", lora.data[:8])[0]
    metadata = json.loads(lora.data[8 : 8 + header_length])["__metadata__"]
    assert metadata["trigger_word"] == "mira_k7" and metadata["steps"] == "300"
    assert json.loads(metadata["identity"]) == identity_for("mira_k7")


def test_steps_outside_the_trainers_range_are_refused():
    with pytest.raises(ProviderError, match="Steps must be between 1 and 1000"):
        TRAINER.submit(training(0, steps=5000))


def test_a_lost_training_answer_is_found_finished():
    assert TRAINER.recover(training(30)).status == ResultStatus.SUCCEEDED


def test_generation_with_the_lora_keeps_the_trained_identity_whatever_the_prompt():
    identity = identity_for("mira_k7")
    lora = [LoraWeight(path="offline://mira", trigger_word="mira_k7")]
    prompts = ["mira_k7 with black hair in a forest", "mira_k7 with silver hair on a beach at sunset"]
    with_lora = [run(p, loras=lora)[0] for p in prompts]
    without = [run(p)[0] for p in prompts]

    for image in with_lora:
        assert colour_count(image, identity["skin"]) > 2000
        assert colour_count(image, identity["hair"]) > 2000
    # Without the LoRA the prompt decides: the two portraits do not share the identity's hair and skin.
    assert not all(colour_count(image, identity["skin"]) > 2000 for image in without) or not all(
        colour_count(image, identity["hair"]) > 2000 for image in without
    )


def test_a_training_learns_the_hair_its_sheet_agrees_on_and_generation_with_it_keeps_that_hair(settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from generation.providers.offline import _HAIR, blend_toward, encode_png, render_portrait

    settings.MEDIA_ROOT = str(tmp_path)
    # A sheet as the studio makes one: each shot image-to-image from one red-haired portrait.
    portrait = render_portrait("woman, red hair, green eyes, head and shoulders", seed=7, index=0)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as dataset:
        for shot in range(12):
            rendering = render_portrait(f"woman, red hair, green eyes, shot {shot}", seed=100 + shot, index=shot)
            dataset.writestr(f"{shot:02d}.png", encode_png(blend_toward(portrait, rendering, 0.5)))
            dataset.writestr(f"{shot:02d}.txt", "aria_c7 woman, a shot")
    name = default_storage.save("datasets/t1/dataset.zip", ContentFile(archive.getvalue()))

    done = TRAINER.poll(
        TrainingRequest(dataset_url=name, trigger_word="aria_c7", request_id="t1"), "t1", {"ready_at": 0}
    )
    header_length = struct.unpack("<Q", done.lora.data[:8])[0]
    learnt = json.loads(json.loads(done.lora.data[8 : 8 + header_length])["__metadata__"]["identity"])
    assert max(abs(a - b) for a, b in zip(learnt["hair"], _HAIR["red"], strict=True)) < 32
    assert learnt["hair"] != identity_for("aria_c7")["hair"]  # learnt from the images, not the word

    lora_name = default_storage.save("loras/t1/pytorch_lora_weights.safetensors", ContentFile(done.lora.data))
    image = run("aria_c7 with black hair in a forest", loras=[LoraWeight(path=lora_name, trigger_word="aria_c7")])[0]
    assert colour_count(image, learnt["hair"]) > 2000


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
