"""Batch Mode's services against the simulator, through the real adapter (no worker: each step is
called as its task would call it)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from generation.models import Batch, BatchState, CreditAccount, GenerationJob, ImageSlot, JobStatus, SlotStatus
from generation.services import batches
from generation.services.control import job_remove_from_batch
from generation.services.credits import credit_account
from generation.services.jobs import JobRequestError, job_create
from generation.services.sweeper import jobs_sweep
from models_registry.models import ApiModel
from studio.models import WorkspaceAsset
from tests.factories import offline_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim(simulator, settings):
    simulator.configure(gemini_batch_pending_seconds=0.05, gemini_batch_running_seconds=0.05)
    settings.BATCH_POLL_MIN_SECONDS = 0.05
    settings.BATCH_AUTO_SUBMIT_REQUESTS = 50
    with override_settings(**simulator.settings_overrides()):
        yield simulator


@pytest.fixture
def gemini(db):
    model, _ = ApiModel.objects.update_or_create(
        key="gemini-2.5-flash-image",
        defaults={
            "display_name": "Gemini Flash Image",
            "provider": "gemini",
            "tasks": ["t2i", "i2i"],
            "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
            "capabilities": {"batch_api": True},
            "price_per_image": Decimal("0.0390"),
        },
    )
    return model


def add(user, model, prompt="a fox", images=1) -> GenerationJob:
    return job_create(user=user, model=model, prompt=prompt, images=images, batch=True)


def run_to_end(sim, batch: Batch, timeout: float = 5.0) -> Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch.refresh_from_db()
        if batch.is_final:
            return batch
        Batch.objects.filter(pk=batch.pk).update(next_poll_at=timezone.now())
        batches.batch_poll(batch.pk)
        time.sleep(0.03)
    raise AssertionError(f"batch still {batch.state}")


class TestDraft:
    def test_jobs_join_one_draft_per_model_charged_one_credit_each(self, sim, alice, gemini, enqueued):
        before = credit_account(alice).balance
        first = add(alice, gemini, images=2)
        second = add(alice, gemini)
        batch = Batch.objects.get()
        assert batch.state == BatchState.DRAFT and first.batch_id == second.batch_id == batch.pk
        assert batch.request_count == 3
        assert list(ImageSlot.objects.filter(job=first).values_list("batch_key", flat=True)) == [
            f"{first.pk}-0",
            f"{first.pk}-1",
        ]
        assert CreditAccount.objects.get(user=alice).balance == before - 2
        assert not enqueued.called  # nothing runs until the batch is sent

    def test_a_model_without_a_batch_lane_refuses(self, alice):
        with pytest.raises(JobRequestError, match="no batch mode"):
            add(alice, offline_model())

    def test_the_draft_is_sent_when_it_reaches_the_size_staff_set(
        self, sim, alice, gemini, enqueued, settings, django_capture_on_commit_callbacks
    ):
        settings.BATCH_AUTO_SUBMIT_REQUESTS = 3
        with django_capture_on_commit_callbacks(execute=True):
            add(alice, gemini, images=2)
        assert not enqueued.called
        with django_capture_on_commit_callbacks(execute=True):
            add(alice, gemini)
        assert enqueued.call_args.args == ("generation.tasks.batch_submit_task", str(Batch.objects.get().pk))

    def test_beat_sends_a_draft_old_enough(self, sim, alice, gemini, settings):
        add(alice, gemini)
        batch = Batch.objects.get()
        assert batches.batches_sweep().submit == []
        Batch.objects.filter(pk=batch.pk).update(
            created_at=timezone.now() - timedelta(minutes=settings.BATCH_AUTO_SUBMIT_MINUTES + 1)
        )
        assert batches.batches_sweep().submit == [str(batch.pk)]

    def test_removing_a_draft_job_refunds_it(self, sim, alice, gemini):
        keep, drop = add(alice, gemini), add(alice, gemini)
        balance = CreditAccount.objects.get(user=alice).balance
        job_remove_from_batch(job=drop)
        drop.refresh_from_db()
        assert drop.status == JobStatus.CANCELED and drop.batch_id is None
        assert CreditAccount.objects.get(user=alice).balance == balance + 1
        assert Batch.objects.get().request_count == 1
        job_remove_from_batch(job=GenerationJob.objects.get(pk=keep.pk))
        assert not Batch.objects.exists()

    def test_the_stale_job_sweeper_leaves_batch_jobs_alone(self, sim, alice, gemini, settings):
        job = add(alice, gemini)
        GenerationJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=3))
        plan = jobs_sweep()
        assert str(job.pk) not in plan.dispatch
        batches.batch_submit(job.batch_id)
        GenerationJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(hours=3))
        plan = jobs_sweep()
        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING and str(job.pk) not in plan.failed_jobs


class TestRun:
    def test_an_inline_batch_stores_every_image_at_half_price(self, sim, alice, gemini):
        jobs = [add(alice, gemini, prompt=f"fox {i}", images=2) for i in range(3)]
        batch = Batch.objects.get()
        countdown = batches.batch_submit(batch.pk)
        batch.refresh_from_db()
        assert batch.state in (BatchState.PENDING, BatchState.RUNNING) and batch.name.startswith("batches/")
        assert batch.input_mode == "inline" and countdown is not None and countdown <= 30
        assert all(j.status == JobStatus.RUNNING for j in GenerationJob.objects.filter(batch=batch))
        create = sim.calls_for("gemini", "batch_create")[0]
        assert len(create.json["batch"]["inputConfig"]["requests"]["requests"]) == 6
        assert create.json["batch"]["displayName"] == batch.display_name

        batch = run_to_end(sim, batch)
        assert batch.state == BatchState.SUCCEEDED and batch.succeeded_count == 6 and batch.ended_at
        # Its results stored, the batch (and the prompts it holds) is deleted at Google.
        assert [c.path for c in sim.calls_for("gemini", "batch_delete")] == [f"/gemini/v1beta/{batch.name}"]
        assert sim.gemini_batches == {}
        for job in jobs:
            job.refresh_from_db()
            assert job.status == JobStatus.SUCCEEDED
            assets = WorkspaceAsset.objects.filter(job=job).order_by("batch_index")
            assert [a.batch_index for a in assets] == [0, 1]
            assert all(a.metadata["batch"] is True for a in assets)
            assert job.cost == Decimal("0.0390")  # two images at half of 0.0390

    def test_a_file_batch(self, sim, alice, gemini, settings):
        settings.GEMINI_BATCH_INLINE_LIMIT_BYTES = 10
        job = add(alice, gemini, images=2)
        batches.batch_submit(job.batch_id)
        batch = run_to_end(sim, Batch.objects.get())
        assert batch.input_mode == "file" and batch.input_file.startswith("files/")
        assert batch.output_file.startswith("files/batch-")
        assert WorkspaceAsset.objects.filter(job=job).count() == 2

    def test_a_partial_batch_fails_only_the_requests_that_failed_and_retry_uses_the_normal_lane(
        self, sim, alice, gemini, enqueued, django_capture_on_commit_callbacks
    ):
        from generation.services.control import job_retry_failed

        sim.configure(gemini_batch_fail_every=2)
        job = add(alice, gemini, images=4)
        batches.batch_submit(job.batch_id)
        batch = run_to_end(sim, Batch.objects.get())
        assert batch.state == BatchState.PARTIAL and (batch.succeeded_count, batch.failed_count) == (2, 2)
        job.refresh_from_db()
        assert job.status == JobStatus.PARTIAL
        assert [e["index"] for e in job.errors] == [1, 3]
        assert "invalid argument" in job.errors[0]["error"].lower()
        assert sorted(WorkspaceAsset.objects.filter(job=job).values_list("batch_index", flat=True)) == [0, 2]
        # The failed lines were INVALID_ARGUMENT: permanent, so not offered again.
        ImageSlot.objects.filter(job=job, status=SlotStatus.FAILED).update(failed_permanently=False)
        with django_capture_on_commit_callbacks(execute=True):
            assert job_retry_failed(job=job) == 2
        assert enqueued.call_args.args == ("generation.tasks.job_dispatch_task", str(job.pk))

    @pytest.mark.parametrize(("outcome", "state"), [("failed", BatchState.FAILED), ("expired", BatchState.EXPIRED)])
    def test_failed_and_expired_batches_fail_the_images_and_refund(self, sim, alice, gemini, outcome, state):
        sim.configure(gemini_batch_outcome=outcome)
        job = add(alice, gemini, images=2)
        balance = CreditAccount.objects.get(user=alice).balance
        batches.batch_submit(job.batch_id)
        batch = run_to_end(sim, Batch.objects.get())
        assert batch.state == state
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.failed_count == 2
        assert CreditAccount.objects.get(user=alice).balance == balance + 1
        assert not WorkspaceAsset.objects.filter(job=job).exists()
        if outcome == "expired":
            assert "48 hours" in job.errors[0]["error"]

    def test_cancel_a_sent_batch(self, sim, alice, gemini):
        sim.configure(gemini_batch_pending_seconds=10)
        job = add(alice, gemini)
        batches.batch_submit(job.batch_id)
        batch = Batch.objects.get()
        batches.batch_cancel(batch=batch)
        assert Batch.objects.get().cancel_requested
        assert batches.batch_provider_cancel(batch.pk) == 0.0
        batch = run_to_end(sim, batch)
        assert batch.state == BatchState.CANCELLED
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and "cancelled" in job.errors[0]["error"]

    def test_a_poller_run_twice_stores_each_image_once(self, sim, alice, gemini):
        job = add(alice, gemini, images=2)
        batches.batch_submit(job.batch_id)
        batch = Batch.objects.get()
        sim.wait_until(lambda: sim.gemini_batches and next(iter(sim.gemini_batches.values())).state() == "SUCCEEDED")
        from generation.providers import get_batch_client

        client = get_batch_client(gemini)
        client_status = client.get(batch.name)
        # Two pollers that both saw the end: the second stores nothing new.
        batches.batch_finish(batch, state=BatchState.SUCCEEDED, status=client_status, client=client)
        batches.batch_finish(batch, state=BatchState.SUCCEEDED, status=client_status, client=client)
        Batch.objects.filter(pk=batch.pk).update(state=BatchState.RUNNING, next_poll_at=timezone.now())
        batches.batch_poll(batch.pk)
        assert WorkspaceAsset.objects.filter(job=job).count() == 2
        job.refresh_from_db()
        assert (job.status, job.succeeded_count) == (JobStatus.SUCCEEDED, 2)

    def test_polls_are_spaced_by_age_and_long_waits_are_left_to_beat(self, settings):
        settings.BATCH_POLL_MIN_SECONDS = 5
        settings.BATCH_POLL_MAX_SECONDS = 600
        assert batches.poll_interval(0) == 5
        assert batches.poll_interval(600) == 60
        assert batches.poll_interval(86_400) == 600
        assert batches._countdown_for(batches.poll_interval(0)) == 5
        assert batches._countdown_for(batches.poll_interval(600)) is None  # beat: not a countdown

    def test_beat_polls_what_is_due(self, sim, alice, gemini):
        job = add(alice, gemini)
        batches.batch_submit(job.batch_id)
        batch = Batch.objects.get()
        Batch.objects.filter(pk=batch.pk).update(next_poll_at=timezone.now() + timedelta(minutes=5))
        assert batches.batches_sweep().poll == []
        Batch.objects.filter(pk=batch.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
        assert batches.batches_sweep().poll == [str(batch.pk)]


class TestLostCreate:
    def test_a_lost_create_answer_is_found_by_name_and_never_sent_twice(self, sim, alice, gemini, settings):
        sim.configure(gemini_batch_drop_create_answer=1)
        job = add(alice, gemini, images=2)
        assert batches.batch_submit(job.batch_id) is None
        batch = Batch.objects.get()
        assert batch.state == BatchState.SUBMITTING and batch.name == "" and batch.create_sent_at
        # Within the grace it is left alone (the create may still be running).
        assert batches.batches_sweep().recover == []
        settings.BATCH_LOST_CREATE_GRACE_SECONDS = 0
        plan = batches.batches_sweep(now=timezone.now() + timedelta(seconds=1))
        assert plan.recover == [str(batch.pk)] and plan.submit == []
        batches.batch_recover(batch.pk)
        batch.refresh_from_db()
        assert batch.state in (BatchState.PENDING, BatchState.RUNNING) and batch.name.startswith("batches/")
        assert "not sent twice" in batch.error
        assert len(sim.calls_for("gemini", "batch_create")) == 1
        assert len(sim.calls_for("gemini", "batch_list")) == 1
        batch = run_to_end(sim, batch)
        assert batch.state == BatchState.SUCCEEDED
        assert WorkspaceAsset.objects.filter(job=job).count() == 2
        assert len(sim.calls_for("gemini", "batch_create")) == 1 and sim.gemini_batches == {}  # read, then deleted

    def test_a_create_google_never_confirmed_is_looked_for_then_failed_and_never_sent_again(
        self, sim, alice, gemini, settings
    ):
        sim.drop_next(1, provider="gemini", op="batch_create")  # dropped before the batch exists
        job = add(alice, gemini, images=2)
        credits_before = CreditAccount.objects.get(user=alice).balance
        batches.batch_submit(job.batch_id)
        settings.BATCH_LOST_CREATE_GRACE_SECONDS = 0
        # Google's list may lag behind its create: not found yet is not given up on.
        batches.batch_recover(job.batch_id)
        batch = Batch.objects.get()
        assert batch.state == BatchState.SUBMITTING and batch.error == batches.LOST_CREATE_WAITING
        assert len(sim.calls_for("gemini", "batch_list")) == 1

        settings.BATCH_LOST_CREATE_GIVE_UP_SECONDS = 0
        batches.batch_recover(job.batch_id)
        batch.refresh_from_db()
        job.refresh_from_db()
        assert batch.state == BatchState.FAILED and "cannot be billed twice" in batch.error
        assert job.status == JobStatus.FAILED
        assert CreditAccount.objects.get(user=alice).balance == credits_before + 1  # refunded
        assert set(job.slots.values_list("status", flat=True)) == {SlotStatus.FAILED}
        # Nothing sends it again: not the sweep, not a second recover.
        assert batches.batches_sweep().submit == [] and batches.batches_sweep().recover == []
        batches.batch_recover(batch.pk)
        assert len(sim.calls_for("gemini", "batch_create")) == 1 and sim.gemini_batches == {}

    def test_a_send_the_sweep_took_back_is_not_sent(self, sim, alice, gemini, monkeypatch):
        job = add(alice, gemini)
        real = batches.build_request

        def slow_build(*args, **kwargs):
            # Meanwhile the sweep found the batch SUBMITTING with no intent and took it back.
            batches.batch_recover(job.batch_id)
            return real(*args, **kwargs)

        monkeypatch.setattr(batches, "build_request", slow_build)
        assert batches.batch_submit(job.batch_id) is None
        assert Batch.objects.get().state == BatchState.DRAFT
        assert not sim.calls_for("gemini", "batch_create")

    def test_a_retryable_error_before_sending_keeps_the_draft(self, sim, alice, gemini):
        sim.fail_next(1, 503, provider="gemini", op="batch_create")
        job = add(alice, gemini)
        batches.batch_submit(job.batch_id)
        batch = Batch.objects.get()
        # A 503 answer means Google answered: it did not take the batch.
        assert batch.state == BatchState.DRAFT and "Could not send" in batch.error

    def test_a_refused_batch_fails_and_refunds(self, sim, alice, gemini):
        sim.fail_next(1, 400, provider="gemini", op="batch_create")
        job = add(alice, gemini)
        balance = CreditAccount.objects.get(user=alice).balance
        batches.batch_submit(job.batch_id)
        assert Batch.objects.get().state == BatchState.FAILED
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED
        assert CreditAccount.objects.get(user=alice).balance == balance + 1


class TestNotifications:
    def test_an_ended_batch_is_toasted_once_and_badged_until_seen(self, sim, alice, gemini):
        job = add(alice, gemini)
        batches.batch_submit(job.batch_id)
        run_to_end(sim, Batch.objects.get())
        assert [b.pk for b in batches.batches_take_notifications(alice)] == [job.batch_id]
        assert batches.batches_take_notifications(alice) == []
        assert Batch.objects.filter(owner=alice, seen_at__isnull=True, ended_at__isnull=False).count() == 1
        batches.batches_mark_seen(alice)
        assert not Batch.objects.filter(owner=alice, seen_at__isnull=True, ended_at__isnull=False).exists()
