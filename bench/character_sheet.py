"""A character sheet of 12 against one x4 job on the same model (issue 11): the sheet is twelve
requests, one per shot, fanned out under the provider's concurrency limit; the x4 is one request of
four images. Target: the sheet within 1.3x of the x4 job's wall.

The provider is the loopback simulator (tests/simulator) with fal-like latency L = 2 s; a real
Celery worker runs the jobs. Run with `make bench-sheet` (it starts PostgreSQL and Redis) or with
DATABASE_URL, REDIS_URL and CELERY_BROKER_URL pointing at them.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# First: it names the bench's own queue and sets Django up, and its timing helpers are the ones used here.
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from bench.character_jobs import LATENCY, RUNS, median_wall, timed
from generation.models import CreditAccount, JobKind
from generation.services.character_jobs import character_sheet_create
from generation.services.credits import credit_account
from generation.services.jobs import job_create
from studio.models import Character
from studio.services import upload_create
from tests.factories import png_bytes
from tests.simulator import Simulator
from tests.worker import start_worker, stop_worker

SHEET_IMAGES = 12


def measure(user, character, simulator, *, extra_env: dict[str, str]) -> tuple[float, object, float, object]:
    """Median walls of an x4 i2i job and of a sheet of 12 on the model the sheet picks, on a worker
    started with `extra_env`."""
    worker = start_worker(name="bench-sheet", extra_env={**simulator.worker_env(), **extra_env})
    try:
        sheet = lambda: character_sheet_create(user=user, character=character, images=SHEET_IMAGES)  # noqa: E731
        _, probe = timed(sheet)  # warm the worker's imports and connections; names the sheet's model
        x4 = lambda: job_create(  # noqa: E731
            user=user,
            model=probe.model,
            prompt="portrait",
            images=4,
            mode="i2i_modify",
            references=[character.locked_reference_id],
            character=character,
        )
        x4_wall, x4_job = median_wall(x4)
        sheet_wall, sheet_job = median_wall(sheet)
        assert sheet_job.kind == JobKind.CHARACTER_SHEET
    finally:
        stop_worker(worker)
    return x4_wall, x4_job, sheet_wall, sheet_job


def main() -> None:
    call_command("migrate", verbosity=0)
    call_command("seed_models", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{uuid.uuid4().hex[:6]}")
    CreditAccount.objects.filter(pk=credit_account(user).pk).update(balance=1000)

    with Simulator() as simulator, override_settings(**simulator.settings_overrides()):
        simulator.latency = LATENCY
        character = Character.objects.create(
            owner=user, name="Aria", appearance={"gender": "woman", "hair_color": "red", "eye_color": "green"}
        )
        character.locked_reference = upload_create(owner=user, data=png_bytes((512, 640)), character=character)
        character.save()
        runs = [
            ("default limits (fal: concurrency 8, 10 submits a second)", {}),
            # The same with fal's submit rate raised: shows what the 1 s rate window costs the 11th and 12th shot.
            ("FAL_RATE_PER_SECOND=20", {"FAL_RATE_PER_SECOND": "20"}),
        ]
        results = [(label, *measure(user, character, simulator, extra_env=env)) for label, env in runs]

    print(f"simulator latency L = {LATENCY:.1f} s per provider request; medians of {RUNS} runs; one run, one machine")
    for label, x4_wall, x4_job, sheet_wall, sheet_job in results:
        print(f"[{label}]")
        x4_requests = x4_job.requests.count()
        print(f"  x4 image-to-image job on {x4_job.model.display_name} ({x4_requests} request): {x4_wall:.3f} s")
        print(
            f"  character sheet of {SHEET_IMAGES} on {sheet_job.model.display_name} "
            f"({sheet_job.requests.count()} requests): {sheet_wall:.3f} s  "
            f"= {sheet_wall / x4_wall:.3f}x of the x4 job (target <= 1.30)"
        )


if __name__ == "__main__":
    main()
