"""Generating with a character's trained LoRA: the prompt bar offers it once ready, the job carries
the LoRA and its trigger word to the provider (`loras`), needs no reference, and its card says so."""

from __future__ import annotations

import pytest
from django.urls import reverse

from generation.models import GenerationJob, JobMode, LoraTraining
from generation.providers.fal import Fal
from generation.services import runs
from generation.services.jobs import JobRequestError, job_create
from tests.factories import offline_model, seeded_model
from tests.studio.helpers import htmx, make_asset, make_character, make_ready_training

pytestmark = pytest.mark.django_db

GENERATE = reverse("studio:generate")


@pytest.fixture
def aria(alice):
    return make_character(alice, "Aria", locked_reference=make_asset(alice))


def ready_training(owner, character) -> LoraTraining:
    lora_url = "https://v3.fal.media/files/koala/q8Xw2_pytorch_lora_weights.safetensors"
    return make_ready_training(owner, character, config={"lora_url": lora_url})


def select(client, character):
    client.get(reverse("studio:home") + f"?character={character.pk}")


def test_the_bar_offers_the_lora_once_ready_and_marks_the_lora_models(alice_client, alice, aria):
    seeded_model("offline/portrait-engine")
    select(alice_client, aria)
    assert "With Aria's LoRA" not in alice_client.get(reverse("studio:home")).content.decode()

    ready_training(alice, aria)
    html = alice_client.get(reverse("studio:home")).content.decode()
    assert "With Aria's LoRA" in html and 'name="lora_scale" value="1.0"' in html
    assert "Offline preview engine · " in html and " · LoRA" in html


def test_generating_with_the_lora_is_text_to_image_with_the_lora_and_trigger(alice_client, alice, aria, enqueued):
    engine = seeded_model("offline/portrait-engine")
    training = ready_training(alice, aria)
    select(alice_client, aria)

    response = alice_client.post(
        GENERATE,
        {
            "prompt": "on a beach at sunset",
            "model": engine.pk,
            "images": 4,
            "character": str(aria.pk),
            "ref1": str(aria.locked_reference_id),
            "lora": "on",
            "lora_scale": "0.8",
        },
        **htmx(),
    )

    job = GenerationJob.objects.get()
    assert job.mode == JobMode.T2I and job.references == []
    assert job.params["lora"] == {
        "training": str(training.pk),
        "scale": 0.8,
        "trigger_word": "aria_k7",
        "character": "Aria",
    }
    assert job.final_prompt.startswith("aria_k7, ")
    assert "with Aria's LoRA" in response.content.decode()
    request = runs.build_request(job.requests.create(model=engine, provider="offline", slot_indexes=[0, 1]), job)
    assert [(lora.trigger_word, lora.scale) for lora in request.loras] == [("aria_k7", 0.8)]


def test_the_fal_payload_carries_loras_and_the_trigger_word(alice, aria, enqueued):
    flux_lora = seeded_model("fal-ai/flux-lora")
    training = ready_training(alice, aria)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Fal, "is_configured", lambda self: True)
        job = job_create(user=alice, model=flux_lora, prompt="laughing in the rain", images=2, lora=training)
    request = runs.build_request(job.requests.create(model=flux_lora, provider="fal", slot_indexes=[0, 1]), job)

    payload = Fal(flux_lora).build_input(request)

    assert payload["loras"] == [
        {"path": "https://v3.fal.media/files/koala/q8Xw2_pytorch_lora_weights.safetensors", "scale": 1.0}
    ]
    assert payload["prompt"].startswith("aria_k7, laughing in the rain")
    assert payload["prompt"].count("aria_k7") == 1


def test_a_model_without_loras_or_another_users_lora_is_refused(alice, bob, aria, enqueued):
    training = ready_training(alice, aria)
    plain = offline_model()  # no `loras` in its schema
    with pytest.raises(JobRequestError, match="cannot apply a LoRA"):
        job_create(user=alice, model=plain, prompt="x", lora=training)
    engine = seeded_model("offline/portrait-engine")
    with pytest.raises(JobRequestError, match="not ready"):
        job_create(user=bob, model=engine, prompt="x", lora=training)
    with pytest.raises(JobRequestError, match="between 0 and 2"):
        job_create(user=alice, model=engine, prompt="x", lora=training, lora_scale=3)
    assert not GenerationJob.objects.exists()
