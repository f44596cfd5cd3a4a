"""Replicate's predictions API for the provider simulator (docs/providers.md 2.1 endpoints, 2.2 prediction object,
2.3 webhooks, 2.4 errors).

    POST /replicate/v1/predictions                     create by version: 201 with the prediction
    POST /replicate/v1/models/{owner}/{name}/predictions   create by model
    GET  /replicate/v1/predictions                     list: the account's predictions, newest first
    GET  /replicate/v1/predictions/{id}                get
    POST /replicate/v1/predictions/{id}/cancel         cancel
    .../models, .../trainings                          trainings: tests/simulator/replicate_training.py

A create with `Prefer: wait` holds the answer until the prediction finishes (1-60 s, as Replicate caps it),
unless replicate_prefer_wait is off. Auth is `Authorization: Bearer <token>`; errors are problem+json, a 429
says when the limit resets. Webhooks are signed as Standard Webhooks (tests/simulator/signing.py).

ReplicateAPI is a mixin of tests.simulator.server.Simulator, whose core it uses (`_error`, `_lock`, `job`,
`_outputs`, `_schedule`, `_post`, ...).
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from http import HTTPStatus
from typing import Any

from tests.simulator.records import Call, Delivery, Job, Response, now_iso
from tests.simulator.signing import new_whsec, standard_webhook_headers

KNOBS = ("replicate_output_string", "replicate_prefer_wait", "replicate_max_outputs")
METHODS = {
    ("replicate", "create"): "POST",
    ("replicate", "get"): "GET",
    ("replicate", "list"): "GET",
    ("replicate", "cancel"): "POST",
}


class ReplicateAPI:
    """Replicate's knobs, routes and handlers."""

    def _reset_replicate(self) -> None:
        # Replicate answers `output` as one URL string instead of a list (some models do).
        self.replicate_output_string = False
        # Honour `Prefer: wait` on create (False: answer "starting" at once, as a busy API may).
        self.replicate_prefer_wait = True
        self.replicate_max_outputs = 4

    def _route_replicate(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if rest[:1] != ["v1"]:
            return "replicate", "unknown", {}
        rest = rest[1:]
        routed = self._route_replicate_training(method, rest)
        if routed is not None:
            return routed
        if rest == ["predictions"]:
            return "replicate", ("list" if method == "GET" else "create"), {}
        if len(rest) == 4 and rest[0] == "models" and rest[3] == "predictions":
            return "replicate", "create", {"model": f"{rest[1]}/{rest[2]}"}
        if len(rest) == 2 and rest[0] == "predictions":
            return "replicate", "get", {"id": rest[1]}
        if len(rest) == 3 and rest[0] == "predictions" and rest[2] == "cancel":
            return "replicate", "cancel", {"id": rest[1]}
        return "replicate", "unknown", {}

    def _replicate_auth(self, call: Call) -> Response | None:
        presented = call.headers.get("authorization", "")
        if presented == f"Bearer {self.accepted_keys.get('replicate', '')}":
            return None
        text = "You did not pass a valid authentication token"
        if self.echo_credentials:
            text += f": {presented!r}"
        return self._error("replicate", 401, text, body=None)

    @staticmethod
    def _replicate_error_body(status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        if status == 429:
            wait = f"{retry_after:g}" if retry_after is not None else "30"
            return {"detail": f"Request was throttled. Your rate limit resets in ~{wait}s.", "status": 429}
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        return {"type": None, "title": title, "status": status, "detail": message}

    def _replicate_urls(self, job: Job) -> dict[str, str]:
        get = f"{self.replicate_url}/v1/predictions/{job.id}"
        return {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{self.base_url}/replicate-stream/v1/files/{job.id}",
            "web": f"https://replicate.com/p/{job.id}",
        }

    def _prediction(self, job: Job) -> dict[str, Any]:
        if job.kind == "training":  # its webhook body (tests/simulator/replicate_training.py)
            return self._training_object(job)
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
            "completed_at": (job.canceled_at or now_iso()) if finished else None,
            "urls": self._replicate_urls(job),
            "metrics": {"predict_time": job.latency} if state in {"succeeded", "failed"} else {},
        }

    def _replicate_create(self, call: Call, params: dict[str, str]) -> Response:
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
        job = Job(
            "replicate",
            job_id,
            model,
            body,
            self._count(requested),
            self._latency("replicate"),
            self._take_one("fail_jobs"),
            webhook=body.get("webhook"),
        )
        with self._lock:
            self._jobs[job.id] = job
        if job.webhook:
            self._schedule(job.latency, lambda: self._replicate_deliver(job))
        wait = self._prefer_wait(call.headers.get("prefer", ""))
        if wait and self.replicate_prefer_wait:
            self._sleep(min(wait, max(0.0, job.latency - job.elapsed())))
        return Response.json(201, self._prediction(job))

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

    def _replicate_find(self, params: dict[str, str]) -> Job | None:
        job = self.job(params["id"])
        return job if job is not None and job.provider == "replicate" and job.kind != "training" else None

    def _replicate_get(self, call: Call, params: dict[str, str]) -> Response:
        job = self._replicate_find(params)
        if job is None:
            return self._error("replicate", 404, "Not found.")
        return Response.json(200, self._prediction(job))

    def _replicate_list(self, call: Call, params: dict[str, str]) -> Response:
        """GET /v1/predictions: the account's predictions, newest first, one page."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.provider == "replicate"]
        jobs.sort(key=lambda job: job.created, reverse=True)
        results = [{**self._prediction(job), "webhook": job.webhook} for job in jobs[:100]]
        return Response.json(200, {"next": None, "previous": None, "results": results})

    def _replicate_cancel(self, call: Call, params: dict[str, str]) -> Response:
        job = self._replicate_find(params)
        if job is None:
            return self._error("replicate", 404, "Not found.")
        with self._lock:
            if not job.done:
                job.canceled, job.canceled_at = True, now_iso()
        return Response.json(200, self._prediction(job))

    def _replicate_deliver(self, job: Job) -> None:
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
