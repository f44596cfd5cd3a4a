"""Calling provider HTTP APIs: one pooled session, timeouts from settings, failures as ProviderError.

Adapters mix in HttpApi and call self.http(); the mixin maps every failure to a ProviderError:
    connect errors, timeouts, 408/409/425/429, 5xx  -> retryable (429 with retry_after)
    any other 4xx, and unexpected redirects          -> permanent
Subclasses override error_message() to pull the provider's own text out of an error body, and may
override raise_for_response() for provider-specific permanence. The API key never reaches an
error message, its details or the log: every text is scrubbed of api_secret() before use.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from urllib3.exceptions import MaxRetryError, NewConnectionError

from generation.providers.base import ProviderError, Reference

logger = logging.getLogger(__name__)

# One pooled session for every provider call: keeps TLS connections alive between polls.
session = requests.Session()

RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 425, 429})
# A provider's error body can be a whole HTML page; the message keeps only its start.
MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"
# Said of failures after which the provider may have received (and may bill) the request.
MAY_HAVE_BEEN_RECEIVED = "the request may have been received"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds, read at call time so tests can override them."""
    return (float(settings.PROVIDER_CONNECT_TIMEOUT), float(settings.PROVIDER_READ_TIMEOUT))


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header value, in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def google_retry_delay(body: Any) -> float | None:
    """The RetryInfo retryDelay ("37s") in a Google RPC error body, in seconds."""
    details = body.get("error", {}).get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def strip_query(url: str) -> str:
    """The URL for logs: a query can carry a webhook token (fal_webhook=...)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _may_have_been_sent(exc: requests.RequestException) -> bool:
    """Whether the provider may have received the request before the transport failed."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # Refused or unresolvable: nothing was sent. Anything else (reset mid-answer, read timeout)
    # may have reached the provider.
    return not isinstance(reason, NewConnectionError)


class HttpApi:
    """Mixin for adapters that speak HTTP. Set api_label; override the hooks as needed."""

    api_label: ClassVar[str] = ""
    # The setting that holds the provider's key: it configures the provider, is named in the
    # hint when missing, and is kept out of messages and logs.
    secret_setting: ClassVar[str] = ""

    def api_secret(self) -> str:
        """The credential to keep out of messages and logs."""
        return getattr(settings, self.secret_setting, "") if self.secret_setting else ""

    def is_configured(self) -> bool:
        return bool(self.api_secret())

    def configuration_hint(self) -> str:
        return f"Set {self.secret_setting} to use {self.api_label} models."

    def api_headers(self) -> dict[str, str]:
        """Auth and other headers sent on every API call."""
        return {}

    def http(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; return the 2xx response or raise ProviderError."""
        all_headers = {**self.api_headers(), **(headers or {})}
        try:
            # No redirects: requests drops Authorization on a cross-host redirect but would
            # forward custom key headers such as x-goog-api-key to wherever it points.
            response = session.request(
                method, url, headers=all_headers, timeout=timeout or timeouts(), allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            maybe_sent = _may_have_been_sent(exc)
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
            error = ProviderError(
                f"{self.api_label} {kind} ({type(exc).__name__}).",
                details=MAY_HAVE_BEEN_RECEIVED if maybe_sent else "",
                may_have_been_received=maybe_sent,
            )
            self._log(method, url, error)
            raise error from None
        try:
            self.raise_for_response(response)
        except ProviderError as error:
            error.message = redact(error.message, [self.api_secret()])
            error.details = redact(error.details, [self.api_secret()])
            error.args = (error.message,)
            self._log(method, url, error)
            raise
        return response

    def raise_for_response(self, response: requests.Response) -> None:
        """Raise the ProviderError a non-2xx answer means; do nothing on 2xx."""
        if 200 <= response.status_code < 300:
            return
        raise self.error_for_response(response)

    def error_for_response(self, response: requests.Response) -> ProviderError:
        status = response.status_code
        text = " ".join((self.error_message(response) or response.reason or "").split())
        secret = self.api_secret()
        text = redact(text, [secret])[:MAX_MESSAGE_CHARS]
        message = f"{self.api_label} answered HTTP {status}" + (f": {text}" if text else ".")
        if 300 <= status < 400:
            message = f"{self.api_label} answered with an unexpected redirect (HTTP {status})."
        retryable = status >= 500 or status in RETRYABLE_CLIENT_STATUSES
        return ProviderError(
            message,
            permanent=not retryable,
            retry_after=self.retry_after(response) if retryable else None,
            status_code=status,
        )

    def error_message(self, response: requests.Response) -> str:
        """The provider's own words for an error answer; the raw body start by default."""
        return response.text[:MAX_MESSAGE_CHARS]

    def retry_after(self, response: requests.Response) -> float | None:
        seconds = parse_retry_after(response.headers.get("Retry-After"))
        if seconds is None:
            seconds = google_retry_delay(json_or_none(response))
        return seconds

    def json(self, response: requests.Response) -> dict[str, Any]:
        """The body as a JSON object; an unreadable 2xx body is a retryable error."""
        body = json_or_none(response)
        if not isinstance(body, dict):
            # A garbled answer to a POST still means the provider got (and may bill) the request.
            method = response.request.method if response.request is not None else "GET"
            raise ProviderError(
                f"{self.api_label} answered HTTP {response.status_code} with a body that is not a JSON object.",
                status_code=response.status_code,
                details="" if method in {"GET", "HEAD"} else MAY_HAVE_BEEN_RECEIVED,
                may_have_been_received=method not in {"GET", "HEAD"},
            )
        return body

    def handle(self, handles: dict[str, Any], name: str) -> str:
        """A provider-given URL saved at submit; never rebuilt, so a missing one is permanent."""
        url = handles.get(name)
        if not url:
            raise ProviderError(f"{self.api_label}: the saved request lacks its {name} URL.", permanent=True)
        return str(url)

    def _log(self, method: str, url: str, error: ProviderError) -> None:
        logger.warning(
            "%s %s %s failed (%s): %s",
            self.api_label,
            method,
            strip_query(url),
            "permanent" if error.permanent else "retryable",
            redact(error.message, [self.api_secret()]),
        )


def unique_references(references: list[Reference]) -> list[Reference]:
    """The references without repeats (same storage key, else same URL, else same bytes), in order.

    Sending one image twice costs upload time and, on some models, weights it double.
    """
    seen: set[str] = set()
    unique = []
    for reference in references:
        identity = reference.key or reference.url or hashlib.sha256(reference.data).hexdigest()
        if identity not in seen:
            seen.add(identity)
            unique.append(reference)
    return unique
