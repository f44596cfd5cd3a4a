"""Small builders for test data (plain functions: the models are simple enough)."""

from __future__ import annotations

import io
import time
from decimal import Decimal

from PIL import Image

from generation.models import FINAL_JOB_STATUSES, GenerationJob
from models_registry.models import ApiModel


def offline_model(key: str = "offline/portrait-engine", *, max_images: int | None = None, **kwargs) -> ApiModel:
    """The offline engine's model; max_images sets the per-request maximum (1 = fan-out)."""
    capabilities = {"offline_preview": True, "seed": True, "denoise_field": "strength"}
    if max_images is not None:
        capabilities["max_images"] = max_images
    defaults = {
        "display_name": "Offline",
        "provider": "offline",
        "tasks": ["t2i", "i2i", "i2i_multi"],
        "input_schema": {"properties": {"num_images": {"type": "integer", "maximum": 4}, "image_urls": {}}},
        "capabilities": capabilities,
        "price_per_image": Decimal("0.0100"),
    }
    defaults.update(kwargs)
    model, _ = ApiModel.objects.update_or_create(key=key, defaults=defaults)
    return model


def seeded_model(key: str, **overrides) -> ApiModel:
    """The registry row `key` as models_registry.seed seeds it, with `overrides`."""
    from models_registry.seed import MODELS

    row = {**next(m for m in MODELS if m["key"] == key), **overrides}
    fields = {k: v for k, v in row.items() if k in {f.name for f in ApiModel._meta.fields} and k != "key"}
    model, _ = ApiModel.objects.update_or_create(key=key, defaults=fields)
    return model


def png_bytes(size: tuple[int, int] = (64, 80), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for_job(
    job: GenerationJob, *, timeout: float = 30.0, statuses=FINAL_JOB_STATUSES, interval: float = 0.05
) -> GenerationJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in statuses:
            return job
        time.sleep(interval)
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout}s")
