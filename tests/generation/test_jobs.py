"""job_create: validation, the one-credit charge, and enqueueing after commit."""

from __future__ import annotations

import threading
import uuid
from unittest import mock

import pytest
from django.db import connection

from generation.models import CreditAccount, CreditLedger, GenerationJob, ImageSlot, JobMode
from generation.services.credits import credit_account
from generation.services.jobs import JobRequestError, job_create
from studio.models import WorkspaceAsset
from tests.factories import offline_model, png_bytes

ENQUEUE = "generation.enqueue.send"


@pytest.fixture
def model(db):
    return offline_model()


@pytest.fixture(autouse=True)
def no_enqueue():
    with mock.patch(ENQUEUE) as enqueue:
        yield enqueue


def make_asset(owner, name="ref.png"):
    from django.core.files.base import ContentFile

    asset = WorkspaceAsset(owner=owner, source="upload", width=64, height=80, content_type="image/png")
    asset.file.save(name, ContentFile(png_bytes()), save=False)
    asset.save()
    return asset


class TestValidation:
    def test_it_needs_a_prompt_except_in_copy_mode(self, alice, model):
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=model, prompt="   ")
        assert exc.value.code == "prompt_required"
        ref = make_asset(alice)
        job = job_create(user=alice, model=model, prompt="", mode=JobMode.I2I_COPY, references=[ref.pk])
        assert job.final_prompt == "an exact copy of the reference image"

    def test_it_refuses_an_inactive_model(self, alice, model):
        model.is_active = False
        model.save()
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=model, prompt="x")
        assert exc.value.code == "model_inactive"

    def test_it_refuses_a_model_that_cannot_do_the_task(self, alice):
        t2i_only = offline_model("offline/t2i", tasks=["t2i"])
        ref = make_asset(alice)
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=t2i_only, prompt="x", mode=JobMode.I2I_MODIFY, references=[ref.pk])
        assert exc.value.code == "task_unsupported"
        assert "cannot do image-to-image" in exc.value.message

    @pytest.mark.parametrize("count", [0, 3, 5, 11])
    def test_it_allows_only_1_2_or_4_images_on_a_max_4_model(self, alice, model, count):
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=model, prompt="x", images=count)
        assert exc.value.code == "bad_count"

    def test_references_must_belong_to_the_user(self, alice, bob, model):
        bobs = make_asset(bob)
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=model, prompt="x", mode=JobMode.I2I_MODIFY, references=[bobs.pk])
        assert exc.value.code == "reference_not_found"
        with pytest.raises(JobRequestError):
            job_create(user=alice, model=model, prompt="x", mode=JobMode.I2I_MODIFY, references=[str(uuid.uuid4())])
        assert not GenerationJob.objects.exists()
        assert credit_account(alice).balance == 100

    def test_a_second_reference_is_dropped_for_a_model_without_i2i_multi(self, alice):
        single_ref = offline_model("offline/one-ref", tasks=["t2i", "i2i"])
        ref1, ref2 = make_asset(alice, "a.png"), make_asset(alice, "b.png")
        job = job_create(
            user=alice, model=single_ref, prompt="x", mode=JobMode.I2I_MODIFY, references=[ref1.pk, ref2.pk]
        )
        assert job.references == [{"asset": str(ref1.pk)}]


class TestModes:
    def test_modify_defaults_to_half_strength_and_copy_clamps_the_denoise(self, alice, model):
        ref = make_asset(alice)
        modify = job_create(user=alice, model=model, prompt="red dress", mode=JobMode.I2I_MODIFY, references=[ref.pk])
        copy = job_create(user=alice, model=model, prompt="", mode=JobMode.I2I_COPY, references=[ref.pk])
        assert (modify.params["reference_strength"], modify.params["denoise"]) == (0.5, 0.5)
        assert (copy.params["reference_strength"], copy.params["denoise"]) == (0.95, 0.05)
        assert copy.params["enhance"] is False and modify.params["enhance"] is True

    def test_it_picks_the_short_negative_prompt_for_i2i(self, alice, model):
        from django.core.management import call_command

        call_command("seed_models", stdout=open("/dev/null", "w"))  # noqa: SIM115
        ref = make_asset(alice)
        t2i = job_create(user=alice, model=model, prompt="x")
        i2i = job_create(user=alice, model=model, prompt="x", mode=JobMode.I2I_MODIFY, references=[ref.pk])
        assert len(i2i.negative_prompt) < len(t2i.negative_prompt)


class TestCredits:
    def test_one_credit_per_job_whatever_its_image_count(self, alice, model):
        job = job_create(user=alice, model=model, prompt="x", images=4)
        assert credit_account(alice).balance == 99
        assert job.credits_charged == 1
        assert ImageSlot.objects.filter(job=job).count() == 4

    def test_out_of_credits_is_a_clear_error_and_makes_no_job(self, alice, model):
        CreditAccount.objects.filter(pk=credit_account(alice).pk).update(balance=0)
        with pytest.raises(JobRequestError) as exc:
            job_create(user=alice, model=model, prompt="x")
        assert exc.value.code == "out_of_credits"
        assert "out of credits" in exc.value.message
        assert not GenerationJob.objects.exists()

    def test_the_same_idempotency_key_returns_the_first_job_without_a_second_charge(self, alice, model):
        key = uuid.uuid4()
        first = job_create(user=alice, model=model, prompt="x", idempotency_key=key)
        second = job_create(user=alice, model=model, prompt="x", idempotency_key=key)
        assert first.pk == second.pk
        assert credit_account(alice).balance == 99

    def test_it_enqueues_only_after_the_commit(self, alice, model, no_enqueue, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            job_create(user=alice, model=model, prompt="x")
            assert no_enqueue.call_count == 0
        assert len(callbacks) == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_creates_on_ten_credits_make_exactly_ten_jobs(alice):
    assert connection.vendor == "postgresql"
    model = offline_model()
    CreditAccount.objects.filter(pk=credit_account(alice).pk).update(balance=10)
    results: list[str] = []
    barrier = threading.Barrier(50)

    def attempt() -> None:
        barrier.wait()
        try:
            job_create(user=alice, model=model, prompt="x")
            results.append("job")
        except JobRequestError as exc:
            results.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert results.count("job") == 10
    assert results.count("out_of_credits") == 40
    assert GenerationJob.objects.count() == 10
    assert CreditAccount.objects.get(user=alice).balance == 0
    assert CreditLedger.objects.filter(kind="charge").count() == 10


class TestCharacterJobs:
    def test_a_character_job_carries_the_quality_settings_and_parts(self, alice, model):
        from studio.models import Character

        aria = Character.objects.create(owner=alice, name="Aria", appearance={"hair_color": "red"})
        job = job_create(user=alice, model=model, prompt="smiling", character=aria, scene="on a beach", quality="high")
        assert job.final_prompt.startswith("red hair, smiling, on a beach")
        assert job.params["num_inference_steps"] == 25 and job.params["guidance_scale"] == 7.5
        assert job.params["prompt_parts"] == {"scene": "on a beach"}

    def test_base_images_are_three_in_one_request_on_the_offline_engine(self, alice, model):
        from generation.models import JobKind
        from generation.services.character_jobs import base_images_create
        from generation.services.runs import job_dispatch
        from studio.models import Character

        aria = Character.objects.create(owner=alice, name="Aria", appearance={"hair_color": "red"})
        job = base_images_create(user=alice, character=aria)
        assert (job.kind, job.images_requested, job.model) == (JobKind.BASE_IMAGE, 3, model)
        assert len(job_dispatch(job.pk)) == 1  # one provider round trip for the three

    def test_a_profile_set_makes_one_request_per_shot_each_with_its_prompt(self, alice, model):
        from generation.models import ProviderRequest
        from generation.prompts import Shot
        from generation.services.character_jobs import profile_set_create
        from generation.services.runs import build_request, job_dispatch
        from studio.models import Character

        aria = Character.objects.create(owner=alice, name="Aria", appearance={"hair_color": "red"})
        shots = [Shot(name=f"Shot {i}", direction=f"pose {i}", scene=f"scene {i}") for i in range(4)]
        job = profile_set_create(user=alice, character=aria, shots=shots)
        requests = [ProviderRequest.objects.get(pk=pk) for pk in job_dispatch(job.pk)]
        prompts = [build_request(r, job).prompt for r in requests]
        assert len(requests) == 4
        assert prompts[2].startswith("red hair, pose 2, scene 2")

    def test_a_studio_job_still_takes_only_the_chip_counts(self, alice, model):
        with pytest.raises(JobRequestError) as error:
            job_create(user=alice, model=model, prompt="x", images=3)
        assert error.value.code == "bad_count"
