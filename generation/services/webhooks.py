"""Provider webhooks: the URL a request asks to be called at, and receiving a delivery.

A delivery only says "look now": once its signature, timestamp and request match, the request is
polled through the provider API (the source of truth) by a task enqueued after the commit. A
forged, stale, replayed or misdirected delivery changes nothing.

This is the flow every provider shares, for the kinds whose row in generation/providers/kinds.py
says webhooks=True. What differs between providers is their adapter's (Provider.verify_webhook,
webhook_provider_ids): the signature scheme, and where a delivery names the provider's request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from generation import enqueue
from generation.models import ACTIVE_TRAINING_STATUSES, LoraTraining, ProviderRequest, RequestStatus, TrainingStatus
from generation.providers import adapter_class, get_provider, get_trainer
from generation.providers.kinds import PROVIDER_KINDS
from generation.providers.webhook_signing import WebhookRejected

logger = logging.getLogger(__name__)

# With a webhook on its way, polling is only the safety net: look this seldom.
WEBHOOK_POLL_SECONDS = 10.0
# Delivery ids are remembered far longer than the timestamp tolerance (the minimum that stops a
# replay), so a provider's retry of a delivery already acted on is answered without a second poll.
DELIVERY_MEMORY_SECONDS = 24 * 3600


def _takes_webhooks(kind: str) -> bool:
    row = PROVIDER_KINDS.get(kind)
    return row is not None and row.webhooks


def webhook_url_for(request: ProviderRequest) -> str | None:
    """Where the provider should announce this request's end, or None to rely on polling alone.

    Only when the studio is reachable (PUBLIC_BASE_URL) and the delivery can be verified.
    """
    base = settings.PUBLIC_BASE_URL
    if not base or not _takes_webhooks(request.provider) or not adapter_class(request.provider).webhooks_verifiable():
        return None
    return base.rstrip("/") + reverse("generation:webhook", args=[request.provider, request.pk])


# --- receiving ------------------------------------------------------------------------------


def _body_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise WebhookRejected("the body is not JSON", status=400) from None
    if not isinstance(parsed, dict):
        raise WebhookRejected("the body is not a JSON object", status=400)
    return parsed


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
    if not _takes_webhooks(provider):
        raise WebhookRejected("unknown provider", status=404)
    adapter = adapter_class(provider)
    payload = _body_json(body)
    provider_ids = adapter.webhook_provider_ids(headers, payload)
    request = ProviderRequest.objects.filter(pk=request_id, provider=provider).first()
    if request is None:
        raise WebhookRejected("unknown request", status=404)
    if request.external_id and request.external_id not in provider_ids:
        raise WebhookRejected("the delivery is for another request", status=400)

    delivery_id = adapter.verify_webhook(headers, body)
    final = request.status not in (RequestStatus.PENDING, RequestStatus.SUBMITTED)
    if not request.external_id:
        if final:
            return "ignored"  # finished in the submit call itself: nothing left to look at
        if request.status != RequestStatus.SUBMITTED or not provider_ids:
            raise WebhookRejected("the request is not ready for its webhook", status=409)
        # Sent, but its answer (and so the provider's id) was lost, or is still on its way: the
        # verified delivery names the provider's request, so adopt it rather than lose it.
        _adopt(request, provider_id=provider_ids[0], delivery=payload)

    if not _first_delivery(provider, delivery_id):
        return "replayed"
    if final:
        return "ignored"
    enqueue.webhook_poll(request.pk)
    return "accepted"


def _first_delivery(provider: str, delivery_id: str) -> bool:
    """Whether this delivery is new (remembered for DELIVERY_MEMORY_SECONDS), not a replay or a retry."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()
    return bool(cache.add(f"webhook-delivery:{provider}:{digest}", 1, timeout=DELIVERY_MEMORY_SECONDS))


# --- LoRA trainings (generation.services.trainings): the same flow, keyed on the training ------


def training_webhook_url_for(training: LoraTraining) -> str | None:
    """Where the trainer should announce the training's end, or None to rely on polling alone."""
    base = settings.PUBLIC_BASE_URL
    if not base or not _takes_webhooks(training.provider) or not adapter_class(training.provider).webhooks_verifiable():
        return None
    return base.rstrip("/") + reverse("generation:training-webhook", args=[training.provider, training.pk])


def training_webhook_receive(*, provider: str, training_id: uuid.UUID, headers: Mapping[str, str], body: bytes) -> str:
    """Verify a delivery for our training `training_id` and have it polled now; a training whose
    submit answer was lost adopts the trainer's id the delivery names (never submitted again).
    Returns "accepted", "replayed" or "ignored"; raises WebhookRejected otherwise."""
    if not _takes_webhooks(provider):
        raise WebhookRejected("unknown provider", status=404)
    adapter = adapter_class(provider)
    payload = _body_json(body)
    provider_ids = adapter.webhook_provider_ids(headers, payload)
    training = LoraTraining.objects.select_related("model").filter(pk=training_id, provider=provider).first()
    if training is None:
        raise WebhookRejected("unknown training", status=404)
    if training.external_id and training.external_id not in provider_ids:
        raise WebhookRejected("the delivery is for another training", status=400)
    delivery_id = adapter.verify_webhook(headers, body)
    active = training.status in ACTIVE_TRAINING_STATUSES
    if active and not training.external_id:
        if training.status != TrainingStatus.SUBMITTING or not provider_ids:
            raise WebhookRejected("the training is not ready for its webhook", status=409)
        adopted = get_trainer(training.model).adopt(provider_ids[0], payload)
        LoraTraining.objects.filter(pk=training.pk, status=TrainingStatus.SUBMITTING, external_id="").update(
            external_id=adopted.external_id, handles=adopted.handles, updated_at=timezone.now()
        )
        logger.warning("training %s: adopted %s from its webhook after a lost submit", training.pk, provider_ids[0])
    if not _first_delivery(provider, delivery_id):
        return "replayed"
    if not active:
        return "ignored"
    enqueue.training_webhook_poll(training.pk)
    return "accepted"
