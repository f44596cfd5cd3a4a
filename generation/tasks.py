"""Celery tasks: thin, by id, idempotent. The services decide; these only schedule.

All tasks use acks_late with reject-on-worker-lost (settings), so a killed worker's task comes
back; every countdown they set is capped far below the broker's visibility timeout.
"""

from __future__ import annotations

from celery import shared_task

from generation.services import runs, sweeper
from generation.services.control import request_provider_cancel

_TASK = {"ignore_result": True, "acks_late": True, "reject_on_worker_lost": True}


@shared_task(**_TASK)
def job_dispatch_task(job_id: str) -> None:
    for request_id in runs.job_dispatch(job_id):
        request_submit_task.delay(str(request_id))


@shared_task(**_TASK)
def request_submit_task(request_id: str) -> None:
    _follow(request_id, runs.request_submit(request_id))


@shared_task(**_TASK)
def request_poll_task(request_id: str) -> None:
    _follow(request_id, runs.request_poll(request_id))


@shared_task(**_TASK)
def request_webhook_task(request_id: str) -> None:
    # A webhook said the request ended: look now. The regular poll chain is still scheduled, so
    # a PENDING answer schedules nothing here (that would start a second chain).
    runs.request_poll(request_id, now_anyway=True)


@shared_task(**_TASK)
def request_recover_task(request_id: str) -> None:
    _follow(request_id, runs.request_recover(request_id))


@shared_task(**_TASK)
def request_cancel_task(request_id: str) -> None:
    request_provider_cancel(request_id)


@shared_task(**_TASK)
def jobs_sweep_task() -> None:
    plan = sweeper.jobs_sweep()
    for job_id in plan.dispatch:
        job_dispatch_task.delay(job_id)
    for request_id in plan.submit:
        request_submit_task.delay(request_id)
    for request_id in plan.poll:
        request_poll_task.delay(request_id)
    for request_id in plan.recover:
        request_recover_task.delay(request_id)


def _follow(request_id: str, step: runs.Next) -> None:
    if step.action == "submit":
        request_submit_task.apply_async((request_id,), countdown=step.countdown)
    elif step.action == "poll":
        request_poll_task.apply_async((request_id,), countdown=step.countdown)
