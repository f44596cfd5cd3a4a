"""Jobs run end to end through a real Celery worker process, real Redis and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from generation.models import CreditLedger, ImageSlot, JobStatus, ProviderRequest, SlotStatus
from generation.services.control import job_cancel, job_retry_failed
from generation.services.credits import credit_account
from generation.services.jobs import job_create
from generation.tasks import job_dispatch_task, request_poll_task, request_submit_task
from studio.models import WorkspaceAsset
from tests.factories import offline_model, wait_for_job

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("celery_worker")]


def create(user, model, images, **kwargs):
    params = kwargs.pop("params", {})
    params.setdefault("simulate", {"latency": 0.05})
    return job_create(
        user=user, model=model, prompt="anime girl with silver hair", images=images, params=params, **kwargs
    )


def assets_of(job):
    return list(WorkspaceAsset.objects.filter(job=job).order_by("batch_index"))


@pytest.mark.parametrize("count", [1, 2, 4])
def test_native_batches_make_one_request_and_n_images(transactional_db, alice, count):
    job = wait_for_job(create(alice, offline_model(), count))

    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_count, job.failed_count) == (count, 0)
    assert ProviderRequest.objects.filter(job=job).count() == 1
    assets = assets_of(job)
    assert [a.batch_index for a in assets] == list(range(count))
    for asset in assets:
        with default_storage.open(asset.file.name) as fh:
            image = Image.open(fh)
            assert image.format == "PNG" and image.size == (asset.width, asset.height)
        assert default_storage.exists(asset.thumbnail.name)
    assert len({a.bytes for a in assets}) == count  # different pictures, not one copied


def test_a_model_without_num_images_fans_out_one_request_per_image(transactional_db, alice):
    model = offline_model("offline/single", max_images=1, input_schema={"properties": {}})
    job = wait_for_job(create(alice, model, 4))

    assert job.status == JobStatus.SUCCEEDED
    assert ProviderRequest.objects.filter(job=job).count() == 4
    assert [a.batch_index for a in assets_of(job)] == [0, 1, 2, 3]


def test_a_count_above_the_per_request_maximum_is_split_into_chunks(transactional_db, alice):
    model = offline_model("offline/pairs", max_images=2)
    job = wait_for_job(create(alice, model, 4))

    assert job.status == JobStatus.SUCCEEDED
    assert sorted(r.slot_indexes for r in ProviderRequest.objects.filter(job=job)) == [[0, 1], [2, 3]]


def test_partial_failure_keeps_the_good_images_and_retry_fills_only_the_failed_slot(transactional_db, alice):
    job = wait_for_job(create(alice, offline_model(), 4, params={"simulate": {"latency": 0.05, "fail_indexes": [2]}}))

    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded_count, job.failed_count) == (3, 1)
    assert [e["index"] for e in job.errors] == [2]
    assert "failed" in job.errors[0]["error"]
    assert [a.batch_index for a in assets_of(job)] == [0, 1, 3]
    kept = {a.batch_index: a.pk for a in assets_of(job)}
    balance = credit_account(alice).balance

    assert job_retry_failed(job=job) == 1
    job = wait_for_job(job)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_count, job.failed_count, job.errors) == (4, 0, [])
    assets = assets_of(job)
    assert [a.batch_index for a in assets] == [0, 1, 2, 3]
    assert all(kept[i] == a.pk for i, a in enumerate(assets) if i in kept)  # the others untouched
    assert credit_account(alice).balance == balance  # no new credit for a retry


def test_a_job_where_every_image_failed_refunds_its_credit(transactional_db, alice):
    before = credit_account(alice).balance
    job = wait_for_job(create(alice, offline_model(), 2, params={"simulate": {"latency": 0.05, "failure_rate": 1}}))

    assert job.status == JobStatus.FAILED
    assert [e["index"] for e in job.errors] == [0, 1]
    assert credit_account(alice).balance == before
    assert CreditLedger.objects.filter(job=job, kind="refund").count() == 1


def test_cancel_stops_a_running_job_and_nothing_arrives_after(transactional_db, alice):
    job = create(alice, offline_model(), 4, params={"simulate": {"latency": 3}})
    wait_for_job(job, statuses=[JobStatus.RUNNING])
    deadline = time.monotonic() + 10
    while not ProviderRequest.objects.filter(job=job, status="submitted").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    assert job_cancel(job=job) is True
    time.sleep(3.5)  # past the simulated provider's latency: its result must be ignored

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    assert set(ImageSlot.objects.filter(job=job).values_list("status", flat=True)) == {SlotStatus.CANCELED}
    assert assets_of(job) == []
    assert job_cancel(job=job) is False


def test_a_task_delivered_twice_makes_one_asset_per_index_and_one_charge(transactional_db, alice):
    job = create(alice, offline_model(), 4, params={"simulate": {"latency": 0.3}})
    # The broker redelivers: the dispatch twice, and each request's submit and poll twice.
    job_dispatch_task.delay(str(job.pk))
    deadline = time.monotonic() + 10
    while not ProviderRequest.objects.filter(job=job).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for request in ProviderRequest.objects.filter(job=job):
        request_submit_task.delay(str(request.pk))
        request_poll_task.delay(str(request.pk))
        request_poll_task.delay(str(request.pk))
    job = wait_for_job(job)
    time.sleep(0.5)  # let the duplicates finish too

    assert job.status == JobStatus.SUCCEEDED
    assert ProviderRequest.objects.filter(job=job).count() == 1
    assert WorkspaceAsset.objects.filter(job=job).count() == 4
    assert CreditLedger.objects.filter(job=job, kind="charge").count() == 1
    job.refresh_from_db()
    assert (job.succeeded_count, job.status) == (4, JobStatus.SUCCEEDED)
