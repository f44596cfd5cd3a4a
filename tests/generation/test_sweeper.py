from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.utils import timezone

from generation import heartbeat, limits
from generation.models import GenerationJob, JobStatus, ProviderRequest
from generation.services import runs
from generation.services.jobs import job_create
from generation.services.sweeper import jobs_sweep
from tests.factories import offline_model


@pytest.fixture
def job(alice):
    with mock.patch("generation.enqueue.send"):
        return job_create(user=alice, model=offline_model(), prompt="x", images=2)


def age(model_cls, pk, seconds):
    model_cls.objects.filter(pk=pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def test_a_queued_job_whose_message_was_lost_is_dispatched_again(job):
    assert jobs_sweep().dispatch == []  # fresh: leave it alone
    age(GenerationJob, job.pk, 120)
    assert jobs_sweep().dispatch == [str(job.pk)]


def overdue(pk, seconds):
    ProviderRequest.objects.filter(pk=pk).update(due_at=timezone.now() - timedelta(seconds=seconds))


def test_a_submitted_request_whose_poll_is_overdue_is_polled_again(job, settings):
    (request_id,) = runs.job_dispatch(job.pk)
    ProviderRequest.objects.filter(pk=request_id).update(status="submitted", external_id="abc")
    overdue(request_id, settings.SWEEP_GRACE_SECONDS - 5)
    assert jobs_sweep().poll == []  # a countdown is not exact: within the grace, leave it
    overdue(request_id, settings.SWEEP_GRACE_SECONDS + 1)
    assert jobs_sweep().poll == [str(request_id)]
    # The re-drive counts as the step now due: the next sweep leaves it to that message.
    assert jobs_sweep().poll == []


def test_a_pending_request_whose_submit_message_was_lost_is_submitted_again(job, settings):
    (request_id,) = runs.job_dispatch(job.pk)
    assert jobs_sweep().submit == []  # just planned: its message is on its way
    overdue(request_id, settings.SWEEP_GRACE_SECONDS + 1)
    assert jobs_sweep().submit == [str(request_id)]


def lost_submit(job, settings):
    (request_id,) = runs.job_dispatch(job.pk)
    sent = timezone.now() - timedelta(seconds=settings.SWEEP_GRACE_SECONDS + 1)
    ProviderRequest.objects.filter(pk=request_id).update(status="submitted", sent_at=sent, due_at=None)
    return request_id


def test_a_submit_whose_worker_died_before_saving_the_id_is_recovered_on_every_sweep(job, settings):
    request_id = lost_submit(job, settings)
    assert jobs_sweep().recover == [str(request_id)]
    # Sweeping does not reset its age (it used to, so it was never recovered at all).
    assert jobs_sweep().recover == [str(request_id)]


def test_a_submit_still_in_flight_is_left_to_its_worker(job, settings):
    request_id = lost_submit(job, settings)
    with limits.provider_slot("offline", holder=str(request_id)) as got:
        assert got
        assert jobs_sweep().recover == []
    assert jobs_sweep().recover == [str(request_id)]


def test_each_sweep_says_a_worker_is_alive(db):
    cache.delete(heartbeat.LAST_SWEEP_KEY)
    assert heartbeat.workers_silent()
    jobs_sweep()
    assert heartbeat.last_sweep_age() < 5 and not heartbeat.workers_silent()


def test_a_job_past_its_deadline_fails_with_a_clear_error_and_refund(job, settings):
    runs.job_dispatch(job.pk)
    GenerationJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(hours=1))
    plan = jobs_sweep()
    assert plan.failed_jobs == [str(job.pk)]
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert (
        job.errors[0]["error"] == f"The provider did not finish within {settings.JOB_DEADLINE_SECONDS // 60} minutes."
    )
    assert job.owner.credit_account.balance == 100
