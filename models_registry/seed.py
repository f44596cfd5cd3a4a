"""The registry's starting rows: the product notes' real models with their real ids and limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from generation.providers.kinds import PROVIDER_KINDS


def _schema(*, num_images_max: int | None = None, image_field: str | None = None, extra: dict | None = None) -> dict:
    properties: dict[str, Any] = {"prompt": {"type": "string"}}
    if num_images_max is not None:
        properties["num_images"] = {"type": "integer", "minimum": 1, "maximum": num_images_max, "default": 1}
    if image_field == "image_urls":
        properties["image_urls"] = {"type": "array", "items": {"type": "string", "format": "uri"}}
    elif image_field:
        properties[image_field] = {"type": "string", "format": "uri"}
    properties.update(extra or {})
    return {"type": "object", "properties": properties, "required": ["prompt"]}


_FAL_T2I = {"seed": {"type": "integer"}, "image_size": {"type": "string", "default": "portrait_4_3"}}

MODELS: list[dict[str, Any]] = [
    {
        "key": "fal-ai/flux-2",
        "display_name": "Flux-2",
        "provider": "fal",
        "tasks": ["t2i"],
        "input_schema": _schema(num_images_max=4, extra=_FAL_T2I),
        "capabilities": {"seed": True},
        "price_per_image": Decimal("0.0250"),
        "priority": 50,
    },
    {
        "key": "fal-ai/flux-2/flash",
        "display_name": "Flux-2 Flash",
        "provider": "fal",
        "tasks": ["t2i"],
        "input_schema": _schema(num_images_max=4, extra=_FAL_T2I),
        "capabilities": {"seed": True},
        "price_per_image": Decimal("0.0100"),
        "priority": 60,
    },
    {
        "key": "fal-ai/flux-2/flash/edit",
        "display_name": "Flux-2 Flash Edit",
        "provider": "fal",
        "tasks": ["i2i", "i2i_multi"],
        "input_schema": _schema(num_images_max=4, image_field="image_urls", extra={"seed": {"type": "integer"}}),
        "capabilities": {"requires_image_urls_array": True, "seed": True, "max_reference_images": 4},
        "price_per_image": Decimal("0.0100"),
        "priority": 55,
    },
    {
        "key": "fal-ai/flux-pro/kontext",
        "display_name": "Flux Pro Kontext",
        "provider": "fal",
        "tasks": ["i2i"],
        "input_schema": _schema(num_images_max=4, image_field="image_url", extra={"seed": {"type": "integer"}}),
        "capabilities": {"seed": True},
        "price_per_image": Decimal("0.0500"),
        "priority": 40,
    },
    {
        "key": "fal-ai/bytedance/seedream/v4.5/edit",
        "display_name": "Seedream v4.5 Edit",
        "provider": "fal",
        "tasks": ["i2i", "i2i_multi"],
        "input_schema": _schema(num_images_max=10, image_field="image_urls", extra={"seed": {"type": "integer"}}),
        "capabilities": {"requires_image_urls_array": True, "seed": True, "max_reference_images": 10},
        "price_per_image": Decimal("0.0250"),
        "priority": 45,
    },
    {
        "key": "stability-ai/sdxl",
        "display_name": "SDXL (Replicate)",
        "provider": "replicate",
        "tasks": ["t2i", "i2i"],
        "input_schema": {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "negative_prompt": {"type": "string"},
                "image": {"type": "string", "format": "uri"},
                "prompt_strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
                "num_outputs": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
                "seed": {"type": "integer"},
                # The quality presets' settings (generation.prompts.QUALITY_PRESETS) reach SDXL here.
                "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                "guidance_scale": {"type": "number", "minimum": 1, "maximum": 50, "default": 7.5},
            },
            "required": ["prompt"],
        },
        # SDXL calls its count num_outputs, so the per-request maximum is set here explicitly.
        "capabilities": {
            "max_images": 4,
            "negative_prompt": True,
            "seed": True,
            "denoise_field": "prompt_strength",
            "version": "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
        },
        "price_per_image": Decimal("0.0040"),
        "priority": 30,
    },
    {
        "key": "gemini-2.5-flash-image",
        "display_name": "Gemini 2.5 Flash Image",
        "provider": "gemini",
        "tasks": ["t2i", "i2i", "i2i_multi"],
        "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
        "capabilities": {"batch_api": True, "max_reference_images": 3},
        "price_per_image": Decimal("0.0390"),
        "priority": 35,
    },
    {
        "key": "gemini-3-pro-image-preview",
        "display_name": "Gemini 3 Pro Image",
        "provider": "gemini",
        "tasks": ["t2i", "i2i", "i2i_multi"],
        "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
        "capabilities": {"batch_api": True, "max_reference_images": 14},
        "price_per_image": Decimal("0.1340"),
        "priority": 34,
    },
    {
        # A staff-run ComfyUI server (0.3.x) with the SDXL base checkpoint. Seeded active like
        # every row: until COMFYUI_BASE_URL is set, the adapter reports itself unconfigured, so
        # the studio shows it disabled and routing skips it.
        "key": "comfyui/sdxl-base-1.0",
        "display_name": "SDXL base (ComfyUI)",
        "provider": "comfyui",
        "tasks": ["t2i", "i2i"],
        "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
        "capabilities": {
            "max_images": 4,
            "negative_prompt": True,
            "seed": True,
            "comfyui": {
                "checkpoint": "sd_xl_base_1.0.safetensors",
                "steps": 30,
                "cfg": 7.0,
                "sampler": "dpmpp_2m",
                "scheduler": "karras",
                "width": 1024,
                "height": 1024,
                "size_multiple": 8,
            },
        },
        "price_per_image": Decimal("0"),
        "priority": 20,
    },
    {
        "key": "offline/portrait-engine",
        "display_name": "Offline preview engine",
        "provider": "offline",
        "tasks": ["t2i", "i2i", "i2i_multi"],
        "input_schema": _schema(
            num_images_max=4,
            image_field="image_urls",
            extra={"seed": {"type": "integer"}, "strength": {"type": "number", "minimum": 0, "maximum": 1}},
        ),
        "capabilities": {"offline_preview": True, "seed": True, "negative_prompt": True, "denoise_field": "strength"},
        "price_per_image": Decimal("0"),
        "priority": 100,
    },
]

# Marks the place of the local GPU models (the provider kinds marked local: ComfyUI, the local
# worker) in a chain: every seeded model of those providers that can do the task, highest
# priority first.
LOCAL_MODELS = "<local>"

# Fallback chains, first tried first. i2i follows the product notes (local, then Replicate, then
# fal); t2i starts on the fast fal model; i2i_multi keeps to models that take several references.
FALLBACK_CHAINS: dict[str, list[str]] = {
    "t2i": ["fal-ai/flux-2/flash", "stability-ai/sdxl", "gemini-2.5-flash-image"],
    "i2i": [LOCAL_MODELS, "stability-ai/sdxl", "fal-ai/flux-2/flash/edit"],
    "i2i_multi": ["fal-ai/flux-2/flash/edit", "fal-ai/bytedance/seedream/v4.5/edit", "gemini-2.5-flash-image"],
}


def fallback_chain_keys(task: str) -> list[str]:
    """The chain's model keys with the local marker expanded from the seeded models."""
    keys: list[str] = []
    for key in FALLBACK_CHAINS[task]:
        if key == LOCAL_MODELS:
            local = [m for m in MODELS if PROVIDER_KINDS[m["provider"]].local and task in m["tasks"]]
            keys.extend(m["key"] for m in sorted(local, key=lambda m: -m.get("priority", 0)))
        else:
            keys.append(key)
    return keys


# Short for i2i (long lists fight the edit), fuller for text-to-image.
NEGATIVE_PROMPTS: list[dict[str, Any]] = [
    {
        "model_type": "*",
        "content_mode": "sfw",
        "generation_mode": "i2i",
        "text": "blurry, distorted, low quality",
        "priority": 10,
    },
    {
        "model_type": "*",
        "content_mode": "sfw",
        "generation_mode": "txt2img",
        "text": (
            "blurry, low quality, worst quality, jpeg artifacts, deformed, disfigured, bad anatomy, "
            "extra limbs, extra fingers, watermark, text, signature"
        ),
        "priority": 10,
    },
    {
        "model_type": "*",
        "content_mode": "nsfw",
        "generation_mode": "i2i",
        "text": "blurry, distorted, low quality",
        "priority": 10,
    },
    {
        "model_type": "*",
        "content_mode": "nsfw",
        "generation_mode": "txt2img",
        "text": (
            "blurry, low quality, worst quality, jpeg artifacts, deformed, disfigured, bad anatomy, "
            "extra limbs, extra fingers, watermark, text, signature"
        ),
        "priority": 10,
    },
]
