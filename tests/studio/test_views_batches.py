"""The batch queue, Batch mode in the prompt bar, notifications and the spend page (studio/views_batches.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from generation.models import Batch, BatchState, GenerationJob, JobStatus
from generation.services.jobs import job_create
from models_registry.models import ApiModel
from studio.models import AssetSource, WorkspaceAsset
from tests.factories import offline_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def gemini(settings):
    settings.GEMINI_API_KEY = "AIza-test-key"
    model, _ = ApiModel.objects.update_or_create(
        key="gemini-2.5-flash-image",
        defaults={
            "display_name": "Gemini Flash Image",
            "provider": "gemini",
            "tasks": ["t2i"],
            "input_schema": {"type": "object", "properties": {"prompt": {"type": "string"}}},
            "capabilities": {"batch_api": True},
            "price_per_image": Decimal("0.0400"),
        },
    )
    return model


def generate(client, model, *, batch: bool, prompt="a fox"):
    data = {"prompt": prompt, "model": model.pk, "images": 1, "enhance_present": "1", "batch_present": "1"}
    if batch:
        data["batch"] = "on"
    return client.post(reverse("studio:generate"), data)


class TestPromptBar:
    def test_the_switch_shows_on_models_with_a_batch_lane_only(self, alice_client, gemini):
        offline = offline_model()
        html = alice_client.get(reverse("studio:prompt-options"), {"model": gemini.pk}, HTTP_HX_REQUEST="true")
        assert "Batch mode · half price · results later (up to 24 h)" in html.content.decode()
        html = alice_client.get(reverse("studio:prompt-options"), {"model": offline.pk}, HTTP_HX_REQUEST="true")
        assert "Batch mode" not in html.content.decode()

    def test_with_the_switch_on_the_chips_show_the_batch_price(self, alice_client, gemini):
        url = reverse("studio:prompt-options")
        off = alice_client.get(url, {"model": gemini.pk, "batch_present": "1"}, HTTP_HX_REQUEST="true")
        on = alice_client.get(url, {"model": gemini.pk, "batch_present": "1", "batch": "on"}, HTTP_HX_REQUEST="true")
        # x1, x2, x4 at $0.04 an image, and at half of it in the batch.
        prices = ("≈ $0.02", "≈ $0.04", "≈ $0.08", "≈ $0.16")
        assert [p for p in prices if p in off.content.decode()] == ["≈ $0.04", "≈ $0.08", "≈ $0.16"]
        assert [p for p in prices if p in on.content.decode()] == ["≈ $0.02", "≈ $0.04", "≈ $0.08"]

    def test_with_batch_mode_on_generate_adds_to_the_batch(self, alice_client, alice, gemini, enqueued):
        response = generate(alice_client, gemini, batch=True)
        assert response.status_code == 302
        job = GenerationJob.objects.get(owner=alice)
        assert job.batch is not None and job.batch.state == BatchState.DRAFT
        assert job.status == JobStatus.QUEUED
        page = alice_client.get(reverse("studio:home")).content.decode()
        assert "Add to batch" in page  # the switch stays on
        assert "via Batch API · 50%" in page
        assert "Waiting in your batch queue" in page

    def test_batch_mode_on_a_model_without_it_is_refused_clearly(self, alice_client, alice):
        offline = offline_model()
        response = generate(alice_client, offline, batch=True)
        assert response.status_code == 400
        assert "has no batch mode" in response.content.decode()
        assert not GenerationJob.objects.filter(owner=alice).exists()


class TestCard:
    def test_retry_failed_of_a_batch_job_says_it_runs_at_full_price(self, alice_client, alice, gemini):
        from generation.models import ImageSlot, SlotStatus

        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        Batch.objects.filter(pk=job.batch_id).update(state=BatchState.FAILED, ended_at=timezone.now())
        ImageSlot.objects.filter(job=job).update(status=SlotStatus.FAILED, error="Google's batch failed.")
        GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, failed_count=1)
        html = alice_client.get(reverse("studio:job-card", args=[job.pk])).content.decode()
        assert "Retry failed at full price" in html
        assert 'hx-confirm="The failed images run now through the normal lane, at the full price' in html


class TestQueue:
    def test_drafts_and_their_jobs_with_an_estimate(self, alice_client, alice, gemini):
        job_create(user=alice, model=gemini, prompt="first fox", images=2, batch=True)
        page = alice_client.get(reverse("studio:batches")).content.decode()
        assert "first fox" in page and "Submit batch now" in page
        assert "estimated $0.04 (half price)" in page  # 2 images x $0.04 x 50%

    def test_submit_now_sends_the_draft(
        self, alice_client, alice, gemini, enqueued, django_capture_on_commit_callbacks
    ):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_client.post(reverse("studio:batch-submit", args=[job.batch_id]))
        assert response.status_code == 302
        assert enqueued.call_args.args == ("generation.tasks.batch_submit_task", str(job.batch_id))

    def test_remove_a_draft_job(self, alice_client, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        alice_client.post(reverse("studio:batch-job-remove", args=[job.pk]))
        job.refresh_from_db()
        assert job.status == JobStatus.CANCELED and not Batch.objects.exists()

    def test_a_sent_batch_cannot_lose_jobs_and_says_why(self, alice_client, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        Batch.objects.filter(pk=job.batch_id).update(state=BatchState.RUNNING, name="batches/x")
        response = alice_client.post(reverse("studio:batch-job-remove", args=[job.pk]), follow=True)
        assert "already sent" in response.content.decode()
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED

    def test_cancel_a_sent_batch(self, alice_client, alice, gemini, enqueued, django_capture_on_commit_callbacks):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        Batch.objects.filter(pk=job.batch_id).update(state=BatchState.RUNNING, name="batches/x")
        with django_capture_on_commit_callbacks(execute=True):
            alice_client.post(reverse("studio:batch-cancel", args=[job.batch_id]))
        assert Batch.objects.get().cancel_requested
        assert enqueued.call_args.args == ("generation.tasks.batch_cancel_task", str(job.batch_id))
        page = alice_client.get(reverse("studio:batches")).content.decode()
        assert "cancelling…" in page

    def test_another_users_batch_and_job_answer_404(self, client, bob, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        client.force_login(bob)
        for url in (
            reverse("studio:batch-submit", args=[job.batch_id]),
            reverse("studio:batch-cancel", args=[job.batch_id]),
            reverse("studio:batch-job-remove", args=[job.pk]),
            reverse("studio:batch-submit", args=[uuid.uuid4()]),
        ):
            assert client.post(url).status_code == 404
        assert "a fox" not in client.get(reverse("studio:batches")).content.decode()

    def test_actions_need_post_and_csrf(self, alice, gemini):
        from django.test import Client

        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(alice)
        assert strict.get(reverse("studio:batch-submit", args=[job.batch_id])).status_code == 405
        assert strict.post(reverse("studio:batch-submit", args=[job.batch_id])).status_code == 403


class TestNotifications:
    def test_an_ended_batch_badges_the_link_and_toasts_once(self, alice_client, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        Batch.objects.filter(pk=job.batch_id).update(
            state=BatchState.SUCCEEDED, ended_at=timezone.now(), request_count=1
        )
        page = alice_client.get(reverse("studio:home")).content.decode()
        assert 'class="nav-badge"' in page
        assert "Your batch of 1 image on Gemini Flash Image ended" in page
        page = alice_client.get(reverse("studio:home")).content.decode()
        assert "Your batch of 1 image" not in page  # toasted once
        assert 'class="nav-badge"' in page  # the badge stays until the queue is seen
        alice_client.get(reverse("studio:batches"))
        assert 'class="nav-badge"' not in alice_client.get(reverse("studio:home")).content.decode()


class TestSpend:
    def test_this_months_spend_by_model_with_the_batch_saving(self, alice_client, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", images=2, batch=True)
        for index, batch in ((0, True), (1, False)):
            WorkspaceAsset.objects.create(
                owner=alice,
                job=job,
                batch_index=index,
                source=AssetSource.GENERATED,
                file=f"x/{index}.png",
                metadata={"model": gemini.key, "provider": "gemini", "batch": batch},
            )
        page = alice_client.get(reverse("studio:spend")).content.decode()
        assert 'id="spend-total">$0.06<' in page  # $0.02 (batch) + $0.04
        assert 'id="spend-saved">$0.02<' in page
        assert "Gemini Flash Image" in page and "<svg" in page

    def test_last_months_images_are_not_this_months(self, alice_client, alice, gemini):
        job = job_create(user=alice, model=gemini, prompt="a fox", batch=True)
        asset = WorkspaceAsset.objects.create(
            owner=alice,
            job=job,
            batch_index=0,
            source=AssetSource.GENERATED,
            file="x/0.png",
            metadata={"model": gemini.key},
        )
        WorkspaceAsset.objects.filter(pk=asset.pk).update(created_at=timezone.now() - timedelta(days=40))
        assert 'id="spend-total">$0.00<' in alice_client.get(reverse("studio:spend")).content.decode()
