"""The rules for an ApiModel's input_schema and capabilities JSON, shared by the model and admin.

input_schema is the provider's JSON Schema for the model's input (``{"properties": {...}}``);
only the parts the pipeline reads are checked. capabilities holds staff overrides and flags;
an unknown key is an error so that a typo never silently does nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

# key -> (type, what it means). bool is checked before int because bool is a subclass of int.
KNOWN_CAPABILITIES: dict[str, tuple[type, str]] = {
    "requires_image_urls_array": (bool, "send references as an image_urls array even for one image"),
    "max_images": (int, "images per request, overriding the schema's num_images maximum"),
    "batch_api": (bool, "the provider's half-price batch API can run this model"),
    "negative_prompt": (bool, "the model takes a negative_prompt input"),
    "seed": (bool, "the model takes a seed input"),
    "denoise_field": (str, "input field that takes the image-to-image denoise (SDXL: prompt_strength)"),
    "version": (str, "pinned provider version id (Replicate)"),
    "offline_preview": (bool, "label the model as an offline preview in the studio"),
    "max_reference_images": (int, "how many reference images one request accepts"),
    # Its keys are checked by the trainer adapter's validate_model (generation/providers/fal_training.py).
    "training": (
        dict,
        "LoRA trainer settings: caption_trigger (literal | placeholder), min_images, price_per_1000_steps",
    ),
    # Its keys are checked by the ComfyUI adapter's validate_model (generation/providers/comfyui.py).
    "comfyui": (
        dict,
        "ComfyUI graph settings: checkpoint, steps, cfg, sampler, scheduler, width, height, size_multiple",
    ),
}

IMAGE_FIELDS = ("image_urls", "image_url", "image")


def schema_properties(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return schema["properties"]
    return {}


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate_input_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        raise ValidationError("The input schema must be a JSON object.", code="schema_type")
    if "properties" in schema and not isinstance(schema["properties"], dict):
        raise ValidationError('The schema\'s "properties" must be a JSON object.', code="schema_properties")
    num_images = schema_properties(schema).get("num_images")
    if num_images is None:
        return
    if not isinstance(num_images, dict):
        raise ValidationError('"num_images" must be a JSON object with a "maximum".', code="num_images_type")
    if "maximum" in num_images and not _is_positive_int(num_images["maximum"]):
        raise ValidationError(
            'The num_images "maximum" must be a positive integer, got %(value)s.',
            code="num_images_maximum",
            params={"value": repr(num_images["maximum"])},
        )


def validate_capabilities(capabilities: Any) -> None:
    if not isinstance(capabilities, dict):
        raise ValidationError("Capabilities must be a JSON object.", code="capabilities_type")
    errors = []
    for key, value in capabilities.items():
        if key not in KNOWN_CAPABILITIES:
            errors.append(
                ValidationError(
                    'Unknown capability "%(key)s". Known: %(known)s.',
                    code="unknown_capability",
                    params={"key": key, "known": ", ".join(sorted(KNOWN_CAPABILITIES))},
                )
            )
            continue
        expected, _ = KNOWN_CAPABILITIES[key]
        if expected is bool:
            ok = isinstance(value, bool)
        elif expected is int:
            ok = _is_positive_int(value)
        else:
            ok = isinstance(value, expected) and bool(value)
        if not ok:
            kinds = {bool: "true or false", int: "a positive integer", str: "a non-empty string", dict: "a JSON object"}
            kind = kinds[expected]
            errors.append(
                ValidationError(
                    'Capability "%(key)s" must be %(kind)s.',
                    code="capability_value",
                    params={"key": key, "kind": kind},
                )
            )
    if errors:
        raise ValidationError(errors)
