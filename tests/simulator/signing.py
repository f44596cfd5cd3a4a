"""Webhook signatures the way the providers make them (see docs/providers.md 1.5 and 2.3).

fal: ED25519 over "request_id\\nuser_id\\ntimestamp\\nsha256hex(body)", hex-encoded, with the public key
published as a JWKS. Replicate: Standard Webhooks, base64 HMAC-SHA256 of "id.timestamp.body" keyed with
the base64-decoded part of a whsec_ secret. Each signer has its own verifier here so the simulator's
self-tests can check both against the reference's test vectors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FalSigner:
    """An ED25519 key pair, its JWKS, and fal's webhook headers."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self.private_key = private_key or Ed25519PrivateKey.generate()

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def jwks(self) -> dict:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(self.public_bytes), "use": "sig"}]}

    @staticmethod
    def message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
        return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode("utf-8")

    def sign(self, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
        return self.private_key.sign(self.message(request_id, user_id, timestamp, body)).hex()

    def headers(self, *, request_id: str, user_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        ts = str(timestamp)
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": self.sign(request_id, user_id, ts, body),
        }


def fal_verify(jwks: dict, headers: dict[str, str], body: bytes) -> bool:
    """True if any JWKS key verifies fal's signature headers over `body` (no timestamp check)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        message = FalSigner.message(
            lower["x-fal-webhook-request-id"], lower["x-fal-webhook-user-id"], lower["x-fal-webhook-timestamp"], body
        )
        signature = bytes.fromhex(lower["x-fal-webhook-signature"])
    except (KeyError, ValueError):
        return False
    for key in jwks.get("keys", []):
        try:
            Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"])).verify(signature, message)
            return True
        except (InvalidSignature, KeyError, ValueError):
            continue
    return False


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def standard_webhook_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 Replicate (Standard Webhooks) sends after "v1,"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def standard_webhook_headers(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    ts = str(timestamp)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + standard_webhook_signature(secret, webhook_id, ts, body),
    }


def standard_webhook_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        expected = standard_webhook_signature(secret, lower["webhook-id"], lower["webhook-timestamp"], body)
    except KeyError:
        return False
    for item in lower.get("webhook-signature", "").split():
        version, _, signature = item.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False
