"""Pipeline events: a job run through the steps moves the metrics by what it did, and logs one
line per event with its ids as fields, never a key and never an id as a metric label."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.cache import cache
from prometheus_client import REGISTRY

from generation.models import GenerationJob, JobStatus, ProviderRequest
from generation.providers.base import GeneratedImage, Provider, ProviderError, ProviderResult, ResultStatus
from generation.services import runs
from generation.services.jobs import job_create
from generation.services.sweeper import jobs_sweep
from studio.log_format import JsonFormatter
from tests.factories import offline_model, png_bytes

PLANTED_KEY = "fal-planted-SECRET-0123456789"


class Answering(Provider):
    """Answers every image at once, or raises `error`."""

    def __init__(self, model, *, error: ProviderError | None = None) -> None:
        super().__init__(model)
        self.error = error

    def submit(self, request):
        if self.error is not None:
            raise self.error
        images = [GeneratedImage(data=png_bytes(), seed=i) for i in range(request.num_images)]
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)


class Metrics:
    """The default registry's samples now, to compare with after: counters only ever grow, and
    other tests in this process move them too."""

    def __init__(self) -> None:
        self.before = self.samples()

    @staticmethod
    def samples() -> dict[tuple, float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in REGISTRY.collect()
            for sample in family.samples
        }

    def delta(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.samples().get(key, 0.0) - self.before.get(key, 0.0)


@pytest.fixture
def model():
    cache.delete_many(["cooldown:offline", "provider-health:offline"] + [f"limit:offline:{n}" for n in range(16)])
    # One image a request (a fan-out): each image is stored in this thread, inside the test's
    # transaction, where runs._store_all would store several at once on other connections.
    return offline_model(max_images=1)


def run_job(user, model, *, error: ProviderError | None = None, images: int = 2) -> GenerationJob:
    """Create a job and run its steps in this process with a provider that answers (or fails) at once."""
    with mock.patch("generation.enqueue.send"):
        job = job_create(user=user, model=model, prompt="x", images=images)
        for request_id in runs.job_dispatch(job.pk):
            with mock.patch("generation.services.runs.get_provider", side_effect=lambda m: Answering(m, error=error)):
                runs.request_submit(request_id)
    job.refresh_from_db()
    return job


def event_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "generation.events"]


class TestPipelineMetrics:
    def test_a_job_that_succeeds_counts_what_it_did(self, alice, model):
        metrics = Metrics()

        job = run_job(alice, model)

        assert job.status == JobStatus.SUCCEEDED
        assert metrics.delta("studio_jobs_created_total", kind="studio") == 1
        assert metrics.delta("studio_jobs_finished_total", status="succeeded", kind="studio") == 1
        assert metrics.delta("studio_images_total", provider="offline", outcome="succeeded") == 2
        assert metrics.delta("studio_images_total", provider="offline", outcome="failed") == 0
        assert metrics.delta("studio_provider_call_seconds_count", provider="offline", op="submit", outcome="ok") == 2
        assert metrics.delta("studio_image_store_seconds_count", provider="offline") == 2
        assert metrics.delta("studio_credits_total", kind="charged") == 1
        assert metrics.delta("studio_credits_total", kind="refunded") == 0
        assert metrics.delta("studio_spend_usd_total", provider="offline") == pytest.approx(float(Decimal("0.02")))

    def test_a_permanent_refusal_counts_a_permanent_error_failed_images_and_a_refund(self, alice, model):
        metrics = Metrics()

        job = run_job(alice, model, error=ProviderError("The prompt was refused.", permanent=True, status_code=422))

        assert job.status == JobStatus.FAILED
        assert metrics.delta("studio_jobs_finished_total", status="failed", kind="studio") == 1
        assert metrics.delta("studio_images_total", provider="offline", outcome="failed") == 2
        assert (
            metrics.delta("studio_provider_errors_total", provider="offline", op="submit", error_class="permanent") == 2
        )
        assert (
            metrics.delta("studio_provider_call_seconds_count", provider="offline", op="submit", outcome="permanent")
            == 2
        )
        assert metrics.delta("studio_credits_total", kind="refunded") == 1
        assert metrics.delta("studio_spend_usd_total", provider="offline") == 0

    @pytest.mark.parametrize(
        ("error", "error_class"),
        [
            (ProviderError("Too Many Requests", retry_after=2, status_code=429), "rate_limited"),
            (ProviderError("Service Unavailable", status_code=503), "retryable"),
        ],
    )
    def test_a_failed_call_is_counted_by_its_error_class(self, alice, model, error, error_class):
        metrics = Metrics()

        job = run_job(alice, model, error=error, images=1)

        assert job.status == JobStatus.RUNNING  # the request waits for its retry
        assert (
            metrics.delta("studio_provider_errors_total", provider="offline", op="submit", error_class=error_class) == 1
        )
        assert metrics.delta("studio_jobs_finished_total", status="failed", kind="studio") == 0

    def test_the_sweeper_counts_what_it_recovers(self, alice, model, settings):
        with mock.patch("generation.enqueue.send"):
            job = job_create(user=alice, model=model, prompt="x")
        GenerationJob.objects.filter(pk=job.pk).update(updated_at=job.updated_at - timedelta(hours=1))
        metrics = Metrics()

        plan = jobs_sweep()

        assert str(job.pk) in plan.dispatch
        assert metrics.delta("studio_sweeper_recoveries_total", kind="dispatch") == len(plan.dispatch)

    def test_no_label_value_is_a_job_request_or_user_id(self, alice, model):
        job = run_job(alice, model, error=ProviderError("The prompt was refused.", permanent=True))
        ids = {str(job.pk), str(alice.pk)}
        ids |= {str(pk) for pk in ProviderRequest.objects.filter(job=job).values_list("pk", flat=True)}
        ids |= {str(pk) for pk in job.slots.values_list("pk", flat=True)}

        values = {
            value
            for family in REGISTRY.collect()
            if family.name.startswith("studio_")
            for sample in family.samples
            for value in sample.labels.values()
        }

        assert values  # the pipeline's metrics are there, with labels
        assert not values & ids


class TestEventLogLines:
    def test_each_event_is_one_line_with_its_ids_as_fields(self, alice, model, caplog):
        caplog.set_level(logging.INFO, logger="generation.events")

        job = run_job(alice, model)

        lines = [json.loads(JsonFormatter().format(record)) for record in event_records(caplog)]
        events = [line["event"] for line in lines]
        assert events[0] == "job_created" and events[-1] == "job_finished"
        assert {"provider_call", "image_stored", "slot_succeeded", "credits"} <= set(events)
        assert all(line["job_id"] == str(job.pk) for line in lines)
        assert all(line["logger"] == "generation.events" and line["level"] == "INFO" and line["time"] for line in lines)
        calls = [line for line in lines if line["event"] == "provider_call"]
        requests = {str(pk) for pk in ProviderRequest.objects.filter(job=job).values_list("pk", flat=True)}
        assert {call["request_id"] for call in calls} == requests and len(requests) == 2
        assert all(
            call["provider"] == "offline" and call["op"] == "submit" and call["outcome"] == "ok" for call in calls
        )
        assert all(call["seconds"] >= 0 for call in calls)
        (finished,) = (line for line in lines if line["event"] == "job_finished")
        assert finished["status"] == "succeeded" and finished["usd"] == "0.0200"

    def test_a_provider_error_event_carries_no_key(self, alice, model, caplog, settings):
        settings.FAL_KEY = PLANTED_KEY
        caplog.set_level(logging.INFO, logger="generation.events")
        echoed = f"Invalid credentials Key {PLANTED_KEY} and token r8_0123456789abcdef for https://x.test/in?sig=1"

        run_job(alice, model, error=ProviderError(echoed, permanent=True, status_code=401), images=1)

        records = event_records(caplog)
        (call,) = (record for record in records if record.event == "provider_call")
        line = json.loads(JsonFormatter().format(call))
        assert line["error_class"] == "permanent" and line["outcome"] == "permanent"
        assert "Invalid credentials" in line["error"]
        for record in records:
            for text in (JsonFormatter().format(record), logging.Formatter("%(message)s").format(record)):
                assert PLANTED_KEY not in text
                assert "r8_0123456789abcdef" not in text
                assert "sig=1" not in text

    def test_the_text_format_stays_one_readable_line(self, alice, model, caplog):
        caplog.set_level(logging.INFO, logger="generation.events")

        job = run_job(alice, model, images=1)

        created = next(record for record in event_records(caplog) if record.event == "job_created")
        assert (
            created.getMessage()
            == f"job_created job_id={job.pk} kind=studio provider=offline model={model.key} images=1"
        )
