"""A loopback stand-in for fal.ai, Replicate and Gemini that speaks their HTTP APIs (providers.md 1-3).

One stdlib ThreadingHTTPServer on 127.0.0.1:<free port>, run in a daemon thread, serves:

    /fal/{model_id...}                      fal queue API: submit (?fal_webhook=), and the status, result and
    /fal/{owner}/{app}/requests/{id}[...]   cancel URLs it hands out (they drop the model's sub-path)
    /fal/.well-known/jwks.json              the public key of the fal webhook signatures
    /replicate/v1/predictions[...]          Replicate predictions (create 201, Prefer: wait, get, list, cancel)
    /replicate/v1/models/{o}/{n}/predictions
    /gemini/{version}/models/{m}:generateContent
    /files/{name}.png                       the real PNGs the fal and Replicate outputs point at

Generations "run" for `latency` seconds from their submit; nothing happens in the background except
webhook deliveries, which are timers. Per-test knobs are plain attributes (set them directly or with
configure()) plus fault rules (fail_next, rate_limit_next, outage, timeout_next, malformed_next,
drop_next, fail_fraction). Every request is recorded as a Call; the in-flight count of API calls per
provider is tracked and its maximum kept, so tests can check what the studio's limiter let through.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.simulator.images import make_png
from tests.simulator.signing import FalSigner, new_whsec, standard_webhook_headers

PROVIDERS = ("fal", "replicate", "gemini")
# fal ids with a namespace have one more leading segment before owner/app (providers.md 1.1).
FAL_NAMESPACES = frozenset({"workflows", "comfy"})
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MALFORMED_BODY = b'{"status": "IN_QUEUE", "request_id": "3f1c'  # cut off mid-answer
_KNOBS = (
    "latency",
    "latencies",
    "num_images",
    "image_size",
    "replicate_output_string",
    "replicate_prefer_wait",
    "gemini_mode",
    "gemini_block_reason",
    "concurrency_cap",
    "webhooks_enabled",
    "forge_webhook_signatures",
    "webhook_timestamp_skew",
    "echo_credentials",
    "accepted_keys",
    "fail_jobs",
    "timeout_seconds",
    "fal_max_num_images",
    "replicate_max_outputs",
    "fal_urls_base",
    "fal_job_error_status",
    "fal_status_override",
    "fal_status_retry_after",
    "gemini_require_image_modality",
    "gemini_broken_next",
    "gemini_broken_kind",
)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Call:
    """One request the simulator received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any
    provider: str  # fal | replicate | gemini | files | meta | unknown
    op: str  # fal: submit/status/result/cancel; replicate: create/get/cancel; gemini: generate; files: file
    started: float  # time.monotonic()
    finished: float | None = None
    status: int | None = None
    fault: str = ""  # the fault rule kind that answered it, if any
    response: bytes = b""  # the answer's body

    @property
    def response_json(self) -> Any:
        try:
            return json.loads(self.response)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def prompt(self) -> str | None:
        """The prompt the call carried, whatever the provider's body shape."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.provider == "fal":
            return body.get("prompt")
        if self.provider == "replicate":
            return (body.get("input") or {}).get("prompt")
        if self.provider == "gemini":
            for content in body.get("contents") or []:
                for part in content.get("parts") or []:
                    if isinstance(part, dict) and part.get("text"):
                        return part["text"]
        return None


@dataclass
class Fault:
    """A rule that answers matching API calls with a failure instead of the normal answer.

    kind: "status" (an error answer), "timeout" (sleep `seconds`, then answer normally, usually to a
    client that gave up), "malformed" (200 with a cut-off JSON body) or "drop" (close the connection
    without an answer). provider None matches any of fal/replicate/gemini (never file downloads);
    op None any operation. remaining None means forever; fraction < 1 applies it at random.
    """

    kind: str
    provider: str | None = None
    op: str | None = None
    remaining: int | None = 1
    fraction: float = 1.0
    status: int = 500
    retry_after: float | None = None
    retry_after_header: bool | None = None  # None: fal/Replicate send the header, Gemini only RetryInfo
    body: Any = None
    seconds: float = 0.0
    hits: int = 0

    def matches(self, provider: str, op: str) -> bool:
        if self.provider is None:
            if provider not in PROVIDERS:
                return False
        elif self.provider != provider:
            return False
        if self.op is not None and self.op != op:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class Delivery:
    """One webhook POST the simulator made."""

    provider: str
    url: str
    headers: dict[str, str]
    body: bytes
    forged: bool
    status: int | None = None
    error: str = ""
    at: float = 0.0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Job:
    """One generation on the simulated provider side."""

    provider: str
    id: str
    model: str
    input: dict[str, Any]
    num_images: int
    latency: float
    fail: bool
    prefix: str = ""  # fal: the owner/app part its URLs use
    webhook: str | None = None
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_now_iso)
    canceled: bool = False
    canceled_at: str | None = None
    files: list[str] = field(default_factory=list)
    seed: int = field(default_factory=lambda: random.randrange(2**31))

    def elapsed(self) -> float:
        return time.monotonic() - self.created

    @property
    def done(self) -> bool:
        return self.canceled or self.elapsed() >= self.latency

    def state(self) -> str:
        """queued | running | succeeded | failed | canceled"""
        if self.canceled:
            return "canceled"
        elapsed = self.elapsed()
        if elapsed >= self.latency:
            return "failed" if self.fail else "succeeded"
        return "queued" if elapsed < self.latency * 0.25 else "running"


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


_DROP = _Response(0)  # close the connection without answering


class Simulator:
    """The simulated providers. Thread-safe; `reset()` restores every knob and forgets every call."""

    user_id = "github|character-studio-sim"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.RLock()
        self.fal_signer = FalSigner()
        self.replicate_webhook_secret = new_whsec()
        token = secrets.token_hex(6)
        # What the studio should be configured with (see worker_env / settings_overrides).
        self.keys = {"fal": f"fal-sim-{token}", "replicate": f"r8_sim{token}", "gemini": f"AIza-sim-{token}"}
        self._server = _Server((host, 0), _Handler)
        self._server.simulator = self  # type: ignore[attr-defined]
        self.host = host
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-simulator", daemon=True
        )
        self._wake = threading.Event()
        self._timers: list[threading.Timer] = []
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> Simulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._cancel_background()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Back to defaults: every knob, no faults, no calls, no jobs; sleeping handlers wake up."""
        self._cancel_background()
        with self._lock:
            # Seconds a generation runs (fal/Replicate), or a Gemini call takes. Per provider: latencies.
            self.latency = 0.1
            self.latencies: dict[str, float] = {}
            # Images per generation: None = as the request asked (num_images / num_outputs / 1).
            self.num_images: int | None = None
            self.image_size = (96, 128)
            # Replicate answers `output` as one URL string instead of a list (some models do).
            self.replicate_output_string = False
            # Honour `Prefer: wait` on create (False: answer "starting" at once, as a busy API may).
            self.replicate_prefer_wait = True
            # "image" | "text" (a STOP with only text) | "blocked" (promptFeedback.blockReason, no candidates)
            self.gemini_mode = "image"
            self.gemini_block_reason = "PROHIBITED_CONTENT"
            # More API calls in flight to one provider than this are answered 429 (None: no cap).
            self.concurrency_cap: int | None = None
            self.webhooks_enabled = True
            # Sign webhooks with a key the receiver cannot know (fal: not in the JWKS; Replicate: other secret).
            self.forge_webhook_signatures = False
            # Seconds added to webhook timestamps (negative: stale deliveries).
            self.webhook_timestamp_skew = 0
            # Error answers quote the credential they were given (a careless provider): redaction tests.
            self.echo_credentials = False
            # The credentials the simulated providers accept; anything else is 401 (Gemini: 400).
            self.accepted_keys = dict(self.keys)
            # The next N generations end failed on the provider side (fal COMPLETED+error replaying a
            # 422, Replicate status failed, Gemini finishReason IMAGE_SAFETY without an image).
            self.fail_jobs = 0
            # How long a "timeout" fault sleeps by default: longer than the studio's read timeout.
            self.timeout_seconds = 3.0
            self.fal_max_num_images = 10
            self.replicate_max_outputs = 4
            # fal hands out its status/response/cancel URLs on this base instead of its own (a foreign
            # host: the studio must never call it, let alone with the key). None: the simulator's fal_url.
            self.fal_urls_base: str | None = None
            # The HTTP status a failed fal job's result GET replays: 422 (the model refused the input,
            # COMPLETED with error "Invalid status code: 422") or a 5xx (a runner failure, with
            # error_type runner_disconnected).
            self.fal_job_error_status = 422
            # Status polls answer 200 with this status instead of the real one (an unknown status).
            self.fal_status_override: str | None = None
            # Pending (202) status answers carry this Retry-After (seconds), as a busy queue may.
            self.fal_status_retry_after: float | None = None
            # A generateContent whose generationConfig.responseModalities lacks "IMAGE" is answered with
            # text only. Stricter than the real API, which may still draw: it proves the studio asks.
            self.gemini_require_image_modality = True
            # The next N Gemini answers carry a broken image part (each still billed, as on Google):
            # gemini_broken_kind "not-an-image" (base64 of HTML), "not-base64" or "no-data".
            self.gemini_broken_next = 0
            self.gemini_broken_kind = "not-an-image"
            self.faults: list[Fault] = []
            self.calls: list[Call] = []
            self.deliveries: list[Delivery] = []
            self.errors: list[str] = []  # exceptions raised while answering (simulator bugs)
            self.in_flight = dict.fromkeys(PROVIDERS, 0)
            self.max_in_flight = dict.fromkeys(PROVIDERS, 0)
            self._jobs: dict[str, _Job] = {}
            self._files: dict[str, bytes] = {}

    def configure(self, **knobs: Any) -> Simulator:
        with self._lock:
            for name, value in knobs.items():
                if name not in _KNOBS:
                    raise AttributeError(f"unknown simulator knob {name!r}")
                setattr(self, name, value)
        return self

    def _cancel_background(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
            wake, self._wake = self._wake, threading.Event()
        for timer in timers:
            timer.cancel()
        wake.set()

    # --- where the studio points --------------------------------------------------------
    @property
    def fal_url(self) -> str:
        return f"{self.base_url}/fal"

    @property
    def replicate_url(self) -> str:
        return f"{self.base_url}/replicate"

    @property
    def gemini_url(self) -> str:
        return f"{self.base_url}/gemini"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/fal/.well-known/jwks.json"

    @property
    def trusted_host(self) -> str:
        return f"{self.host}:{self.port}"

    def settings_overrides(self) -> dict[str, Any]:
        """Django settings that point the studio's adapters here (for override_settings)."""
        return {
            "FAL_QUEUE_URL": self.fal_url,
            "REPLICATE_API_URL": self.replicate_url,
            "GEMINI_API_URL": self.gemini_url,
            "GEMINI_API_VERSION": "v1beta",
            "FAL_KEY": self.keys["fal"],
            "REPLICATE_API_TOKEN": self.keys["replicate"],
            "GEMINI_API_KEY": self.keys["gemini"],
            "TRUSTED_FETCH_HOSTS": [self.trusted_host],
            "REPLICATE_WEBHOOK_SECRET": self.replicate_webhook_secret,
            "FAL_WEBHOOK_JWKS_URL": self.jwks_url,
        }

    def worker_env(self) -> dict[str, str]:
        """The same, as environment variables for a worker process."""
        env = {}
        for name, value in self.settings_overrides().items():
            env[name] = ",".join(value) if isinstance(value, list) else str(value)
        return env

    # --- faults ---------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        provider: str | None = None,
        op: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> Fault:
        """Answer the next n matching calls with HTTP `status` (a provider-shaped error body)."""
        return self.add_fault(
            Fault("status", provider, op, remaining=n, status=status, retry_after=retry_after, body=body)
        )

    def rate_limit_next(
        self,
        n: int = 1,
        *,
        retry_after: float = 1,
        provider: str | None = None,
        op: str | None = None,
        header: bool | None = None,
    ) -> Fault:
        """429 for the next n matching calls: a Retry-After header on fal/Replicate, RetryInfo in the
        body on Gemini; header=True adds the header on Gemini too, header=False drops it elsewhere."""
        return self.add_fault(
            Fault("status", provider, op, remaining=n, status=429, retry_after=retry_after, retry_after_header=header)
        )

    def fail_fraction(
        self,
        fraction: float,
        status: int = 429,
        *,
        provider: str | None = None,
        op: str | None = None,
        retry_after: float | None = None,
        n: int | None = None,
    ) -> Fault:
        """Fail about `fraction` of the matching calls (at most n of them when given)."""
        return self.add_fault(
            Fault("status", provider, op, remaining=n, fraction=fraction, status=status, retry_after=retry_after)
        )

    def outage(self, provider: str | None = None, status: int = 503) -> Fault:
        """Every matching call fails with `status` until the rule is removed (clear_faults / reset)."""
        return self.add_fault(Fault("status", provider, None, remaining=None, status=status))

    def timeout_next(
        self, n: int = 1, *, seconds: float | None = None, provider: str | None = None, op: str | None = None
    ) -> Fault:
        """Hold the next n matching calls for `seconds` (default timeout_seconds) before answering."""
        wait = self.timeout_seconds if seconds is None else seconds
        return self.add_fault(Fault("timeout", provider, op, remaining=n, seconds=wait))

    def malformed_next(self, n: int = 1, *, provider: str | None = None, op: str | None = None) -> Fault:
        """Answer the next n matching calls 200 with a cut-off JSON body."""
        return self.add_fault(Fault("malformed", provider, op, remaining=n))

    def drop_next(self, n: int = 1, *, provider: str | None = None, op: str | None = None) -> Fault:
        """Close the connection of the next n matching calls without any answer."""
        return self.add_fault(Fault("drop", provider, op, remaining=n))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = []

    def _take_fault(self, provider: str, op: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.matches(provider, op):
                    continue
                if fault.fraction < 1 and random.random() >= fault.fraction:
                    return None
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    # --- what happened --------------------------------------------------------------------
    def calls_for(
        self,
        provider: str | None = None,
        op: str | None = None,
        *,
        method: str | None = None,
        contains: str | None = None,
    ) -> list[Call]:
        """The recorded calls, oldest first, filtered; `contains` searches the raw body."""
        with self._lock:
            calls = list(self.calls)
        return [
            c
            for c in calls
            if (provider is None or c.provider == provider)
            and (op is None or c.op == op)
            and (method is None or c.method == method)
            and (contains is None or contains in c.text)
        ]

    def deliveries_for(self, provider: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if provider is None or d.provider == provider]

    def max_concurrency(self, provider: str | None = None) -> int:
        """The most API calls seen in flight at once (to one provider, or the highest of any)."""
        with self._lock:
            return self.max_in_flight[provider] if provider else max(self.max_in_flight.values())

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator: condition not met within {timeout}s")
            time.sleep(interval)

    def job(self, external_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(external_id)

    def output_images(self, external_id: str) -> list[bytes]:
        """The PNG bytes a fal request or Replicate prediction handed out, in output order."""
        with self._lock:
            job = self._jobs.get(external_id)
            return [self._files[name] for name in job.files] if job else []

    # --- request handling -------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        provider, op, params = self._route(method, path)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        call = Call(method, path, query, headers, body, parsed, provider, op, time.monotonic())
        with self._lock:
            self.calls.append(call)
        api = provider in PROVIDERS
        if api:
            with self._lock:
                self.in_flight[provider] += 1
                now_in_flight = self.in_flight[provider]
                self.max_in_flight[provider] = max(self.max_in_flight[provider], now_in_flight)
        try:
            response = self._answer(call, params, now_in_flight if api else 0)
        except Exception as exc:  # a simulator bug: answer 599, and keep it for the fixture to report
            with self._lock:
                self.errors.append(f"{call.method} {call.path}: {exc!r}")
            response = _Response(599, f"simulator error: {exc!r}".encode(), {"Content-Type": "text/plain"})
        finally:
            # Leave the in-flight count before the answer is written: the client cannot see the answer
            # (and start its next call) while this call still counts.
            if api:
                with self._lock:
                    self.in_flight[provider] -= 1
        call.status = response.status or None
        call.response = response.body
        call.finished = time.monotonic()
        return response

    def _route(self, method: str, path: str) -> tuple[str, str, dict[str, str]]:
        segments = [s for s in path.split("/") if s]
        if not segments:
            return "unknown", "", {}
        head, rest = segments[0], segments[1:]
        if head == "files" and len(rest) == 1:
            return "files", "file", {"name": rest[0]}
        if head == "fal":
            if rest == [".well-known", "jwks.json"]:
                return "meta", "jwks", {}
            if "requests" in rest:
                i = rest.index("requests")
                prefix, tail = "/".join(rest[:i]), rest[i + 1 :]
                if len(tail) == 1:
                    return "fal", "result", {"prefix": prefix, "id": tail[0]}
                if len(tail) == 2 and tail[1] in {"status", "cancel"}:
                    return "fal", tail[1], {"prefix": prefix, "id": tail[0]}
                return "fal", "unknown", {}
            return "fal", "submit", {"model": "/".join(rest)}
        if head == "replicate" and rest[:1] == ["v1"]:
            rest = rest[1:]
            if rest == ["predictions"]:
                return "replicate", ("list" if method == "GET" else "create"), {}
            if len(rest) == 4 and rest[0] == "models" and rest[3] == "predictions":
                return "replicate", "create", {"model": f"{rest[1]}/{rest[2]}"}
            if len(rest) == 2 and rest[0] == "predictions":
                return "replicate", "get", {"id": rest[1]}
            if len(rest) == 3 and rest[0] == "predictions" and rest[2] == "cancel":
                return "replicate", "cancel", {"id": rest[1]}
            return "replicate", "unknown", {}
        if head == "gemini" and len(rest) == 3 and rest[1] == "models" and rest[2].endswith(":generateContent"):
            return "gemini", "generate", {"version": rest[0], "model": rest[2].removesuffix(":generateContent")}
        return (head if head in PROVIDERS else "unknown"), "unknown", {}

    _METHODS = {
        ("fal", "submit"): "POST",
        ("fal", "status"): "GET",
        ("fal", "result"): "GET",
        ("fal", "cancel"): "PUT",
        ("replicate", "create"): "POST",
        ("replicate", "get"): "GET",
        ("replicate", "list"): "GET",
        ("replicate", "cancel"): "POST",
        ("gemini", "generate"): "POST",
        ("files", "file"): "GET",
        ("meta", "jwks"): "GET",
    }

    def _answer(self, call: Call, params: dict[str, str], in_flight: int) -> _Response:
        provider, op = call.provider, call.op
        expected = self._METHODS.get((provider, op))
        if expected is None:
            return self._error(provider, 404, "Not found.")
        if call.method != expected:
            return self._error(provider, 405, f"Method {call.method} not allowed.")
        if provider == "files":
            data = self._files.get(params["name"])
            if data is None:
                return _Response(404, b"not found", {"Content-Type": "text/plain"})
            return _Response(200, data, {"Content-Type": "image/png"})
        if provider == "meta":
            return _Response.json(200, self.fal_signer.jwks())

        cap = self.concurrency_cap
        if cap is not None and in_flight > cap:
            return self._error(provider, 429, f"Concurrency limit of {cap} requests exceeded.")
        fault = self._take_fault(provider, op)
        if fault is not None:
            call.fault = fault.kind
            if fault.kind == "status":
                return self._fault_answer(provider, fault)
            if fault.kind == "malformed":
                return _Response(200, MALFORMED_BODY, {"Content-Type": "application/json"})
            if fault.kind == "drop":
                return _DROP
            if fault.kind == "timeout":
                self._sleep(fault.seconds)
        denied = self._check_auth(call)
        if denied is not None:
            return denied
        handler = getattr(self, f"_{provider}_{op}")
        return handler(call, params)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on reset() or close()."""
        if seconds > 0:
            self._wake.wait(seconds)

    def _latency(self, provider: str) -> float:
        return float(self.latencies.get(provider, self.latency))

    def _take_job_failure(self) -> bool:
        with self._lock:
            if self.fail_jobs > 0:
                self.fail_jobs -= 1
                return True
        return False

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, delay), action)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    # --- errors -----------------------------------------------------------------------------
    def _error(
        self,
        provider: str,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        header: bool | None = None,
        body: Any = None,
    ) -> _Response:
        headers: dict[str, str] = {}
        if retry_after is not None and (header if header is not None else provider != "gemini"):
            headers["Retry-After"] = f"{retry_after:g}"
        if body is not None:
            return _Response.json(status, body, headers) if not isinstance(body, bytes) else _Response(status, body)
        if provider == "gemini":
            error: dict[str, Any] = {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}
            if status == 429:
                error["details"] = [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            }
                        ],
                    }
                ]
                if retry_after is not None:
                    error["details"].append(
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
                    )
            return _Response.json(status, {"error": error}, headers)
        if provider == "replicate":
            if status == 429:
                wait = f"{retry_after:g}" if retry_after is not None else "30"
                payload = {"detail": f"Request was throttled. Your rate limit resets in ~{wait}s.", "status": 429}
            else:
                title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
                payload = {"type": None, "title": title, "status": status, "detail": message}
            return _Response.json(status, payload, headers)
        return _Response.json(status, {"detail": message}, headers)

    def _fault_answer(self, provider: str, fault: Fault) -> _Response:
        messages = {
            429: "Rate limit exceeded.",
            500: "Internal server error.",
            502: "Bad gateway.",
            503: "The service is temporarily unavailable.",
            504: "Gateway timeout.",
            401: "Unauthorized",
            422: "Invalid input.",
        }
        message = messages.get(fault.status, f"Simulated HTTP {fault.status}.")
        if provider == "gemini" and fault.status == 429:
            message = "You exceeded your current quota, please check your plan and billing details."
        if provider == "gemini" and fault.status == 503:
            message = "The model is overloaded. Please try again later."
        return self._error(
            provider,
            fault.status,
            message,
            retry_after=fault.retry_after,
            header=fault.retry_after_header,
            body=fault.body,
        )

    def _check_auth(self, call: Call) -> _Response | None:
        provider = call.provider
        accepted = self.accepted_keys.get(provider, "")
        if provider == "fal":
            presented = call.headers.get("authorization", "")
            if presented == f"Key {accepted}":
                return None
            text = f"Unauthorized: invalid key {presented!r}" if self.echo_credentials else "Unauthorized"
            return self._error("fal", 401, text)
        if provider == "replicate":
            presented = call.headers.get("authorization", "")
            if presented == f"Bearer {accepted}":
                return None
            text = "You did not pass a valid authentication token"
            if self.echo_credentials:
                text += f": {presented!r}"
            return self._error("replicate", 401, text, body=None)
        if provider == "gemini":
            presented = call.headers.get("x-goog-api-key") or (call.query.get("key") or [""])[0]
            if presented == accepted:
                return None
            text = "API key not valid. Please pass a valid API key."
            if self.echo_credentials:
                text += f" (got {presented!r})"
            response = self._error("gemini", 400, text)
            body = json.loads(response.body)
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
            return _Response.json(400, body)
        return None

    # --- files ------------------------------------------------------------------------------
    def _outputs(self, job: _Job) -> list[str]:
        """The job's image URLs, made on first use (real PNGs, distinct per image)."""
        with self._lock:
            if not job.files:
                for index in range(job.num_images):
                    name = f"{job.id}-{index}.png"
                    self._files[name] = make_png(f"{job.provider}:{job.id}:{index}", self.image_size)
                    job.files.append(name)
            return [f"{self.base_url}/files/{name}" for name in job.files]

    def _count(self, requested: Any) -> int:
        if self.num_images is not None:
            return int(self.num_images)
        return requested if isinstance(requested, int) and not isinstance(requested, bool) else 1

    # --- fal --------------------------------------------------------------------------------
    @staticmethod
    def _fal_prefix(model: str) -> str:
        segments = model.split("/")
        keep = 3 if segments and segments[0] in FAL_NAMESPACES else 2
        return "/".join(segments[:keep])

    def _fal_urls(self, job: _Job) -> dict[str, str]:
        base = f"{(self.fal_urls_base or self.fal_url).rstrip('/')}/{job.prefix}/requests/{job.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _fal_submit(self, call: Call, params: dict[str, str]) -> _Response:
        body = call.json
        if not isinstance(body, dict):
            return self._error(
                "fal", 422, "", body={"detail": [{"loc": ["body"], "msg": "Invalid JSON", "type": "json_invalid"}]}
            )
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            detail = [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]
            return self._error("fal", 422, "", body={"detail": detail})
        requested = body.get("num_images", 1)
        if not isinstance(requested, int) or not 1 <= requested <= self.fal_max_num_images:
            detail = [
                {
                    "loc": ["body", "num_images"],
                    "msg": f"Input should be less than or equal to {self.fal_max_num_images}",
                    "type": "less_than_equal",
                    "ctx": {"le": self.fal_max_num_images},
                }
            ]
            return self._error("fal", 422, "", body={"detail": detail})
        model = params["model"]
        webhook = (call.query.get("fal_webhook") or [None])[0]
        job = _Job(
            "fal",
            str(uuid.uuid4()),
            model,
            body,
            self._count(requested),
            self._latency("fal"),
            self._take_job_failure(),
            prefix=self._fal_prefix(model),
            webhook=webhook,
        )
        with self._lock:
            self._jobs[job.id] = job
        answer = {"request_id": job.id, "status": "IN_QUEUE", "queue_position": 0, **self._fal_urls(job)}
        if webhook:
            answer["gateway_request_id"] = job.id
            self._schedule(job.latency, lambda: self._fal_deliver(job))
        return _Response.json(200, answer)

    def _fal_find(self, params: dict[str, str]) -> _Job | None:
        job = self.job(params["id"])
        # The URLs use owner/app only: a URL built from the full model id finds nothing, as on fal.
        if job is None or job.provider != "fal" or job.prefix != params["prefix"]:
            return None
        return job

    def _fal_output(self, job: _Job) -> dict[str, Any]:
        width, height = self.image_size
        images = [
            {
                "url": url,
                "width": width,
                "height": height,
                "content_type": "image/png",
                "file_name": url.rsplit("/", 1)[1],
            }
            for url in self._outputs(job)
        ]
        return {
            "images": images,
            "timings": {"inference": job.latency},
            "seed": job.input.get("seed", job.seed),
            "has_nsfw_concepts": [False] * len(images),
            "prompt": job.input.get("prompt", ""),
        }

    def _fal_job_error(self) -> tuple[str, str | None, int, dict[str, Any]]:
        """(error, error_type, result status, result body) of a failed fal job (fal_job_error_status)."""
        status = self.fal_job_error_status
        if status >= 500:
            return "Runner disconnected", "runner_disconnected", status, {"detail": "Runner disconnected"}
        return f"Invalid status code: {status}", None, status, self._FAL_JOB_ERROR

    _FAL_JOB_ERROR = {
        "detail": [
            {
                "loc": ["body", "prompt"],
                "msg": "The prompt was flagged by the content checker.",
                "type": "content_policy_violation",
            }
        ]
    }

    def _fal_status(self, call: Call, params: dict[str, str]) -> _Response:
        job = self._fal_find(params)
        if job is None:
            return self._error("fal", 404, "Request not found")
        logs_wanted = (call.query.get("logs") or ["0"])[0] in {"1", "true"}
        common = {"request_id": job.id, **self._fal_urls(job)}
        if self.fal_status_override is not None:
            return _Response.json(200, {"status": self.fal_status_override, "logs": None, **common})
        state = job.state()
        wait = self.fal_status_retry_after
        pending_headers = {"Retry-After": f"{wait:g}"} if wait is not None else {}
        if state == "queued":
            answer = {"status": "IN_QUEUE", "queue_position": 0, "logs": None, **common}
            return _Response.json(202, answer, pending_headers)
        if state == "running":
            logs = [{"message": "step 1/4", "level": "INFO", "source": "user", "timestamp": _now_iso()}]
            answer = {"status": "IN_PROGRESS", "logs": logs if logs_wanted else None, **common}
            return _Response.json(202, answer, pending_headers)
        answer = {
            "status": "COMPLETED",
            "logs": [] if logs_wanted else None,
            "metrics": {"inference_time": job.latency},
            "error": None,
            "error_type": None,
            **common,
        }
        if state == "failed":
            answer["error"], answer["error_type"], _, _ = self._fal_job_error()
        elif state == "canceled":
            answer["error"], answer["error_type"] = "Request was cancelled", "request_cancelled"
        return _Response.json(200, answer)

    def _fal_result(self, call: Call, params: dict[str, str]) -> _Response:
        job = self._fal_find(params)
        if job is None:
            return self._error("fal", 404, "Request not found")
        state = job.state()
        if state in {"queued", "running"}:
            return self._error("fal", 400, "Request is still in progress")
        if state == "failed":
            _, _, status, body = self._fal_job_error()
            return self._error("fal", status, "", body=body)
        if state == "canceled":
            return self._error("fal", 400, "Request was cancelled")
        return _Response.json(200, self._fal_output(job))

    def _fal_cancel(self, call: Call, params: dict[str, str]) -> _Response:
        job = self._fal_find(params)
        if job is None:
            return _Response.json(404, {"status": "NOT_FOUND"})
        with self._lock:
            if job.done:
                return _Response.json(400, {"status": "ALREADY_COMPLETED"})
            job.canceled, job.canceled_at = True, _now_iso()
        return _Response.json(202, {"status": "CANCELLATION_REQUESTED"})

    def _fal_deliver(self, job: _Job) -> None:
        state = job.state()
        if not self.webhooks_enabled or not job.webhook or state == "canceled":
            return
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if state == "succeeded":
            body.update(status="OK", payload=self._fal_output(job))
        else:
            _, _, status, payload = self._fal_job_error()
            body.update(status="ERROR", error=f"Invalid status code: {status}", payload=payload)
        raw = json.dumps(body).encode()
        forged = self.forge_webhook_signatures
        signer = FalSigner() if forged else self.fal_signer
        headers = signer.headers(
            request_id=job.id, user_id=self.user_id, timestamp=int(time.time()) + self.webhook_timestamp_skew, body=raw
        )
        self._post(Delivery("fal", job.webhook, {"Content-Type": "application/json", **headers}, raw, forged))

    # --- Replicate --------------------------------------------------------------------------
    def _replicate_urls(self, job: _Job) -> dict[str, str]:
        get = f"{self.replicate_url}/v1/predictions/{job.id}"
        return {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{self.base_url}/replicate-stream/v1/files/{job.id}",
            "web": f"https://replicate.com/p/{job.id}",
        }

    def _prediction(self, job: _Job) -> dict[str, Any]:
        state = job.state()
        status = {"queued": "starting", "running": "processing"}.get(state, state)
        output: Any = None
        if state == "succeeded":
            urls = self._outputs(job)
            output = urls[0] if self.replicate_output_string and urls else urls
        finished = state in {"succeeded", "failed", "canceled"}
        return {
            "id": job.id,
            "model": job.model,
            "version": job.input.get("version") or "dp-" + job.id[:12],
            "input": job.input.get("input", {}),
            "logs": "" if state == "queued" else f"Using seed: {job.seed}\n",
            "output": output,
            "data_removed": False,
            "error": "NSFW content detected. Try running it again, or try a different prompt."
            if state == "failed"
            else None,
            "source": "api",
            "status": status,
            "created_at": job.created_at,
            "started_at": None if state == "queued" else job.created_at,
            "completed_at": (job.canceled_at or _now_iso()) if finished else None,
            "urls": self._replicate_urls(job),
            "metrics": {"predict_time": job.latency} if state in {"succeeded", "failed"} else {},
        }

    def _replicate_create(self, call: Call, params: dict[str, str]) -> _Response:
        body = call.json
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self._error("replicate", 422, "The request body must be a JSON object with an input object.")
        model = params.get("model")
        if model is None:
            if not body.get("version"):
                return self._error("replicate", 422, "Invalid version or not permitted: a version is required.")
            model = str(body["version"]).split(":")[0] if "/" in str(body["version"]) else "sim/versioned-model"
        inputs = body["input"]
        if not inputs.get("prompt"):
            return self._error("replicate", 422, "input.prompt is required.")
        requested = inputs.get("num_outputs", inputs.get("num_images", 1))
        if not isinstance(requested, int) or not 1 <= requested <= self.replicate_max_outputs:
            return self._error(
                "replicate", 422, f"input.num_outputs must be less than or equal to {self.replicate_max_outputs}."
            )
        job_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=26))
        job = _Job(
            "replicate",
            job_id,
            model,
            body,
            self._count(requested),
            self._latency("replicate"),
            self._take_job_failure(),
            webhook=body.get("webhook"),
        )
        with self._lock:
            self._jobs[job.id] = job
        if job.webhook:
            self._schedule(job.latency, lambda: self._replicate_deliver(job))
        wait = self._prefer_wait(call.headers.get("prefer", ""))
        if wait and self.replicate_prefer_wait:
            self._sleep(min(wait, max(0.0, job.latency - job.elapsed())))
        return _Response.json(201, self._prediction(job))

    @staticmethod
    def _prefer_wait(prefer: str) -> float:
        for item in prefer.split(","):
            name, _, value = item.strip().partition("=")
            if name.strip().lower() == "wait":
                try:
                    return max(1.0, min(60.0, float(value))) if value else 60.0
                except ValueError:
                    return 60.0
        return 0.0

    def _replicate_find(self, params: dict[str, str]) -> _Job | None:
        job = self.job(params["id"])
        return job if job is not None and job.provider == "replicate" else None

    def _replicate_get(self, call: Call, params: dict[str, str]) -> _Response:
        job = self._replicate_find(params)
        if job is None:
            return self._error("replicate", 404, "Not found.")
        return _Response.json(200, self._prediction(job))

    def _replicate_list(self, call: Call, params: dict[str, str]) -> _Response:
        """GET /v1/predictions: the account's predictions, newest first, one page."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.provider == "replicate"]
        jobs.sort(key=lambda job: job.created, reverse=True)
        results = [{**self._prediction(job), "webhook": job.webhook} for job in jobs[:100]]
        return _Response.json(200, {"next": None, "previous": None, "results": results})

    def _replicate_cancel(self, call: Call, params: dict[str, str]) -> _Response:
        job = self._replicate_find(params)
        if job is None:
            return self._error("replicate", 404, "Not found.")
        with self._lock:
            if not job.done:
                job.canceled, job.canceled_at = True, _now_iso()
        return _Response.json(200, self._prediction(job))

    def _replicate_deliver(self, job: _Job) -> None:
        if not self.webhooks_enabled or not job.webhook:
            return
        raw = json.dumps(self._prediction(job)).encode()
        forged = self.forge_webhook_signatures
        secret = new_whsec() if forged else self.replicate_webhook_secret
        headers = standard_webhook_headers(
            secret,
            webhook_id=f"msg_{secrets.token_hex(12)}",
            timestamp=int(time.time()) + self.webhook_timestamp_skew,
            body=raw,
        )
        self._post(Delivery("replicate", job.webhook, {"Content-Type": "application/json", **headers}, raw, forged))

    # --- Gemini -----------------------------------------------------------------------------
    def _gemini_generate(self, call: Call, params: dict[str, str]) -> _Response:
        body = call.json
        contents = body.get("contents") if isinstance(body, dict) else None
        if not isinstance(contents, list) or not contents:
            return self._error("gemini", 400, "* GenerateContentRequest.contents: contents is not specified")
        config = body.get("generationConfig") or body.get("generation_config") or {}
        if isinstance(config, dict) and (config.get("candidateCount") or config.get("candidate_count") or 1) > 1:
            return self._error(
                "gemini", 400, f"Multiple candidates is not enabled for models/{params['model']}.", header=False
            )
        modalities = config.get("responseModalities") or config.get("response_modalities") or []
        wants_image = isinstance(modalities, list) and "IMAGE" in [str(m).upper() for m in modalities]
        self._sleep(self._latency("gemini"))
        response_id = secrets.token_urlsafe(16)
        usage = {"promptTokenCount": 270, "candidatesTokenCount": 1299, "totalTokenCount": 1569}
        common = {"usageMetadata": usage, "modelVersion": params["model"], "responseId": response_id}
        mode = self.gemini_mode
        if mode == "blocked":
            return _Response.json(200, {"promptFeedback": {"blockReason": self.gemini_block_reason}, **common})
        if self._take_job_failure():
            candidate = {"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY", "index": 0}
            return _Response.json(200, {"candidates": [candidate], **common})
        parts: list[dict[str, Any]] = []
        if self._take_broken_image():
            parts.append({"inlineData": self._broken_inline_data()})
        elif mode == "text" or self.num_images == 0 or (self.gemini_require_image_modality and not wants_image):
            parts.append({"text": "I can make that picture; tell me more about the setting you would like."})
        else:
            parts.append({"text": "Here is your image."})
            for index in range(max(1, self.num_images or 1)):
                data = make_png(f"gemini:{response_id}:{index}", self.image_size)
                parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}})
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return _Response.json(200, {"candidates": [candidate], **common})

    def _take_broken_image(self) -> bool:
        with self._lock:
            if self.gemini_broken_next > 0:
                self.gemini_broken_next -= 1
                return True
        return False

    def _broken_inline_data(self) -> dict[str, str]:
        kind = self.gemini_broken_kind
        if kind == "no-data":
            return {"mimeType": "image/png"}
        if kind == "not-base64":
            return {"mimeType": "image/png", "data": "this is not base64!"}
        return {"mimeType": "image/png", "data": base64.b64encode(b"<html>an error page</html>").decode()}

    # --- webhooks ---------------------------------------------------------------------------
    def _post(self, delivery: Delivery) -> None:
        delivery.at = time.monotonic()
        try:
            response = requests.post(delivery.url, data=delivery.body, headers=delivery.headers, timeout=15)
            delivery.status = response.status_code
        except requests.RequestException as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.deliveries.append(delivery)

    def redeliver(self, delivery: Delivery) -> Delivery:
        """POST a recorded delivery again, byte for byte (providers retry: a replay)."""
        again = Delivery(delivery.provider, delivery.url, dict(delivery.headers), delivery.body, delivery.forged)
        self._post(again)
        return again


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of parallel calls must not be refused by the listen backlog


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the studio's pooled session expects
    server_version = "ProviderSimulator/1.0"
    timeout = 60  # an idle keep-alive connection is closed after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        simulator: Simulator = self.server.simulator  # type: ignore[attr-defined]
        response = simulator.handle(self.command, self.path, headers, body)
        if response is _DROP:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch
