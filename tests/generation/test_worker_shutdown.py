"""A worker stopped with SIGTERM (a deploy, a scale-down) loses no work.

SIGTERM is Celery's warm shutdown: the worker stops taking messages, finishes the tasks it is
running and hands back at once the messages it holds for later (a poll's countdown), so the next
worker carries the job on. Real worker processes, Redis and PostgreSQL, each test on a queue of its
own so the session's shared worker never takes its messages.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from contextlib import suppress

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from generation.models import CreditLedger, GenerationJob, JobStatus, ProviderRequest
from generation.queues import image_queue
from generation.services.jobs import job_create
from studio.celery import app as celery_app
from studio.models import WorkspaceAsset
from tests.factories import offline_model, wait_for_job
from tests.worker import start_worker, stop_worker

IMAGES = 4


@pytest.fixture
def own_queue():
    """This test's jobs and the workers it starts meet on a queue nobody else consumes."""
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-shutdown-{uuid.uuid4().hex[:6]}"
    previous = celery_app.conf.task_default_queue
    # The app reads the CELERY_-namespaced key first (as tests/e2e/conftest.py notes).
    celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue):
            yield queue
    finally:
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = previous
        for name in (queue, image_queue(queue)):
            with suppress(Exception), celery_app.connection_for_write() as conn:
                conn.default_channel.queue_purge(name)


def worker_on(queue: str, name: str):
    # The worker sends each job's next steps to its default queue: the same one.
    return start_worker(name=name, concurrency=4, extra_env={"CELERY_DEFAULT_QUEUE": queue})


def sigterm(process) -> None:
    os.killpg(process.pid, signal.SIGTERM)


def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def messages_waiting(queue: str) -> int:
    with celery_app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def start_job(user, latency: float) -> tuple[GenerationJob, ProviderRequest]:
    """An x4 job on the offline engine, once its request is submitted and its poll planned: the render
    is ready after `latency` s and the request's poll waits on a worker until then."""
    job = job_create(
        user=user,
        model=offline_model(),
        prompt="anime girl with silver hair",
        images=IMAGES,
        params={"simulate": {"latency": latency}},
    )
    # The submit's task is done with the row once its first poll is planned (due_at is cleared on
    # sending and set again then): the test may lock the row only after that.
    submitted = ProviderRequest.objects.filter(job=job, status="submitted", due_at__isnull=False)
    until(lambda: submitted.exclude(external_id="").exists())
    return job, ProviderRequest.objects.get(job=job)


def assert_finished_whole(job: GenerationJob) -> None:
    """Every image, each made once from one provider submit, and charged once."""
    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_count, job.failed_count) == (IMAGES, 0)
    indexes = list(WorkspaceAsset.objects.filter(job=job).order_by("batch_index").values_list("batch_index", flat=True))
    assert indexes == list(range(IMAGES))
    assert list(ProviderRequest.objects.filter(job=job).values_list("attempts", flat=True)) == [1]
    assert CreditLedger.objects.filter(job=job, kind="charge").count() == 1


def test_the_soft_shutdown_settings_reach_the_celery_app():
    assert celery_app.conf.worker_soft_shutdown_timeout == settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT > 0
    assert celery_app.conf.worker_enable_soft_shutdown_on_idle is settings.CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE


@pytest.mark.worker
def test_sigterm_hands_back_the_poll_it_holds_and_the_next_worker_finishes_the_job(transactional_db, alice, own_queue):
    first = worker_on(own_queue, "shutdown-first")
    try:
        job, _request = start_job(alice, latency=2)

        sigterm(first)
        assert first.wait(timeout=15) == 0  # a clean, warm shutdown
    finally:
        stop_worker(first)
    # The poll it held for its countdown is back on its queue (the image queue: polls bring the
    # images back), for whichever worker comes next.
    assert messages_waiting(image_queue(own_queue)) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.succeeded_count == 0

    second = worker_on(own_queue, "shutdown-second")
    try:
        job = wait_for_job(job, timeout=15)
    finally:
        stop_worker(second)
    assert_finished_whole(job)


def _waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        # Inside a transaction PostgreSQL shows one snapshot of pg_stat_activity unless told.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.worker
def test_sigterm_lets_the_task_that_runs_finish_first(transactional_db, alice, own_queue):
    worker = worker_on(own_queue, "shutdown-busy")
    try:
        job, request = start_job(alice, latency=0.5)
        with transaction.atomic():
            # Hold the request's row: the poll, due in 0.5 s, starts and then waits on it, running.
            ProviderRequest.objects.select_for_update().get(pk=request.pk)
            until(lambda: _waiting_on_a_lock() >= 1)

            sigterm(worker)
            time.sleep(1)
            assert worker.poll() is None  # still finishing the poll
        # The row is free: the poll renders and stores the images, then the worker leaves.
        assert worker.wait(timeout=15) == 0
    finally:
        stop_worker(worker)

    job.refresh_from_db()  # no other worker: the stopping one finished the job itself
    assert_finished_whole(job)
