"""Provider adapters, looked up by the registry's provider kind (kinds.py) and imported lazily."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from generation.providers.base import Provider
from generation.providers.kinds import PROVIDER_KINDS

if TYPE_CHECKING:
    from models_registry.models import ApiModel


def adapter_class(kind: str) -> type[Provider]:
    module_path, _, class_name = PROVIDER_KINDS[kind].adapter.rpartition(".")
    return getattr(import_module(module_path), class_name)


def get_provider(model: ApiModel) -> Provider:
    return adapter_class(model.provider)(model)
