"""fal.ai through its queue API: submit, poll the status URL, fetch the result, cancel.

When a request is about to finish, the pipeline waits on fal's status stream (server-sent events)
instead of polling every few ms: the end is seen the moment fal reports it (wait_for_end).

The queue (not the synchronous fal.run) is used because fal retries runner failures of queued
requests itself and unbilled, and because a request id saved before polling lets a crashed
worker resume instead of paying twice.

Webhooks are signed with Ed25519 against the keys of fal's JWKS (docs/providers.md §1.5), fetched and
cached a day, refreshed at most every few minutes when no key verifies (fal rotated its keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.cache import cache

from generation.lib.retry import parse_retry_after
from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderResult,
    ResultStatus,
)
from generation.providers.http_api import HttpApi, sanitize_message, session, timeouts
from generation.providers.inputs import model_inputs
from generation.providers.webhook_signing import WebhookRejected, check_timestamp, required_header

logger = logging.getLogger(__name__)

NSFW_ERROR = "blocked by the provider's safety checker"
# The statuses of a request still on its way; COMPLETED is the only other one fal documents.
PENDING_STATUSES = frozenset({"IN_QUEUE", "IN_PROGRESS"})
JWKS_CACHE_KEY = "fal-webhook-jwks"
JWKS_CACHE_SECONDS = 24 * 3600
# A signature no cached key verifies may mean fal rotated its keys; refetch, but not on every
# forged delivery.
JWKS_REFRESH_SECONDS = 300
# A failed JWKS fetch is remembered this long: while fal's key host is down, each delivery is
# answered 503 at once (fal retries it) instead of holding a web worker for another timeout.
JWKS_FAILURE_SECONDS = 60
JWKS_FAILED_KEY = f"{JWKS_CACHE_KEY}:failed"


def detail_text(detail: Any) -> str:
    """fal's `detail`: a string, or a list of {loc, msg, type} validation errors."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return ""
    parts = []
    for item in detail:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        location = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
        text = str(item.get("msg") or item.get("type") or "invalid input")
        parts.append(f"{location}: {text}" if location else text)
    return "; ".join(parts)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_result(body: Any) -> list[GeneratedImage]:
    """The images of a model output (a queue result, or a webhook's `payload`), in order."""
    if not isinstance(body, dict):
        return []
    raw = body.get("images")
    if raw is None and body.get("image"):
        raw = [body["image"]]  # single-image endpoints
    if not isinstance(raw, list):
        return []
    flags = body.get("has_nsfw_concepts")
    flags = flags if isinstance(flags, list) else []
    seed = _int_or_none(body.get("seed"))
    images = []
    for index, item in enumerate(raw):
        item = {"url": item} if isinstance(item, str) else item if isinstance(item, dict) else {}
        url = str(item.get("url") or "")
        image = GeneratedImage(
            url=url or None,
            content_type=str(item.get("content_type") or ""),
            width=_int_or_none(item.get("width")),
            height=_int_or_none(item.get("height")),
            seed=seed,
            metadata={k: item[k] for k in ("file_name", "file_size") if k in item},
        )
        if url.startswith("data:"):  # sync_mode answers inline data URIs instead of CDN links
            header, _, encoded = url.partition(",")
            try:
                image.data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                image.error = "fal.ai returned an unreadable data URI."
            image.url = None
            image.content_type = image.content_type or header[5:].split(";")[0]
        if not url:
            image.error = "fal.ai returned an image without a URL."
        if index < len(flags) and flags[index] is True:
            # Flagged images come back blacked out: the slot fails, its siblings are kept.
            image.error = NSFW_ERROR
        images.append(image)
    return images


def _failed(message: str, *, permanent: bool) -> ProviderResult:
    return ProviderResult(status=ResultStatus.FAILED, error=message, permanent=permanent)


def _result_from_output(body: dict[str, Any]) -> ProviderResult:
    images = parse_result(body)
    if not images:
        return _failed("fal.ai finished without returning any image.", permanent=False)
    return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, metadata={"seed": body.get("seed")})


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
        response = session.get(settings.FAL_WEBHOOK_JWKS_URL, timeout=_jwks_timeout(), allow_redirects=False)
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


class Fal(HttpApi, Provider):
    name = "fal"
    asynchronous = True
    api_label = "fal.ai"
    secret_setting = "FAL_KEY"  # noqa: S105 - the name of the setting, not a secret
    base_url_setting = "FAL_QUEUE_URL"
    # Whether status polls ask for the request's logs ("true" | "false"; fal_client always sends one).
    status_logs = "false"
    # None: the pipeline's poll schedule, learnt per model (generation/poll_schedule.py), decides
    # when to look, as fal gives no estimate. A subclass whose jobs run minutes may fix it instead.
    fixed_poll_interval: ClassVar[float | None] = None

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {settings.FAL_KEY}"}  # "Key", not "Bearer"

    def error_message(self, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text
        return (detail_text(body.get("detail")) if isinstance(body, dict) else "") or response.text

    def error_for_response(self, response: requests.Response) -> ProviderError:
        error = super().error_for_response(response)
        # fal says per answer whether a retry can help (older name: X-Fal-Needs-Retry).
        hint = (response.headers.get("X-Fal-Retryable") or response.headers.get("X-Fal-Needs-Retry") or "").lower()
        if hint in {"true", "false"}:
            error.permanent = hint == "false"
        return error

    def build_input(self, request: GenerationRequest) -> dict[str, Any]:
        # fal models that batch take num_images; the others make one image a call.
        return model_inputs(self.model, request, count_field="num_images" if self.model.max_images > 1 else None)

    def submit(self, request: GenerationRequest) -> ProviderResult:
        url = f"{settings.FAL_QUEUE_URL.rstrip('/')}/{self.model.key}"
        if request.webhook_url:
            url += "?" + urlencode({"fal_webhook": request.webhook_url})
        body = self.json(self.http("POST", url, json=self.build_input(request)))
        handles = {name: body.get(name) for name in ("status_url", "response_url", "cancel_url")}
        if not body.get("request_id") or not handles["status_url"] or not handles["response_url"]:
            # Queued (and maybe billed) but unpollable: retrying would pay twice, so fail for good.
            raise ProviderError("fal.ai accepted the request without a request id or its URLs.", permanent=True)
        return ProviderResult(
            status=ResultStatus.PENDING,
            external_id=body["request_id"],
            handles=handles,
            poll_after=self.fixed_poll_interval,
        )

    def adopt(self, provider_id: str, delivery: dict[str, Any]) -> ProviderResult:
        # Only here are the URLs built rather than taken from fal's answer: the answer was lost.
        # fal_client's from_request_id builds them the same way, on the app id (owner/app, any
        # subpath dropped).
        app = "/".join(self.model.key.split("/")[:2])
        base = f"{settings.FAL_QUEUE_URL.rstrip('/')}/{app}/requests/{provider_id}"
        handles = {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}
        return ProviderResult(status=ResultStatus.PENDING, external_id=provider_id, handles=handles)

    @classmethod
    def verify_webhook(cls, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        """The delivery id is fal's request id and the delivery's timestamp."""
        request_id = required_header(headers, "X-Fal-Webhook-Request-Id")
        user_id = required_header(headers, "X-Fal-Webhook-User-Id")
        timestamp = required_header(headers, "X-Fal-Webhook-Timestamp")
        signature_hex = required_header(headers, "X-Fal-Webhook-Signature")
        check_timestamp(timestamp, now)
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

    @classmethod
    def webhook_provider_ids(cls, headers: Mapping[str, str], payload: dict[str, Any]) -> list[str]:
        # Both are signed: the header is in the message, the body by its hash. The header comes first.
        ids = [headers.get("X-Fal-Webhook-Request-Id", ""), str(payload.get("request_id") or "")]
        return list(dict.fromkeys(i for i in ids if i))

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        # Status URLs drop the model's sub-path (fal-ai/flux-2/requests/...): always use them as given.
        # A 429/503 here raises with the full Retry-After; the pipeline decides how long to wait.
        response = self.http("GET", self.handle(handles, "status_url"), params={"logs": self.status_logs})
        body = self.json(response)
        status = body.get("status")
        if status in PENDING_STATUSES:  # 202; logs and queue_position are optional
            return self.pending_result(body, response)
        if status != "COMPLETED":
            return self._unknown_status(status, external_id, handles)
        if body.get("error"):
            return self._completed_with_error(body, handles)
        return self._fetch_result(handles)

    def wait_for_end(self, handles: dict[str, Any], *, timeout: float) -> bool:
        # GET {status_url}/stream sends the status objects as events until the request ends
        # (docs/providers.md 1.2). A quiet stream times out with `timeout`; any failure just means
        # the pipeline polls as usual.
        url = self.handle(handles, "status_url").split("?", 1)[0].rstrip("/") + "/stream"
        deadline = time.monotonic() + timeout
        try:
            response = self.http("GET", url, stream=True, timeout=(timeouts()[0], max(0.001, timeout)))
        except ProviderError:
            return False
        try:
            for line in response.iter_lines():
                if line.startswith(b"data:"):
                    try:
                        status = json.loads(line[5:]).get("status")
                    except (ValueError, AttributeError):
                        status = None
                    if status is not None and status not in PENDING_STATUSES:
                        return True
                if time.monotonic() >= deadline:
                    return False
        except requests.RequestException:
            return False
        finally:
            response.close()
        return False

    def pending_result(self, body: dict[str, Any], response: requests.Response) -> ProviderResult:
        """A pending status answer (IN_QUEUE / IN_PROGRESS) as a PENDING result."""
        position = body.get("queue_position")
        metadata = {"queue_position": position} if isinstance(position, int) else {}
        return ProviderResult(status=ResultStatus.PENDING, poll_after=self._poll_after(response), metadata=metadata)

    def result_from_output(self, body: dict[str, Any]) -> ProviderResult:
        """The finished result of a request's output (the result GET's body)."""
        return _result_from_output(body)

    def _poll_after(self, response: requests.Response) -> float | None:
        """A pending answer's Retry-After, uncapped, else fixed_poll_interval."""
        seconds = parse_retry_after(response.headers.get("Retry-After"))
        return seconds if seconds is not None else self.fixed_poll_interval

    def _unknown_status(self, status: Any, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        # fal documents three statuses. Polling anything else until the job deadline would only hide
        # the failure; stop the request on fal's side too, since nobody will collect its result.
        try:
            self.cancel(external_id, handles)
        except ProviderError:
            pass  # best effort, as always for cancel
        shown = sanitize_message(str(status), limit=40) if status else "none"
        return _failed(f"fal.ai answered an unknown request status ({shown}).", permanent=True)

    def _fetch_result(self, handles: dict[str, Any], *, error: str | None = None) -> ProviderResult:
        """GET the result; `error` is the status answer's error, if it had one.

        The result call answers with the model's own HTTP status: a 4xx refusal (422 validation) fails
        for good, and never moves on to another billed provider since the same input would be refused
        there too. A 5xx on a request fal marked failed is the model's or runner's failure (unbilled):
        retryable. Anything else retryable (no answer, a throttle, a 5xx on a request that succeeded)
        raises, and the poll runs again: fal keeps results for a while.
        """
        try:
            output = self.json(self.http("GET", self.handle(handles, "response_url")))
        except ProviderError as exc:
            if exc.permanent:
                return _failed(exc.message, permanent=True)
            if error is not None and exc.status_code is not None and exc.status_code >= 500:
                return _failed(f"fal.ai failed the request: {error}", permanent=False)
            raise
        return self.result_from_output(output)

    def _completed_with_error(self, body: dict[str, Any], handles: dict[str, Any]) -> ProviderResult:
        # Failed and cancelled requests are COMPLETED too; error/error_type say which.
        error_type = sanitize_message(str(body.get("error_type") or ""), limit=60)
        if "cancel" in error_type.lower():
            return ProviderResult(status=ResultStatus.CANCELED, error=sanitize_message(str(body["error"])))
        # The result call replays the model's status and body: a 422 detail is a refusal of the
        # input, a 5xx an infrastructure failure (request_timeout, runner_disconnected, ...) that fal
        # does not bill, so another submit is safe.
        error = sanitize_message(str(body["error"])) + (f" ({error_type})" if error_type else "")
        return self._fetch_result(handles, error=error)

    def cancel(self, external_id: str, handles: dict[str, Any]) -> None:
        if not handles.get("cancel_url"):
            return
        try:
            self.http("PUT", handles["cancel_url"])
        except ProviderError as exc:
            # ALREADY_COMPLETED / NOT_FOUND come back as 400 / 404 [NV]: nothing left to stop.
            if exc.status_code not in {400, 404, 409}:
                raise
