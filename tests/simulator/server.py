"""A loopback stand-in for fal.ai, Replicate and Gemini that speaks their HTTP APIs (docs/providers.md 1-3).

One stdlib ThreadingHTTPServer on 127.0.0.1:<free port>, run in a daemon thread, serves:

    /fal/...                 fal's queue API and the JWKS of its webhook signatures   tests/simulator/fal.py
    /falrest, /falcdn        fal storage's upload (and fal's LoRA trainers on /fal)   tests/simulator/fal_training.py
    /replicate/v1/...        Replicate predictions (create, get, list, cancel)        tests/simulator/replicate.py
                             and trainings (models, trainings)               tests/simulator/replicate_training.py
    /gemini/{version}/...    Gemini generateContent                                   tests/simulator/gemini.py
    /gemini/...batches...    Gemini's Batch API and Files API upload                  tests/simulator/gemini_batch.py
    /files/{name}.png        the real PNGs the fal and Replicate outputs point at     here

This module is the core: the server, routing by the first path segment, the shared knobs, fault rules,
the concurrency cap, the call log, jobs and their output files, and webhook posting. Each provider module
holds a mixin of Simulator with that provider's knobs (its KNOBS, set in `_reset_<provider>`), its routes
(METHODS and `_route_<provider>`), its handlers (`_<provider>_<op>`) and credential check
(`_<provider>_auth`), and where its errors differ from fal's `{"detail": ...}`: `_<provider>_error_body`,
`_<provider>_fault_messages` and `_<provider>_retry_after_header`.

Generations "run" for `latency` seconds from their submit; nothing happens in the background except
webhook deliveries, which are timers. Per-test knobs are plain attributes (set them directly or with
configure()) plus fault rules (fail_next, rate_limit_next, outage, timeout_next, malformed_next,
drop_next, fail_fraction). Every request is recorded as a Call; the in-flight count of API calls per
provider is tracked and its maximum kept, so tests can check what the studio's limiter let through.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.simulator import fal, fal_training, gemini, gemini_batch, replicate, replicate_training
from tests.simulator.fal import FalAPI
from tests.simulator.fal_training import FalTrainingAPI
from tests.simulator.gemini import GeminiAPI
from tests.simulator.gemini_batch import GeminiBatchAPI
from tests.simulator.images import make_png
from tests.simulator.records import DROP, PROVIDERS, Call, Delivery, Fault, Job, Response
from tests.simulator.replicate import ReplicateAPI
from tests.simulator.replicate_training import ReplicateTrainingAPI
from tests.simulator.signing import FalSigner, new_whsec

__all__ = ["MALFORMED_BODY", "Call", "Delivery", "Fault", "Simulator"]

MALFORMED_BODY = b'{"status": "IN_QUEUE", "request_id": "3f1c'  # cut off mid-answer
_KNOBS = (
    "latency",
    "latencies",
    "num_images",
    "image_size",
    "concurrency_cap",
    "webhooks_enabled",
    "forge_webhook_signatures",
    "webhook_timestamp_skew",
    "echo_credentials",
    "accepted_keys",
    "fail_jobs",
    "timeout_seconds",
    *fal.KNOBS,
    *fal_training.KNOBS,
    *replicate.KNOBS,
    *replicate_training.KNOBS,
    *gemini.KNOBS,
    *gemini_batch.KNOBS,
)
_METHODS = {
    ("files", "file"): "GET",
    **fal.METHODS,
    **fal_training.METHODS,
    **replicate.METHODS,
    **replicate_training.METHODS,
    **gemini.METHODS,
    **gemini_batch.METHODS,
}
_FAULT_MESSAGES = {
    429: "Rate limit exceeded.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable.",
    504: "Gateway timeout.",
    401: "Unauthorized",
    422: "Invalid input.",
}


class Simulator(FalAPI, FalTrainingAPI, ReplicateAPI, ReplicateTrainingAPI, GeminiAPI, GeminiBatchAPI):
    """The simulated providers. Thread-safe; `reset()` restores every knob and forgets every call."""

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
            self._reset_fal()
            self._reset_fal_training()
            self._reset_replicate()
            self._reset_replicate_training()
            self._reset_gemini()
            self._reset_gemini_batch()
            self.faults: list[Fault] = []
            self.calls: list[Call] = []
            self.deliveries: list[Delivery] = []
            self.errors: list[str] = []  # exceptions raised while answering (simulator bugs)
            self.in_flight = dict.fromkeys(PROVIDERS, 0)
            self.max_in_flight = dict.fromkeys(PROVIDERS, 0)
            self._jobs: dict[str, Job] = {}
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
            "FAL_REST_URL": self.fal_rest_url,
            "REPLICATE_API_URL": self.replicate_url,
            "REPLICATE_TRAINING_OWNER": self.replicate_owner,
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

    def job(self, external_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(external_id)

    def output_images(self, external_id: str) -> list[bytes]:
        """The PNG bytes a fal request or Replicate prediction handed out, in output order."""
        with self._lock:
            job = self._jobs.get(external_id)
            return [self._files[name] for name in job.files] if job else []

    # --- request handling -------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
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
        api = provider in PROVIDERS and (provider, op) not in fal.WATCH_OPS
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
            response = Response(599, f"simulator error: {exc!r}".encode(), {"Content-Type": "text/plain"})
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
        if head in PROVIDERS:
            return getattr(self, f"_route_{head}")(method, rest)
        return "unknown", "unknown", {}

    def _answer(self, call: Call, params: dict[str, str], in_flight: int) -> Response:
        provider, op = call.provider, call.op
        expected = _METHODS.get((provider, op))
        if expected is None:
            return self._error(provider, 404, "Not found.")
        if call.method != expected:
            return self._error(provider, 405, f"Method {call.method} not allowed.")
        if provider not in PROVIDERS:  # file downloads and fal's JWKS: no cap, faults or credentials
            return getattr(self, f"_{provider}_{op}")(call, params)
        if (provider, op) in fal.WATCH_OPS:  # a status stream: the key, but no cap or faults
            return getattr(self, f"_{provider}_auth")(call) or getattr(self, f"_{provider}_{op}")(call, params)

        cap = self.concurrency_cap
        if cap is not None and in_flight > cap:
            return self._error(provider, 429, f"Concurrency limit of {cap} requests exceeded.")
        fault = self._take_fault(provider, op)
        if fault is not None:
            call.fault = fault.kind
            if fault.kind == "status":
                return self._fault_answer(provider, fault)
            if fault.kind == "malformed":
                return Response(200, MALFORMED_BODY, {"Content-Type": "application/json"})
            if fault.kind == "drop":
                return DROP
            if fault.kind == "timeout":
                self._sleep(fault.seconds)
        denied = getattr(self, f"_{provider}_auth")(call)
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

    def _take_one(self, countdown: str) -> bool:
        """Use up one of a countdown knob (fail_jobs, gemini_broken_next): True while any were left."""
        with self._lock:
            left = getattr(self, countdown)
            if left > 0:
                setattr(self, countdown, left - 1)
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
    ) -> Response:
        """An error answer in the provider's shape (`_<provider>_error_body`, else fal's `{"detail": ...}`), or
        `body` as given. Retry-After is a header unless the provider says when in the body only."""
        headers: dict[str, str] = {}
        in_header = header if header is not None else getattr(self, f"_{provider}_retry_after_header", True)
        if retry_after is not None and in_header:
            headers["Retry-After"] = f"{retry_after:g}"
        if body is not None:
            return Response.json(status, body, headers) if not isinstance(body, bytes) else Response(status, body)
        error_body = getattr(self, f"_{provider}_error_body", None)
        payload = error_body(status, message, retry_after) if error_body else {"detail": message}
        return Response.json(status, payload, headers)

    def _fault_answer(self, provider: str, fault: Fault) -> Response:
        messages = {**_FAULT_MESSAGES, **getattr(self, f"_{provider}_fault_messages", {})}
        message = messages.get(fault.status, f"Simulated HTTP {fault.status}.")
        return self._error(
            provider,
            fault.status,
            message,
            retry_after=fault.retry_after,
            header=fault.retry_after_header,
            body=fault.body,
        )

    # --- files ------------------------------------------------------------------------------
    def _files_file(self, call: Call, params: dict[str, str]) -> Response:
        data = self._files.get(params["name"])
        if data is None:
            return Response(404, b"not found", {"Content-Type": "text/plain"})
        name = params["name"]
        kinds = {
            ".zip": "application/zip",
            ".json": "application/json",
            ".safetensors": "application/octet-stream",
            ".tar": "application/x-tar",
        }
        content_type = next((kind for ext, kind in kinds.items() if name.endswith(ext)), "image/png")
        return Response(200, data, {"Content-Type": content_type})

    def _outputs(self, job: Job) -> list[str]:
        """The job's image URLs, made on first use (real PNGs, distinct per image)."""
        with self._lock:
            ready = list(job.files)
        if not ready:
            # Encoded outside the lock: a 1 MP PNG takes tens of ms, and other calls must not wait.
            made = {
                f"{job.id}-{index}.png": make_png(f"{job.provider}:{job.id}:{index}", self.image_size)
                for index in range(job.num_images)
            }
            with self._lock:
                if not job.files:
                    self._files.update(made)
                    job.files.extend(made)
                ready = list(job.files)
        return [f"{self.base_url}/files/{name}" for name in ready]

    def _render_ahead(self, job: Job) -> None:
        """Make the job's images while it runs, as a real provider has them ready when it reports
        the job done: encoding them on the result call added tens of ms per image to every
        benchmark's pick-up that no provider adds (issue 9)."""
        threading.Thread(target=self._outputs, args=(job,), daemon=True).start()

    def _count(self, requested: Any) -> int:
        if self.num_images is not None:
            return int(self.num_images)
        return requested if isinstance(requested, int) and not isinstance(requested, bool) else 1

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
    # Each answer leaves in one write (headers and body buffered until the handler flushes) with
    # TCP_NODELAY: a trailing small segment held back by Nagle's algorithm until the client's
    # delayed ACK would add ~40 ms to every call the tests time.
    wbufsize = 1 << 20
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        simulator: Simulator = self.server.simulator  # type: ignore[attr-defined]
        response = simulator.handle(self.command, self.path, headers, body)
        if response is DROP:
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
