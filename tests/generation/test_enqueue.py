from __future__ import annotations

import uuid
from unittest import mock

import pytest

from generation import enqueue, tasks
from generation.services import runs
from generation.services.sweeper import SweepPlan
from studio.celery import app

TASKS = [enqueue.DISPATCH, enqueue.SUBMIT, enqueue.POLL, enqueue.WEBHOOK, enqueue.RECOVER, enqueue.CANCEL]


@pytest.mark.parametrize("name", TASKS)
def test_every_name_it_sends_to_is_a_registered_task(name):
    assert name in app.tasks
    assert app.tasks[name].acks_late and app.tasks[name].reject_on_worker_lost


def _published(task: str, **options):
    previous = app.conf.task_default_queue
    app.conf.CELERY_TASK_DEFAULT_QUEUE = "enqueue-test"
    try:
        with mock.patch.object(app.amqp, "send_task_message") as publish:
            enqueue.send(task, "r1", **options)
    finally:
        app.conf.CELERY_TASK_DEFAULT_QUEUE = previous
    (_producer, name, message), sent = publish.call_args
    assert name == task
    return sent["queue"].name, message


@pytest.mark.parametrize("task", [enqueue.DISPATCH, enqueue.SUBMIT, enqueue.CANCEL])
def test_a_message_goes_to_the_default_queue_the_app_has_now(task):
    queue, message = _published(task, countdown=2.5)
    assert queue == "enqueue-test"
    assert message.headers["argsrepr"] == "('r1',)" and message.headers["eta"] is not None


@pytest.mark.parametrize("task", sorted(enqueue.IMAGE_TASKS))
def test_image_work_goes_to_the_image_queue_beside_it(task):
    # A burst of image work must not hold up dispatch on a worker of the default queue.
    queue, _message = _published(task)
    assert queue == "enqueue-test-images"


def test_it_sends_only_after_the_commit(db, enqueued, django_capture_on_commit_callbacks):
    job_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        enqueue.dispatch(job_id)
        enqueued.assert_not_called()
    callbacks[0]()
    enqueued.assert_called_once_with(enqueue.DISPATCH, str(job_id))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (runs.Next("submit", 1.5), [mock.call(enqueue.SUBMIT, "r1", countdown=1.5)]),
        (runs.Next("poll", 0.0), [mock.call(enqueue.POLL, "r1", countdown=0.0)]),
        (runs.DONE, []),
    ],
)
def test_a_steps_answer_becomes_its_follow_up(db, enqueued, django_capture_on_commit_callbacks, step, expected):
    with django_capture_on_commit_callbacks(execute=True):
        enqueue.follow("r1", step)
    assert enqueued.call_args_list == expected


def test_a_sweep_plan_re_drives_each_step(db, enqueued, django_capture_on_commit_callbacks):
    plan = SweepPlan(dispatch=["j1"], submit=["r1"], poll=["r2", "r3"], recover=["r4"], failed_jobs=["j2"])
    with django_capture_on_commit_callbacks(execute=True):
        enqueue.sweep(plan)
    assert enqueued.call_args_list == [
        mock.call(enqueue.DISPATCH, "j1"),
        mock.call(enqueue.SUBMIT, "r1"),
        mock.call(enqueue.POLL, "r2"),
        mock.call(enqueue.POLL, "r3"),
        mock.call(enqueue.RECOVER, "r4"),
    ]


def test_a_task_hands_its_steps_answer_to_enqueue(db, enqueued, django_capture_on_commit_callbacks):
    with (
        mock.patch("generation.services.runs.request_poll", return_value=runs.Next("poll", 3.0)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.request_poll_task("r1")
    enqueued.assert_called_once_with(enqueue.POLL, "r1", countdown=3.0)
