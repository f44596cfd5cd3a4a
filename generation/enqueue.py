"""The one place that puts pipeline steps on the queue, each after its transaction commits.

Services decide what runs next and call these (or return a runs.Next or a sweeper.SweepPlan that
generation/tasks.py hands here). Messages go by task name through the Celery app, so nothing in
the project imports generation.tasks (Celery's autodiscovery loads it) and services and tasks
never import each other. `send` is the seam tests patch.

Outside a transaction (a task's follow-up) on_commit runs at once. Every countdown comes from
runs._countdown, capped by settings.PIPELINE_MAX_COUNTDOWN far below the broker's visibility
timeout. The tasks' acks_late are the tasks' own. Dispatch, submit, cancel and the sweeps go to
the app's default queue; the steps that bring images back (IMAGE_TASKS: a poll or webhook that
finds them ready downloads, decodes, thumbnails and stores them) go to its image queue
(generation.queues.image_queue), so a burst of image work never holds up the dispatch of new jobs
on a worker that consumes only the default queue (the Procfile's `worker`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import transaction

from generation.queues import image_queue
from studio.celery import app

if TYPE_CHECKING:
    from generation.services.batches import BatchSweep
    from generation.services.runs import Next
    from generation.services.sweeper import SweepPlan
    from generation.services.trainings import TrainingSweep

DISPATCH = "generation.tasks.job_dispatch_task"
SUBMIT = "generation.tasks.request_submit_task"
POLL = "generation.tasks.request_poll_task"
WEBHOOK = "generation.tasks.request_webhook_task"
RECOVER = "generation.tasks.request_recover_task"
CANCEL = "generation.tasks.request_cancel_task"
BATCH_SUBMIT = "generation.tasks.batch_submit_task"
BATCH_POLL = "generation.tasks.batch_poll_task"
BATCH_RECOVER = "generation.tasks.batch_recover_task"
BATCH_CANCEL = "generation.tasks.batch_cancel_task"
# Runs on the GPU worker only: settings.CELERY_TASK_ROUTES sends it to the "gpu" queue.
GPU_BATCH = "generation.tasks.gpu_batch_task"

# The steps whose work is images: sent to the image queue (generation.queues.image_queue).
IMAGE_TASKS = frozenset({POLL, WEBHOOK, RECOVER, BATCH_POLL})

# The step a runs.Next asks for, by its action; "done" asks for nothing.
_FOLLOW_UPS = {"submit": SUBMIT, "poll": POLL}


def send(task: str, object_id: str, *, countdown: float | None = None) -> None:
    """Publish one message now; called at commit by the functions below."""
    # The default queue is read from the app at each send: tests and benches switch it.
    queue = image_queue(app.conf.task_default_queue) if task in IMAGE_TASKS else None
    app.send_task(task, (object_id,), countdown=countdown, ignore_result=True, queue=queue)


def after_commit(task: str, object_id: uuid.UUID | str, **options: float) -> None:
    """Send `task` for `object_id` once the current transaction commits (at once outside one)."""
    object_id = str(object_id)
    transaction.on_commit(lambda: send(task, object_id, **options))


def dispatch(job_id: uuid.UUID | str) -> None:
    after_commit(DISPATCH, job_id)


def submit(request_ids: Iterable[uuid.UUID | str]) -> None:
    for request_id in request_ids:
        after_commit(SUBMIT, request_id)


def webhook_poll(request_id: uuid.UUID | str) -> None:
    after_commit(WEBHOOK, request_id)


def provider_cancel(request_id: uuid.UUID | str) -> None:
    after_commit(CANCEL, request_id)


def gpu_batch(request_id: uuid.UUID | str) -> None:
    """Ask the GPU worker to run a local request (with whatever else can share its call)."""
    after_commit(GPU_BATCH, request_id)


def follow(request_id: uuid.UUID | str, step: Next) -> None:
    """Schedule what a step answered: submit again or poll after its countdown, or nothing."""
    _follow(_FOLLOW_UPS, request_id, step)


def _follow(tasks: dict[str, str], object_id: uuid.UUID | str, step: Next) -> None:
    task = tasks.get(step.action)
    if task is not None:
        after_commit(task, object_id, countdown=step.countdown)


def sweep(plan: SweepPlan) -> None:
    """Re-drive what the sweeper found stuck."""
    for job_id in plan.dispatch:
        after_commit(DISPATCH, job_id)
    for task, request_ids in ((SUBMIT, plan.submit), (POLL, plan.poll), (RECOVER, plan.recover)):
        for request_id in request_ids:
            after_commit(task, request_id)


def batch_submit(batch_id: uuid.UUID | str) -> None:
    after_commit(BATCH_SUBMIT, batch_id)


def batch_cancel(batch_id: uuid.UUID | str) -> None:
    after_commit(BATCH_CANCEL, batch_id)


def batch_follow(batch_id: uuid.UUID | str, countdown: float | None) -> None:
    """Poll the batch after `countdown` (services.batches keeps it below PIPELINE_MAX_COUNTDOWN);
    None: beat finds it when due."""
    if countdown is not None:
        after_commit(BATCH_POLL, batch_id, countdown=countdown)


def batches_sweep(plan: BatchSweep) -> None:
    for task, batch_ids in ((BATCH_SUBMIT, plan.submit), (BATCH_POLL, plan.poll), (BATCH_RECOVER, plan.recover)):
        for batch_id in batch_ids:
            after_commit(task, batch_id)


TRAINING_SUBMIT = "generation.tasks.training_submit_task"
TRAINING_POLL = "generation.tasks.training_poll_task"
TRAINING_CANCEL = "generation.tasks.training_cancel_task"
TRAINING_WEBHOOK = "generation.tasks.training_webhook_task"
_TRAINING_FOLLOW_UPS = {"submit": TRAINING_SUBMIT, "poll": TRAINING_POLL}


def training_submit(training_id: uuid.UUID | str) -> None:
    after_commit(TRAINING_SUBMIT, training_id)


def training_webhook_poll(training_id: uuid.UUID | str) -> None:
    after_commit(TRAINING_WEBHOOK, training_id)


def training_cancel(training_id: uuid.UUID | str) -> None:
    after_commit(TRAINING_CANCEL, training_id)


def training_follow(training_id: uuid.UUID | str, step: Next) -> None:
    """A training's next step (services.trainings): submit again or poll after its countdown."""
    _follow(_TRAINING_FOLLOW_UPS, training_id, step)


def trainings_sweep(plan: TrainingSweep) -> None:
    for task, ids in ((TRAINING_SUBMIT, plan.submit), (TRAINING_POLL, plan.poll)):
        for training_id in ids:
            after_commit(task, training_id)
