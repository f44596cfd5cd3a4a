"""A staff-run ComfyUI server (0.3.x): queue an API-format graph, poll /history, download from /view.

ComfyUI is a trusted host that staff configure (often on a private address), so the adapter
downloads the output bytes itself instead of handing URLs to the pipeline's public-only fetcher.
History lives in the server's memory: a restart forgets every prompt, so a poll that finds
neither a history entry nor a queue entry reports the prompt lost (retryable) at once.

What the graph runs (checkpoint, sampler, steps, default size) is the registry row's
capabilities["comfyui"], checked by validate_model when staff save the row.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import secrets
import uuid
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# fal-style size presets, so the same request params work here.
SIZE_PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
# Image-to-image without an explicit denoise keeps the reference recognisable.
DEFAULT_DENOISE = 0.65
FILENAME_PREFIX = "charstudio"
SAVE_NODE = "9"

# The registry key that holds this adapter's settings, and what each setting defaults to.
CAPABILITY = "comfyui"
GRAPH_DEFAULTS: dict[str, Any] = {
    "steps": 20,
    "cfg": 7.0,
    "sampler": "euler",
    "scheduler": "normal",
    "width": 1024,
    "height": 1024,
    # SD/SDXL VAEs work on 8x8 pixel blocks: EmptyLatentImage floors other sizes to a multiple of 8.
    "size_multiple": 8,
}
GRAPH_SETTINGS = ("checkpoint", *GRAPH_DEFAULTS)

# KSampler's choices in ComfyUI 0.3.64 (comfy/samplers.py KSAMPLER_NAMES + ["ddim", "uni_pc",
# "uni_pc_bh2"], and SCHEDULER_HANDLERS): the server rejects any other name with value_not_in_list.
SAMPLER_NAMES = frozenset(
    {
        "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
        "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
        "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
        "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
    }
)  # fmt: skip
SCHEDULER_NAMES = frozenset(
    {
        "normal",
        "karras",
        "exponential",
        "sgm_uniform",
        "simple",
        "ddim_uniform",
        "beta",
        "linear_quadratic",
        "kl_optimal",
    }
)
# KSampler's own limits (nodes.py): steps 1..10000, cfg 0..100; MAX_RESOLUTION is 16384.
MAX_STEPS = 10_000
MAX_CFG = 100.0
MAX_RESOLUTION = 16_384

# Absolute server paths in error texts (ComfyUI's tracebacks name /home/.../ComfyUI/models/...
# or C:\...\ComfyUI\...): users see the file name only. Quoted paths may hold spaces.
_QUOTED_PATH = re.compile(r"""(['"])((?:[A-Za-z]:[\\/]|/)[^'"]*[\\/])([^'"\\/]*)\1""")
_BARE_PATH = re.compile(r"""(?<![\w:/.\\])(?:[A-Za-z]:[\\/]|/)(?:[^\s'"\\/]+[\\/])+([^\s'"\\/]*)""")


def scrub_paths(text: str) -> str:
    """The text with every absolute file path cut down to its file name."""
    text = _QUOTED_PATH.sub(lambda m: f"{m.group(1)}{m.group(3)}{m.group(1)}", text)
    return _BARE_PATH.sub(lambda m: m.group(1), text)


def node_errors_text(node_errors: Any) -> str:
    """ComfyUI's per-node validation errors as one line, e.g. 'CheckpointLoaderSimple #4: Value not in list: ...'."""
    if not isinstance(node_errors, dict):
        return ""
    parts = []
    for node_id, info in node_errors.items():
        info = info if isinstance(info, dict) else {}
        for error in info.get("errors") or []:
            if isinstance(error, dict):
                # The server's message says what is wrong, its details which input and value.
                words = [str(error.get(k) or "") for k in ("message", "details")]
                text = ": ".join(dict.fromkeys(w for w in words if w)) or str(error.get("type") or "invalid")
                parts.append(f"{info.get('class_type', 'node')} #{node_id}: {text}")
    return scrub_paths("; ".join(parts))


def graph_settings(model: ApiModel) -> dict[str, Any]:
    """The registry row's ComfyUI settings over the defaults; raises permanently without a checkpoint."""
    raw = (model.capabilities or {}).get(CAPABILITY)
    raw = raw if isinstance(raw, dict) else {}
    if not isinstance(raw.get("checkpoint"), str) or not raw["checkpoint"].strip():
        raise ProviderError(
            f'{model.display_name or model.key} names no ComfyUI checkpoint (capabilities "comfyui").',
            permanent=True,
        )
    return {**GRAPH_DEFAULTS, **raw}


def settings_errors(raw: Any) -> list[str]:
    """What is wrong with a row's capabilities["comfyui"], in words staff can act on."""
    if not isinstance(raw, dict):
        return ['Set capabilities "comfyui" to an object naming at least the "checkpoint" file.']
    errors = []
    unknown = sorted(set(raw) - set(GRAPH_SETTINGS))
    if unknown:
        errors.append(f"Unknown ComfyUI setting(s): {', '.join(unknown)}. Known: {', '.join(GRAPH_SETTINGS)}.")
    checkpoint = raw.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        errors.append('"checkpoint" must name the checkpoint file on the server, e.g. "sd_xl_base_1.0.safetensors".')
    merged = {**GRAPH_DEFAULTS, **raw}
    if not _is_int(merged["steps"]) or not 1 <= merged["steps"] <= MAX_STEPS:
        errors.append(f'"steps" must be a whole number from 1 to {MAX_STEPS}.')
    cfg = merged["cfg"]
    if not isinstance(cfg, int | float) or isinstance(cfg, bool) or not 0.0 <= cfg <= MAX_CFG:
        errors.append(f'"cfg" must be a number from 0 to {MAX_CFG:g}.')
    if merged["sampler"] not in SAMPLER_NAMES:
        errors.append(f'"sampler" {merged["sampler"]!r} is not one of ComfyUI\'s KSampler samplers.')
    if merged["scheduler"] not in SCHEDULER_NAMES:
        errors.append(f'"scheduler" {merged["scheduler"]!r} is not one of: {", ".join(sorted(SCHEDULER_NAMES))}.')
    multiple = merged["size_multiple"]
    if not _is_int(multiple) or multiple < 8 or multiple % 8:
        errors.append('"size_multiple" must be a positive multiple of 8 (8 for SD/SDXL).')
    for side in ("width", "height"):
        if not _is_int(merged[side]) or not 1 <= merged[side] <= MAX_RESOLUTION:
            errors.append(f'"{side}" must be a whole number of pixels from 1 to {MAX_RESOLUTION}.')
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def round_to_multiple(value: int, multiple: int) -> int:
    """The nearest multiple (at least one multiple): the latent is 1/8 of the image, so sizes in
    between would be floored by the server and the output would not have the requested size."""
    return max(multiple, (value + multiple // 2) // multiple * multiple)


def requested_size(params: dict[str, Any], graph: dict[str, Any]) -> tuple[int, int]:
    """The request's size (a preset, {"width", "height"} or width/height), else the row's default,
    rounded to the model's size multiple."""
    size = params.get("image_size")
    if isinstance(size, dict):
        width, height = int(size["width"]), int(size["height"])
    elif isinstance(size, str) and size in SIZE_PRESETS:
        width, height = SIZE_PRESETS[size]
    else:
        width, height = int(params.get("width", graph["width"])), int(params.get("height", graph["height"]))
    if width <= 0 or height <= 0:
        raise ValueError(f"size {width}x{height}")
    multiple = int(graph["size_multiple"])
    return round_to_multiple(width, multiple), round_to_multiple(height, multiple)


def build_graph(
    request: GenerationRequest, *, graph_settings: dict[str, Any], seed: int, image_name: str | None = None
) -> dict[str, Any]:
    """The API-format graph of ComfyUI's basic example; with image_name, its img2img variant."""
    try:
        width, height = requested_size(request.params, graph_settings)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"Invalid ComfyUI size: {exc}", permanent=True) from exc
    sampling = {
        "seed": seed,
        "steps": graph_settings["steps"],
        "cfg": float(graph_settings["cfg"]),
        "sampler_name": graph_settings["sampler"],
        "scheduler": graph_settings["scheduler"],
    }
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": graph_settings["checkpoint"]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": request.prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": request.negative_prompt, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        SAVE_NODE: {"class_type": "SaveImage", "inputs": {"filename_prefix": FILENAME_PREFIX, "images": ["8", 0]}},
    }
    if image_name is None:
        graph["5"] = {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": request.num_images},
        }
        latent, denoise = ["5", 0], 1.0
    else:
        graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
        # VAEEncode keeps the reference's own size: scale and centre-crop it to the requested
        # size first, so img2img outputs are as large as asked, whatever the upload was.
        scale = {"image": ["10", 0], "upscale_method": "lanczos", "width": width, "height": height, "crop": "center"}
        graph["13"] = {"class_type": "ImageScale", "inputs": scale}
        graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["4", 2]}}
        latent = ["11", 0]
        if request.num_images > 1:  # one encoded reference, repeated into a batch
            repeat = {"samples": latent, "amount": request.num_images}
            graph["12"] = {"class_type": "RepeatLatentBatch", "inputs": repeat}
            latent = ["12", 0]
        denoise = request.denoise if request.denoise is not None else DEFAULT_DENOISE
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
    base_url_setting = "COMFYUI_BASE_URL"

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        errors = super().validate_model(model)
        problems = settings_errors((model.capabilities or {}).get(CAPABILITY))
        if problems:
            errors["capabilities"] = " ".join([errors.get("capabilities", ""), *problems]).strip()
        return errors

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
        """A /prompt 400 answer's own words: {"error": {"type", "message", "details"}, "node_errors"}."""
        body = json_or_none(response)
        if not isinstance(body, dict):
            return scrub_paths(response.text)
        error = body.get("error")
        if isinstance(error, dict):
            # Node errors say more than the summary's details ("Node ID '#4'"), so those are kept
            # only when there are no node errors to show.
            details = "" if body.get("node_errors") else str(error.get("details") or "")
            error = ": ".join(w for w in (str(error.get("message") or error.get("type") or ""), details) if w)
        parts = [str(error or ""), node_errors_text(body.get("node_errors"))]
        return scrub_paths(": ".join(p for p in parts if p)) or scrub_paths(response.text)

    def upload(self, reference: Reference) -> str:
        """Upload a reference as a temp file; return the annotated name LoadImage reads it by.

        ComfyUI 0.3.64 has no endpoint that deletes an upload. Its temp folder is the one it
        clears itself (main.py cleanup_temp, at every start and exit), so references go there
        (type=temp) and LoadImage reads them with the " [temp]" annotation of folder_paths.
        The name is the content's hash: a reference reused across jobs is one file, and the
        server, finding an identical file under that name, writes nothing. overwrite=true is not
        sent: it would rewrite the file while another job's LoadImage may be reading it.
        """
        extension = mimetypes.guess_extension(reference.content_type) or ".png"
        filename = f"{FILENAME_PREFIX}-{hashlib.sha256(reference.data).hexdigest()[:32]}{extension}"
        response = self.http(
            "POST",
            f"{self.base_url()}/upload/image",
            files={"image": (filename, reference.data, reference.content_type)},
            data={"type": "temp"},
        )
        body = self.json(response)
        name, subfolder = str(body.get("name") or filename), str(body.get("subfolder") or "")
        folder = str(body.get("type") or "temp")
        path = f"{subfolder}/{name}" if subfolder else name
        return f"{path} [{folder}]"

    def submit(self, request: GenerationRequest) -> ProviderResult:
        graph_config = graph_settings(self.model)
        # An identical graph is served from ComfyUI's cache with the same files, so an unseeded
        # request gets a fresh seed rather than a repeat of the last image.
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        references = unique_references(request.references)
        # The basic img2img graph has one LoadImage: further references are not used.
        image_name = self.upload(references[0]) if references else None
        graph = build_graph(request, graph_settings=graph_config, seed=seed, image_name=image_name)
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
        entry = self.history(external_id)
        if entry is None:  # {} until the prompt has finished, and for a prompt the server forgot
            if self.queued(external_id):
                return ProviderResult(status=ResultStatus.PENDING, poll_after=self.default_poll_interval)
            # Finished between the two calls (a prompt leaves the queue as its history is written)?
            entry = self.history(external_id)
            if entry is None:
                return ProviderResult(
                    status=ResultStatus.FAILED,
                    error="ComfyUI lost the prompt (the server restarted or its queue was cleared).",
                    permanent=False,
                )
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        if status.get("status_str") == "error":
            return _failure(status.get("messages") or [])
        files = [
            file
            for file in ((entry.get("outputs") or {}).get(SAVE_NODE) or {}).get("images") or []
            if isinstance(file, dict) and file.get("type", "output") == "output"  # skip temp previews
        ]
        if not files:
            return ProviderResult(status=ResultStatus.FAILED, error="ComfyUI finished without saving any image.")
        seed = handles.get("seed")
        images = [self.download(file, seed=seed, batch_index=k, batch_size=len(files)) for k, file in enumerate(files)]
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, or None while there is none."""
        entry = self.json(self.http("GET", f"{self.base_url()}/history/{prompt_id}")).get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or waiting: /queue items are [number, prompt_id, prompt, ...]."""
        queue = self.json(self.http("GET", f"{self.base_url()}/queue"))
        items = [*(queue.get("queue_running") or []), *(queue.get("queue_pending") or [])]
        return any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in items)

    def download(self, file: dict[str, Any], *, seed: int | None, batch_index: int, batch_size: int) -> GeneratedImage:
        params = {"filename": file.get("filename", ""), "subfolder": file.get("subfolder", ""), "type": "output"}
        response = self.http("GET", f"{self.base_url()}/view", params=params)
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        if not content_type.startswith("image/"):
            content_type = mimetypes.guess_type(params["filename"])[0] or "image/png"
        # KSampler draws one noise tensor from one seed for the whole latent batch, so image k of
        # a batch is reproduced by that seed with LatentFromBatch(batch_index=k), not by the seed
        # alone: the image's own seed is only set when the batch was a single image.
        metadata = {"filename": params["filename"], "seed": seed, "batch_index": batch_index, "batch_size": batch_size}
        return GeneratedImage(
            data=response.content,
            content_type=content_type,
            seed=seed if batch_size == 1 else None,
            metadata=metadata,
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
    """A failed history entry (status.messages holds [event, data] pairs), in the server's words."""
    events = {m[0]: m[1] for m in messages if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)}
    if "execution_interrupted" in events:
        # A cancel of ours is settled by the pipeline before it polls (the job is canceled), so
        # an interrupt seen here came from someone else on the server: the run may simply be retried.
        node = events["execution_interrupted"].get("node_type")
        where = f" in {node}" if node else ""
        return ProviderResult(
            status=ResultStatus.FAILED,
            error=f"The ComfyUI run was interrupted on the server{where}.",
            permanent=False,
        )
    error = events.get("execution_error", {})
    text = scrub_paths(str(error.get("exception_message") or "unknown error").strip())
    node = f" in {error['node_type']}" if error.get("node_type") else ""
    # A graph that failed once fails again, except when the GPU merely ran out of memory.
    transient = "out of memory" in text.lower() or "OutOfMemory" in str(error.get("exception_type", ""))
    return ProviderResult(status=ResultStatus.FAILED, error=f"ComfyUI failed{node}: {text}", permanent=not transient)
