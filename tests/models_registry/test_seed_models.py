from __future__ import annotations

import dataclasses
from io import StringIO

import pytest
from django.core.management import call_command

from generation.providers.kinds import PROVIDER_KINDS
from models_registry import seed as seed_data
from models_registry.models import ApiModel, NegativePrompt

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_models", *args, stdout=out)
    return out.getvalue()


def test_it_loads_the_product_models_with_their_limits():
    seed()
    limits = {m.key: (m.provider, m.max_images, m.image_field) for m in ApiModel.objects.all()}
    assert limits["fal-ai/flux-2"][:2] == ("fal", 4)
    assert limits["fal-ai/flux-2/flash"][:2] == ("fal", 4)
    assert limits["fal-ai/flux-2/flash/edit"] == ("fal", 4, "image_urls")
    assert limits["fal-ai/flux-pro/kontext"][:2] == ("fal", 4)
    assert limits["fal-ai/bytedance/seedream/v4.5/edit"] == ("fal", 10, "image_urls")
    assert limits["stability-ai/sdxl"][0] == "replicate"
    assert limits["gemini-2.5-flash-image"][:2] == ("gemini", 1)
    assert limits["gemini-3-pro-image-preview"][:2] == ("gemini", 1)
    assert limits["offline/portrait-engine"][:2] == ("offline", 4)
    assert ApiModel.objects.get(key="gemini-3-pro-image-preview").capabilities["batch_api"] is True
    for model in ApiModel.objects.all():
        model.full_clean()  # every seeded row passes the admin's own rules


def test_it_seeds_a_short_i2i_and_a_fuller_txt2img_negative_prompt():
    seed()
    i2i = NegativePrompt.objects.get(model_type="*", content_mode="sfw", generation_mode="i2i")
    txt = NegativePrompt.objects.get(model_type="*", content_mode="sfw", generation_mode="txt2img")
    assert len(i2i.text.split(",")) <= 3 < len(txt.text.split(","))


def test_a_rerun_changes_nothing_and_keeps_staff_edits():
    seed()
    model = ApiModel.objects.get(key="fal-ai/flux-2/flash")
    model.display_name = "Flash (staff name)"
    model.is_active = False
    model.save()
    count = ApiModel.objects.count(), NegativePrompt.objects.count()

    seed()

    model.refresh_from_db()
    assert model.display_name == "Flash (staff name)"
    assert model.is_active is False
    assert (ApiModel.objects.count(), NegativePrompt.objects.count()) == count


def test_reset_restores_the_seed_values():
    seed()
    ApiModel.objects.filter(key="fal-ai/flux-2/flash").update(display_name="edited", is_active=False)
    seed("--reset")
    model = ApiModel.objects.get(key="fal-ai/flux-2/flash")
    assert (model.display_name, model.is_active) == ("Flux-2 Flash", True)


def test_it_seeds_a_comfyui_model_that_waits_for_its_server(settings):
    from generation.providers.comfyui import ComfyUI
    from generation.services import routing

    seed()
    model = ApiModel.objects.get(provider="comfyui")
    model.full_clean()
    assert ComfyUI.validate_model(model) == {}
    assert model.capabilities["comfyui"]["checkpoint"] == "sd_xl_base_1.0.safetensors"
    assert model.supports("i2i") and model.max_images == 4
    # Seeded like every row; the studio and routing leave it alone until the server is named.
    settings.COMFYUI_BASE_URL = ""
    assert not routing.provider_configured("comfyui")
    settings.COMFYUI_BASE_URL = "http://127.0.0.1:8188"
    assert routing.provider_configured("comfyui")


def test_a_rerun_keeps_staff_edits_to_the_comfyui_settings():
    seed()
    model = ApiModel.objects.get(provider="comfyui")
    model.capabilities = {**model.capabilities, "comfyui": {"checkpoint": "juggernaut_xl.safetensors", "steps": 40}}
    model.save()

    seed()

    model.refresh_from_db()
    assert model.capabilities["comfyui"] == {"checkpoint": "juggernaut_xl.safetensors", "steps": 40}
    assert ApiModel.objects.filter(provider="comfyui").count() == 1


def test_the_local_chain_marker_stands_for_the_models_of_every_local_kind(monkeypatch):
    assert seed_data.fallback_chain_keys("i2i")[:2] == ["local/sdxl", "comfyui/sdxl-base-1.0"]
    farm = dataclasses.replace(PROVIDER_KINDS["comfyui"], key="gpu-farm", label="GPU farm")
    monkeypatch.setitem(PROVIDER_KINDS, farm.key, farm)
    row = {"key": "gpu-farm/sdxl", "provider": farm.key, "tasks": ["i2i"], "priority": 90}
    monkeypatch.setattr(seed_data, "MODELS", [*seed_data.MODELS, row])
    assert seed_data.fallback_chain_keys("i2i")[:3] == ["gpu-farm/sdxl", "local/sdxl", "comfyui/sdxl-base-1.0"]


def test_it_seeds_the_lora_trainers_and_the_lora_models():
    seed()
    trainers = {m.key: m for m in ApiModel.objects.all() if m.is_trainer}
    assert set(trainers) == {
        "fal-ai/flux-lora-fast-training",
        "fal-ai/flux-lora-portrait-trainer",
        "fal-ai/turbo-flux-trainer",
        "fal-ai/flux-2-trainer",
        "offline/lora-trainer",
        "ostris/flux-dev-lora-trainer",
    }
    # Prices not found where they were read: inactive until staff set one.
    inactive = {k for k, m in trainers.items() if not m.is_active}
    assert inactive == {"fal-ai/flux-lora-portrait-trainer", "ostris/flux-dev-lora-trainer"}
    assert all(m.tasks == ["lora_training"] for m in trainers.values())
    assert trainers["offline/lora-trainer"].provider == "offline"
    assert trainers["ostris/flux-dev-lora-trainer"].provider == "replicate"
    lora = ApiModel.objects.get(key="fal-ai/flux-lora")
    edit = ApiModel.objects.get(key="fal-ai/flux-lora/image-to-image")
    assert lora.tasks == ["t2i"] and edit.tasks == ["i2i"] and edit.image_field == "image_url"
    for key in ("fal-ai/flux-lora", "fal-ai/flux-lora/image-to-image", "offline/portrait-engine"):
        assert "loras" in ApiModel.objects.get(key=key).input_schema["properties"], key
