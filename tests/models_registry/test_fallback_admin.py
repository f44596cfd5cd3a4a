"""Fallback chains: staff order them in admin, the seed creates them once, health shows in admin."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse

from models_registry.models import ApiModel, FallbackChain, FallbackEntry

pytestmark = pytest.mark.django_db


def seed(*args: str) -> None:
    call_command("seed_models", *args, stdout=StringIO())


def chain_keys(task: str) -> list[str]:
    return [model.key for model in FallbackChain.objects.get(task=task).ordered_models()]


def inline_data(rows: list[tuple[ApiModel, int]], *, initial: list[FallbackEntry] | None = None) -> dict:
    """The POST of the chain form's entries inline (prefix "entries")."""
    initial = initial or []
    data = {
        "entries-TOTAL_FORMS": str(len(rows)),
        "entries-INITIAL_FORMS": str(len(initial)),
        "entries-MIN_NUM_FORMS": "0",
        "entries-MAX_NUM_FORMS": "1000",
    }
    for index, (model, position) in enumerate(rows):
        data[f"entries-{index}-model"] = str(model.pk)
        data[f"entries-{index}-position"] = str(position)
        if index < len(initial):
            data[f"entries-{index}-id"] = str(initial[index].pk)
            data[f"entries-{index}-chain"] = str(initial[index].chain_id)
    return data


class TestChainAdmin:
    def test_it_lets_staff_create_a_chain_in_order(self, staff_client):
        seed()
        sdxl, edit = ApiModel.objects.get(key="stability-ai/sdxl"), ApiModel.objects.get(key="fal-ai/flux-2/flash/edit")
        FallbackChain.objects.filter(task="i2i").delete()

        response = staff_client.post(
            reverse("admin:models_registry_fallbackchain_add"), {"task": "i2i", **inline_data([(edit, 2), (sdxl, 1)])}
        )

        assert response.status_code == 302
        assert chain_keys("i2i") == ["stability-ai/sdxl", "fal-ai/flux-2/flash/edit"]

    def test_it_lets_staff_reorder_a_chain(self, staff_client):
        seed()
        chain = FallbackChain.objects.get(task="t2i")
        entries = list(chain.entries.order_by("position"))
        assert [e.model.key for e in entries][:2] == ["fal-ai/flux-2/flash", "stability-ai/sdxl"]
        rows = [(entry.model, len(entries) - index) for index, entry in enumerate(entries)]  # reversed

        response = staff_client.post(
            reverse("admin:models_registry_fallbackchain_change", args=[chain.pk]),
            {"task": "t2i", **inline_data(rows, initial=entries)},
        )

        assert response.status_code == 302
        assert chain_keys("t2i") == ["gemini-2.5-flash-image", "stability-ai/sdxl", "fal-ai/flux-2/flash"]

    def test_it_refuses_a_model_that_cannot_do_the_task(self, staff_client):
        seed()
        t2i_only = ApiModel.objects.get(key="fal-ai/flux-2")
        FallbackChain.objects.filter(task="i2i_multi").delete()

        response = staff_client.post(
            reverse("admin:models_registry_fallbackchain_add"), {"task": "i2i_multi", **inline_data([(t2i_only, 1)])}
        )

        assert response.status_code == 200
        assert "cannot do image to image, several references" in response.content.decode()
        assert not FallbackChain.objects.filter(task="i2i_multi").exists()

    def test_the_list_shows_each_chain_in_order(self, staff_client):
        seed()
        page = staff_client.get(reverse("admin:models_registry_fallbackchain_changelist")).content.decode()
        assert "Flux-2 Flash → SDXL (Replicate) → Gemini 2.5 Flash Image" in page


class TestProviderHealthInAdmin:
    def test_the_model_list_shows_each_providers_health(self, staff_client, settings):
        settings.FAL_KEY = "fal-test-key"
        settings.GEMINI_API_KEY = ""
        cache.delete("provider-health:offline")  # an earlier test's outage mark
        cache.set("provider-health:fal", False, timeout=30)
        ApiModel.objects.create(key="fal-x", display_name="Fal X", provider="fal", tasks=["t2i"])
        ApiModel.objects.create(key="gemini-x", display_name="Gemini X", provider="gemini", tasks=["t2i"])
        ApiModel.objects.create(key="offline-x", display_name="Offline X", provider="offline", tasks=["t2i"])
        try:
            page = staff_client.get(reverse("admin:models_registry_apimodel_changelist")).content.decode()
        finally:
            cache.delete_many(["provider-health:fal", "provider-health:offline"])
        states = ("healthy", "unhealthy", "not configured")
        cells = [f'<td class="field-provider_health">{state}</td>' for state in states]
        assert [page.count(cell) for cell in cells] == [1, 1, 1]  # offline, fal (marked), gemini (no key)


class TestSeededChains:
    def test_it_seeds_the_product_orders(self):
        seed()
        assert chain_keys("t2i") == ["fal-ai/flux-2/flash", "stability-ai/sdxl", "gemini-2.5-flash-image"]
        # Local first (the GPU worker's model, then ComfyUI's), then Replicate, then fal.
        assert chain_keys("i2i") == [
            "local/sdxl",
            "comfyui/sdxl-base-1.0",
            "stability-ai/sdxl",
            "fal-ai/flux-2/flash/edit",
        ]
        assert chain_keys("i2i_multi") == [
            "fal-ai/flux-2/flash/edit",
            "fal-ai/bytedance/seedream/v4.5/edit",
            "gemini-2.5-flash-image",
        ]
        for entry in FallbackEntry.objects.all():
            entry.full_clean()  # every seeded entry passes the admin's own rules

    def test_local_models_lead_the_i2i_chain_when_seeded(self, monkeypatch):
        from models_registry import seed as seed_data

        local = {"key": "comfyui/sdxl", "display_name": "Local SDXL", "provider": "comfyui", "tasks": ["t2i", "i2i"]}
        monkeypatch.setattr(seed_data, "MODELS", [*seed_data.MODELS, local])
        # Every local model leads, highest priority first (the GPU worker's 25, ComfyUI's 20, this one 0).
        assert seed_data.fallback_chain_keys("i2i") == [
            "local/sdxl",
            "comfyui/sdxl-base-1.0",
            "comfyui/sdxl",
            "stability-ai/sdxl",
            "fal-ai/flux-2/flash/edit",
        ]

    def test_a_rerun_keeps_staff_edits_and_reset_restores_the_seed(self):
        seed()
        chain = FallbackChain.objects.get(task="t2i")
        chain.entries.filter(model__key="stability-ai/sdxl").delete()
        counts = FallbackChain.objects.count(), FallbackEntry.objects.count()

        seed()
        assert (FallbackChain.objects.count(), FallbackEntry.objects.count()) == counts
        assert chain_keys("t2i") == ["fal-ai/flux-2/flash", "gemini-2.5-flash-image"]

        seed("--reset")
        assert chain_keys("t2i") == ["fal-ai/flux-2/flash", "stability-ai/sdxl", "gemini-2.5-flash-image"]
