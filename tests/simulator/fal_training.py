"""fal.ai's LoRA trainers and storage upload for the provider simulator (docs/providers.md §7.2, §7.3, §7.8).

    POST /falrest/storage/upload/initiate?storage_type=   {content_type, file_name} -> {upload_url, file_url}
    PUT  /falcdn/upload/{token}?X-Goog-Signature=...     the bytes; refused with an Authorization header
    GET  /files/{token}-{file_name}                      what was uploaded (the file_url)
    POST /fal/{trainer id}                               submit a training: the queue of tests/simulator/fal.py
    GET  /fal/{owner}/{app}/requests/{id}/status?logs=   IN_PROGRESS logs "step k/N" while it trains
    GET  /fal/{owner}/{app}/requests/{id}                {diffusers_lora_file, config_file, ...}

A training is a fal queue job (kind "training"): status, result, cancel and webhooks are fal.py's. What
differs is the input, checked field for field per trainer (TRAINERS: images_data_url vs image_data_url,
trigger_word vs trigger_phrase vs none, the steps range), the dataset it reads, and the output. The dataset
is read the way each trainer reads it (§7.3 caption semantics) and kept on the job as `dataset`, with the
captions the trainer would effectively train on, so tests can check the trigger reached every one. A ZIP
that cannot be read, is not flat or has no image fails the job as fal would (COMPLETED with an error,
the result replaying a 422).

FalTrainingAPI is a mixin of tests.simulator.server.Simulator, like FalAPI.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import struct
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

from tests.simulator.records import Call, Job, Response

KNOBS = ("fal_training_latency",)
METHODS = {("falrest", "initiate"): "POST", ("falcdn", "upload"): "PUT"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Trainer:
    zip_field: str
    trigger_field: str | None
    steps: tuple[int, int, int]  # default, minimum, maximum
    # How captions meet the trigger (§7.3): "ignored" (fast-training: trigger_word only when no
    # captions), "placeholder" ([trigger] replaced), "none" (flux-2: captions or default_caption),
    # "prepend" (ai-toolkit on Replicate: [trigger] replaced, the trigger prepended where absent).
    captions: str


TRAINERS = {
    "fal-ai/flux-lora-fast-training": Trainer("images_data_url", "trigger_word", (1000, 1, 10000), "ignored"),
    "fal-ai/flux-lora-portrait-trainer": Trainer("images_data_url", "trigger_phrase", (2500, 1, 10000), "placeholder"),
    "fal-ai/turbo-flux-trainer": Trainer("images_data_url", "trigger_phrase", (1000, 1, 10000), "placeholder"),
    "fal-ai/flux-2-trainer": Trainer("image_data_url", None, (1000, 100, 10000), "none"),
}


def _detail(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"detail": [{"loc": ["body", field], "msg": message, "type": kind}]}


def safetensors_bytes(seed: str) -> bytes:
    """A tiny, well-formed .safetensors file: an 8-byte header length, a JSON header, the tensor bytes."""
    data = seed.encode("utf-8")[:32].ljust(32, b"\0")
    header = json.dumps(
        {
            "__metadata__": {"format": "pt", "simulated": "true"},
            "lora_unet_single_blocks_0.lora_down.weight": {"dtype": "U8", "shape": [32], "data_offsets": [0, 32]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + data


class FalTrainingAPI:
    """The trainers' and storage's knobs, routes and handlers."""

    def _reset_fal_training(self) -> None:
        # Seconds a training runs (None: the fal latency, like any fal job).
        self.fal_training_latency: float | None = None
        self._uploads: dict[str, dict[str, str]] = {}  # token -> {content_type, file_name}

    @property
    def fal_rest_url(self) -> str:
        return f"{self.base_url}/falrest"

    # --- storage --------------------------------------------------------------------------
    def _route_falrest(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if rest == ["storage", "upload", "initiate"]:
            return "falrest", "initiate", {}
        return "falrest", "unknown", {}

    def _route_falcdn(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if len(rest) == 2 and rest[0] == "upload":
            return "falcdn", "upload", {"token": rest[1]}
        return "falcdn", "unknown", {}

    def _falrest_auth(self, call: Call) -> Response | None:
        return self._fal_auth(call)

    def _falcdn_auth(self, call: Call) -> Response | None:
        # A signed URL carries its own credential; a second one is refused, as cloud storage does.
        if "authorization" in call.headers:
            return self._error("falcdn", 400, "The signed URL takes no Authorization header.")
        return None

    def _falrest_initiate(self, call: Call, params: dict[str, str]) -> Response:
        body = call.json if isinstance(call.json, dict) else {}
        content_type, file_name = body.get("content_type"), body.get("file_name")
        if not isinstance(content_type, str) or not isinstance(file_name, str) or not file_name:
            return self._error("falrest", 422, "", body=_detail("file_name", "Field required", "missing"))
        token = secrets.token_hex(8)
        safe_name = re.sub(r"[^\w.-]", "_", file_name)[-80:]
        with self._lock:
            self._uploads[token] = {"content_type": content_type, "file_name": f"{token}-{safe_name}"}
        return Response.json(
            200,
            {
                "upload_url": f"{self.base_url}/falcdn/upload/{token}?X-Goog-Signature=sim{token}",
                "file_url": f"{self.base_url}/files/{token}-{safe_name}",
            },
        )

    def _falcdn_upload(self, call: Call, params: dict[str, str]) -> Response:
        with self._lock:
            upload = self._uploads.get(params["token"])
        if upload is None or not (call.query.get("X-Goog-Signature") or [""])[0]:
            return self._error("falcdn", 403, "The signature does not match.")
        if call.headers.get("content-type") != upload["content_type"]:
            return self._error("falcdn", 403, "The Content-Type is not the one the URL was signed for.")
        with self._lock:
            self._files[upload["file_name"]] = call.body
        return Response(200)

    def uploaded(self, file_url: str) -> bytes | None:
        """The bytes stored at a file_url this simulator handed out, or None."""
        prefix = f"{self.base_url}/files/"
        if not file_url.startswith(prefix):
            return None
        with self._lock:
            return self._files.get(file_url[len(prefix) :])

    # --- trainings ------------------------------------------------------------------------
    def _fal_train_submit(self, call: Call, model: str) -> Response:
        trainer = TRAINERS[model]
        body = call.json
        if not isinstance(body, dict):
            return self._error("fal", 422, "", body=_detail("body", "Invalid JSON", "json_invalid"))
        url = body.get(trainer.zip_field)
        if not isinstance(url, str) or not url:
            return self._error("fal", 422, "", body=_detail(trainer.zip_field, "Field required", "missing"))
        default, low, high = trainer.steps
        steps = body.get("steps", default)
        if not isinstance(steps, int) or isinstance(steps, bool) or not low <= steps <= high:
            detail = _detail("steps", f"Input should be between {low} and {high}", "range")
            return self._error("fal", 422, "", body=detail)
        trigger = body.get(trainer.trigger_field) if trainer.trigger_field else None
        dataset = self._read_dataset(url, trainer, trigger, body)
        webhook = (call.query.get("fal_webhook") or [None])[0]
        latency = self.fal_training_latency if self.fal_training_latency is not None else self._latency("fal")
        failed = self._take_one("fail_jobs") or bool(dataset.get("error"))
        job = Job(
            "fal", str(uuid.uuid4()), model, body, 0, latency, failed, prefix=self._fal_prefix(model), webhook=webhook
        )
        job.kind, job.steps, job.dataset = "training", steps, dataset
        return self._fal_queue(job)

    def _read_dataset(self, url: str, trainer: Trainer, trigger: Any, body: dict[str, Any]) -> dict[str, Any]:
        """What the trainer would train on: the images, and each one's effective caption (§7.3)."""
        data = self.uploaded(url)
        if data is None:
            return {"url": url, "error": "The archive could not be downloaded."}
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            names = archive.namelist()
        except zipfile.BadZipFile:
            return {"url": url, "error": "The archive is not a ZIP file."}
        nested = [n for n in names if "/" in n]
        images = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        if nested or not images:
            return {"url": url, "names": names, "error": "The archive must hold images at its root."}
        captions_given = {n.rsplit(".", 1)[0]: archive.read(n).decode("utf-8") for n in names if n.endswith(".txt")}
        effective = {}
        for image in images:
            stem = image.rsplit(".", 1)[0]
            caption = captions_given.get(stem)
            if trainer.captions == "ignored":
                caption = caption if captions_given else (trigger or "")
            elif trainer.captions == "placeholder":
                caption = (caption or trigger or "").replace("[trigger]", trigger or "")
            elif trainer.captions == "prepend":
                caption = (caption or "").replace("[trigger]", trigger or "")
                if trigger and trigger not in caption:
                    caption = f"{trigger}, {caption}" if caption else trigger
            elif caption is None:
                caption = body.get("default_caption")
                if caption is None:
                    return {"url": url, "names": names, "error": f"{image} has no caption and no default_caption."}
            effective[image] = caption
        return {"url": url, "names": names, "images": images, "captions": effective}

    def _fal_training_logs(self, job: Job) -> list[dict[str, Any]]:
        running = max(0.0, min(1.0, (job.elapsed() - job.latency * 0.25) / (job.latency * 0.75)))
        return [{"message": f"step {int(job.steps * running)}/{job.steps}", "level": "INFO", "source": "user"}]

    def _fal_training_output(self, job: Job) -> dict[str, Any]:
        lora_name, config_name = f"{job.id}-pytorch_lora_weights.safetensors", f"{job.id}-config.json"
        with self._lock:
            if lora_name not in self._files:
                self._files[lora_name] = safetensors_bytes(job.id)
                self._files[config_name] = json.dumps({"steps": job.steps, "input": job.input}).encode()
                job.files.extend([lora_name, config_name])
            lora, config = self._files[lora_name], self._files[config_name]
        return {
            "diffusers_lora_file": {
                "url": f"{self.base_url}/files/{lora_name}",
                "content_type": "application/octet-stream",
                "file_name": "pytorch_lora_weights.safetensors",
                "file_size": len(lora),
            },
            "config_file": {
                "url": f"{self.base_url}/files/{config_name}",
                "content_type": "application/octet-stream",
                "file_name": "config.json",
                "file_size": len(config),
            },
            "debug_preprocessed_output": None,
        }

    def _fal_training_error(self, job: Job) -> dict[str, Any]:
        """The 422 body a failed training's result replays: its dataset's problem, or a generic refusal."""
        message = job.dataset.get("error") or "The training failed."
        return _detail(TRAINERS[job.model].zip_field, message, "invalid_archive")
