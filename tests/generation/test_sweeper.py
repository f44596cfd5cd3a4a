from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from generation.models import GenerationJob, JobStatus, ProviderRequest
from generation.services import runs
from generation.services.jobs import job_create
from generation.services.sweeper import jobs_sweep
from tests.factories import offline_model


@pytest.fixture
def job(alice):
    with mock.patch("generation.services.jobs._enqueue_dispatch"):
        return job_create(user=alice, model=offline_model(), prompt="x", images=2)


def age(model_cls, pk, seconds):
    model_cls.objects.filter(pk=pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def test_a_queued_job_whose_message_was_lost_is_dispatched_again(job):
    assert jobs_sweep().dispatch == []  # fresh: leave it alone
    age(GenerationJob, job.pk, 120)
    assert jobs_sweep().dispatch == [str(job.pk)]


def test_a_submitted_request_that_went_silent_is_polled_again(job):
    (request_id,) = runs.job_dispatch(job.pk)
    ProviderRequest.objects.filter(pk=request_id).update(status="submitted", external_id="abc")
    age(ProviderRequest, request_id, 120)
    assert jobs_sweep().poll == [str(request_id)]


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
