"""The GPU worker's service on the tiny pipeline: batching across jobs, clear errors, a killed
worker's batch run again without a second asset, and a failing GPU falling back."""

from __future__ import annotations

import os
from decimal import Decimal
from unittest import mock

import pytest
from django.core.cache import cache

from generation import heartbeat
from generation.gpu import batches
from generation.gpu.runner import SdxlRunner
from generation.models import GenerationJob, JobMode, ProviderRequest, RequestStatus, SlotStatus
from generation.providers import local_sdxl
from generation.services import runs
from generation.services.jobs import job_create
from models_registry.models import ApiModel, FallbackChain, FallbackEntry
from studio.models import WorkspaceAsset
from tests.factories import offline_model
from tests.generation.test_references import make_asset

HOST = "celery@gpu-test"


def local_model(max_images: int = 4) -> ApiModel:
    model, _ = ApiModel.objects.update_or_create(
        key="local/sdxl",
        defaults={
            "display_name": "SDXL (local GPU)",
            "provider": "local",
            "tasks": ["t2i", "i2i"],
            "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
            "capabilities": {"max_images": max_images, "negative_prompt": True, "seed": True},
            "price_per_image": Decimal("0"),
        },
    )
    return model


@pytest.fixture
def gpu_alive(gpu_runner, settings):
    """This process is a live GPU worker: it beats as one and claims under that name."""
    settings.LOCAL_SDXL_MODEL = "/models/sdxl"
    cache.clear()
    batches.set_identity(HOST, os.getpid())
    heartbeat.record_worker(hostname=HOST, queues=["gpu"], running=0, pid=os.getpid(), details={"gpu": True})
    yield
    cache.clear()


def submitted_job(user, model, *, images=1, mode=JobMode.T2I, references=(), params=None, steps=2, **kwargs):
    """A job whose requests were submitted to the local provider (queued for the GPU)."""
    sizes = {"width": 64, "height": 64, **({"steps": steps} if steps else {})}
    with mock.patch("generation.enqueue.send"):
        job = job_create(
            user=user,
            model=model,
            prompt=kwargs.pop("prompt", "a knight"),
            images=images,
            mode=mode,
            references=[r.pk for r in references],
            params={**sizes, **(params or {})},
            **kwargs,
        )
        for request_id in runs.job_dispatch(job.pk):
            runs.request_submit(request_id)
    return job


def count_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = SdxlRunner.generate

    def generate(self, settings, images):
        calls.append(len(images))
        return real(self, settings, images)

    monkeypatch.setattr(SdxlRunner, "generate", generate)
    return calls


@pytest.mark.django_db(transaction=True)
def test_three_jobs_slots_run_in_one_call_and_go_back_to_their_own_places(alice, bob, gpu_alive, monkeypatch):
    model = local_model(max_images=4)
    first = submitted_job(alice, model, images=1, prompt="a red knight")
    second = submitted_job(bob, model, images=2, prompt="a blue mage")
    third = submitted_job(alice, model, images=1, prompt="a green elf")
    calls = count_calls(monkeypatch)

    with mock.patch("generation.enqueue.send"):
        assert batches.run_batches(str(second.requests.get().pk)) == 1
    assert calls == [4]
    for job, images in ((first, 1), (second, 2), (third, 1)):
        job.refresh_from_db()
        assert job.status == "succeeded" and job.slots.filter(status=SlotStatus.SUCCEEDED).count() == images
        assets = list(WorkspaceAsset.objects.filter(job=job).order_by("batch_index"))
        assert [a.batch_index for a in assets] == list(range(images))
        assert [a.seed for a in assets] == [job.params["seed"] + i for i in range(images)]
        assert all(a.metadata.get("batch_images") == 4 and a.metadata.get("batch_requests") == 3 for a in assets)
    assert WorkspaceAsset.objects.filter(owner=bob).first().metadata["denoise"] is None


@pytest.mark.django_db(transaction=True)
def test_the_batch_limit_and_different_settings_make_separate_calls(alice, gpu_alive, monkeypatch):
    model = local_model(max_images=2)
    submitted_job(alice, model, images=1)
    submitted_job(alice, model, images=1)
    submitted_job(alice, model, images=1)
    submitted_job(alice, model, images=1, params={"width": 96})
    calls = count_calls(monkeypatch)
    with mock.patch("generation.enqueue.send"):
        assert batches.run_batches() == 3
    assert sorted(calls) == [1, 1, 2]
    assert not ProviderRequest.objects.filter(status=RequestStatus.SUBMITTED).exists()


@pytest.mark.django_db(transaction=True)
def test_img2img_batches_group_by_strength_and_copy_is_clamped(alice, gpu_alive, monkeypatch):
    model = local_model(max_images=4)
    reference = make_asset(alice)
    seen = []
    real = SdxlRunner.generate

    def generate(self, settings, images):
        seen.append((settings.strength, len(images)))
        return real(self, settings, images)

    monkeypatch.setattr(SdxlRunner, "generate", generate)
    kwargs = {"mode": JobMode.I2I_MODIFY, "references": [reference], "params": {"steps": 4}}
    submitted_job(alice, model, reference_strength=0.5, **kwargs)
    submitted_job(alice, model, reference_strength=0.5, **kwargs)
    submitted_job(alice, model, reference_strength=0.75, **kwargs)
    copy = submitted_job(
        alice, model, mode=JobMode.I2I_COPY, references=[reference], reference_strength=0.2, steps=None
    )
    with mock.patch("generation.enqueue.send"):
        batches.run_batches()
    assert sorted(seen) == [(0.05, 1), (0.25, 1), (0.5, 2)]
    asset = WorkspaceAsset.objects.get(job=copy)
    assert (asset.width, asset.height) == (64, 64) and asset.metadata["denoise"] == 0.05
    assert asset.metadata["steps"] == 20 and asset.metadata["denoising_steps"] == 1


@pytest.mark.django_db(transaction=True)
def test_settings_the_pipeline_cannot_run_fail_with_a_clear_error(alice, gpu_alive):
    model = local_model()
    job = submitted_job(
        alice,
        model,
        mode=JobMode.I2I_MODIFY,
        references=[make_asset(alice)],
        reference_strength=0.9,
        params={"steps": 5},
    )
    with mock.patch("generation.enqueue.send"):
        assert batches.run_batches() == 0
    slot = job.slots.get()
    assert slot.status == SlotStatus.FAILED and slot.failed_permanently
    assert "steps x denoise must be at least 1" in slot.error and "use 10 steps" in slot.error


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_is_run_again_once_with_no_second_asset(alice, gpu_alive, monkeypatch):
    model = local_model()
    job = submitted_job(alice, model, images=2)
    request = job.requests.get()
    claim = {"host": HOST, "pid": os.getpid() + 1, "at": 0}
    # A worker process on this host claimed it and was killed; a new one (another pid) beats now.
    cache.set(local_sdxl.claim_key(str(request.pk)), claim)
    # The ordinary worker's poll sends it to the GPU queue again...
    with mock.patch("generation.enqueue.send") as send:
        step = runs.request_poll(request.pk)
    assert step.action == "poll"
    assert [c.args for c in send.call_args_list] == [("generation.tasks.gpu_batch_task", str(request.pk))]
    # ...and the new worker takes the dead one's claim over and runs it.
    with mock.patch("generation.enqueue.send"):
        assert batches.run_batches(str(request.pk)) == 1
    job.refresh_from_db()
    assert job.status == "succeeded" and WorkspaceAsset.objects.filter(job=job).count() == 2
    # Killed after storing but before closing the request: run again, nothing is stored twice.
    ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.SUBMITTED)
    GenerationJob.objects.filter(pk=job.pk).update(status="running")
    cache.set(local_sdxl.claim_key(str(request.pk)), claim)
    with mock.patch("generation.enqueue.send"):
        batches.run_batches(str(request.pk))
    assert WorkspaceAsset.objects.filter(job=job).count() == 2
    assert job.slots.filter(status=SlotStatus.SUCCEEDED).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_gpu_moves_the_images_to_the_next_model_of_the_chain(alice, gpu_alive, monkeypatch):
    model = local_model()
    fallback = offline_model()
    chain = FallbackChain.objects.create(task="t2i")
    FallbackEntry.objects.create(chain=chain, model=model, position=0)
    FallbackEntry.objects.create(chain=chain, model=fallback, position=1)
    job = submitted_job(alice, model, images=2)

    def broken(self, settings, images):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(SdxlRunner, "generate", broken)
    with mock.patch("generation.enqueue.send") as send:
        batches.run_batches()
    job.refresh_from_db()
    assert job.fallback_attempted and job.params["tried_models"] == ["local/sdxl"]
    moved = job.requests.exclude(provider="local").get()
    assert moved.model == fallback and moved.status == RequestStatus.PENDING
    assert ("generation.tasks.request_submit_task", str(moved.pk)) in [c.args for c in send.call_args_list]
    assert job.requests.get(provider="local").status == RequestStatus.FAILED
    assert not cache.get(local_sdxl.claim_key(str(job.requests.get(provider="local").pk)))


@pytest.mark.django_db(transaction=True)
def test_a_closed_request_is_not_run(alice, gpu_alive, monkeypatch):
    job = submitted_job(alice, local_model())
    GenerationJob.objects.filter(pk=job.pk).update(status="canceled")
    calls = count_calls(monkeypatch)
    assert batches.run_batches() == 0 and calls == []


def test_the_beat_says_what_the_worker_holds(gpu_runner, db):
    details = batches.worker_details()
    assert details["gpu"] is True and details["device"] == "cpu" and details["waiting"] == 0
