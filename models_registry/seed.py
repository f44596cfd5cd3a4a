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
# fal-ai/flux-lora's `loras`: any number of {path, scale}, merged (docs/providers.md §7.4).
_LORAS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "scale": {"type": "number", "minimum": 0, "maximum": 4, "default": 1},
        },
        "required": ["path"],
    },
}


def _trainer_schema(zip_field: str, *, trigger: str | None, steps: tuple[int, int, int], extra: dict) -> dict:
    """A fal trainer's input (docs/providers.md §7.3): its ZIP field, trigger field and steps."""
    default, minimum, maximum = steps
    properties: dict[str, Any] = {zip_field: {"type": "string", "format": "uri"}}
    if trigger:
        properties[trigger] = {"type": ["string", "null"]}
    properties["steps"] = {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default}
    properties.update(extra)
    return {"type": "object", "properties": properties, "required": [zip_field]}


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
    # --- LoRA inference (docs/providers.md §7.4): FLUX.1 dev with a `loras` list; without one, plain dev.
    {
        "key": "fal-ai/flux-lora",
        "display_name": "Flux LoRA",
        "provider": "fal",
        "tasks": ["t2i"],
        "input_schema": _schema(num_images_max=4, extra={**_FAL_T2I, "loras": _LORAS}),
        "capabilities": {"seed": True},
        # About $0.035 a megapixel [NV]; a portrait_4_3 image is 0.8 MP.
        "price_per_image": Decimal("0.0350"),
        "priority": 25,
    },
    {
        "key": "fal-ai/flux-lora/image-to-image",
        "display_name": "Flux LoRA Image to Image",
        "provider": "fal",
        "tasks": ["i2i"],
        "input_schema": _schema(
            num_images_max=4,
            image_field="image_url",
            extra={
                "seed": {"type": "integer"},
                "loras": _LORAS,
                "strength": {"type": "number", "minimum": 0.01, "maximum": 1, "default": 0.85},
            },
        ),
        "capabilities": {"seed": True, "denoise_field": "strength"},
        "price_per_image": Decimal("0.0350"),
        "priority": 24,
    },
    # --- LoRA trainers (docs/providers.md §7.3): the lora_training task, run by fal's trainer adapter
    # (generation/providers/fal_training.py). price_per_image is 0: the `training` capability prices
    # them per 1000 steps.
    {
        "key": "fal-ai/flux-lora-fast-training",
        "display_name": "Flux LoRA fast training",
        "provider": "fal",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema(
            "images_data_url",
            trigger="trigger_word",
            steps=(1000, 1, 10000),
            extra={
                "create_masks": {"type": "boolean", "default": True},
                "is_style": {"type": "boolean", "default": False},
                "is_input_format_already_preprocessed": {"type": "boolean", "default": False},
                "data_archive_format": {"type": ["string", "null"]},
            },
        ),
        # Captions present: trigger_word is not applied, so the captions carry the word itself.
        "capabilities": {"training": {"caption_trigger": "literal", "min_images": 4, "price_per_1000_steps": "2.00"}},
        "price_per_image": Decimal("0"),
        "priority": 30,
    },
    {
        "key": "fal-ai/flux-lora-portrait-trainer",
        "display_name": "Flux LoRA portrait trainer",
        "provider": "fal",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema(
            "images_data_url",
            trigger="trigger_phrase",
            steps=(2500, 1, 10000),
            extra={
                "learning_rate": {"type": "number", "minimum": 0.000001, "maximum": 0.001, "default": 0.00009},
                "multiresolution_training": {"type": "boolean", "default": True},
                "subject_crop": {"type": "boolean", "default": True},
                "create_masks": {"type": "boolean", "default": False},
                "data_archive_format": {"type": ["string", "null"]},
            },
        ),
        # Its price is not published where it was read [NV]: seeded inactive until staff set one.
        "capabilities": {"training": {"caption_trigger": "placeholder", "min_images": 10}},
        "price_per_image": Decimal("0"),
        "is_active": False,
        "priority": 20,
    },
    {
        "key": "fal-ai/turbo-flux-trainer",
        "display_name": "Turbo Flux trainer",
        "provider": "fal",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema(
            "images_data_url",
            trigger="trigger_phrase",
            steps=(1000, 1, 10000),
            extra={
                "learning_rate": {"type": "number", "minimum": 0.0000001, "maximum": 0.01, "default": 0.00115},
                "training_style": {"type": "string", "enum": ["subject", "style"], "default": "subject"},
                "face_crop": {"type": "boolean", "default": True},
            },
        ),
        "capabilities": {
            "training": {"caption_trigger": "placeholder", "min_images": 10, "price_per_1000_steps": "2.40"}
        },
        "price_per_image": Decimal("0"),
        "priority": 25,
    },
    {
        "key": "fal-ai/flux-2-trainer",
        "display_name": "Flux-2 trainer",
        "provider": "fal",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema(
            "image_data_url",
            trigger=None,
            steps=(1000, 100, 10000),
            extra={
                "learning_rate": {"type": "number", "default": 0.00005},
                "default_caption": {"type": "string"},
                "output_lora_format": {"type": "string", "enum": ["fal", "comfy"], "default": "fal"},
            },
        ),
        # No trigger field: the word lives in the captions (and default_caption) only.
        "capabilities": {"training": {"caption_trigger": "literal", "min_images": 10, "price_per_1000_steps": "6.40"}},
        "price_per_image": Decimal("0"),
        "priority": 20,
    },
    {
        # docs/providers.md §7.5: GPU-seconds billing [NV: its hardware], so no price is seeded and the row
        # stays inactive until staff set one. Needs REPLICATE_TRAINING_OWNER.
        "key": "ostris/flux-dev-lora-trainer",
        "display_name": "Flux LoRA trainer (Replicate)",
        "provider": "replicate",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema(
            "input_images",
            trigger="trigger_word",
            steps=(1000, 3, 6000),
            extra={
                "autocaption": {"type": "boolean", "default": True},
                "lora_rank": {"type": "integer", "minimum": 1, "maximum": 128, "default": 16},
                "learning_rate": {"type": "number", "default": 0.0004},
                "resolution": {"type": "string", "default": "512,768,1024"},
            },
        ),
        # ai-toolkit prepends the trigger to a caption that lacks it: the literal word is as good.
        "capabilities": {"training": {"caption_trigger": "literal", "min_images": 10}},
        "price_per_image": Decimal("0"),
        "is_active": False,
        "priority": 10,
    },
    {
        # The studio's own GPU worker (Procfile worker-gpu, generation.gpu), first in the i2i chain
        # as the I2I note orders (priority above ComfyUI's). max_images is its batch limit across
        # jobs: staff raise it where the GPU holds more (4-8 at 1024x1024 on an 80 GB card).
        "key": "local/sdxl",
        "display_name": "SDXL (local GPU)",
        "provider": "local",
        "tasks": ["t2i", "i2i"],
        "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
        "capabilities": {"max_images": 4, "negative_prompt": True, "seed": True},
        "price_per_image": Decimal("0"),
        "priority": 25,
    },
    {
        "key": "offline/portrait-engine",
        "display_name": "Offline preview engine",
        "provider": "offline",
        "tasks": ["t2i", "i2i", "i2i_multi"],
        "input_schema": _schema(
            num_images_max=4,
            image_field="image_urls",
            extra={
                "seed": {"type": "integer"},
                "strength": {"type": "number", "minimum": 0, "maximum": 1},
                "loras": _LORAS,
            },
        ),
        "capabilities": {"offline_preview": True, "seed": True, "negative_prompt": True, "denoise_field": "strength"},
        "price_per_image": Decimal("0"),
        "priority": 100,
    },
    {
        # A simulated training (generation/providers/offline.py), so the LoRA loop runs with no key.
        "key": "offline/lora-trainer",
        "display_name": "Offline LoRA trainer",
        "provider": "offline",
        "tasks": ["lora_training"],
        "input_schema": _trainer_schema("images_data_url", trigger="trigger_word", steps=(100, 1, 1000), extra={}),
        "capabilities": {
            "offline_preview": True,
            "training": {"caption_trigger": "literal", "min_images": 4, "price_per_1000_steps": "0"},
        },
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
