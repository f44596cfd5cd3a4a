"""Batch latency: how much longer x4 takes than x1, natively and fanned out, and against the
product notes' baseline (one image at a time with a fixed 500 ms pause).

Run with `make bench` (it starts PostgreSQL and Redis) or with DATABASE_URL, REDIS_URL and
CELERY_BROKER_URL pointing at them. A real Celery worker runs the jobs; the offline engine's
latency is fixed at 1 s, so every figure is a ratio of walls measured in this one run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["CELERY_DEFAULT_QUEUE"] = f"bench-{uuid.uuid4().hex[:8]}"

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from generation.models import CreditAccount  # noqa: E402
from generation.providers.base import GenerationRequest  # noqa: E402
from generation.providers.offline import OfflineEngine  # noqa: E402
from generation.services.credits import credit_account  # noqa: E402
from generation.services.jobs import job_create  # noqa: E402
from generation.services.store import slot_store  # noqa: E402
from tests.factories import offline_model, wait_for_job  # noqa: E402
from tests.worker import start_worker, stop_worker  # noqa: E402

LATENCY = 1.0
RUNS = 3


def timed_job(user, model, images: int) -> float:
    start = time.perf_counter()
    job = job_create(
        user=user,
        model=model,
        prompt="anime girl with silver hair",
        images=images,
        params={"simulate": {"latency": LATENCY}},
    )
    job = wait_for_job(job, timeout=60, interval=0.01)
    wall = time.perf_counter() - start
    assert job.status == "succeeded", job.errors
    return wall


def sequential_baseline(user, model, images: int) -> float:
    """The product notes' loop: one request per image, one after another, 500 ms apart."""
    from generation.models import GenerationJob, ImageSlot

    engine = OfflineEngine(model)
    job = GenerationJob.objects.create(owner=user, model=model, prompt="baseline", images_requested=images)
    start = time.perf_counter()
    for index in range(images):
        slot = ImageSlot.objects.create(job=job, index=index)
        time.sleep(LATENCY)  # the provider's latency, as the offline engine simulates it
        result = engine._render(
            GenerationRequest(
                prompt="anime girl",
                num_images=1,
                batch_indexes=[index],
                params={"simulate": {"latency": 0}},
                request_id=str(job.pk),
            )
        )
        slot_store(job=job, slot=slot, image=result.images[0])
        if index < images - 1:
            time.sleep(0.5)
    return time.perf_counter() - start


def median(fn, *args) -> float:
    return statistics.median(fn(*args) for _ in range(RUNS))


def main() -> None:
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{uuid.uuid4().hex[:6]}")
    CreditAccount.objects.filter(pk=credit_account(user).pk).update(balance=1000)
    native = offline_model("bench/native")
    fanout = offline_model("bench/fanout", max_images=1, input_schema={"properties": {}})

    worker = start_worker(name="bench")
    try:
        timed_job(user, native, 1)  # warm the worker's imports and connections
        native_x1, native_x4 = median(timed_job, user, native, 1), median(timed_job, user, native, 4)
        fanout_x1, fanout_x4 = median(timed_job, user, fanout, 1), median(timed_job, user, fanout, 4)
    finally:
        stop_worker(worker)
    baseline_x4 = sequential_baseline(user, fanout, 4)

    print(f"provider latency fixed at {LATENCY:.1f} s; medians of {RUNS} runs; one run, one machine")
    rows = [
        ("native ", native_x1, native_x4, 1.15),
        ("fan-out", fanout_x1, fanout_x4, 1.30),
    ]
    for label, x1, x4, target in rows:
        print(f"{label} x1 {x1:.3f} s  x4 {x4:.3f} s  wall(x4)/wall(x1) = {x4 / x1:.3f}  (target <= {target:.2f})")
    speedup = baseline_x4 / fanout_x4
    print(f"sequential baseline x4 {baseline_x4:.3f} s  fan-out x4 is {speedup:.2f}x faster  (target >= 3x)")


if __name__ == "__main__":
    main()
