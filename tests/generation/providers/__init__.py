"""Provider adapter tests: each asserts the exact outgoing HTTP and parses the provider's own answers."""

from __future__ import annotations

import base64
import json
from typing import Any

from models_registry.models import ApiModel

# A real 1x1 PNG, so base64 round trips carry genuine image bytes.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def api_model(key: str, provider: str, *, tasks: list[str] | None = None, **fields: Any) -> ApiModel:
    """An unsaved ApiModel: the adapters only read its fields, so no database is needed."""
    return ApiModel(key=key, display_name=key, provider=provider, tasks=tasks or ["t2i"], **fields)


def sent_json(call: Any) -> Any:
    return json.loads(call.request.body)
