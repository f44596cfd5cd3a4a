"""Routing: provider health, the fallback chain's next model, and the pipeline moving images to it."""

from __future__ import annotations

import time
from decimal import Decimal
from unittest import mock

import pytest
from django.core.cache import cache

from generation import enqueue
from generation.models import GenerationJob, ImageSlot, JobMode, JobStatus, ProviderRequest, RequestStatus, SlotStatus
from generation.providers.base import GeneratedImage, Provider, ProviderError, ProviderResult, ResultStatus
from generation.providers.kinds import PROVIDER_KINDS
from generation.services import routing, runs
from generation.services.control import job_retry_failed
from generation.services.jobs import job_create
from models_registry.models import ApiModel, FallbackChain, FallbackEntry, ProviderPause
from studio.models import WorkspaceAsset
from tests.factories import offline_model, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    """Health marks and provider limits of earlier tests must not leak in."""
    settings.FAL_KEY = "fal-test-key"
    settings.REPLICATE_API_TOKEN = "r8_test"
    settings.GEMINI_API_KEY = "gemini-test-key"
    settings.PUBLIC_BASE_URL = ""
    keys = [f"provider-health:{kind}" for kind in PROVIDER_KINDS]
    keys += [f"cooldown:{kind}" for kind in PROVIDER_KINDS]
    keys += [f"limit:{kind}:{n}" for kind in PROVIDER_KINDS for n in range(32)]
    # Per-second rate windows too: two tests' submits can fall in the same second.
    keys += [f"rate:{kind}:{int(time.time()) + d}" for kind in PROVIDER_KINDS for d in (-1, 0, 1)]
    keys.append(routing.PAUSES_CACHE_KEY)
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def api_model(key: str, provider: str, tasks: list[str], **kwargs) -> ApiModel:
    defaults = {"display_name": key, "provider": provider, "tasks": tasks, "price_per_image": Decimal("0.01")}
    defaults.update(kwargs)
    model, _ = ApiModel.objects.update_or_create(key=key, defaults=defaults)
    return model


def chain(task: str, *models: ApiModel) -> FallbackChain:
    chain, _ = FallbackChain.objects.get_or_create(task=task)
    chain.entries.all().delete()
    for position, model in enumerate(models, start=1):
        FallbackEntry.objects.create(chain=chain, model=model, position=position)
    return chain


@pytest.fixture
def models():
    return {
        "offline": offline_model(),
        "gemini": api_model("gemini-test", "gemini", ["t2i", "i2i", "i2i_multi"]),
        "fal": api_model(
            "fal-test",
            "fal",
            ["t2i", "i2i"],
            input_schema={"properties": {"num_images": {"type": "integer", "maximum": 4}}},
        ),
        "replicate": api_model("replicate-test", "replicate", ["t2i", "i2i"]),
    }


def make_job(user, model: ApiModel, *, images: int = 2, references: list | None = None) -> GenerationJob:
    mode = JobMode.I2I_MODIFY if references else JobMode.T2I
    with mock.patch("generation.enqueue.send"):
        return job_create(user=user, model=model, prompt="x", images=images, mode=mode, references=references or [])


def make_asset(owner) -> WorkspaceAsset:
    from django.core.files.base import ContentFile

    asset = WorkspaceAsset(owner=owner, source="upload", width=64, height=80, content_type="image/png")
    asset.file.save("ref.png", ContentFile(png_bytes()), save=False)
    asset.save()
    return asset


class TestProviderHealth:
    def test_it_caches_a_probe_briefly(self):
        with mock.patch("generation.providers.offline.OfflineEngine.health_check", return_value=True) as probe:
            assert routing.provider_healthy("offline") is True
            assert routing.provider_healthy("offline") is True
        assert probe.call_count == 1
        cache.delete("provider-health:offline")  # the cache entry expires
        with mock.patch("generation.providers.offline.OfflineEngine.health_check", return_value=False) as probe:
            assert routing.provider_healthy("offline") is False
        assert probe.call_count == 1

    def test_it_keeps_a_provider_marked_unhealthy_without_probing(self):
        routing.provider_mark_unhealthy("fal")
        with mock.patch("generation.providers.fal.Fal.health_check", return_value=True) as probe:
            assert routing.provider_healthy("fal") is False
        probe.assert_not_called()

    def test_it_counts_a_crashing_probe_as_unhealthy(self):
        with mock.patch("generation.providers.comfyui.ComfyUI.health_check", side_effect=RuntimeError("boom")):
            assert routing.provider_healthy("comfyui") is False

    def test_it_tells_staff_healthy_unhealthy_or_not_configured(self, settings):
        settings.REPLICATE_API_TOKEN = ""
        routing.provider_mark_unhealthy("gemini")
        assert routing.provider_status("fal") == routing.HEALTHY
        assert routing.provider_status("gemini") == routing.UNHEALTHY
        assert routing.provider_status("replicate") == routing.NOT_CONFIGURED


class TestNextModel:
    def test_it_follows_the_chain_after_the_failed_model_and_wraps_around(self, alice, models):
        chain("t2i", models["fal"], models["offline"], models["gemini"], models["replicate"])
        job = make_job(alice, models["offline"])
        assert routing.next_model(job=job, failed_model=models["offline"]) == models["gemini"]
        job.params["tried_models"] = ["gemini-test", "replicate-test"]
        assert routing.next_model(job=job, failed_model=models["replicate"]) == models["fal"]

    def test_it_starts_at_the_top_for_a_model_outside_the_chain(self, alice, models):
        chain("t2i", models["fal"], models["gemini"])
        job = make_job(alice, models["offline"])
        assert routing.next_model(job=job, failed_model=models["offline"]) == models["fal"]

    def test_it_skips_inactive_unconfigured_unhealthy_incapable_and_tried_models(self, alice, models, settings):
        inactive = api_model("fal-inactive", "fal", ["t2i"], is_active=False)
        i2i_only = api_model("fal-i2i-only", "fal", ["i2i"])
        unconfigured = api_model("replicate-unconfigured", "replicate", ["t2i"])
        unhealthy = api_model("gemini-unhealthy", "gemini", ["t2i"])
        tried = api_model("fal-tried", "fal", ["t2i"])
        chain("t2i", models["offline"], inactive, i2i_only, unconfigured, unhealthy, tried, models["fal"])
        settings.REPLICATE_API_TOKEN = ""
        routing.provider_mark_unhealthy("gemini")
        job = make_job(alice, models["offline"])
        job.params["tried_models"] = ["fal-tried"]

        assert routing.next_model(job=job, failed_model=models["offline"]) == models["fal"]
        job.params["tried_models"].append("fal-test")
        assert routing.next_model(job=job, failed_model=models["offline"]) is None

    def test_it_uses_the_multi_reference_chain_for_two_references(self, alice, models):
        one_ref = api_model("gemini-one-ref", "gemini", ["i2i", "i2i_multi"], capabilities={"max_reference_images": 1})
        chain("i2i", models["fal"])
        chain("i2i_multi", one_ref, models["gemini"])
        job = make_job(alice, models["offline"], references=[make_asset(alice).pk, make_asset(alice).pk])
        assert routing.job_task(job) == "i2i_multi"
        # The first takes one reference only: the job's two would not fit.
        assert routing.next_model(job=job, failed_model=models["offline"]) == models["gemini"]

    def test_it_has_nothing_without_a_chain(self, alice, models):
        job = make_job(alice, models["offline"])
        assert routing.next_model(job=job, failed_model=models["offline"]) is None


class Fake(Provider):
    """Fails with `error`, or answers `images` images at once."""

    def __init__(self, model: ApiModel, *, error: ProviderError | None = None, result: ProviderResult | None = None):
        super().__init__(model)
        self.error = error
        self.result = result
        self.calls = 0

    def submit(self, request):
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.result is not None:
            return self.result
        images = [GeneratedImage(data=png_bytes(), seed=i) for i in range(request.num_images)]
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)


class Pipeline:
    """Runs request steps by hand with one fake provider per model key."""

    def __init__(self, fakes: dict[str, Fake]) -> None:
        self.fakes = fakes
        self.enqueued: list[str] = []

    def provider(self, model: ApiModel) -> Provider:
        return self.fakes.get(model.key) or Fake(model)

    def submit(self, request_id, capture) -> runs.Next:
        with (
            mock.patch("generation.services.runs.get_provider", side_effect=self.provider),
            mock.patch("generation.enqueue.send", side_effect=self.record),
            capture(execute=True),
        ):
            return runs.request_submit(request_id)

    def record(self, task: str, object_id: str, **_options: float) -> None:
        if task == enqueue.SUBMIT:
            self.enqueued.append(object_id)

    def run_enqueued(self, capture) -> None:
        while self.enqueued:
            self.submit(self.enqueued.pop(0), capture)


def first_request(job: GenerationJob) -> ProviderRequest:
    (request_id,) = runs.job_dispatch(job.pk)
    return ProviderRequest.objects.get(pk=request_id)


OUTAGE = ProviderError("Offline answered HTTP 503: Service Unavailable", status_code=503)


class TestPipelineFallback:
    def test_it_moves_the_images_to_the_next_model_when_5xx_retries_run_out(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 2
        chain("t2i", models["offline"], models["gemini"], models["fal"])
        ApiModel.objects.filter(pk=models["gemini"].pk).update(price_per_image=Decimal("0.039"))
        job = make_job(alice, models["offline"], images=2)
        request = first_request(job)
        failing = Fake(models["offline"], error=OUTAGE)
        pipeline = Pipeline({"offline/portrait-engine": failing})

        assert pipeline.submit(request.pk, django_capture_on_commit_callbacks).action == "submit"  # a retry first
        assert pipeline.submit(request.pk, django_capture_on_commit_callbacks) == runs.DONE
        # Gemini makes one image a request: two requests, one per slot, both enqueued after the commit.
        moved = list(ProviderRequest.objects.filter(job=job, model=models["gemini"]).order_by("slot_indexes"))
        assert [r.slot_indexes for r in moved] == [[0], [1]]
        assert sorted(pipeline.enqueued) == sorted(str(r.pk) for r in moved)
        request.refresh_from_db()
        assert request.status == RequestStatus.FAILED and "kept failing" in request.error
        assert routing.provider_healthy("offline") is False  # the next jobs skip it for a while

        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED and job.succeeded_count == 2
        assert job.fallback_attempted is True
        assert job.provider == "gemini"
        assert job.params["tried_models"] == ["offline/portrait-engine"]
        assert failing.calls == 2
        served = {(a.metadata["model"], a.metadata["provider"]) for a in WorkspaceAsset.objects.filter(job=job)}
        assert served == {("gemini-test", "gemini")}
        assert job.cost == 2 * Decimal("0.039")  # priced at the model that made the images

    def test_it_walks_on_when_the_fallback_fails_too_and_fails_when_the_chain_is_spent(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 1
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"], images=1)
        request = first_request(job)
        down = ProviderError("Gemini could not be reached (ConnectionError).")
        pipeline = Pipeline(
            {
                "offline/portrait-engine": Fake(models["offline"], error=OUTAGE),
                "gemini-test": Fake(models["gemini"], error=down),
            }
        )

        pipeline.submit(request.pk, django_capture_on_commit_callbacks)
        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.fallback_attempted is True
        assert job.errors == [
            {
                "index": 0,
                "error": "The provider kept failing: Gemini could not be reached (ConnectionError).",
                "details": "",
            }
        ]
        assert ProviderRequest.objects.filter(job=job).count() == 2

    def test_every_request_of_a_fan_out_moves_to_the_same_next_model(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 1
        chain("t2i", models["fal"], models["gemini"], models["replicate"])
        job = make_job(alice, models["gemini"], images=2)  # one image a request: two requests
        pipeline = Pipeline({"gemini-test": Fake(models["gemini"], error=OUTAGE)})

        for request_id in runs.job_dispatch(job.pk):
            pipeline.submit(request_id, django_capture_on_commit_callbacks)
        # The first failure moved its image to replicate (after gemini in the chain); the second
        # must find it still open although the first already went there.
        assert ProviderRequest.objects.filter(job=job, model=models["replicate"]).count() == 2
        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert (job.status, job.provider, job.succeeded_count) == (JobStatus.SUCCEEDED, "replicate", 2)

    def test_a_permanent_error_never_falls_back(self, alice, models, django_capture_on_commit_callbacks):
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"])
        request = first_request(job)
        blocked = ProviderError("The prompt was blocked by the safety filter.", permanent=True, status_code=400)
        pipeline = Pipeline({"offline/portrait-engine": Fake(models["offline"], error=blocked)})

        assert pipeline.submit(request.pk, django_capture_on_commit_callbacks) == runs.DONE

        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.fallback_attempted is False
        assert pipeline.enqueued == [] and ProviderRequest.objects.filter(job=job).count() == 1
        assert routing.provider_healthy("offline") is True

    def test_a_queue_submit_that_may_have_been_received_never_falls_back(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"])
        request = first_request(job)
        lost = ProviderError("fal.ai timed out (ReadTimeout).", may_have_been_received=True)
        queue_fake = Fake(models["offline"], error=lost)
        queue_fake.asynchronous = True
        pipeline = Pipeline({"offline/portrait-engine": queue_fake})

        pipeline.submit(request.pk, django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.fallback_attempted is False
        assert "to avoid paying twice" in job.errors[0]["error"]
        assert ProviderRequest.objects.filter(job=job).count() == 1

    def test_a_429_storm_that_outlasts_the_retries_falls_back_without_marking_the_provider_down(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 1
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"])
        request = first_request(job)
        busy = ProviderError("Too Many Requests", status_code=429)
        pipeline = Pipeline({"offline/portrait-engine": Fake(models["offline"], error=busy)})

        pipeline.submit(request.pk, django_capture_on_commit_callbacks)
        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED and job.fallback_attempted is True
        assert job.provider == "gemini"
        # Busy is not down: the next jobs still go to the first model of the chain.
        assert routing.provider_healthy("offline") is True

    def test_a_429_storm_with_nowhere_to_go_fails_clearly(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 1
        chain("t2i", models["offline"])
        job = make_job(alice, models["offline"])
        request = first_request(job)
        busy = ProviderError("Too Many Requests", status_code=429)
        pipeline = Pipeline({"offline/portrait-engine": Fake(models["offline"], error=busy)})

        pipeline.submit(request.pk, django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.fallback_attempted is False
        assert "kept failing: Too Many Requests" in job.errors[0]["error"]

    # Several images of one answer are stored by threads, which only see committed rows.
    @pytest.mark.django_db(transaction=True)
    def test_an_unhealthy_provider_is_skipped_at_submit_without_being_called(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        chain("t2i", models["offline"], models["fal"])
        job = make_job(alice, models["offline"], images=4)
        request = first_request(job)
        routing.provider_mark_unhealthy("offline")
        untouched = Fake(models["offline"])
        pipeline = Pipeline({"offline/portrait-engine": untouched})

        assert pipeline.submit(request.pk, django_capture_on_commit_callbacks) == runs.DONE

        assert untouched.calls == 0
        (moved,) = ProviderRequest.objects.filter(job=job, model=models["fal"])
        assert moved.slot_indexes == [0, 1, 2, 3]  # fal makes four at once
        pipeline.run_enqueued(django_capture_on_commit_callbacks)
        job.refresh_from_db()
        assert (job.status, job.provider, job.fallback_attempted) == (JobStatus.SUCCEEDED, "fal", True)

    def test_an_unhealthy_provider_with_nothing_to_fall_back_to_is_tried_anyway(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, models["offline"], images=1)
        request = first_request(job)
        routing.provider_mark_unhealthy("offline")
        hopeful = Fake(models["offline"])
        pipeline = Pipeline({"offline/portrait-engine": hopeful})

        pipeline.submit(request.pk, django_capture_on_commit_callbacks)

        assert hopeful.calls == 1
        job.refresh_from_db()
        assert (job.status, job.fallback_attempted) == (JobStatus.SUCCEEDED, False)

    def test_an_unconfigured_provider_fails_with_its_hint_when_nothing_can_take_over(self, alice, models, settings):
        job = make_job(alice, models["fal"], images=1)
        settings.FAL_KEY = ""  # removed after the job was created
        request = first_request(job)

        assert runs.request_submit(request.pk) == runs.DONE  # the real adapter: no HTTP is attempted

        job.refresh_from_db()
        assert job.status == JobStatus.FAILED
        assert job.errors[0]["error"] == "fal-test is not set up on this server. Set FAL_KEY to use fal.ai models."

    def test_an_unconfigured_provider_falls_back(self, alice, models, settings, django_capture_on_commit_callbacks):
        chain("t2i", models["fal"], models["gemini"])
        job = make_job(alice, models["fal"], images=1)
        settings.FAL_KEY = ""
        request = first_request(job)
        pipeline = Pipeline({})

        with mock.patch("generation.providers.fal.Fal.submit") as never:
            assert pipeline.submit(request.pk, django_capture_on_commit_callbacks) == runs.DONE
        never.assert_not_called()
        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert (job.status, job.provider, job.fallback_attempted) == (JobStatus.SUCCEEDED, "gemini", True)

    def test_a_transient_failed_result_falls_back_and_a_permanent_one_does_not(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        chain("t2i", models["offline"], models["gemini"])
        transient = make_job(alice, models["offline"], images=1)
        permanent = make_job(alice, models["offline"], images=1)
        for job, is_permanent in ((transient, False), (permanent, True)):
            request = first_request(job)
            ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.SUBMITTED, external_id="x")
            result = ProviderResult(status=ResultStatus.FAILED, error="runner disconnected", permanent=is_permanent)
            with django_capture_on_commit_callbacks(execute=False):
                runs.request_apply_result(request, result)

        transient.refresh_from_db()
        permanent.refresh_from_db()
        assert transient.fallback_attempted is True and transient.status == JobStatus.RUNNING
        assert ImageSlot.objects.get(job=transient).request.model == models["gemini"]
        assert permanent.fallback_attempted is False and permanent.status == JobStatus.FAILED

    def test_a_step_delivered_twice_plans_the_fallback_once(self, alice, models, django_capture_on_commit_callbacks):
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"], images=1)
        request = first_request(job)
        ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.SUBMITTED, external_id="x")
        result = ProviderResult(status=ResultStatus.FAILED, error="runner disconnected")
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            runs.request_apply_result(request, result)
            runs.request_apply_result(request, result)

        assert ProviderRequest.objects.filter(job=job, model=models["gemini"]).count() == 1
        assert len(callbacks) == 1
        slot = ImageSlot.objects.get(job=job)
        assert (slot.status, slot.attempts) == (SlotStatus.RUNNING, 2)

    def test_retry_failed_opens_the_whole_chain_again(
        self, alice, models, settings, django_capture_on_commit_callbacks
    ):
        settings.PIPELINE_MAX_ATTEMPTS = 1
        chain("t2i", models["offline"], models["gemini"])
        job = make_job(alice, models["offline"], images=1)
        fakes = {
            "offline/portrait-engine": Fake(models["offline"], error=OUTAGE),
            "gemini-test": Fake(models["gemini"], error=OUTAGE),
        }
        pipeline = Pipeline(fakes)
        pipeline.submit(first_request(job).pk, django_capture_on_commit_callbacks)
        pipeline.run_enqueued(django_capture_on_commit_callbacks)
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED

        cache.delete_many(["provider-health:offline", "provider-health:gemini"])  # the outage is over
        with mock.patch("generation.enqueue.send"), django_capture_on_commit_callbacks():
            job_retry_failed(job=job)
        del fakes["gemini-test"]
        pipeline.submit(first_request(job).pk, django_capture_on_commit_callbacks)
        pipeline.run_enqueued(django_capture_on_commit_callbacks)

        job.refresh_from_db()
        assert (job.status, job.provider) == (JobStatus.SUCCEEDED, "gemini")


class PollsToTheEnd(Provider):
    """An asynchronous provider whose submitted request is still running, then done."""

    asynchronous = True

    def __init__(self, model: ApiModel) -> None:
        super().__init__(model)
        self.submits = 0
        self.polls = 0

    def submit(self, request):
        self.submits += 1
        raise AssertionError("a paused provider must not be sent new work")

    def poll(self, request, external_id, handles):
        self.polls += 1
        if self.polls == 1:
            return ProviderResult(status=ResultStatus.PENDING, external_id=external_id)
        images = [GeneratedImage(data=png_bytes(), seed=i) for i in range(request.num_images)]
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, external_id=external_id)


class TestProviderPause:
    def test_a_pause_is_stored_read_through_the_cache_and_resumed(self, staff, django_assert_num_queries):
        assert routing.provider_paused("fal") is False
        pause = routing.provider_pause("fal", reason="  billing problem ", by=staff)
        assert (pause.reason, pause.paused_by) == ("billing problem", staff)
        assert routing.provider_paused("fal") is True
        assert routing.paused_providers() == {"fal": "billing problem"}
        assert routing.provider_status("fal") == routing.PAUSED
        with django_assert_num_queries(0):
            assert routing.provider_paused("fal") is True  # read on every submit: from the cache

        assert routing.provider_resume("fal") is True
        assert routing.provider_paused("fal") is False
        assert routing.provider_status("fal") == routing.HEALTHY
        assert routing.provider_resume("fal") is False  # not paused any more

    def test_pausing_twice_updates_the_reason(self):
        routing.provider_pause("gemini", reason="maintenance")
        routing.provider_pause("gemini", reason="maintenance until 14:00")
        assert ProviderPause.objects.get(kind="gemini").reason == "maintenance until 14:00"

    def test_it_refuses_an_unknown_kind_and_a_too_long_reason(self):
        with pytest.raises(ValueError, match="Unknown provider: 'nope'"):
            routing.provider_pause("nope")
        with pytest.raises(ValueError, match="at most 200 characters"):
            routing.provider_pause("fal", reason="x" * 201)
        assert not ProviderPause.objects.exists()

    def test_next_model_skips_a_paused_provider_for_the_next_model_of_the_chain(self, alice, models):
        chain("t2i", models["offline"], models["fal"], models["gemini"])
        job = make_job(alice, models["offline"])
        routing.provider_pause("fal", reason="maintenance")
        assert routing.next_model(job=job, failed_model=models["offline"]) == models["gemini"]
        routing.provider_resume("fal")
        assert routing.next_model(job=job, failed_model=models["offline"]) == models["fal"]

    # Several images of one answer are stored by threads, which only see committed rows.
    @pytest.mark.django_db(transaction=True)
    def test_new_work_of_a_paused_provider_routes_to_the_next_model_without_calling_it(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        chain("t2i", models["offline"], models["gemini"], models["fal"])
        job = make_job(alice, models["offline"], images=2)
        request = first_request(job)
        routing.provider_pause("offline", reason="maintenance")
        untouched = Fake(models["offline"])
        pipeline = Pipeline({"offline/portrait-engine": untouched})

        assert pipeline.submit(request.pk, django_capture_on_commit_callbacks) == runs.DONE

        assert untouched.calls == 0
        request.refresh_from_db()
        assert request.status == RequestStatus.FAILED
        assert request.error == "Offline is paused by staff: maintenance."
        moved = ProviderRequest.objects.filter(job=job, model=models["gemini"])
        assert moved.count() == 2  # gemini makes one image a request
        pipeline.run_enqueued(django_capture_on_commit_callbacks)
        job.refresh_from_db()
        assert (job.status, job.provider, job.fallback_attempted) == (JobStatus.SUCCEEDED, "gemini", True)

    def test_a_paused_provider_with_nothing_to_fall_back_to_fails_with_the_reason(
        self, alice, models, django_capture_on_commit_callbacks
    ):
        job = make_job(alice, models["offline"], images=1)
        request = first_request(job)
        routing.provider_pause("offline", reason="billing problem")
        untouched = Fake(models["offline"])

        Pipeline({"offline/portrait-engine": untouched}).submit(request.pk, django_capture_on_commit_callbacks)

        assert untouched.calls == 0  # unlike an unhealthy one, it is never tried anyway
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED
        assert job.errors[0]["error"] == "Offline is paused by staff: billing problem."

    def test_a_request_submitted_before_the_pause_still_polls_to_the_end(self, alice, models):
        job = make_job(alice, models["offline"], images=1)
        request = first_request(job)
        ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.SUBMITTED, external_id="ext-1")
        routing.provider_pause("offline", reason="maintenance")
        provider = PollsToTheEnd(models["offline"])

        with mock.patch("generation.services.runs.get_provider", return_value=provider):
            assert runs.request_poll(request.pk).action == "poll"
            assert runs.request_poll(request.pk, now_anyway=True) == runs.DONE

        assert (provider.submits, provider.polls) == (0, 2)
        request.refresh_from_db()
        job.refresh_from_db()
        assert request.status == RequestStatus.SUCCEEDED
        assert (job.status, job.provider, job.succeeded_count) == (JobStatus.SUCCEEDED, "offline", 1)


class TestFastestModel:
    def test_the_first_usable_model_of_the_chain_that_makes_all_images_in_one_request(self, models, settings):
        chain("t2i", models["replicate"], models["fal"], models["gemini"])
        assert routing.fastest_model("t2i", images=3) == models["fal"]
        assert routing.fastest_model("t2i", images=1) == models["replicate"]

    def test_unconfigured_or_paused_providers_are_skipped_and_the_offline_engine_is_last(self, models, settings):
        chain("t2i", models["fal"])
        settings.FAL_KEY = ""
        assert routing.fastest_model("t2i", images=3) == models["offline"]
        settings.FAL_KEY = "fal-test-key"
        routing.provider_pause("fal")
        assert routing.fastest_model("t2i", images=3) == models["offline"]
