"""Provider adapters, looked up by the registry's provider kind (kinds.py) and imported lazily."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from generation.providers.base import Provider
from generation.providers.kinds import PROVIDER_KINDS

if TYPE_CHECKING:
    from models_registry.models import ApiModel


def _import(path: str):
    module_path, _, class_name = path.rpartition(".")
    return getattr(import_module(module_path), class_name)


def adapter_class(kind: str) -> type[Provider]:
    return _import(PROVIDER_KINDS[kind].adapter)


def has_batch_lane(model: ApiModel) -> bool:
    """Whether `model` can run in Batch Mode: its capabilities say batch_api and its provider has a lane."""
    kind = PROVIDER_KINDS.get(model.provider)
    return bool(kind and kind.batch_adapter and (model.capabilities or {}).get("batch_api"))


def get_batch_client(model: ApiModel):
    """The batch lane adapter of `model` (see has_batch_lane)."""
    return _import(PROVIDER_KINDS[model.provider].batch_adapter)(model)


def get_provider(model: ApiModel) -> Provider:
    return adapter_class(model.provider)(model)
