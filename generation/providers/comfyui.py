"""A staff-run ComfyUI server: queue an API-format graph, poll /history, download from /view.

ComfyUI is a trusted host that staff configure (often on a private address), so the adapter
downloads the output bytes itself instead of handing URLs to the pipeline's public-only fetcher.
History lives in the server's memory: after a restart a prompt id is simply never answered,
and the pipeline's deadline has to call it lost.
"""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
import uuid
from typing import Any

import requests
from django.conf import settings

from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderResult,
    Reference,
    ResultStatus,
)
from generation.providers.http_api import HttpApi, json_or_none, unique_references

# fal-style size presets, so the same request params work here.
SIZE_PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_SIZE = (1024, 1024)
# Image-to-image without an explicit strength keeps the reference recognisable.
DEFAULT_DENOISE = 0.65
FILENAME_PREFIX = "charstudio"


def node_errors_text(node_errors: Any) -> str:
    """ComfyUI's per-node validation errors as one line, e.g. 'CheckpointLoaderSimple #4: ckpt_name ...'."""
    if not isinstance(node_errors, dict):
        return ""
    parts = []
    for node_id, info in node_errors.items():
        info = info if isinstance(info, dict) else {}
        for error in info.get("errors") or []:
            if isinstance(error, dict):
                text = error.get("details") or error.get("message") or error.get("type") or "invalid"
                parts.append(f"{info.get('class_type', 'node')} #{node_id}: {text}")
    return "; ".join(parts)


def _size(params: dict[str, Any]) -> tuple[int, int]:
    size = params.get("image_size")
    if isinstance(size, dict):
        return int(size["width"]), int(size["height"])
    if isinstance(size, str) and size in SIZE_PRESETS:
        return SIZE_PRESETS[size]
    return int(params.get("width", DEFAULT_SIZE[0])), int(params.get("height", DEFAULT_SIZE[1]))


def build_graph(
    request: GenerationRequest, *, checkpoint: str, seed: int, image_name: str | None = None
) -> dict[str, Any]:
    """The API-format graph of ComfyUI's basic example; with image_name, its img2img variant."""
    params = request.params
    try:
        width, height = _size(params)
        sampling = {
            "seed": seed,
            "steps": int(params.get("steps", 20)),
            "cfg": float(params.get("cfg", 7.0)),
            "sampler_name": str(params.get("sampler_name", "euler")),
            "scheduler": str(params.get("scheduler", "normal")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"Invalid ComfyUI parameters: {exc}", permanent=True) from exc
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": request.prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": request.negative_prompt, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": FILENAME_PREFIX, "images": ["8", 0]}},
    }
    if image_name is None:
        graph["5"] = {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": request.num_images},
        }
        latent, denoise = ["5", 0], 1.0
    else:
        graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
        graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        latent = ["11", 0]
        if request.num_images > 1:  # one encoded reference, repeated into a batch
            repeat = {"samples": latent, "amount": request.num_images}
            graph["12"] = {"class_type": "RepeatLatentBatch", "inputs": repeat}
            latent = ["12", 0]
        denoise = request.strength if request.strength is not None else DEFAULT_DENOISE
    graph["3"] = {
        "class_type": "KSampler",
        "inputs": {
            **sampling,
            "denoise": denoise,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": latent,
        },
    }
    return graph


class ComfyUI(HttpApi, Provider):
    name = "comfyui"
    asynchronous = True
    api_label = "ComfyUI"

    def base_url(self) -> str:
        return settings.COMFYUI_BASE_URL.rstrip("/")

    def is_configured(self) -> bool:
        return bool(settings.COMFYUI_BASE_URL)

    def configuration_hint(self) -> str:
        return "Set COMFYUI_BASE_URL to the ComfyUI server (e.g. http://127.0.0.1:8188)."

    def health_check(self) -> bool:
        if not self.is_configured():
            return False
        try:
            self.http("GET", f"{self.base_url()}/prompt", timeout=(float(settings.PROVIDER_CONNECT_TIMEOUT), 5.0))
        except ProviderError:
            return False
        return True

    def error_message(self, response: requests.Response) -> str:
        body = json_or_none(response)
        if not isinstance(body, dict):
            return response.text
        error = body.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("type")
        parts = [str(error or "")]
        parts.append(node_errors_text(body.get("node_errors")))
        return ": ".join(p for p in parts if p) or response.text

    def upload(self, reference: Reference) -> str:
        """Upload a reference into ComfyUI's input folder; return the name LoadImage takes."""
        extension = mimetypes.guess_extension(reference.content_type) or ".png"
        # Named by content, so overwriting is harmless even when two jobs share a reference.
        filename = f"{FILENAME_PREFIX}-{hashlib.sha256(reference.data).hexdigest()[:32]}{extension}"
        response = self.http(
            "POST",
            f"{self.base_url()}/upload/image",
            files={"image": (filename, reference.data, reference.content_type)},
            data={"overwrite": "true"},
        )
        body = self.json(response)
        name, subfolder = str(body.get("name") or filename), str(body.get("subfolder") or "")
        return f"{subfolder}/{name}" if subfolder else name

    def submit(self, request: GenerationRequest) -> ProviderResult:
        # An identical graph is served from ComfyUI's cache with the same files, so an unseeded
        # request gets a fresh seed rather than a repeat of the last image.
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        checkpoint = str(request.params.get("checkpoint") or self.model.key)
        references = unique_references(request.references)
        # The basic img2img graph has one LoadImage: further references are not used.
        image_name = self.upload(references[0]) if references else None
        graph = build_graph(request, checkpoint=checkpoint, seed=seed, image_name=image_name)
        client_id = request.request_id or uuid.uuid4().hex
        body = self.json(self.http("POST", f"{self.base_url()}/prompt", json={"prompt": graph, "client_id": client_id}))
        prompt_id = str(body.get("prompt_id") or "")
        errors = node_errors_text(body.get("node_errors"))
        if errors:
            if prompt_id:  # queued with some outputs invalid: do not leave half a graph running
                self.cancel(prompt_id, {})
            raise ProviderError(f"ComfyUI rejected the graph: {errors}", permanent=True)
        if not prompt_id:
            raise ProviderError("ComfyUI accepted the graph without a prompt id.")
        return ProviderResult(
            status=ResultStatus.PENDING,
            external_id=prompt_id,
            handles={"client_id": client_id, "seed": seed},
            poll_after=self.default_poll_interval,
        )

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        body = self.json(self.http("GET", f"{self.base_url()}/history/{external_id}"))
        entry = body.get(external_id)
        if not isinstance(entry, dict):  # {} until the prompt has finished
            return ProviderResult(status=ResultStatus.PENDING, poll_after=self.default_poll_interval)
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        if status.get("status_str") == "error":
            return _failure(status.get("messages") or [])
        seed = handles.get("seed")
        images = []
        for output in (entry.get("outputs") or {}).values():
            for file in (output or {}).get("images") or []:
                if isinstance(file, dict) and file.get("type", "output") == "output":  # skip temp previews
                    images.append(self.download(file, seed=seed))
        if not images:
            return ProviderResult(status=ResultStatus.FAILED, error="ComfyUI finished without saving any image.")
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)

    def download(self, file: dict[str, Any], *, seed: int | None) -> GeneratedImage:
        params = {"filename": file.get("filename", ""), "subfolder": file.get("subfolder", ""), "type": "output"}
        response = self.http("GET", f"{self.base_url()}/view", params=params)
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        if not content_type.startswith("image/"):
            content_type = mimetypes.guess_type(params["filename"])[0] or "image/png"
        return GeneratedImage(
            data=response.content, content_type=content_type, seed=seed, metadata={"filename": params["filename"]}
        )

    def cancel(self, external_id: str, handles: dict[str, Any]) -> None:
        base = self.base_url()
        self.http("POST", f"{base}/queue", json={"delete": [external_id]})  # only removes pending items
        queue = self.json(self.http("GET", f"{base}/queue"))
        running = [item[1] for item in queue.get("queue_running") or [] if isinstance(item, list) and len(item) > 1]
        # Older servers ignore the prompt_id and interrupt whatever runs, so only interrupt ours.
        if external_id in running:
            self.http("POST", f"{base}/interrupt", json={"prompt_id": external_id})


def _failure(messages: list[Any]) -> ProviderResult:
    """A failed history entry: its execution_error message, or CANCELED when interrupted."""
    events = {m[0]: m[1] for m in messages if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)}
    if "execution_interrupted" in events:
        return ProviderResult(status=ResultStatus.CANCELED, error="The ComfyUI run was interrupted.")
    error = events.get("execution_error", {})
    text = str(error.get("exception_message") or "unknown error").strip()
    node = f" in {error['node_type']}" if error.get("node_type") else ""
    # A graph that failed once fails again, except when the GPU merely ran out of memory.
    transient = "out of memory" in text.lower() or "OutOfMemory" in str(error.get("exception_type", ""))
    return ProviderResult(status=ResultStatus.FAILED, error=f"ComfyUI failed{node}: {text}", permanent=not transient)
