"""The Celery app's worker keeps its database connections across tasks (settings.CELERY_DB_REUSE_MAX)."""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import override_settings

from generation.models import JobStatus
from generation.services import runs
from generation.services.jobs import job_create
from tests.factories import offline_model, wait_for_job
from tests.worker import sessions_opened

pytestmark = pytest.mark.worker

THREADS = 4


@pytest.fixture
def reusing_worker(transactional_db, django_db_blocker):
    """A worker of its own, on its own queue, with the production setting of DB_CONN_MAX_AGE."""
    from studio.celery import app
    from tests.worker import start_worker, stop_worker

    queue = f"reuse-{uuid.uuid4().hex[:8]}"
    previous = app.conf.CELERY_TASK_DEFAULT_QUEUE
    app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue):
            process = start_worker(
                name="reuse",
                concurrency=THREADS,
                extra_env={"CELERY_DEFAULT_QUEUE": queue, "DB_CONN_MAX_AGE": "600"},
            )
            yield process
            stop_worker(process)
    finally:
        app.conf.CELERY_TASK_DEFAULT_QUEUE = previous


def test_a_worker_reuses_its_connections_across_tasks(reusing_worker, alice):
    model = offline_model()
    before = sessions_opened()

    jobs = [
        job_create(user=alice, model=model, prompt=f"portrait {n}", images=4, params={"simulate": {"latency": 0}})
        for n in range(6)
    ]
    for job in jobs:
        assert wait_for_job(job).status == JobStatus.SUCCEEDED

    # Six x4 jobs are about 24 tasks and 24 stored images: Celery's default would open a
    # connection before and after each task and the store threads one per image. Kept, each task
    # thread and each store thread opens one.
    assert sessions_opened() - before <= THREADS + runs.STORE_THREADS


def test_a_burst_of_jobs_is_taken_without_waiting_for_a_timer(reusing_worker, alice):
    model = offline_model()
    started = time.monotonic()
    jobs = [
        job_create(user=alice, model=model, prompt=f"portrait {n}", images=4, params={"simulate": {"latency": 0}})
        for n in range(8)
    ]
    for job in jobs:
        assert wait_for_job(job).status == JobStatus.SUCCEEDED

    # Acks on pool threads do not wake the worker's loop: at its prefetch limit it took the next
    # message only when kombu's 10 s timer fired, and this burst took tens of seconds.
    assert time.monotonic() - started < 6
