"""Celery tasks: thin, by id, idempotent. The services decide; generation/enqueue.py schedules.

All tasks use acks_late with reject-on-worker-lost (settings), so a killed worker's task comes
back. Nothing in the project imports this module: Celery's autodiscovery loads it, and
generation/enqueue.py sends to these tasks by name.
"""

from __future__ import annotations

from celery import shared_task

from generation import enqueue
from generation.gpu import startup  # noqa: F401 - connects the GPU worker's start to worker_ready
from generation.services import batches, runs, sweeper, trainings
from generation.services.control import request_provider_cancel

_TASK = {"ignore_result": True, "acks_late": True, "reject_on_worker_lost": True}


@shared_task(**_TASK)
def job_dispatch_task(job_id: str) -> None:
    request_ids = runs.job_dispatch(job_id)
    # The first request is sent within this task (one broker round trip less before the provider
    # starts); the others go out first, as tasks of their own, so they run meanwhile.
    enqueue.submit(request_ids[1:])
    if request_ids:
        enqueue.follow(request_ids[0], runs.request_submit(request_ids[0]))


@shared_task(**_TASK)
def request_submit_task(request_id: str) -> None:
    enqueue.follow(request_id, runs.request_submit(request_id))


@shared_task(**_TASK)
def request_poll_task(request_id: str) -> None:
    enqueue.follow(request_id, runs.request_poll(request_id))


@shared_task(**_TASK)
def request_webhook_task(request_id: str) -> None:
    # A webhook said the request ended: look now. The regular poll chain is still scheduled, so
    # a PENDING answer schedules nothing here (that would start a second chain).
    runs.request_poll(request_id, now_anyway=True)


@shared_task(**_TASK)
def request_recover_task(request_id: str) -> None:
    enqueue.follow(request_id, runs.request_recover(request_id))


@shared_task(**_TASK)
def request_cancel_task(request_id: str) -> None:
    request_provider_cancel(request_id)


@shared_task(**_TASK)
def jobs_sweep_task() -> None:
    enqueue.sweep(sweeper.jobs_sweep())
    # Trainings share the sweeper's beat: a lost message or a dead worker costs a sweep, not a training.
    enqueue.trainings_sweep(trainings.trainings_sweep())


@shared_task(**_TASK)
def training_submit_task(training_id: str) -> None:
    enqueue.training_follow(training_id, trainings.training_submit(training_id))


@shared_task(**_TASK)
def training_poll_task(training_id: str) -> None:
    enqueue.training_follow(training_id, trainings.training_poll(training_id))


@shared_task(**_TASK)
def training_webhook_task(training_id: str) -> None:
    # The webhook said it ended: look now. The poll chain is still scheduled, so a PENDING answer
    # schedules nothing here (that would start a second chain).
    trainings.training_poll(training_id, now_anyway=True)


@shared_task(**_TASK)
def training_cancel_task(training_id: str) -> None:
    trainings.training_provider_cancel(training_id)


@shared_task(**_TASK)
def batch_submit_task(batch_id: str) -> None:
    enqueue.batch_follow(batch_id, batches.batch_submit(batch_id))


@shared_task(**_TASK)
def batch_poll_task(batch_id: str) -> None:
    enqueue.batch_follow(batch_id, batches.batch_poll(batch_id))


@shared_task(**_TASK)
def batch_recover_task(batch_id: str) -> None:
    enqueue.batch_follow(batch_id, batches.batch_recover(batch_id))


@shared_task(**_TASK)
def batch_cancel_task(batch_id: str) -> None:
    enqueue.batch_follow(batch_id, batches.batch_provider_cancel(batch_id))


@shared_task(**_TASK)
def batches_sweep_task() -> None:
    enqueue.batches_sweep(batches.batches_sweep())


@shared_task(**_TASK)
def gpu_batch_task(request_id: str) -> None:
    # Routed to the "gpu" queue (settings.CELERY_TASK_ROUTES): only the GPU worker imports torch.
    from generation.gpu import batches as gpu_batches

    gpu_batches.run_batches(request_id)
