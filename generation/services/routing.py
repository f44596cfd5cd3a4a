"""Routing: provider health, and the next model of a task's fallback chain when a provider fails.

Health is shared by every process through the Django cache: a probe result is kept briefly, and a
provider the pipeline saw failing (connection errors, 5xx after retries) is marked unhealthy for
longer, so the next jobs go straight to the next model instead of waiting out the same retries.
A provider staff paused (models_registry.ProviderPause, from the operations page or admin) is
skipped the same way until it is resumed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import transaction

from generation import modes
from generation.models import GenerationJob, JobKind
from generation.providers import adapter_class
from generation.providers.kinds import PROVIDER_KINDS
from models_registry.models import ApiModel, FallbackChain, ProviderPause, Task

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

    from generation.providers.base import Provider

logger = logging.getLogger(__name__)

# How long a health probe's answer is trusted.
HEALTH_CACHE_SECONDS = 30
# How long a provider that kept failing is skipped before it is probed again.
UNHEALTHY_SECONDS = 120

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
NOT_CONFIGURED = "not configured"
PAUSED = "paused"

# The paused kinds are read on every submit and every prompt bar: one cached read for all kinds,
# cleared at once by a pause or resume here, and at worst this stale in a process that missed it.
PAUSES_CACHE_KEY = "provider-pauses"
PAUSES_CACHE_SECONDS = 5
REASON_MAX_LENGTH = ProviderPause._meta.get_field("reason").max_length


def _health_key(kind: str) -> str:
    return f"provider-health:{kind}"


def _adapter(kind: str) -> Provider:
    # Health and configuration are per provider, not per model: an unsaved model stands in.
    return adapter_class(kind)(ApiModel(key="", provider=kind))


def provider_configured(kind: str) -> bool:
    return kind in PROVIDER_KINDS and _adapter(kind).is_configured()


def provider_healthy(kind: str) -> bool:
    """Whether the provider answers, from the cache or a fresh probe (its adapter's health_check)."""
    cached = cache.get(_health_key(kind))
    if cached is not None:
        return bool(cached)
    if kind not in PROVIDER_KINDS:
        return False
    try:
        healthy = bool(_adapter(kind).health_check())
    except Exception:  # a probe must never break routing: a crashing probe means unhealthy
        logger.exception("health check of provider %s crashed", kind)
        healthy = False
    cache.set(_health_key(kind), healthy, timeout=HEALTH_CACHE_SECONDS)
    return healthy


def provider_mark_unhealthy(kind: str, *, seconds: int = UNHEALTHY_SECONDS) -> None:
    cache.set(_health_key(kind), False, timeout=seconds)
    logger.warning("provider %s marked unhealthy for %ss", kind, seconds)


def paused_providers() -> dict[str, str]:
    """The kinds staff paused, each with its reason ("" when none was given)."""
    pauses = cache.get(PAUSES_CACHE_KEY)
    if pauses is None:
        pauses = dict(ProviderPause.objects.values_list("kind", "reason"))
        cache.set(PAUSES_CACHE_KEY, pauses, timeout=PAUSES_CACHE_SECONDS)
    return pauses


def provider_paused(kind: str) -> bool:
    return kind in paused_providers()


def provider_pauses_changed() -> None:
    """Forget the cached pauses, now and again at commit (a read inside the transaction may have
    cached the old rows meanwhile)."""
    cache.delete(PAUSES_CACHE_KEY)
    transaction.on_commit(lambda: cache.delete(PAUSES_CACHE_KEY))


def provider_pause(kind: str, *, reason: str = "", by: AbstractBaseUser | None = None) -> ProviderPause:
    """Pause a provider kind: new work routes away from it; submitted requests finish normally.
    Pausing a paused kind updates its reason. Raises ValueError for a kind that does not exist."""
    if kind not in PROVIDER_KINDS:
        raise ValueError(f"Unknown provider: {kind!r}.")
    reason = reason.strip()
    if len(reason) > REASON_MAX_LENGTH:
        raise ValueError(f"The reason is too long: at most {REASON_MAX_LENGTH} characters.")
    pause, _ = ProviderPause.objects.update_or_create(kind=kind, defaults={"reason": reason, "paused_by": by})
    provider_pauses_changed()
    logger.warning("provider %s paused by %s: %s", kind, by, reason or "no reason given")
    return pause


def provider_resume(kind: str) -> bool:
    """Resume a paused provider kind; False when it was not paused."""
    deleted, _ = ProviderPause.objects.filter(kind=kind).delete()
    provider_pauses_changed()
    if deleted:
        logger.warning("provider %s resumed", kind)
    return bool(deleted)


def provider_status(kind: str) -> str:
    """The state staff see in admin and on the operations page: healthy, unhealthy, paused or not configured."""
    if not provider_configured(kind):
        return NOT_CONFIGURED
    if provider_paused(kind):
        return PAUSED
    return HEALTHY if provider_healthy(kind) else UNHEALTHY


def job_task(job: GenerationJob) -> str:
    """The registry task a job needs: i2i_multi when it carries two references, and for a character
    sheet, whose one reference is edited on the multi-reference edit models (their chain keeps a face)."""
    if job.kind == JobKind.CHARACTER_SHEET:
        return Task.I2I_MULTI
    return modes.registry_task(job.mode, references=len(job.references or []))


def tried_models(job: GenerationJob) -> list[str]:
    """Keys of the models that already failed this job's images (its own model is implied)."""
    return [str(key) for key in (job.params or {}).get("tried_models", [])]


def next_model(*, job: GenerationJob, failed_model: ApiModel) -> ApiModel | None:
    """The next usable model of the chain for the job's task, or None when the chain is spent.

    The walk starts after the failed model's place in the chain and wraps around, so staff order
    decides and a model picked by the user outside the chain still reaches all of it. Models
    already tried for this job, inactive or unconfigured ones, unhealthy or paused providers and models that
    cannot do the task (or take fewer references than the job has) are skipped.
    """
    task = job_task(job)
    chain = FallbackChain.objects.filter(task=task).first()
    if chain is None:
        return None
    models = chain.ordered_models()
    keys = [model.key for model in models]
    start = keys.index(failed_model.key) + 1 if failed_model.key in keys else 0
    skip = {job.model.key, failed_model.key, *tried_models(job)}
    references = len({str(r.get("asset")) for r in job.references or []})
    for model in models[start:] + models[:start]:
        if model.key in skip or not model.is_active or not model.supports(task):
            continue
        limit = (model.capabilities or {}).get("max_reference_images")
        if limit and references > limit:
            continue
        if not provider_configured(model.provider) or provider_paused(model.provider):
            continue
        if not provider_healthy(model.provider):
            continue
        return model
    return None


def fastest_model(task: str, *, images: int) -> ApiModel | None:
    """The model a character's own jobs (base images, profile sets) run on: the first usable model of
    the task's fallback chain (staff order it fastest first, the seed puts fal's Flash first) that
    makes all `images` in one request, else the first usable one at all, else the offline engine.

    None only when not even the offline engine is active.
    """
    chain = FallbackChain.objects.filter(task=task).first()
    usable = [
        model
        for model in (chain.ordered_models() if chain else [])
        if model.is_active
        and model.supports(task)
        and provider_configured(model.provider)
        and not provider_paused(model.provider)
        and provider_healthy(model.provider)
    ]
    one_request = [model for model in usable if model.max_images >= images]
    if one_request or usable:
        return (one_request or usable)[0]
    offline = ApiModel.objects.active().filter(provider="offline")
    return next((model for model in offline if model.supports(task)), None)
