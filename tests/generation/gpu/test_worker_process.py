"""The GPU worker as it runs in production: a `celery worker -Q <gpu> --pool solo` process that loads
the tiny pipeline from LOCAL_SDXL_MODEL, beats, and batches jobs from the session's ordinary worker.
Stopping it routes the next job's images to the next model of the chain."""

from __future__ import annotations

import time

import pytest
from django.conf import settings as django_settings

from generation import heartbeat
from generation.models import JobStatus, SlotStatus
from generation.services.jobs import job_create
from models_registry.models import FallbackChain, FallbackEntry
from studio.models import WorkspaceAsset
from tests.factories import offline_model, wait_for_job
from tests.generation.gpu.test_batches import local_model
from tests.worker import start_worker, stop_worker

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("celery_worker")]


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def create(user, model, images=1, prompt="a knight"):
    return job_create(
        user=user, model=model, prompt=prompt, images=images, params={"width": 64, "height": 64, "steps": 2}
    )


def test_the_gpu_worker_runs_jobs_and_routing_moves_past_it_when_it_stops(
    transactional_db, alice, tiny_model_dir, settings
):
    settings.LOCAL_SDXL_MODEL = tiny_model_dir  # the web offers the local model while its worker is down
    model = local_model(max_images=4)
    chain = FallbackChain.objects.create(task="t2i")
    FallbackEntry.objects.create(chain=chain, model=model, position=0)
    FallbackEntry.objects.create(chain=chain, model=offline_model(), position=1)
    gpu = start_worker(
        name="gpu", queues=django_settings.GPU_QUEUE, pool="solo", extra_env={"LOCAL_SDXL_MODEL": tiny_model_dir}
    )
    try:
        (worker,) = wait_for(heartbeat.gpu_workers)
        assert worker.details["device"] == "cpu" and worker.queues == (django_settings.GPU_QUEUE,)
        jobs = [create(alice, model, images=n, prompt=f"knight {n}") for n in (1, 2, 1)]
        for job in jobs:
            job = wait_for_job(job, timeout=60)
            assert job.status == JobStatus.SUCCEEDED and job.provider == "local" and not job.fallback_attempted
            assert WorkspaceAsset.objects.filter(job=job).count() == job.images_requested
    finally:
        stop_worker(gpu)

    assert heartbeat.gpu_workers() == []  # a stopped worker leaves at once; a killed one within seconds
    job = wait_for_job(create(alice, model, images=2), timeout=60)
    assert job.status == JobStatus.SUCCEEDED and job.fallback_attempted and job.provider == "offline"
    assert job.slots.filter(status=SlotStatus.SUCCEEDED).count() == 2
