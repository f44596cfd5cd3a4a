"""Provider adapters, looked up by the registry's provider kind and imported lazily."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from generation.providers.base import Provider

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# provider kind -> dotted path of its adapter class.
ADAPTERS: dict[str, str] = {
    "offline": "generation.providers.offline.OfflineEngine",
    "fal": "generation.providers.fal.Fal",
    "replicate": "generation.providers.replicate.Replicate",
    "gemini": "generation.providers.gemini.Gemini",
    "comfyui": "generation.providers.comfyui.ComfyUI",
    "local": "generation.providers.comfyui.ComfyUI",
}


def adapter_class(kind: str) -> type[Provider]:
    module_path, _, class_name = ADAPTERS[kind].rpartition(".")
    return getattr(import_module(module_path), class_name)


def get_provider(model: ApiModel) -> Provider:
    return adapter_class(model.provider)(model)
