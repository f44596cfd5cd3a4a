"""The operations page: staff only, each section's data, pausing and resuming a provider, re-driving a stuck job."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from celery import Celery
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from generation import enqueue, heartbeat, limits, queues
from generation.models import GenerationJob, ImageSlot, JobStatus, ProviderRequest, RequestStatus, SlotStatus
from generation.services import ops, routing
from models_registry.models import ProviderPause
from tests.factories import offline_model
from tests.studio.helpers import htmx, make_job

pytestmark = pytest.mark.django_db

OPS = reverse("studio:ops")
PAUSE = reverse("studio:ops-pause")
RESUME = reverse("studio:ops-resume")


@pytest.fixture(autouse=True)
def fresh_cache():
    keys = [routing.PAUSES_CACHE_KEY, heartbeat.WORKERS_KEY, "cooldown:fal", "provider-health:offline"]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def stale(job: GenerationJob, seconds: float) -> GenerationJob:
    GenerationJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))
    return job


def running_job(owner, model, **kwargs) -> GenerationJob:
    return make_job(owner, model, images=2, status=JobStatus.RUNNING, pending=(0, 1), with_files=False, **kwargs)


class TestAccess:
    def test_anonymous_users_get_the_login_page(self, client):
        for url in (OPS, PAUSE, RESUME):
            response = client.get(url) if url == OPS else client.post(url, {"kind": "fal"})
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("login"))

    def test_users_who_are_not_staff_get_404(self, alice_client, alice, model):
        job = running_job(alice, model)
        assert alice_client.get(OPS).status_code == 404
        assert alice_client.get(OPS, **htmx()).status_code == 404
        assert alice_client.post(PAUSE, {"kind": "fal"}).status_code == 404
        assert alice_client.post(RESUME, {"kind": "fal"}).status_code == 404
        assert alice_client.post(reverse("studio:ops-redrive", args=[job.pk])).status_code == 404
        assert not ProviderPause.objects.exists()

    def test_the_top_bar_links_it_for_staff_only(self, staff_client, alice, model):
        assert f'href="{OPS}"' in staff_client.get(reverse("studio:home")).content.decode()
        other = Client()
        other.force_login(alice)
        assert f'href="{OPS}"' not in other.get(reverse("studio:home")).content.decode()


class TestSections:
    def test_it_shows_the_workers_seen(self, staff_client):
        heartbeat.record_worker(hostname="celery@box-1", queues=["studio", "io"], running=3, pid=11, at=time.time() - 7)
        html = staff_client.get(OPS).content.decode()
        assert "celery@box-1" in html and "studio, io" in html and "7 s ago" in html
        assert "<td>3</td>" in html

    def test_it_shows_the_gpu_workers_model_device_and_waiting_requests(self, staff_client):
        assert "No GPU worker is running" in staff_client.get(OPS).content.decode()
        details = {"gpu": True, "model": "sdxl-base-1.0", "device": "cuda:0", "waiting": 5}
        heartbeat.record_worker(hostname="celery@gpu-1", queues=["gpu"], running=1, pid=12, details=details)
        html = staff_client.get(OPS, **htmx()).content.decode()
        assert "<td>celery@gpu-1</td><td>sdxl-base-1.0 on cuda:0</td><td>5</td>" in html
        assert "No GPU worker is running" not in html

    def test_it_says_when_no_worker_is_running(self, staff_client):
        assert "No worker has beaten in the last minute" in staff_client.get(OPS).content.decode()

    def test_it_shows_the_queue_depths(self, staff_client):
        with mock.patch("generation.queues.queue_depths", return_value={"studio": 12, "io": 0}):
            html = staff_client.get(OPS).content.decode()
        assert "<td>studio</td><td>12</td>" in html and "<td>io</td><td>0</td>" in html

    def test_it_says_which_queue_no_worker_consumes(self, staff_client):
        images = queues.image_queue()
        heartbeat.record_worker(hostname="celery@box-1", queues=[queues.worker_queues()[0]], running=0, pid=11)
        with mock.patch("generation.queues.queue_depths", return_value={queues.worker_queues()[0]: 0, images: 40}):
            html = staff_client.get(OPS).content.decode()
        assert f'<td>{images}</td><td>40</td><td><span class="is-bad">none: start the Procfile\'s' in html
        assert f"<td>{queues.worker_queues()[0]}</td><td>0</td><td>1</td>" in html

    def test_it_still_renders_when_the_broker_does_not_answer(self, staff_client):
        with mock.patch("generation.queues.queue_depths", side_effect=ConnectionRefusedError("refused")):
            response = staff_client.get(OPS)
        assert response.status_code == 200
        assert "The broker did not answer: refused" in response.content.decode()

    def test_it_shows_provider_health_cooldowns_and_pauses(self, staff_client, settings):
        settings.FAL_KEY = "fal-test-key"
        settings.GEMINI_API_KEY = ""
        limits.cooldown("fal", 30)
        routing.provider_mark_unhealthy("offline")
        routing.provider_pause("fal", reason="billing problem")
        html = staff_client.get(OPS).content.decode()
        fal = html[html.index('id="provider-fal"') :].split("</tr>")[0]
        assert "paused" in fal and "billing problem" in fal and "(429 Retry-After)" in fal and "Resume" in fal
        offline = html[html.index('id="provider-offline"') :].split("</tr>")[0]
        assert "is-unhealthy" in offline and "Resume" not in offline
        gemini = html[html.index('id="provider-gemini"') :].split("</tr>")[0]
        assert "not configured" in gemini

    def test_it_lists_stuck_jobs_only(self, staff_client, alice, model):
        stuck = stale(running_job(alice, model, prompt="stuck"), ops.stuck_after().total_seconds() + 5)
        fresh = running_job(alice, model, prompt="fresh")
        # A job whose request moved recently is not stuck, however old the job row is.
        moving = stale(running_job(alice, model, prompt="moving"), 3600)
        ProviderRequest.objects.create(job=moving, model=model, provider="offline", slot_indexes=[0, 1])
        done = stale(make_job(alice, model, images=1), 3600)

        html = staff_client.get(OPS).content.decode()
        assert f'id="stuck-{stuck.pk}"' in html
        for job in (fresh, moving, done):
            assert f'id="stuck-{job.pk}"' not in html
        assert reverse("studio:ops-redrive", args=[stuck.pk]) in html

    def test_it_groups_recent_failures_by_provider_and_error(self, staff_client, alice, model):
        fal_model = offline_model("fal-model", provider="fal", display_name="Fal")
        job = make_job(alice, model, images=3, failed=(0, 1, 2), error="HTTP 503", with_files=False)
        request = ProviderRequest.objects.create(job=job, model=fal_model, provider="fal", slot_indexes=[0, 1, 2])
        ImageSlot.objects.filter(job=job).update(request=request)
        other = make_job(alice, model, images=2, failed=(0,), error="Refused by the safety filter", with_files=False)
        old = make_job(alice, model, images=1, failed=(0,), error="Yesterday's outage", with_files=False)
        ImageSlot.objects.filter(job=old).update(updated_at=timezone.now() - timedelta(hours=25))

        groups = ops.recent_failures()
        assert [(g.provider, g.error, g.count) for g in groups] == [
            ("offline", "Refused by the safety filter", 1),
            ("fal", "HTTP 503", 3),
        ]
        html = staff_client.get(OPS).content.decode()
        assert "HTTP 503" in html and "Refused by the safety filter" in html and "Yesterday" not in html
        assert other.pk  # its failure counts under its model's provider (no request)

    def test_htmx_polls_get_the_live_part_only(self, staff_client):
        response = staff_client.get(OPS, **htmx())
        html = response.content.decode()
        assert html.lstrip().startswith('<div id="ops-live"')
        assert 'hx-trigger="every 2s"' in html
        assert "<html" not in html and "Pause a provider" not in html


class TestPauseAndResume:
    def test_staff_pause_a_provider_with_a_reason_and_resume_it(self, staff_client, staff):
        response = staff_client.post(PAUSE, {"kind": "gemini", "reason": "billing problem"}, follow=True)
        assert "Google Gemini is paused" in response.content.decode()
        pause = ProviderPause.objects.get(kind="gemini")
        assert (pause.reason, pause.paused_by) == ("billing problem", staff)
        assert routing.provider_paused("gemini")

        response = staff_client.post(RESUME, {"kind": "gemini"}, follow=True)
        assert "Google Gemini is resumed" in response.content.decode()
        assert not ProviderPause.objects.exists() and not routing.provider_paused("gemini")

    def test_bad_input_gets_a_clear_error(self, staff_client):
        html = staff_client.post(PAUSE, {"kind": "nope"}, follow=True).content.decode()
        assert "Unknown provider: &#x27;nope&#x27;." in html
        html = staff_client.post(PAUSE, {"kind": "fal", "reason": "x" * 201}, follow=True).content.decode()
        assert "at most 200 characters" in html
        html = staff_client.post(RESUME, {"kind": "fal"}, follow=True).content.decode()
        assert "fal.ai was not paused." in html
        assert not ProviderPause.objects.exists()

    def test_the_actions_need_post_and_the_csrf_token(self, staff):
        client = Client(enforce_csrf_checks=True)
        client.force_login(staff)
        assert client.get(PAUSE).status_code == 405
        assert client.post(PAUSE, {"kind": "fal"}).status_code == 403
        assert client.post(RESUME, {"kind": "fal"}).status_code == 403
        assert not ProviderPause.objects.exists()
        # With the page's token it goes through.
        page = client.get(OPS)
        token = page.context["csrf_token"]
        assert client.post(PAUSE, {"kind": "fal", "csrfmiddlewaretoken": str(token)}).status_code == 302
        assert ProviderPause.objects.filter(kind="fal").exists()

    def test_the_prompt_bar_shows_a_paused_model_disabled_with_the_reason_until_resumed(
        self, staff_client, alice_client, model
    ):
        routing.provider_pause("offline", reason="maintenance until 14:00")
        html = alice_client.get(reverse("studio:home")).content.decode()
        option = html[html.index(f'<option value="{model.pk}"') :].split("</option>")[0]
        assert "disabled" in option and "Paused by staff: maintenance until 14:00" in option

        routing.provider_resume("offline")
        html = alice_client.get(reverse("studio:home")).content.decode()
        option = html[html.index(f'<option value="{model.pk}"') :].split("</option>")[0]
        assert "disabled" not in option and "Paused by staff" not in option


class TestRedrive:
    def redrive(self, client, job, capture):
        with capture(execute=True):
            return client.post(reverse("studio:ops-redrive", args=[job.pk]), follow=True)

    def test_a_queued_job_is_dispatched_again(
        self, staff_client, alice, model, enqueued, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, model, images=2, status=JobStatus.QUEUED, pending=(0, 1), with_files=False)
        ImageSlot.objects.filter(job=job).update(status=SlotStatus.PENDING)
        response = self.redrive(staff_client, stale(job, 600), django_capture_on_commit_callbacks)
        assert "1 message sent" in response.content.decode()
        enqueued.assert_called_once_with(enqueue.DISPATCH, str(job.pk))
        job.refresh_from_db()
        assert job.updated_at > timezone.now() - timedelta(seconds=5)  # off the stuck list until it sticks again

    def test_each_open_request_gets_the_step_the_sweeper_would_send(
        self, staff_client, alice, model, enqueued, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, model, images=4, status=JobStatus.RUNNING, pending=(0, 1, 2, 3), with_files=False)
        ImageSlot.objects.filter(job=job, index=3).update(status=SlotStatus.PENDING)  # no request yet
        pending = ProviderRequest.objects.create(job=job, model=model, provider="offline", slot_indexes=[0])
        polled = ProviderRequest.objects.create(
            job=job, model=model, provider="offline", slot_indexes=[1], status=RequestStatus.SUBMITTED, external_id="x"
        )
        lost = ProviderRequest.objects.create(
            job=job, model=model, provider="offline", slot_indexes=[2], status=RequestStatus.SUBMITTED
        )
        for index, request in enumerate((pending, polled, lost)):
            ImageSlot.objects.filter(job=job, index=index).update(request=request)
        ProviderRequest.objects.create(
            job=job, model=model, provider="offline", slot_indexes=[], status=RequestStatus.FAILED
        )

        response = self.redrive(staff_client, job, django_capture_on_commit_callbacks)

        assert "4 messages sent" in response.content.decode()
        sent = sorted(c.args for c in enqueued.call_args_list)
        assert sent == sorted(
            [
                (enqueue.DISPATCH, str(job.pk)),
                (enqueue.SUBMIT, str(pending.pk)),
                (enqueue.POLL, str(polled.pk)),
                (enqueue.RECOVER, str(lost.pk)),
            ]
        )
        assert ProviderRequest.objects.filter(pk=pending.pk, due_at__isnull=False).exists()

    def test_a_submit_a_live_worker_is_still_making_is_left_to_it(
        self, staff, alice, model, enqueued, django_capture_on_commit_callbacks
    ):
        job = running_job(alice, model)
        request = ProviderRequest.objects.create(
            job=job, model=model, provider="offline", slot_indexes=[0, 1], status=RequestStatus.SUBMITTED
        )
        ImageSlot.objects.filter(job=job).update(request=request)
        with (
            mock.patch("generation.limits.submit_in_flight", return_value=True),
            django_capture_on_commit_callbacks(execute=True),
        ):
            plan = ops.job_redrive(job.pk)
        assert (plan.dispatch, plan.submit, plan.poll, plan.recover) == ([], [], [], [])
        enqueued.assert_not_called()

    def test_an_ended_job_is_refused_with_a_clear_error(
        self, staff_client, alice, model, enqueued, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, model, images=1)
        response = self.redrive(staff_client, job, django_capture_on_commit_callbacks)
        assert "The job has already ended (succeeded)." in response.content.decode()
        enqueued.assert_not_called()

    def test_a_job_with_nothing_left_to_run_is_closed_instead(
        self, staff_client, alice, model, enqueued, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, model, images=1, status=JobStatus.RUNNING)
        response = self.redrive(staff_client, job, django_capture_on_commit_callbacks)
        assert "it is closed now" in response.content.decode()
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED
        enqueued.assert_not_called()

    def test_an_unknown_job_is_refused(self, staff_client, enqueued, django_capture_on_commit_callbacks):
        response = self.redrive(
            staff_client, GenerationJob(pk="00000000-0000-0000-0000-000000000000"), django_capture_on_commit_callbacks
        )
        assert "No such job." in response.content.decode()
        enqueued.assert_not_called()


class TestQueueDepths:
    def test_it_counts_the_message_files_of_the_filesystem_broker(self, tmp_path, monkeypatch):
        # Celery prefers CELERY_BROKER_URL from the environment (the tests' Redis) to its argument.
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        folder = tmp_path / "queue"
        folder.mkdir()
        fs_app = Celery(broker="filesystem://")
        fs_app.conf.broker_transport_options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
        fs_app.conf.task_default_queue = "studio"
        # Files as studio/broker.py writes them: "<time>_<uuid>.<queue>.msg", a partial one has no queue yet.
        for n, queue in enumerate(["studio", "studio", "studio", "io"]):
            (folder / f"{n}_{uuid.uuid4()}.{queue}.msg").write_text("{}")
        (folder / f".partial-{uuid.uuid4().hex}").write_text("")
        heartbeat.record_worker(hostname="w1", queues=["studio", "io", "gpu"], running=0, pid=1)
        assert fs_app.conf.broker_url == "filesystem://"
        with mock.patch("generation.queues.app", fs_app):
            # The image queue beside the default one is listed even while empty.
            assert queues.queue_depths() == {"gpu": 0, "io": 1, "studio": 3, "studio-images": 0}

    def test_it_reads_the_redis_broker(self):
        from studio.celery import app

        if not app.conf.broker_url.startswith("redis"):
            pytest.skip("the test broker is not Redis")
        queue = f"ops-test-{time.time_ns()}"
        with mock.patch("generation.queues.queue_names", return_value=[queue]):
            assert queues.queue_depths() == {queue: 0}
            for n in range(2):
                app.send_task("generation.tasks.job_dispatch_task", (str(n),), queue=queue)
            try:
                assert queues.queue_depths() == {queue: 2}
            finally:
                with app.connection_for_write() as connection:
                    connection.default_channel.queue_purge(queue)
