"""Provider webhooks: the URL a request asks to be called at, and receiving a delivery.

A delivery only says "look now": once its signature, timestamp and request match, the request is
polled through the provider API (the source of truth) by a task enqueued after the commit. A
forged, stale, replayed or misdirected delivery changes nothing.

Verification follows providers.md: Replicate signs with Standard Webhooks (HMAC-SHA256, whsec_
secret), fal with Ed25519 against the keys of a JWKS (fetched, cached a day, refreshed at most
every few minutes when no key verifies, for key rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from generation import enqueue
from generation.models import ProviderRequest, RequestStatus
from generation.providers import get_provider, http_api

logger = logging.getLogger(__name__)

WEBHOOK_PROVIDERS = ("fal", "replicate")
# With a webhook on its way, polling is only the safety net: look this seldom.
WEBHOOK_POLL_SECONDS = 10.0
# Delivery ids are remembered far longer than the timestamp tolerance (the minimum that stops a
# replay), so a provider's retry of a delivery already acted on is answered without a second poll.
DELIVERY_MEMORY_SECONDS = 24 * 3600
JWKS_CACHE_KEY = "fal-webhook-jwks"
JWKS_CACHE_SECONDS = 24 * 3600
# A signature no cached key verifies may mean fal rotated its keys; refetch, but not on every
# forged delivery.
JWKS_REFRESH_SECONDS = 300
# A failed JWKS fetch is remembered this long: while fal's key host is down, each delivery is
# answered 503 at once (fal retries it) instead of holding a web worker for another timeout.
JWKS_FAILURE_SECONDS = 60
JWKS_FAILED_KEY = f"{JWKS_CACHE_KEY}:failed"


class WebhookRejected(Exception):
    """A delivery that is refused; `status` is the HTTP answer."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def webhook_url_for(request: ProviderRequest) -> str | None:
    """Where the provider should announce this request's end, or None to rely on polling alone.

    Only when the studio is reachable (PUBLIC_BASE_URL) and the delivery can be verified.
    """
    base = settings.PUBLIC_BASE_URL
    if not base or request.provider not in WEBHOOK_PROVIDERS:
        return None
    if request.provider == "replicate" and not settings.REPLICATE_WEBHOOK_SECRET:
        return None
    return base.rstrip("/") + reverse(f"generation:webhook-{request.provider}", args=[request.pk])


# --- verification ---------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookRejected(f"missing header {name}", status=400)
    return value


def _check_timestamp(value: str, now: float | None) -> None:
    try:
        timestamp = int(value)
    except ValueError:
        raise WebhookRejected("the timestamp is not a number", status=400) from None
    now = time.time() if now is None else now
    # Both directions: a delivery from the future is as suspect as an old one.
    if abs(now - timestamp) > settings.WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected("the timestamp is outside the tolerance", status=400)


def replicate_verify(*, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
    """Check a Replicate (Standard Webhooks) delivery; return its delivery id (webhook-id)."""
    delivery_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    _check_timestamp(timestamp, now)
    secret = settings.REPLICATE_WEBHOOK_SECRET
    if not secret:
        raise WebhookRejected("no REPLICATE_WEBHOOK_SECRET is configured")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("REPLICATE_WEBHOOK_SECRET is not a whsec_<base64> secret") from None
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected, signature.encode()):
            return delivery_id
    raise WebhookRejected("no signature matches")


def _public_key(jwk: Any) -> Ed25519PublicKey | None:
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    x = str(jwk.get("x") or "").rstrip("=")  # fal may pad base64url: normalise before decoding
    try:
        return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    except (binascii.Error, ValueError):
        return None


def _jwks_timeout() -> tuple[float, float]:
    """(connect, read): short, since a web worker waits on it while an unsigned POST is being checked."""
    seconds = float(settings.FAL_WEBHOOK_JWKS_TIMEOUT)
    return (min(seconds, float(settings.PROVIDER_CONNECT_TIMEOUT)), seconds)


def _fetch_jwks() -> list[dict]:
    if cache.get(JWKS_FAILED_KEY):
        raise WebhookRejected("the signing keys could not be fetched recently", status=503)
    # The staff-configured fal URL goes through the provider session, not the user-URL fetcher.
    try:
        response = http_api.session.get(settings.FAL_WEBHOOK_JWKS_URL, timeout=_jwks_timeout(), allow_redirects=False)
        if response.status_code != 200:  # redirects included: the URL is fixed, never followed
            raise requests.HTTPError(f"HTTP {response.status_code}")
        keys = response.json().get("keys")
        if not isinstance(keys, list):
            raise ValueError("no keys list")
    except (requests.RequestException, ValueError, AttributeError) as exc:
        logger.warning("could not fetch the fal webhook JWKS: %s", type(exc).__name__)
        cache.set(JWKS_FAILED_KEY, 1, timeout=JWKS_FAILURE_SECONDS)
        raise WebhookRejected("the signing keys could not be fetched", status=503) from None
    cache.set(JWKS_CACHE_KEY, keys, timeout=JWKS_CACHE_SECONDS)
    return keys


def _verifies(keys: list[dict], signature: bytes, message: bytes) -> bool:
    for jwk in keys:
        public_key = _public_key(jwk)
        if public_key is None:
            continue
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def fal_verify(*, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
    """Check a fal delivery; return its delivery id (request id and timestamp)."""
    request_id = _header(headers, "X-Fal-Webhook-Request-Id")
    user_id = _header(headers, "X-Fal-Webhook-User-Id")
    timestamp = _header(headers, "X-Fal-Webhook-Timestamp")
    signature_hex = _header(headers, "X-Fal-Webhook-Signature")
    _check_timestamp(timestamp, now)
    if settings.FAL_USER_ID and not hmac.compare_digest(user_id.encode(), settings.FAL_USER_ID.encode()):
        raise WebhookRejected("the delivery is for another fal user")
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookRejected("the signature is not hex") from None
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    keys = cache.get(JWKS_CACHE_KEY)
    fresh = keys is None
    if fresh:
        keys = _fetch_jwks()
    verified = _verifies(keys, signature, message)
    if not verified and not fresh and cache.add(f"{JWKS_CACHE_KEY}:refreshed", 1, timeout=JWKS_REFRESH_SECONDS):
        verified = _verifies(_fetch_jwks(), signature, message)
    if not verified:
        raise WebhookRejected("no key verifies the signature")
    return f"{request_id}:{timestamp}"


# --- receiving ------------------------------------------------------------------------------


def _body_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise WebhookRejected("the body is not JSON", status=400) from None
    if not isinstance(parsed, dict):
        raise WebhookRejected("the body is not a JSON object", status=400)
    return parsed


def _provider_ids(provider: str, headers: Mapping[str, str], payload: dict[str, Any]) -> set[str]:
    """The provider request ids a delivery names (unverified until its signature is checked)."""
    if provider == "replicate":
        ids = {str(payload.get("id") or "")}
    else:
        # Both are covered by the signature (header in the message, body by its hash).
        ids = {headers.get("X-Fal-Webhook-Request-Id", ""), str(payload.get("request_id") or "")}
    ids.discard("")
    return ids


def _delivery_provider_id(provider: str, headers: Mapping[str, str], payload: dict[str, Any]) -> str:
    if provider == "replicate":
        return str(payload.get("id") or "")
    return headers.get("X-Fal-Webhook-Request-Id") or str(payload.get("request_id") or "")


def _adopt(request: ProviderRequest, *, provider_id: str, delivery: dict[str, Any]) -> None:
    adopted = get_provider(request.model).adopt(provider_id, delivery)
    ProviderRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED, external_id="").update(
        external_id=adopted.external_id, handles=adopted.handles, updated_at=timezone.now()
    )
    logger.warning(
        "%s request %s: adopted %s from its webhook after a lost submit", request.provider, request.pk, provider_id
    )


def webhook_receive(*, provider: str, request_id: uuid.UUID, headers: Mapping[str, str], body: bytes) -> str:
    """Verify a delivery for our ProviderRequest `request_id` and have it polled.

    Returns what happened ("accepted", "replayed", "ignored"); raises WebhookRejected otherwise.
    The request is looked up before the signature is checked: a POST for a request we never made
    (or one naming another provider request) is refused by one indexed query, and never makes the
    fal check fetch its JWKS.
    """
    if provider not in WEBHOOK_PROVIDERS:
        raise WebhookRejected("unknown provider", status=404)
    payload = _body_json(body)
    provider_ids = _provider_ids(provider, headers, payload)
    request = ProviderRequest.objects.filter(pk=request_id, provider=provider).first()
    if request is None:
        raise WebhookRejected("unknown request", status=404)
    if request.external_id and request.external_id not in provider_ids:
        raise WebhookRejected("the delivery is for another request", status=400)

    verify = replicate_verify if provider == "replicate" else fal_verify
    delivery_id = verify(headers=headers, body=body)
    final = request.status not in (RequestStatus.PENDING, RequestStatus.SUBMITTED)
    if not request.external_id:
        if final:
            return "ignored"  # finished in the submit call itself: nothing left to look at
        if request.status != RequestStatus.SUBMITTED or not provider_ids:
            raise WebhookRejected("the request is not ready for its webhook", status=409)
        # Sent, but its answer (and so the provider's id) was lost, or is still on its way: the
        # verified delivery names the provider's request, so adopt it rather than lose it.
        _adopt(request, provider_id=_delivery_provider_id(provider, headers, payload), delivery=payload)

    digest = hashlib.sha256(delivery_id.encode()).hexdigest()
    if not cache.add(f"webhook-delivery:{provider}:{digest}", 1, timeout=DELIVERY_MEMORY_SECONDS):
        return "replayed"
    if final:
        return "ignored"
    enqueue.webhook_poll(request.pk)
    return "accepted"
