"""The request steps on their own, with a fake provider: retryable vs permanent errors."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.cache import cache

from generation.models import ImageSlot, JobStatus, ProviderRequest, SlotStatus
from generation.providers.base import Provider, ProviderError, ProviderResult, ResultStatus
from generation.services import runs
from generation.services.jobs import job_create
from tests.factories import offline_model


class Failing(Provider):
    name = "offline"

    def __init__(self, error: ProviderError) -> None:
        self.error = error
        self.calls = 0

    def submit(self, request):
        self.calls += 1
        raise self.error


@pytest.fixture
def job(alice):
    with mock.patch("generation.services.jobs._enqueue_dispatch"):
        job = job_create(user=alice, model=offline_model(), prompt="x", images=2)
    cache.delete_many(["cooldown:offline"] + [f"limit:offline:{n}" for n in range(16)])
    return job


def first_request(job) -> ProviderRequest:
    (request_id,) = runs.job_dispatch(job.pk)
    return ProviderRequest.objects.get(pk=request_id)


def submit_with(provider, request) -> runs.Next:
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        return runs.request_submit(request.pk)


def test_a_retryable_error_is_retried_with_backoff_honouring_retry_after(job, settings):
    request = first_request(job)
    step = submit_with(Failing(ProviderError("Too Many Requests", retry_after=7, status_code=429)), request)

    assert step.action == "submit"
    assert 7 <= step.countdown <= settings.PIPELINE_MAX_COUNTDOWN
    request.refresh_from_db()
    assert request.status == "pending" and request.attempts == 1
    assert set(ImageSlot.objects.filter(job=job).values_list("status", flat=True)) == {SlotStatus.RUNNING}


def test_a_429_pauses_the_provider_for_every_worker(job):
    request = first_request(job)
    submit_with(Failing(ProviderError("Too Many Requests", retry_after=5, status_code=429)), request)
    step = runs.request_submit(request.pk)  # the real engine, but the provider is cooling down
    assert step.action == "submit" and step.countdown >= 4


def test_a_permanent_error_fails_the_slots_at_once_without_retry(job):
    request = first_request(job)
    provider = Failing(ProviderError("The prompt was blocked by the safety filter.", permanent=True))
    step = submit_with(provider, request)

    assert step == runs.DONE and provider.calls == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert [e["error"] for e in job.errors] == ["The prompt was blocked by the safety filter."] * 2


def test_retryable_errors_give_up_after_the_attempt_limit(job, settings):
    settings.PIPELINE_MAX_ATTEMPTS = 2
    request = first_request(job)
    provider = Failing(ProviderError("503 Service Unavailable"))
    assert submit_with(provider, request).action == "submit"
    assert submit_with(provider, request) == runs.DONE

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.errors[0]["error"] == "The provider kept failing: 503 Service Unavailable"


def test_the_backoff_never_exceeds_the_cap_below_the_visibility_timeout(settings):
    assert settings.PIPELINE_MAX_COUNTDOWN < settings.CELERY_VISIBILITY_TIMEOUT
    assert runs.backoff_seconds(30, retry_after=10_000) == settings.PIPELINE_MAX_COUNTDOWN


def test_a_provider_returning_fewer_images_fails_the_missing_slots(job):
    request = first_request(job)
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    result = ProviderResult(status=ResultStatus.SUCCEEDED, images=[GeneratedImage(data=png_bytes())])
    ProviderRequest.objects.filter(pk=request.pk).update(status="submitted")
    runs.request_apply_result(request, result)

    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL
    assert job.errors == [{"index": 1, "error": "The provider returned 1 of 2 images.", "details": ""}]


def test_a_queue_submit_that_may_have_been_received_is_not_repeated(job):
    request = first_request(job)
    provider = Failing(ProviderError("Replicate timed out (ReadTimeout).", may_have_been_received=True))
    provider.asynchronous = True
    step = submit_with(provider, request)

    assert step == runs.DONE and provider.calls == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "not repeated, to avoid paying twice" in job.errors[0]["error"]


def test_a_request_finished_within_the_submit_keeps_the_providers_id(job):
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    class Quick(Provider):
        name = "offline"

        def __init__(self) -> None:
            pass

        def submit(self, request):
            images = [GeneratedImage(data=png_bytes()) for _ in request.batch_indexes]
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, external_id="pred-123")

    request = first_request(job)
    assert submit_with(Quick(), request) == runs.DONE
    request.refresh_from_db()
    assert request.external_id == "pred-123" and request.status == "succeeded"
