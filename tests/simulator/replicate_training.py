"""Replicate trainings for the provider simulator (docs/providers.md §7.5).

    GET  /replicate/v1/models/{owner}/{name}                         a model, with latest_version.id
    POST /replicate/v1/models                                        create a destination: 201, 409 when taken,
                                                                     403 for an owner other than the token's
    POST /replicate/v1/models/{owner}/{name}/versions/{v}/trainings  create a training: 201 (404 without the
                                                                     destination, 422 for another version)
    GET  /replicate/v1/trainings/{id}                                get
    POST /replicate/v1/trainings/{id}/cancel                         cancel

The create's `urls` point at /v1/predictions/{id}, as in the SDK's cassette (§7.5.4), where the
simulator knows no such prediction: a client must poll /v1/trainings/{id}. A running training logs
ai-toolkit's progress bar; a finished one answers `output.version` and `output.weights`, a real tar with
the LoRA at output/flux_train_replicate/lora.safetensors. The dataset is read as ai-toolkit reads it
(tests/simulator/fal_training.py `_read_dataset`, mode "prepend"). Webhooks are Replicate's (replicate.py).

ReplicateTrainingAPI is a mixin of tests.simulator.server.Simulator.
"""

from __future__ import annotations

import hashlib
import io
import random
import string
import tarfile
from typing import Any

from tests.simulator.fal_training import Trainer, safetensors_bytes
from tests.simulator.records import Call, Job, Response, now_iso

KNOBS = ("replicate_owner",)
METHODS = {
    ("replicate", "model_get"): "GET",
    ("replicate", "model_create"): "POST",
    ("replicate", "train"): "POST",
    ("replicate", "training_get"): "GET",
    ("replicate", "training_cancel"): "POST",
}
TRAINER_MODEL = "ostris/flux-dev-lora-trainer"
TRAINER_VERSION = hashlib.sha256(b"simulated ostris trainer").hexdigest()
# ai-toolkit keeps existing captions, replaces [trigger] and prepends the trigger when absent (§7.5.5).
OSTRIS = Trainer("input_images", "trigger_word", (1000, 3, 6000), "prepend")
WEIGHTS_MEMBER = "output/flux_train_replicate/lora.safetensors"


class ReplicateTrainingAPI:
    """Replicate's models and trainings: knobs, routes and handlers."""

    def _reset_replicate_training(self) -> None:
        # The user the token belongs to: the only owner destinations may be created for.
        self.replicate_owner = "sim-owner"
        self._replicate_models: dict[str, dict[str, Any]] = {
            TRAINER_MODEL: {
                "owner": "ostris",
                "name": "flux-dev-lora-trainer",
                "latest_version": {"id": TRAINER_VERSION},
            }
        }

    def _route_replicate_training(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]] | None:
        """The training routes among /replicate/v1/... (`rest` without v1), or None."""
        if rest == ["models"] and method == "POST":
            return "replicate", "model_create", {}
        if len(rest) == 3 and rest[0] == "models":
            return "replicate", "model_get", {"model": f"{rest[1]}/{rest[2]}"}
        if len(rest) == 6 and rest[0] == "models" and rest[3] == "versions" and rest[5] == "trainings":
            return "replicate", "train", {"model": f"{rest[1]}/{rest[2]}", "version": rest[4]}
        if len(rest) == 2 and rest[0] == "trainings":
            return "replicate", "training_get", {"id": rest[1]}
        if len(rest) == 3 and rest[0] == "trainings" and rest[2] == "cancel":
            return "replicate", "training_cancel", {"id": rest[1]}
        return None

    def replicate_model(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._replicate_models.get(name)

    def _replicate_model_get(self, call: Call, params: dict[str, str]) -> Response:
        model = self.replicate_model(params["model"])
        return Response.json(200, model) if model else self._error("replicate", 404, "Not found.")

    def _replicate_model_create(self, call: Call, params: dict[str, str]) -> Response:
        body = call.json if isinstance(call.json, dict) else {}
        owner, name = body.get("owner"), body.get("name")
        if not owner or not name or body.get("visibility") not in {"public", "private"} or not body.get("hardware"):
            return self._error("replicate", 422, "owner, name, visibility and hardware are required.")
        if owner != self.replicate_owner:
            return self._error("replicate", 403, "You can only create models for yourself or your organizations.")
        with self._lock:
            if f"{owner}/{name}" in self._replicate_models:
                return self._error("replicate", 409, "A model with that name and owner already exists.")
            model = {**body, "url": f"https://replicate.com/{owner}/{name}", "latest_version": None, "run_count": 0}
            self._replicate_models[f"{owner}/{name}"] = model
        return Response.json(201, model)

    def _replicate_train(self, call: Call, params: dict[str, str]) -> Response:
        body = call.json
        if params["model"] != TRAINER_MODEL or params["version"] != TRAINER_VERSION:
            return self._error("replicate", 422, "Invalid version or not permitted.")
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self._error("replicate", 422, "The request body must be a JSON object with an input object.")
        if not self.replicate_model(str(body.get("destination") or "")):
            return self._error("replicate", 404, "The specified training destination does not exist")
        inputs = body["input"]
        url, steps = inputs.get(OSTRIS.zip_field), inputs.get("steps", OSTRIS.steps[0])
        if not isinstance(url, str) or not url:
            return self._error("replicate", 422, "input.input_images is required.")
        if not isinstance(steps, int) or not OSTRIS.steps[1] <= steps <= OSTRIS.steps[2]:
            return self._error("replicate", 422, "input.steps must be between 3 and 6000.")
        dataset = self._read_dataset(url, OSTRIS, inputs.get("trigger_word", "TOK"), inputs)
        job_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=26))
        failed = self._take_one("fail_jobs") or bool(dataset.get("error"))
        latency = self.fal_training_latency if self.fal_training_latency is not None else self._latency("replicate")
        job = Job("replicate", job_id, TRAINER_MODEL, body, 0, latency, failed, webhook=body.get("webhook"))
        job.kind, job.steps, job.dataset = "training", steps, dataset
        with self._lock:
            self._jobs[job.id] = job
        if job.webhook:
            self._schedule(job.latency, lambda: self._replicate_deliver(job))
        created = self._training_object(job)
        # As the SDK's cassette shows: the create answers prediction URLs.
        created["urls"] = {
            key: url.replace("/v1/trainings/", "/v1/predictions/") for key, url in created["urls"].items()
        }
        return Response.json(201, created)

    def _replicate_training_find(self, params: dict[str, str]) -> Job | None:
        job = self.job(params["id"])
        return job if job is not None and job.provider == "replicate" and job.kind == "training" else None

    def _replicate_training_get(self, call: Call, params: dict[str, str]) -> Response:
        job = self._replicate_training_find(params)
        return Response.json(200, self._training_object(job)) if job else self._error("replicate", 404, "Not found.")

    def _replicate_training_cancel(self, call: Call, params: dict[str, str]) -> Response:
        job = self._replicate_training_find(params)
        if job is None:
            return self._error("replicate", 404, "Not found.")
        with self._lock:
            if not job.done:
                job.canceled, job.canceled_at = True, now_iso()
        return Response.json(200, self._training_object(job))

    def _training_object(self, job: Job) -> dict[str, Any]:
        state = job.state()
        status = {"queued": "starting", "running": "processing"}.get(state, state)
        output = None
        if state == "succeeded":
            output = {"version": self._destination_version(job), "weights": self._weights_url(job)}
        logs = ""
        if state != "queued":
            running = max(0.0, min(1.0, (job.elapsed() - job.latency * 0.25) / (job.latency * 0.75)))
            done = job.steps if state == "succeeded" else int(job.steps * running)
            logs = f"Loading model\nflux_train_replicate: {100 * done // job.steps:3d}%|| {done}/{job.steps}\n"
        get = f"{self.replicate_url}/v1/trainings/{job.id}"
        return {
            "id": job.id,
            "model": job.model,
            "version": TRAINER_VERSION,
            "status": status,
            "input": job.input.get("input", {}),
            "output": output,
            "logs": logs,
            "error": (job.dataset.get("error") or "Training failed.") if state == "failed" else None,
            "created_at": job.created_at,
            "completed_at": (job.canceled_at or now_iso()) if state in {"succeeded", "failed", "canceled"} else None,
            "urls": {"get": get, "cancel": f"{get}/cancel"},
            "metrics": {"predict_time": job.latency} if state == "succeeded" else {},
            "source": "api",
        }

    def _destination_version(self, job: Job) -> str:
        version_id = hashlib.sha256(job.id.encode()).hexdigest()
        destination = str(job.input.get("destination"))
        with self._lock:
            model = self._replicate_models.get(destination)
            if model is not None:
                model["latest_version"] = {"id": version_id}
        return f"{destination}:{version_id}"

    def _weights_url(self, job: Job) -> str:
        name = f"{job.id}-trained_model.tar"
        with self._lock:
            if name not in self._files:
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    for member, data in (
                        (WEIGHTS_MEMBER, safetensors_bytes(job.id)),
                        ("output/config.yaml", b"steps: 1\n"),
                    ):
                        info = tarfile.TarInfo(member)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                self._files[name] = buffer.getvalue()
                job.files.append(name)
        return f"{self.base_url}/files/{name}"
