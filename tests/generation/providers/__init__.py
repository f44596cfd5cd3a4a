"""Provider adapter tests: each asserts the exact outgoing HTTP and parses the provider's own answers."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models_registry.models import ApiModel
from tests.simulator.signing import FalSigner, standard_webhook_headers

# A real 1x1 PNG, so base64 round trips carry genuine image bytes.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def api_model(key: str, provider: str, *, tasks: list[str] | None = None, **fields: Any) -> ApiModel:
    """An unsaved ApiModel: the adapters only read its fields, so no database is needed."""
    return ApiModel(key=key, display_name=key, provider=provider, tasks=tasks or ["t2i"], **fields)


def sent_json(call: Any) -> Any:
    return json.loads(call.request.body)


# --- signed webhook deliveries, as fal and Replicate make them --------------------------------

# The Standard Webhooks secret of docs/providers.md §2.3's test vector.
REPLICATE_SECRET = "whsec_cmVwbGljYXRlLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk="
JWKS_URL = "https://jwks.fal.test/.well-known/jwks.json"


def replicate_sign(body: bytes, *, secret: str = REPLICATE_SECRET, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return standard_webhook_headers(secret, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=timestamp, body=body)


def jwk(private_key: Ed25519PrivateKey) -> dict:
    """The key as fal's JWKS lists it."""
    return FalSigner(private_key).jwks()["keys"][0]


def fal_sign(
    private_key: Ed25519PrivateKey,
    body: bytes,
    *,
    request_id: str,
    user_id: str = "github|12345",
    timestamp: int | None = None,
) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return FalSigner(private_key).headers(request_id=request_id, user_id=user_id, timestamp=timestamp, body=body)
