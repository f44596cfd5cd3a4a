"""The local GPU worker's adapter: submit queues, polls are the watchdog, health is the heartbeat."""

from __future__ import annotations

import os
import time
from unittest import mock

import pytest
from django.core.cache import cache

from generation import heartbeat
from generation.models import ProviderRequest, RequestStatus
from generation.providers import get_provider, local_sdxl
from generation.providers.base import GenerationRequest, ProviderError, ResultStatus
from generation.services import routing, runs
from generation.services.jobs import job_create
from models_registry.models import FallbackChain, FallbackEntry
from tests.factories import offline_model
from tests.generation.gpu.test_batches import local_model

HOST = "celery@gpu-1"


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def beat(pid: int = 4242) -> None:
    heartbeat.record_worker(hostname=HOST, queues=["gpu"], running=0, pid=pid, details={"gpu": True, "device": "cuda"})


@pytest.fixture
def adapter(db):
    return get_provider(local_model())


def request() -> GenerationRequest:
    return GenerationRequest(prompt="a knight", num_images=2, request_id="r-1")


def test_submit_only_queues_for_the_gpu(adapter):
    result = adapter.submit(request())
    assert result.status == ResultStatus.PENDING and result.external_id == "gpu-r-1"
    assert result.metadata == {local_sdxl.SEND_TO_GPU: True}
    with pytest.raises(ProviderError, match="at most 4"):
        adapter.submit(GenerationRequest(prompt="x", num_images=5))


def test_health_and_configuration_follow_the_gpu_workers_heartbeat(adapter, settings):
    settings.LOCAL_SDXL_MODEL = ""
    assert not adapter.health_check() and not adapter.is_configured()
    heartbeat.record_worker(hostname="celery@cpu", queues=["studio"], running=0, pid=1)
    assert not adapter.health_check()  # an ordinary worker holds no pipeline
    beat()
    assert adapter.health_check() and adapter.is_configured()
    heartbeat.forget_worker(HOST)
    settings.LOCAL_SDXL_MODEL = "/models/sdxl"
    assert adapter.is_configured() and not adapter.health_check()


def test_a_poll_waits_while_a_live_worker_holds_the_claim(adapter):
    beat()
    cache.set(local_sdxl.claim_key("r-1"), {"host": HOST, "pid": 4242, "at": time.time()})
    handles = {"queued_at": time.time() - 10_000, "sent_at": time.time() - 10_000}
    result = adapter.poll(request(), "gpu-r-1", handles)
    assert result.status == ResultStatus.PENDING and not result.metadata


def test_a_poll_fails_over_when_no_gpu_worker_beats(adapter):
    result = adapter.poll(request(), "gpu-r-1", {"queued_at": time.time(), "sent_at": time.time()})
    assert result.status == ResultStatus.FAILED and not result.permanent
    assert result.error == "The local GPU worker is not running."


def test_a_request_that_waits_too_long_for_the_gpu_fails_over(adapter, settings):
    settings.LOCAL_GPU_MAX_WAIT_SECONDS = 30
    beat()
    result = adapter.poll(request(), "gpu-r-1", {"queued_at": time.time() - 31, "sent_at": time.time()})
    assert result.status == ResultStatus.FAILED and not result.permanent and "more than 30 seconds" in result.error


def test_a_dead_claim_or_a_lost_message_sends_the_request_again(adapter):
    beat(pid=5000)
    now = time.time()
    cache.set(local_sdxl.claim_key("r-1"), {"host": HOST, "pid": 4242, "at": now})  # the killed process
    again = adapter.poll(request(), "gpu-r-1", {"queued_at": now, "sent_at": now})
    assert again.status == ResultStatus.PENDING and again.metadata == {local_sdxl.SEND_TO_GPU: True}
    cache.delete(local_sdxl.claim_key("r-1"))
    waiting = adapter.poll(request(), "gpu-r-1", {"queued_at": now, "sent_at": now})
    assert waiting.metadata == {}
    lost = adapter.poll(request(), "gpu-r-1", {"queued_at": now, "sent_at": now - local_sdxl.RESEND_SECONDS - 1})
    assert lost.metadata == {local_sdxl.SEND_TO_GPU: True} and lost.handles["sent_at"] > now - 1


@pytest.mark.django_db
def test_routing_skips_a_dead_worker_and_the_job_records_the_fallback(
    alice, settings, django_capture_on_commit_callbacks
):
    settings.LOCAL_SDXL_MODEL = "/models/sdxl"
    model, fallback = local_model(), offline_model()
    chain = FallbackChain.objects.create(task="t2i")
    FallbackEntry.objects.create(chain=chain, model=model, position=0)
    FallbackEntry.objects.create(chain=chain, model=fallback, position=1)
    with mock.patch("generation.enqueue.send") as send, django_capture_on_commit_callbacks(execute=True):
        job = job_create(user=alice, model=model, prompt="a knight", images=2)
        (request_id,) = runs.job_dispatch(job.pk)
        runs.request_submit(request_id)
    assert routing.provider_status("local") == routing.UNHEALTHY
    job.refresh_from_db()
    assert job.fallback_attempted and job.params["tried_models"] == ["local/sdxl"]
    assert ProviderRequest.objects.get(pk=request_id).status == RequestStatus.FAILED
    moved = job.requests.exclude(pk=request_id).get()
    assert moved.provider == "offline"
    assert ("generation.tasks.request_submit_task", str(moved.pk)) in [c.args for c in send.call_args_list]


@pytest.mark.django_db
def test_with_a_live_worker_the_submit_goes_to_the_gpu_queue(alice, settings, django_capture_on_commit_callbacks):
    beat(pid=os.getpid())
    with mock.patch("generation.enqueue.send") as send, django_capture_on_commit_callbacks(execute=True):
        job = job_create(user=alice, model=local_model(), prompt="a knight", images=2)
        (request_id,) = runs.job_dispatch(job.pk)
        step = runs.request_submit(request_id)
    assert step.action == "poll"
    request = ProviderRequest.objects.get(pk=request_id)
    assert request.status == RequestStatus.SUBMITTED and request.external_id == f"gpu-{request_id}"
    assert ("generation.tasks.gpu_batch_task", str(request_id)) in [c.args for c in send.call_args_list]
    from studio.celery import app

    assert app.amqp.router.route({}, "generation.tasks.gpu_batch_task")["queue"].name == settings.GPU_QUEUE
