"""Creating a job: validate, charge one credit, save, and enqueue only after the commit."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction

from generation import enqueue, events, modes
from generation.models import GenerationJob, ImageSlot, JobKind, JobMode, LoraTraining
from generation.prompts import (
    QUALITY_FAST,
    QUALITY_PRESETS,
    Shot,
    build_prompt,
    character_content_mode,
    generation_settings,
    negative_prompt_for,
    shot_prompts,
    with_trigger_words,
)
from generation.providers import get_provider, has_batch_lane
from generation.services.batches import batch_add_job
from generation.services.credits import OutOfCredits, credit_account, credits_charge
from generation.sheet import SHEET_MAX_IMAGES
from models_registry.models import ApiModel
from studio.models import Character, WorkspaceAsset
from studio.throttle import rate_limit

# A studio job asks for the prompt bar's counts (ApiModel.allowed_counts); base images and
# profile sets ask for their own, up to this many.
MAX_JOB_IMAGES = 10
# fal-ai/flux-lora takes 0-4 (docs/providers.md §7.4); past 2 a LoRA overcooks the image.
LORA_SCALE_MAX = 2.0


class JobRequestError(Exception):
    """A request the studio cannot run, with a message to show the user as is."""

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field


def job_create(
    *,
    user,
    model: ApiModel,
    prompt: str,
    images: int = 1,
    mode: str = JobMode.T2I,
    references: Sequence[uuid.UUID | str] = (),
    character: Character | None = None,
    reference_strength: float | None = None,
    enhance: bool = True,
    idempotency_key: uuid.UUID | None = None,
    kind: str = JobKind.STUDIO,
    params: dict[str, Any] | None = None,
    batch: bool = False,
    scene: str = "",
    outfit: str = "",
    style: str = "",
    quality: str = QUALITY_FAST,
    shots: Sequence[Shot] = (),
    lora: LoraTraining | None = None,
    lora_scale: float = 1.0,
) -> GenerationJob:
    """Create and enqueue a job, charging one credit whatever its image count.

    `batch`: the job joins the user's Batch Mode draft for the model (services.batches) instead
    of running now; only models with a batch lane take it.

    Raises JobRequestError (with a user-facing message) for anything it cannot run; in that case
    nothing is saved and nothing is charged. A repeated idempotency_key returns the first job.

    The prompt is built by generation.prompts.PromptBuilder from the character, `prompt`, scene,
    outfit and style. With `shots` (a profile picture set) each image is one shot with its own
    scene, outfit and direction, and `images` is the number of shots.

    `lora`: a ready training of the user's whose LoRA the model applies (ApiModel.takes_loras) at
    `lora_scale`, its trigger word leading the prompt (docs/providers.md §7.4).
    """
    if idempotency_key is not None:
        existing = GenerationJob.objects.filter(owner=user, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing

    prompt = (prompt or "").strip()
    if mode not in JobMode.values:
        raise JobRequestError("Unknown generation mode.", code="bad_mode", field="mode")
    rules = modes.rules_for(mode)
    if not prompt and rules.prompt_required and not shots:
        raise JobRequestError("Write a prompt first.", code="prompt_required", field="prompt")
    if not model.is_active:
        raise JobRequestError(f"{model.display_name} is not available right now.", code="model_inactive", field="model")
    provider = get_provider(model)
    if not provider.is_configured():
        hint = provider.configuration_hint()
        raise JobRequestError(
            f"{model.display_name} is not set up on this server. {hint}".strip(),
            code="model_unconfigured",
            field="model",
        )
    if not model.supports(rules.task):
        what = "image-to-image" if rules.uses_references else "text-to-image"
        raise JobRequestError(f"{model.display_name} cannot do {what}.", code="task_unsupported", field="model")
    if shots:
        images = len(shots)
    if kind == JobKind.STUDIO and images not in model.allowed_counts:
        counts = ", ".join(map(str, model.allowed_counts))
        raise JobRequestError(
            f"{model.display_name} can make {counts} images per job, not {images}.", code="bad_count", field="images"
        )
    if batch and not has_batch_lane(model):
        raise JobRequestError(f"{model.display_name} has no batch mode.", code="batch_unsupported", field="model")
    most = SHEET_MAX_IMAGES if kind == JobKind.CHARACTER_SHEET else MAX_JOB_IMAGES
    if not 1 <= images <= most:
        raise JobRequestError(f"A job makes 1 to {most} images.", code="bad_count", field="images")
    if character is not None and character.owner_id != user.pk:
        raise JobRequestError("That character does not exist.", code="character_not_found", field="character")

    if lora is not None:
        if lora.owner_id != user.pk or not lora.is_ready:
            raise JobRequestError("That LoRA is not ready.", code="lora_not_ready", field="lora")
        if not model.takes_loras:
            raise JobRequestError(
                f"{model.display_name} cannot apply a LoRA: choose a LoRA model such as Flux LoRA.",
                code="lora_unsupported",
                field="model",
            )
        if not 0.0 <= float(lora_scale) <= LORA_SCALE_MAX:
            raise JobRequestError(
                f"The LoRA's strength is between 0 and {LORA_SCALE_MAX:g}.", code="bad_lora_scale", field="lora_scale"
            )

    reference_ids = [str(r) for r in references if r]
    if not rules.uses_references and reference_ids:
        raise JobRequestError(
            "Text-to-image takes no reference image.", code="unexpected_reference", field="references"
        )
    if rules.uses_references and not reference_ids:
        raise JobRequestError("Choose a reference image first.", code="reference_required", field="references")
    if len(reference_ids) > 1 and not model.supports("i2i_multi"):
        # The bar says so too: a second reference only reaches models that take several.
        reference_ids = reference_ids[:1]
    assets = _owned_assets(user, reference_ids)

    job_params: dict[str, Any] = dict(params or {})
    if rules.uses_references:
        strength = rules.default_strength if reference_strength is None else float(reference_strength)
        if not 0.0 <= strength <= 1.0:
            raise JobRequestError("Reference strength must be between 0 and 1.", code="bad_strength", field="strength")
        job_params["reference_strength"] = strength
        job_params["denoise"] = modes.denoise_for(mode, strength)
    enhance = modes.enhancement_for(mode, enhance)
    job_params["enhance"] = enhance
    job_params.update(generation_settings(mode=mode, quality=quality))
    job_params["quality"] = quality if quality in QUALITY_PRESETS else QUALITY_FAST

    parts = {"scene": scene, "outfit": outfit, "style": style}
    final_prompt = build_prompt(prompt=prompt, mode=mode, character=character, enhance=enhance, **parts)
    if shots:
        job_params["shots"] = shot_prompts(
            shots, prompt=prompt, mode=mode, character=character, enhance=enhance, **parts
        )
        final_prompt = "\n".join(f"{s['name']}: {s['prompt']}" for s in job_params["shots"])
    elif any(parts.values()):
        job_params["prompt_parts"] = {k: v for k, v in parts.items() if v}
    if lora is not None:
        final_prompt = with_trigger_words(final_prompt, [lora.trigger_word])
        job_params["lora"] = {
            "training": str(lora.pk),
            "scale": float(lora_scale),
            "trigger_word": lora.trigger_word,
            "character": lora.character.name,
        }
    job_params.setdefault("seed", random.randrange(2**31))

    rate_limit(user=user, action="job", error=JobRequestError)
    account = credit_account(user)
    try:
        with transaction.atomic():
            job = GenerationJob.objects.create(
                owner=user,
                character=character,
                model=model,
                kind=kind,
                mode=mode,
                prompt=prompt,
                final_prompt=final_prompt,
                negative_prompt=negative_prompt_for(
                    model=model, mode=mode, content_mode=character_content_mode(character)
                ),
                params=job_params,
                references=[{"asset": str(a.id)} for a in assets],
                images_requested=images,
                idempotency_key=idempotency_key,
                provider=model.provider,
                credits_charged=1,
            )
            credits_charge(account=account, job=job)
            ImageSlot.objects.bulk_create(ImageSlot(job=job, index=i) for i in range(images))
            if batch:
                batch_add_job(job=job)
            else:
                enqueue.dispatch(job.id)
    except OutOfCredits as exc:
        raise JobRequestError(str(exc), code="out_of_credits") from exc
    except IntegrityError:
        # The same idempotency key committed first in a concurrent request: that job stands.
        if idempotency_key is not None:
            existing = GenerationJob.objects.filter(owner=user, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing
        raise
    # After the commit: a job rolled back was neither created nor charged.
    events.job_created(job)
    events.credits("charged", job.credits_charged, job_id=job.pk)
    return job


def _owned_assets(user, reference_ids: list[str]) -> list[WorkspaceAsset]:
    if not reference_ids:
        return []
    try:
        ids = [uuid.UUID(r) for r in reference_ids]
    except ValueError as exc:
        raise JobRequestError("That reference image does not exist.", code="reference_not_found") from exc
    found = {a.id: a for a in WorkspaceAsset.objects.filter(owner=user, id__in=ids, kind="image")}
    if len(found) != len(set(ids)):
        raise JobRequestError("That reference image does not exist.", code="reference_not_found", field="references")
    return [found[i] for i in ids]
