"""The model input that schema-driven providers (fal, Replicate) share: what the registry row's
input_schema and capabilities say the model takes, filled from one GenerationRequest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.prompts import with_trigger_words
from generation.providers.base import GenerationRequest, ProviderError
from generation.providers.http_api import unique_references
from models_registry.capabilities import schema_properties

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# Fields the pipeline fills itself; request.params never overrides them.
MANAGED_FIELDS = frozenset(
    {"prompt", "num_images", "num_outputs", "seed", "negative_prompt", "image", "image_url", "image_urls", "loras"}
)


def ensure_batch_fits(model: ApiModel, request: GenerationRequest) -> None:
    """One request never asks for more images than the model makes at once. The pipeline chunks
    by ApiModel.max_images (ApiModel.request_chunks), so this only stops a caller that did not."""
    if request.num_images > model.max_images:
        raise ProviderError(f"{model.key} makes at most {model.max_images} image(s) a request.", permanent=True)


def model_inputs(model: ApiModel, request: GenerationRequest, *, count_field: str | None) -> dict[str, Any]:
    """The input object for `model`: the count goes to `count_field` (None: one image a call),
    references to the model's image field, the denoise to its denoise field, and params only
    where the schema has them. Raises a permanent ProviderError for what the model cannot take."""
    properties = schema_properties(model.input_schema)
    capabilities = model.capabilities or {}
    payload: dict[str, Any] = {"prompt": request.prompt}
    ensure_batch_fits(model, request)
    if request.loras:
        payload.update(lora_inputs(model, request))
    if count_field:
        payload[count_field] = request.num_images
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.negative_prompt and ("negative_prompt" in properties or capabilities.get("negative_prompt")):
        payload["negative_prompt"] = request.negative_prompt
    for name, value in request.params.items():
        if name in properties and name not in MANAGED_FIELDS:
            payload[name] = value
    references = unique_references(request.references)
    if references:
        limit = capabilities.get("max_reference_images")
        if limit and len(references) > limit:
            raise ProviderError(f"{model.key} takes at most {limit} reference images.", permanent=True)
        # A presigned URL when storage gives one; else a data: URI (fal decodes it; Replicate takes
        # them for small files [NV]).
        uris = [reference.url_or_data_uri() for reference in references]
        field = model.image_field
        payload[field] = uris if field == "image_urls" else uris[0]
    if request.denoise is not None and capabilities.get("denoise_field"):
        payload[capabilities["denoise_field"]] = request.denoise
    return payload


def lora_inputs(model: ApiModel, request: GenerationRequest) -> dict[str, Any]:
    """The `loras` list (fal-ai/flux-lora: [{path, scale}], docs/providers.md §7.4) and the prompt
    led by the LoRAs' trigger words. A model whose schema takes no `loras` refuses, for good: run
    without the LoRA, it would quietly lose the character's trained likeness."""
    spec = schema_properties(model.input_schema).get("loras")
    if not isinstance(spec, dict):
        raise ProviderError(f"{model.key} cannot apply a LoRA.", permanent=True)
    limit = spec.get("maxItems")
    if isinstance(limit, int) and len(request.loras) > limit:
        raise ProviderError(f"{model.key} applies at most {limit} LoRAs at once.", permanent=True)
    return {
        "prompt": with_trigger_words(request.prompt, [lora.trigger_word for lora in request.loras]),
        "loras": [{"path": lora.path, "scale": lora.scale} for lora in request.loras],
    }
