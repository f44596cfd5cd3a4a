"""Retry failed: only the images a retry can change run again."""

from __future__ import annotations

from unittest import mock

import pytest

from generation.models import ImageSlot, JobStatus, SlotStatus
from generation.services.control import job_retry_failed
from generation.services.finish import job_finish_if_done, slot_fail, slot_succeed
from generation.services.jobs import JobRequestError, job_create
from tests.factories import offline_model


@pytest.fixture
def job(alice):
    with mock.patch("generation.enqueue.send"):
        return job_create(user=alice, model=offline_model(), prompt="x", images=4)


def finish(job, outcomes) -> None:
    for slot in ImageSlot.objects.filter(job=job).order_by("index"):
        outcome = outcomes[slot.index]
        if outcome == "ok":
            slot_succeed(slot.pk, job.pk)
        else:
            slot_fail(slot.pk, job.pk, outcome, permanent=outcome == "refused")
    job_finish_if_done(job.pk)
    job.refresh_from_db()


def test_only_the_transient_failures_run_again(job):
    finish(job, ["ok", "refused", "timed out", "ok"])
    assert job.status == JobStatus.PARTIAL
    with mock.patch("generation.enqueue.send"):
        assert job_retry_failed(job=job) == 1
    statuses = dict(ImageSlot.objects.filter(job=job).values_list("index", "status"))
    assert statuses == {0: SlotStatus.SUCCEEDED, 1: SlotStatus.FAILED, 2: SlotStatus.PENDING, 3: SlotStatus.SUCCEEDED}


def test_a_job_whose_failures_are_all_permanent_is_not_retried(job):
    finish(job, ["ok", "refused", "refused", "ok"])
    with (
        mock.patch("generation.enqueue.send") as enqueue,
        pytest.raises(JobRequestError, match="refused these images"),
    ):
        job_retry_failed(job=job)
    enqueue.assert_not_called()
    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL
