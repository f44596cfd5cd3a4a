from __future__ import annotations

import logging
import uuid

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from generation.selectors import job_for_user, job_payload
from generation.services.webhooks import WebhookRejected, training_webhook_receive, webhook_receive

logger = logging.getLogger(__name__)


@require_GET
def job_detail_api(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    return JsonResponse(job_payload(job_for_user(request.user, job_id)))


# Providers call the webhooks: no session and no CSRF token; the signature is the authentication.
@csrf_exempt
@login_not_required
@require_POST
def provider_webhook(request: HttpRequest, provider: str, request_id: uuid.UUID) -> JsonResponse:
    """A delivery from any provider whose row in generation/providers/kinds.py says webhooks=True;
    any other `provider` is answered 404."""
    try:
        # The raw bytes: signatures cover the body exactly as sent.
        outcome = webhook_receive(provider=provider, request_id=request_id, headers=request.headers, body=request.body)
    except WebhookRejected as exc:
        logger.warning("%s webhook for request %s rejected: %s", provider, request_id, exc.message)
        return JsonResponse({"error": exc.message}, status=exc.status)
    return JsonResponse({"status": outcome})


@csrf_exempt
@login_not_required
@require_POST
def training_webhook(request: HttpRequest, provider: str, training_id: uuid.UUID) -> JsonResponse:
    """A trainer's delivery for one of our LoRA trainings (generation.services.trainings)."""
    try:
        outcome = training_webhook_receive(
            provider=provider, training_id=training_id, headers=request.headers, body=request.body
        )
    except WebhookRejected as exc:
        logger.warning("%s webhook for training %s rejected: %s", provider, training_id, exc.message)
        return JsonResponse({"error": exc.message}, status=exc.status)
    return JsonResponse({"status": outcome})
