"""Replicate predictions: create (with a short Prefer: wait), poll urls.get, cancel.

Double billing: Replicate has no idempotency key, so submit() posts the create exactly once and
never retries it itself. When a create fails in a way that may still have made a prediction
(read timeout, connection dropped after sending, 5xx), the ProviderError says so in `details`
(CREATE_MAY_HAVE_BEEN_RECEIVED): retrying it is the pipeline's call, which it should weigh
against the webhook (if set) that would still announce such an orphan prediction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from django.conf import settings

from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderResult,
    ResultStatus,
)
from generation.providers.http_api import MAY_HAVE_BEEN_RECEIVED, HttpApi, json_or_none, sanitize_message
from generation.providers.inputs import model_inputs
from generation.providers.webhook_signing import standard_webhooks_verify
from models_registry.capabilities import schema_properties

CREATE_MAY_HAVE_BEEN_RECEIVED = "create may have been received"
# Seconds Replicate may hold the create open; fast models then answer finished in one call.
PREFER_WAIT_SECONDS = 5
# A failed prediction was billed for its compute time, so only failures that read as transient
# are worth another paid attempt; everything else (NSFW, invalid input, model bugs) is permanent.
_TRANSIENT_FAILURE = re.compile(r"time(d)?[ -]?out|timeout", re.IGNORECASE)
_RESETS_IN = re.compile(r"resets in ~?(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


class Replicate(HttpApi, Provider):
    name = "replicate"
    asynchronous = True
    api_label = "Replicate"
    secret_setting = "REPLICATE_API_TOKEN"  # noqa: S105 - the name of the setting, not a secret
    base_url_setting = "REPLICATE_API_URL"

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings.REPLICATE_API_TOKEN}"}

    def error_message(self, response: requests.Response) -> str:
        # RFC 7807 problem details: {"title", "detail", "status", ...}; 429s carry only detail.
        body = json_or_none(response)
        if isinstance(body, dict):
            parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
            if parts:
                return ": ".join(dict.fromkeys(parts))
        return response.text

    def retry_after(self, response: requests.Response) -> float | None:
        seconds = super().retry_after(response)
        if seconds is None:  # "Request was throttled. Your rate limit resets in ~30s."
            match = _RESETS_IN.search(response.text)
            seconds = float(match.group(1)) if match else None
        return seconds

    def build_input(self, request: GenerationRequest) -> dict[str, Any]:
        # SDXL-style models call the count num_outputs.
        properties = schema_properties(self.model.input_schema)
        count_field = next((f for f in ("num_outputs", "num_images") if f in properties), None)
        return model_inputs(self.model, request, count_field=count_field)

    def create_url_and_body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        base = settings.REPLICATE_API_URL.rstrip("/")
        key, _, key_version = self.model.key.partition(":")
        version = (self.model.capabilities or {}).get("version") or key_version
        inputs = self.build_input(request)
        if version:
            url, body = f"{base}/v1/predictions", {"version": version, "input": inputs}
        else:
            # Official models run their latest version through the model's own endpoint.
            url, body = f"{base}/v1/models/{key}/predictions", {"input": inputs}
        if request.webhook_url:
            body["webhook"] = request.webhook_url
            body["webhook_events_filter"] = ["completed"]
        return url, body

    def submit(self, request: GenerationRequest) -> ProviderResult:
        url, body = self.create_url_and_body(request)
        connect, read = (settings.PROVIDER_CONNECT_TIMEOUT, settings.PROVIDER_READ_TIMEOUT)
        try:
            response = self.http(
                "POST",
                url,
                json=body,
                headers={"Prefer": f"wait={PREFER_WAIT_SECONDS}"},
                # The answer may legitimately take the whole wait: never time out before it.
                timeout=(float(connect), max(float(read), PREFER_WAIT_SECONDS + 5.0)),
            )
            prediction = self.json(response)
        except ProviderError as exc:
            # A 4xx is a refusal and a 5xx an answer that the create failed: both are safe to act
            # on (a 5xx is retried, then falls back). No answer at all, or a garbled 2xx, may hide
            # a prediction that runs and bills.
            never_sent = exc.status_code is None and exc.details != MAY_HAVE_BEEN_RECEIVED
            answered_error = exc.status_code is not None and exc.status_code >= 400
            if not never_sent and not answered_error:
                exc.details = CREATE_MAY_HAVE_BEEN_RECEIVED
                exc.may_have_been_received = True
            raise
        return self.result_from_prediction(prediction)

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        return self.result_from_prediction(self.json(self.http("GET", self.handle(handles, "get"))))

    def adopt(self, provider_id: str, delivery: dict[str, Any]) -> ProviderResult:
        # The delivery is the prediction itself: its id and URLs, polled from here on.
        found = self.result_from_prediction(delivery)
        return ProviderResult(status=ResultStatus.PENDING, external_id=found.external_id, handles=found.handles)

    # --- webhooks: the prediction object, signed with Standard Webhooks (docs/providers.md §2.3) ---
    @classmethod
    def webhooks_verifiable(cls) -> bool:
        return bool(settings.REPLICATE_WEBHOOK_SECRET)

    @classmethod
    def verify_webhook(cls, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        """The delivery id is Standard Webhooks' webhook-id, kept across Replicate's retries."""
        return standard_webhooks_verify(headers, body, secret=settings.REPLICATE_WEBHOOK_SECRET, now=now)

    @classmethod
    def webhook_provider_ids(cls, headers: Mapping[str, str], payload: dict[str, Any]) -> list[str]:
        return [str(payload["id"])] if payload.get("id") else []

    def recover(self, request: GenerationRequest) -> ProviderResult | None:
        """Find a prediction whose create answer was lost among the account's recent predictions.

        Replicate has no idempotency key, but lists predictions: ours carries our webhook URL
        (which names our request), or our exact prompt and seed, and was created after we sent it.
        Without a webhook or a seed it cannot be told from its siblings: None, and the pipeline
        fails it rather than risk adopting another request's prediction.
        """
        _, body = self.create_url_and_body(request)
        inputs, webhook = body["input"], body.get("webhook")
        if not webhook and inputs.get("seed") is None:
            return None
        listing = self.json(self.http("GET", f"{settings.REPLICATE_API_URL.rstrip('/')}/v1/predictions"))
        results = listing.get("results") if isinstance(listing.get("results"), list) else []
        sent_at = request.params.get("sent_at")
        found = [p for p in results if _is_ours(p, inputs=inputs, webhook=webhook, sent_at=sent_at)]
        return self.result_from_prediction(found[0]) if len(found) == 1 else None

    def cancel(self, external_id: str, handles: dict[str, Any]) -> None:
        if not handles.get("cancel"):
            return
        try:
            # An empty POST; a finished prediction answers 200 unchanged.
            self.http("POST", handles["cancel"])
        except ProviderError as exc:
            if exc.status_code not in {400, 404, 409, 422}:
                raise

    def result_from_prediction(self, prediction: dict[str, Any]) -> ProviderResult:
        """A prediction object (create, GET or webhook body) as a ProviderResult."""
        status = prediction.get("status")
        prediction_id = str(prediction.get("id") or "")
        urls = prediction.get("urls") if isinstance(prediction.get("urls"), dict) else {}
        handles = {"get": urls.get("get"), "cancel": urls.get("cancel")}
        metadata = {"metrics": prediction.get("metrics") or {}}
        common = {"external_id": prediction_id, "handles": handles, "metadata": metadata}
        if status == "succeeded":
            images = [GeneratedImage(url=url) for url in _output_urls(prediction.get("output"))]
            if not images:
                return ProviderResult(
                    status=ResultStatus.FAILED, error="Replicate finished without returning any image.", **common
                )
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, **common)
        if status == "failed":
            error = sanitize_message(str(prediction.get("error") or "unknown error"))
            transient = bool(_TRANSIENT_FAILURE.search(error))
            return ProviderResult(
                status=ResultStatus.FAILED, error=f"Replicate: {error}", permanent=not transient, **common
            )
        if status == "canceled":
            return ProviderResult(status=ResultStatus.CANCELED, error="The prediction was canceled.", **common)
        if status == "aborted":
            # A Cancel-After deadline passed before it started: terminal and unbilled, so a retry is free.
            metadata["billed"] = False
            return ProviderResult(
                status=ResultStatus.FAILED, error="Replicate aborted the prediction before it started.", **common
            )
        if not prediction_id or not handles["get"]:
            raise ProviderError("Replicate answered a prediction without an id or a get URL.", permanent=True)
        # starting / processing: keep polling, even when `output` already holds partial URLs.
        # When to look again is the pipeline's (generation/poll_schedule.py).
        return ProviderResult(status=ResultStatus.PENDING, **common)


# Clocks differ: a prediction created this long before we recorded sending it may still be ours.
CLOCK_SKEW_SECONDS = 60


def _is_ours(prediction: Any, *, inputs: dict[str, Any], webhook: str | None, sent_at: float | None) -> bool:
    if not isinstance(prediction, dict):
        return False
    if sent_at is not None:
        try:
            created = datetime.fromisoformat(str(prediction.get("created_at")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False
        if created < sent_at - CLOCK_SKEW_SECONDS:
            return False
    if webhook and prediction.get("webhook") == webhook:
        return True
    given = prediction.get("input") if isinstance(prediction.get("input"), dict) else {}
    seed = inputs.get("seed")
    return seed is not None and given.get("seed") == seed and given.get("prompt") == inputs.get("prompt")


def _output_urls(output: Any) -> list[str]:
    """Image models answer a list of URLs, or a single URL string."""
    if isinstance(output, str):
        return [output] if output else []
    if isinstance(output, list):
        return [item for item in output if isinstance(item, str) and item]
    return []
