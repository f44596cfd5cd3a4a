"""Calling provider HTTP APIs: one pooled session, timeouts from settings, failures as ProviderError.

Adapters mix in HttpApi and call self.http(); the mixin maps every failure to a ProviderError:
    connect errors, timeouts, 408/409/425/429, 5xx  -> retryable (429 with retry_after)
    any other 4xx, and unexpected redirects          -> permanent
    a URL on any host but the provider's own API     -> permanent, and never requested
Subclasses override error_message() to pull the provider's own text out of an error body, and may
override raise_for_response() for provider-specific permanence.

The API key goes to the provider's API host only. Status, result and cancel URLs come from the
provider's answers, so a hostile or broken answer could name any host (169.254.169.254, a loopback
service): http() sends nothing to a host other than the one in the provider's base URL setting, and
never follows a redirect. The key never reaches an error message, its details or the log either:
every provider text shown to users goes through sanitize_message().
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from urllib3.exceptions import MaxRetryError, NewConnectionError

from generation.lib.retry import is_retryable_status, parse_retry_after
from generation.providers.base import ProviderError, Reference

logger = logging.getLogger(__name__)

# One pooled session for every provider call: keeps TLS connections alive between polls.
session = requests.Session()

# A provider's error body can be a whole HTML page; the message keeps only its start.
MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"
# Said of failures after which the provider may have received (and may bill) the request.
MAY_HAVE_BEEN_RECEIVED = "the request may have been received"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Credentials of every provider: a message from one provider must not show another's key either.
SECRET_SETTINGS = ("FAL_KEY", "REPLICATE_API_TOKEN", "GEMINI_API_KEY", "REPLICATE_WEBHOOK_SECRET")

# What sanitize_message() takes out of provider text. Data URIs first: they would otherwise be half
# matched as URLs and leave their base64 behind.
_DATA_URI = re.compile(r"\bdata:[\w.+-]+/[\w.+-]+[^\s,]*,[^\s\"'<>]*", re.IGNORECASE)
# A URL never ends in sentence punctuation: "see https://x.test/a." keeps its full stop.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]*[^\s\"'<>.,;:!?)\]]", re.IGNORECASE)
# Key-shaped tokens: "Key <fal key>", "Bearer <token>", Replicate's r8_, Google's AIza, webhook whsec_,
# and "api_key=..." style assignments. The scheme-word forms need a digit in the token, so prose such
# as "token expired" stays.
_KEY_LIKE = re.compile(
    r"\b(?:key|bearer|token)\s+(?=[\w.:/+=-]*\d)[\w.:/+=-]{8,}"
    r"|\br8_[a-z0-9]{8,}"
    r"|\bAIza[\w-]{10,}"
    r"|\bwhsec_[\w+/=]{8,}"
    r"|\bsk-[\w-]{8,}"
    r"|\b(?:api[_-]?key|access[_-]?token|token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:key|bearer|basic|token)\s+)?[^\s\"',;]+",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# Absolute file system paths (/srv/app/x.py, C:\\models\\y): two segments at least, and not inside a
# word, so model ids such as "fal-ai/flux-2" and media types such as "image/png" stay.
_PATH = re.compile(r"(?<![\w.:/~-])(?:~|[a-z]:)?(?:[/\\][\w.@%+~-]+){2,}[/\\]?", re.IGNORECASE)


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds, read at call time so tests can override them."""
    return (float(settings.PROVIDER_CONNECT_TIMEOUT), float(settings.PROVIDER_READ_TIMEOUT))


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


def sanitize_message(text: str, secrets: Iterable[str] = (), *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A provider's error text fit to show a user: one line, at most `limit` characters, and without
    URLs, file paths, addresses or anything key-shaped.

    Provider bodies quote what they were sent and where they run: a presigned reference URL, a stack
    trace's paths, a credential echoed back. `secrets` are redacted exactly, as is every provider key in
    settings; the patterns catch keys no setting holds.
    """
    text = redact(str(text), [*secrets, *(getattr(settings, name, "") or "" for name in SECRET_SETTINGS)])
    text = _DATA_URI.sub("[data]", text)
    text = _URL.sub("[url]", text)
    text = _KEY_LIKE.sub(REDACTED, text)
    text = _IPV4.sub("[address]", text)
    text = _PATH.sub("[path]", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None for anything else or anything two parsers could
    read differently (user info, backslashes, spaces): such a URL is never an API host's."""
    if not isinstance(url, str) or any(c.isspace() or c == "\\" or ord(c) < 0x20 for c in url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or "@" in parts.netloc or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port


def _origin_text(origin: tuple[str, str, int] | None) -> str:
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "(no valid host)"


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
    # The setting that holds the provider's API base URL: its scheme, host and port are the only
    # ones the key is sent to.
    base_url_setting: ClassVar[str] = ""

    def api_base_url(self) -> str:
        return str(getattr(settings, self.base_url_setting, "") or "") if self.base_url_setting else ""

    def fetch_trusted_hosts(self) -> tuple[str, ...]:
        """The provider's own API host, if staff listed it in TRUSTED_FETCH_HOSTS (a ComfyUI server on a
        private address, the test simulator): output URLs on it may then be downloaded. Another
        provider's trusted host, or one in a redirect, is not trusted for this one."""
        origin = url_origin(self.api_base_url())
        if origin is None:
            return ()
        _, host, port = origin
        for entry in settings.TRUSTED_FETCH_HOSTS:
            text = entry.strip().lower()
            parts = urlsplit(text if "://" in text else f"//{text}")
            try:
                entry_host, entry_port = (parts.hostname or "").rstrip("."), parts.port
            except ValueError:
                continue
            if entry_host == host and entry_port in (None, port):
                return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)
        return ()

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
        with_key: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; return the 2xx response or raise ProviderError.

        A URL off the provider's API host (see check_api_host) is refused before any connection.
        `with_key=False` leaves out api_headers(), for a URL that carries its own authorization
        (a Files API upload URL).
        """
        self.check_api_host(url)
        all_headers = {**(self.api_headers() if with_key else {}), **(headers or {})}
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

    def check_api_host(self, url: str) -> None:
        """Raise a permanent ProviderError unless `url` is on the API host of the base URL setting.

        Permanent: the provider will name the same URL on the next poll, and the pipeline must not
        fall back as if the provider were down.
        """
        expected = url_origin(self.api_base_url())
        actual = url_origin(url)
        if expected is not None and actual == expected:
            return
        logger.warning(
            "%s: refused a request to %s, which is not the API host %s",
            self.api_label,
            _origin_text(actual),
            _origin_text(expected),
        )
        raise ProviderError(
            f"{self.api_label} answered with a URL on another host; it was not followed.", permanent=True
        )

    def raise_for_response(self, response: requests.Response) -> None:
        """Raise the ProviderError a non-2xx answer means; do nothing on 2xx."""
        if 200 <= response.status_code < 300:
            return
        raise self.error_for_response(response)

    def error_for_response(self, response: requests.Response) -> ProviderError:
        status = response.status_code
        text = sanitize_message(self.error_message(response) or response.reason or "", [self.api_secret()])
        message = f"{self.api_label} answered HTTP {status}" + (f": {text}" if text else ".")
        if 300 <= status < 400:
            message = f"{self.api_label} answered with an unexpected redirect (HTTP {status})."
        retryable = is_retryable_status(status)
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
