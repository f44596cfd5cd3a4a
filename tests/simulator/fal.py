"""fal.ai's queue API for the provider simulator (docs/providers.md 1.2 queue, 1.4 outputs, 1.5 webhooks, 1.6 errors).

    POST /fal/{model_id...}[?fal_webhook=]          submit: IN_QUEUE with the status/response/cancel URLs
    GET  /fal/{owner}/{app}/requests/{id}/status    IN_QUEUE / IN_PROGRESS (202), COMPLETED (200)
    GET  /fal/{owner}/{app}/requests/{id}/status/stream
                                                    the same objects as server-sent events, until it ends
    GET  /fal/{owner}/{app}/requests/{id}           the result (images), or the failed job's replayed error
    PUT  /fal/{owner}/{app}/requests/{id}/cancel    CANCELLATION_REQUESTED (202) or ALREADY_COMPLETED (400)
    GET  /fal/.well-known/jwks.json                 the public key of the webhook signatures (provider "meta")

The URLs fal hands out drop the model's sub-path (docs/providers.md 1.1), so a client that builds them from the
full model id finds nothing. Auth is `Authorization: Key <key>`; errors are `{"detail": ...}` (the core's
default shape). Webhooks are signed with ed25519 as tests/simulator/signing.py describes.

FalAPI is a mixin of tests.simulator.server.Simulator, whose core it uses (`_error`, `_lock`, `job`,
`_outputs`, `_schedule`, `_post`, ...).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.simulator.fal_training import TRAINERS
from tests.simulator.records import Call, Delivery, Job, Response, now_iso
from tests.simulator.signing import FalSigner

# fal ids with a namespace have one more leading segment before owner/app (docs/providers.md 1.1).
FAL_NAMESPACES = frozenset({"workflows", "comfy"})
KNOBS = ("fal_max_num_images", "fal_urls_base", "fal_job_error_status", "fal_status_override", "fal_status_retry_after")
METHODS = {
    ("fal", "submit"): "POST",
    ("fal", "status"): "GET",
    ("fal", "status_stream"): "GET",
    ("fal", "result"): "GET",
    ("fal", "cancel"): "PUT",
    ("meta", "jwks"): "GET",
}
# Held open until the job ends: not counted against the concurrency cap nor given faults (the
# calls that decide an outcome get those), but the key is still checked.
WATCH_OPS = frozenset({("fal", "status_stream")})
# A status stream is answered by then at the latest, with the status it has (a client reconnects).
STREAM_MAX_SECONDS = 30.0

# The result body a failed job replays when fal_job_error_status is below 500: the model refused the input.
REFUSED_INPUT = {
    "detail": [
        {
            "loc": ["body", "prompt"],
            "msg": "The prompt was flagged by the content checker.",
            "type": "content_policy_violation",
        }
    ]
}


class FalAPI:
    """fal's knobs, routes and handlers."""

    user_id = "github|character-studio-sim"  # the X-Fal-Webhook-User-Id of the deliveries

    def _reset_fal(self) -> None:
        self.fal_max_num_images = 10
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

    def _route_fal(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if rest == [".well-known", "jwks.json"]:
            return "meta", "jwks", {}
        if "requests" in rest:
            i = rest.index("requests")
            prefix, tail = "/".join(rest[:i]), rest[i + 1 :]
            if len(tail) == 1:
                return "fal", "result", {"prefix": prefix, "id": tail[0]}
            if len(tail) == 2 and tail[1] in {"status", "cancel"}:
                return "fal", tail[1], {"prefix": prefix, "id": tail[0]}
            if tail[1:] == ["status", "stream"]:
                return "fal", "status_stream", {"prefix": prefix, "id": tail[0]}
            return "fal", "unknown", {}
        return "fal", "submit", {"model": "/".join(rest)}

    def _fal_auth(self, call: Call) -> Response | None:
        presented = call.headers.get("authorization", "")
        if presented == f"Key {self.accepted_keys.get('fal', '')}":
            return None
        text = f"Unauthorized: invalid key {presented!r}" if self.echo_credentials else "Unauthorized"
        return self._error("fal", 401, text)

    def _meta_jwks(self, call: Call, params: dict[str, str]) -> Response:
        return Response.json(200, self.fal_signer.jwks())

    @staticmethod
    def _fal_prefix(model: str) -> str:
        segments = model.split("/")
        keep = 3 if segments and segments[0] in FAL_NAMESPACES else 2
        return "/".join(segments[:keep])

    def _fal_urls(self, job: Job) -> dict[str, str]:
        base = f"{(self.fal_urls_base or self.fal_url).rstrip('/')}/{job.prefix}/requests/{job.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _fal_submit(self, call: Call, params: dict[str, str]) -> Response:
        if params["model"] in TRAINERS:
            return self._fal_train_submit(call, params["model"])
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
        job = Job(
            "fal",
            str(uuid.uuid4()),
            model,
            body,
            self._count(requested),
            self._latency("fal"),
            self._take_one("fail_jobs"),
            prefix=self._fal_prefix(model),
            webhook=webhook,
        )
        return self._fal_queue(job)

    def _fal_queue(self, job: Job) -> Response:
        """Keep a submitted job and answer its submit; its webhook, if it asked for one, when it ends."""
        with self._lock:
            self._jobs[job.id] = job
        if job.kind != "training" and not job.fail:
            self._render_ahead(job)
        answer = {"request_id": job.id, "status": "IN_QUEUE", "queue_position": 0, **self._fal_urls(job)}
        if job.webhook:
            answer["gateway_request_id"] = job.id
            self._schedule(job.latency, lambda: self._fal_deliver(job))
        return Response.json(200, answer)

    def _fal_find(self, params: dict[str, str]) -> Job | None:
        job = self.job(params["id"])
        # The URLs use owner/app only: a URL built from the full model id finds nothing, as on fal.
        if job is None or job.provider != "fal" or job.prefix != params["prefix"]:
            return None
        return job

    def _fal_output(self, job: Job) -> dict[str, Any]:
        if job.kind == "training":
            return self._fal_training_output(job)
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

    def _fal_job_error(self, job: Job) -> tuple[str, str | None, int, dict[str, Any]]:
        """(error, error_type, result status, result body) of a failed fal job (fal_job_error_status)."""
        status = self.fal_job_error_status
        if status >= 500:
            return "Runner disconnected", "runner_disconnected", status, {"detail": "Runner disconnected"}
        body = self._fal_training_error(job) if job.kind == "training" else REFUSED_INPUT
        return f"Invalid status code: {status}", None, status, body

    def _fal_status(self, call: Call, params: dict[str, str]) -> Response:
        job = self._fal_find(params)
        if job is None:
            return self._error("fal", 404, "Request not found")
        logs_wanted = (call.query.get("logs") or ["0"])[0] in {"1", "true"}
        common = {"request_id": job.id, **self._fal_urls(job)}
        if self.fal_status_override is not None:
            return Response.json(200, {"status": self.fal_status_override, "logs": None, **common})
        state = job.state()
        wait = self.fal_status_retry_after
        pending_headers = {"Retry-After": f"{wait:g}"} if wait is not None else {}
        if state == "queued":
            answer = {"status": "IN_QUEUE", "queue_position": 0, "logs": None, **common}
            return Response.json(202, answer, pending_headers)
        if state == "running":
            logs = [{"message": "step 1/4", "level": "INFO", "source": "user", "timestamp": now_iso()}]
            if job.kind == "training":
                logs = [{**line, "timestamp": now_iso()} for line in self._fal_training_logs(job)]
            answer = {"status": "IN_PROGRESS", "logs": logs if logs_wanted else None, **common}
            return Response.json(202, answer, pending_headers)
        answer = {
            "status": "COMPLETED",
            "logs": [] if logs_wanted else None,
            "metrics": {"inference_time": job.latency},
            "error": None,
            "error_type": None,
            **common,
        }
        if state == "failed":
            answer["error"], answer["error_type"], _, _ = self._fal_job_error(job)
        elif state == "canceled":
            answer["error"], answer["error_type"] = "Request was cancelled", "request_cancelled"
        return Response.json(200, answer)

    def _fal_status_stream(self, call: Call, params: dict[str, str]) -> Response:
        """The status as server-sent events: the one it has now, then, when the job ends, its final
        one. Written in one answer when the job ends (each answer leaves in one packet here); a
        client reads the events as lines either way."""
        job = self._fal_find(params)
        if job is None:
            return self._error("fal", 404, "Request not found")
        first = self._fal_status(call, params)
        events = [first.body]
        give_up, reset = time.monotonic() + STREAM_MAX_SECONDS, self._wake
        while not job.done and time.monotonic() < give_up and not reset.is_set():
            # Short naps, so a cancel is seen; the last one ends exactly on time.
            reset.wait(min(0.02, max(0.0, job.latency - job.elapsed())))
        if job.done:
            events.append(self._fal_status(call, params).body)
        body = b"".join(b"data: " + event + b"\n\n" for event in events)
        return Response(200, body, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

    def _fal_result(self, call: Call, params: dict[str, str]) -> Response:
        job = self._fal_find(params)
        if job is None:
            return self._error("fal", 404, "Request not found")
        state = job.state()
        if state in {"queued", "running"}:
            return self._error("fal", 400, "Request is still in progress")
        if state == "failed":
            _, _, status, body = self._fal_job_error(job)
            return self._error("fal", status, "", body=body)
        if state == "canceled":
            return self._error("fal", 400, "Request was cancelled")
        return Response.json(200, self._fal_output(job))

    def _fal_cancel(self, call: Call, params: dict[str, str]) -> Response:
        job = self._fal_find(params)
        if job is None:
            return Response.json(404, {"status": "NOT_FOUND"})
        with self._lock:
            if job.done:
                return Response.json(400, {"status": "ALREADY_COMPLETED"})
            job.canceled, job.canceled_at = True, now_iso()
        return Response.json(202, {"status": "CANCELLATION_REQUESTED"})

    def _fal_deliver(self, job: Job) -> None:
        state = job.state()
        if not self.webhooks_enabled or not job.webhook or state == "canceled":
            return
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if state == "succeeded":
            body.update(status="OK", payload=self._fal_output(job))
        else:
            _, _, status, payload = self._fal_job_error(job)
            body.update(status="ERROR", error=f"Invalid status code: {status}", payload=payload)
        raw = json.dumps(body).encode()
        forged = self.forge_webhook_signatures
        signer = FalSigner() if forged else self.fal_signer
        headers = signer.headers(
            request_id=job.id, user_id=self.user_id, timestamp=int(time.time()) + self.webhook_timestamp_skew, body=raw
        )
        self._post(Delivery("fal", job.webhook, {"Content-Type": "application/json", **headers}, raw, forged))
