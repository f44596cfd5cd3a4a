"""What every provider's webhook check shares: the refusal, required headers, the timestamp window,
and Standard Webhooks (HMAC-SHA256 over "id.timestamp.body", the scheme Replicate signs with).

An adapter's verify_webhook builds on these; generation.services.webhooks turns a refusal into the
HTTP answer, and a forged, stale or malformed delivery changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from django.conf import settings


class WebhookRejected(Exception):
    """A delivery that is refused; `status` is the HTTP answer."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookRejected(f"missing header {name}", status=400)
    return value


def check_timestamp(value: str, now: float | None = None) -> None:
    """Refuse a delivery signed outside WEBHOOK_TOLERANCE_SECONDS of now: the minimum that stops a replay."""
    try:
        timestamp = int(value)
    except ValueError:
        raise WebhookRejected("the timestamp is not a number", status=400) from None
    now = time.time() if now is None else now
    # Both directions: a delivery from the future is as suspect as an old one.
    if abs(now - timestamp) > settings.WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected("the timestamp is outside the tolerance", status=400)


def standard_webhooks_verify(headers: Mapping[str, str], body: bytes, *, secret: str, now: float | None = None) -> str:
    """Check a Standard Webhooks delivery signed with `secret` ("whsec_<base64>"); return its
    webhook-id, which a provider's retry of the delivery keeps."""
    delivery_id = required_header(headers, "webhook-id")
    timestamp = required_header(headers, "webhook-timestamp")
    signatures = required_header(headers, "webhook-signature")
    check_timestamp(timestamp, now)
    if not secret:
        raise WebhookRejected("no signing secret is configured")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("the signing secret is not a whsec_<base64> secret") from None
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # A space-separated list of "version,signature": any v1 that matches will do (key rotation).
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected, signature.encode()):
            return delivery_id
    raise WebhookRejected("no signature matches")
