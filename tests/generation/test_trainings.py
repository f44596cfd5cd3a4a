"""generation.services.trainings: a training's lifecycle against the loopback simulator's fal trainer
(dataset uploaded to fal storage, submit, progress, LoRA copied into our storage), failure with a
refund, cancel, a lost submit answer never sent again, no URL for the dataset, and the offline trainer."""

from __future__ import annotations

import io
import tarfile
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from generation import selectors
from generation.models import CreditAccount, CreditLedger, LoraTraining, TrainingStatus
from generation.services import trainings
from generation.services.credits import credit_account
from studio.dataset import character_set_trigger_word, dataset_sync
from tests.factories import offline_model, seeded_model
from tests.studio.helpers import make_character
from tests.studio.test_dataset import make_sheet

pytestmark = pytest.mark.django_db

FAST = "fal-ai/flux-lora-fast-training"


@pytest.fixture
def sim(simulator):
    with override_settings(**simulator.settings_overrides()):
        yield simulator


@pytest.fixture
def aria(alice):
    aria = make_character(alice, "Aria", appearance={"gender": "woman"})
    make_sheet(alice, offline_model(), aria, images=4)
    character_set_trigger_word(character=aria, trigger_word="aria_k7")
    dataset_sync(aria)
    return aria


def run_until_done(training: LoraTraining) -> LoraTraining:
    """Submit, then poll as the tasks would, without waiting out the countdowns."""
    return poll_until_done(training, trainings.training_submit(training.pk))


def poll_until_done(training: LoraTraining, step, *, polls: int = 400) -> LoraTraining:
    for _ in range(polls):
        if step.action == "done":
            break
        LoraTraining.objects.filter(pk=training.pk).update(due_at=None)
        step = trainings.training_poll(training.pk)
        time.sleep(0.02)
    training.refresh_from_db()
    return training


def test_a_fal_training_runs_end_to_end_and_its_lora_is_copied_into_our_storage(sim, alice, aria, enqueued):
    sim.fal_training_latency = 0.6
    model = seeded_model(FAST)
    balance = credit_account(alice).balance
    training = trainings.training_create(user=alice, character=aria, model=model)
    assert training.cost == Decimal("2.0000") and training.credits_charged == 2
    assert CreditAccount.objects.get(user=alice).balance == balance - 2

    step = trainings.training_submit(training.pk)
    training.refresh_from_db()
    assert step.action == "poll" and 0 < step.countdown <= 30
    assert training.status == TrainingStatus.RUNNING and training.external_id
    # The ZIP went to fal storage and the trainer read it from there, the trigger in every caption.
    job = sim.job(training.external_id)
    assert job.dataset["images"] == ["01.png", "02.png", "03.png", "04.png"]
    assert all(c.startswith("aria_k7 woman") for c in job.dataset["captions"].values())
    assert sim.uploaded(training.dataset_url)

    seen_progress = []
    for _ in range(400):
        LoraTraining.objects.filter(pk=training.pk).update(due_at=None)
        step = trainings.training_poll(training.pk)
        training.refresh_from_db()
        seen_progress.append(training.progress)
        if step.action == "done":
            break
        time.sleep(0.02)
    assert training.status == TrainingStatus.SUCCEEDED and training.is_ready
    assert any(0 < p < 1 for p in seen_progress)
    with training.lora_file.open("rb") as fh:
        assert fh.read()[8:9] == b"{"  # a real safetensors header, copied from the simulator's CDN
    assert training.lora_file.name.startswith(f"loras/{alice.pk}/{training.pk}/")
    assert training.config["lora_url"].startswith(sim.base_url)
    assert len(sim.calls_for("fal", "submit")) == 1
    assert selectors.ready_lora(aria) == training


def test_a_failed_training_is_refunded_once(sim, alice, aria, enqueued):
    sim.configure(fail_jobs=1, fal_job_error_status=503)
    balance = credit_account(alice).balance
    training = run_until_done(trainings.training_create(user=alice, character=aria, model=seeded_model(FAST)))

    assert training.status == TrainingStatus.FAILED and training.error
    assert CreditAccount.objects.get(user=alice).balance == balance
    assert not trainings._fail(training.pk, "again")  # already final: no second refund
    assert CreditLedger.objects.filter(training=training, kind="refund").count() == 1


def test_cancel_refunds_and_tells_the_trainer(sim, alice, aria, enqueued, django_capture_on_commit_callbacks):
    sim.fal_training_latency = 30
    balance = credit_account(alice).balance
    training = trainings.training_create(user=alice, character=aria, model=seeded_model(FAST))
    trainings.training_submit(training.pk)
    training.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        assert trainings.training_cancel(training=training)
    assert enqueued.call_args.args == ("generation.tasks.training_cancel_task", str(training.pk))
    trainings.training_provider_cancel(training.pk)

    training.refresh_from_db()
    assert training.status == TrainingStatus.CANCELED
    assert sim.job(training.external_id).canceled
    assert CreditAccount.objects.get(user=alice).balance == balance
    # A poll arriving late changes nothing.
    assert trainings.training_poll(training.pk).action == "done"
    assert not trainings.training_cancel(training=training)


def test_a_lost_submit_answer_is_never_sent_again_and_is_refunded(sim, alice, aria, enqueued, settings):
    sim.fal_training_latency = 0.3
    settings.PROVIDER_READ_TIMEOUT = 0.5
    sim.timeout_next(1, seconds=1.0, provider="fal", op="submit")
    balance = credit_account(alice).balance
    training = trainings.training_create(user=alice, character=aria, model=seeded_model(FAST))

    assert trainings.training_submit(training.pk).action == "done"
    training.refresh_from_db()
    assert training.status == TrainingStatus.SUBMITTING and not training.external_id
    # A repeated message or the sweeper's pass before the grace: nothing is sent again.
    assert trainings.training_submit(training.pk).action == "done"
    plan = trainings.trainings_sweep()
    assert str(training.pk) not in plan.submit + plan.failed
    assert len(sim.calls_for("fal", "submit")) == 1

    later = timezone.now() + timedelta(seconds=settings.LOST_SUBMIT_WEBHOOK_WAIT_SECONDS + 1)
    plan = trainings.trainings_sweep(now=later)
    training.refresh_from_db()
    assert plan.failed == [str(training.pk)]
    assert training.status == TrainingStatus.FAILED and "not sent again" in training.error
    assert CreditAccount.objects.get(user=alice).balance == balance
    assert len(sim.calls_for("fal", "submit")) == 1


def test_a_lost_submit_is_adopted_from_its_webhook_and_finishes_without_a_second_submit(
    sim, alice, aria, enqueued, settings, client, django_capture_on_commit_callbacks
):
    # A port nobody listens on: the simulator's delivery fails there but is recorded, and is posted
    # to the studio's webhook view here as fal would.
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"
    sim.fal_training_latency = 0.3
    settings.PROVIDER_READ_TIMEOUT = 0.5
    sim.timeout_next(1, seconds=1.0, provider="fal", op="submit")
    training = trainings.training_create(user=alice, character=aria, model=seeded_model(FAST))
    assert trainings.training_submit(training.pk).action == "done"

    (delivery,) = sim.wait_until(lambda: sim.deliveries_for("fal"), timeout=5)
    path = reverse("generation:training-webhook", args=["fal", training.pk])
    assert delivery.url.endswith(path)
    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v for k, v in delivery.headers.items() if k.lower().startswith("x-fal")
    }
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(path, delivery.body, content_type="application/json", **headers)
    assert answer.json() == {"status": "accepted"}
    assert enqueued.call_args.args == ("generation.tasks.training_webhook_task", str(training.pk))
    replay = client.post(path, delivery.body, content_type="application/json", **headers)
    assert replay.json() == {"status": "replayed"}

    trainings.training_poll(training.pk, now_anyway=True)
    training = poll_until_done(training, trainings.training_poll(training.pk, now_anyway=True))
    assert training.status == TrainingStatus.SUCCEEDED and training.is_ready
    assert len(sim.calls_for("fal", "submit")) == 1
    forged = client.post(
        reverse("generation:training-webhook", args=["fal", training.pk]), b"{}", content_type="application/json"
    )
    assert forged.status_code in (400, 401)


def test_the_sweeper_redrives_an_overdue_poll(sim, alice, aria, enqueued):
    sim.fal_training_latency = 30
    training = trainings.training_create(user=alice, character=aria, model=seeded_model(FAST))
    trainings.training_submit(training.pk)
    LoraTraining.objects.filter(pk=training.pk).update(due_at=timezone.now() - timedelta(minutes=5))
    assert trainings.trainings_sweep().poll == [str(training.pk)]


def test_without_fal_storage_or_s3_the_user_is_told_how_the_dataset_can_reach_the_trainer(sim, alice, aria, enqueued):
    model = seeded_model("ostris/flux-dev-lora-trainer", is_active=True)
    balance = credit_account(alice).balance
    training = run_until_done(trainings.training_create(user=alice, character=aria, model=model))
    assert training.status == TrainingStatus.FAILED
    assert "Set FAL_KEY (fal storage) or keep media on S3" in training.error
    assert CreditAccount.objects.get(user=alice).balance == balance
    assert not sim.calls_for("replicate")


@override_settings(OFFLINE_LATENCY_SECONDS=0.05)
def test_the_offline_trainer_trains_with_progress_and_yields_a_small_lora(alice, aria, enqueued):
    model = seeded_model("offline/lora-trainer")
    first = trainings.training_submit(trainings.training_create(user=alice, character=aria, model=model).pk)
    training = LoraTraining.objects.get()
    assert first.action == "poll" and training.status == TrainingStatus.RUNNING
    training = poll_until_done(training, first)
    assert training.status == TrainingStatus.SUCCEEDED
    assert 0 < training.lora_file.size < 10_000
    weight = selectors.lora_weight(training, scale=0.8)
    assert weight.trigger_word == "aria_k7" and weight.scale == 0.8 and weight.path


def test_training_refuses_a_running_one_no_images_and_too_few_credits(alice, aria, enqueued):
    model = seeded_model("offline/lora-trainer")
    trainings.training_create(user=alice, character=aria, model=model)
    with pytest.raises(trainings.TrainingError, match="already training"):
        trainings.training_create(user=alice, character=aria, model=model)
    empty = make_character(alice, "Empty")
    with pytest.raises(trainings.TrainingError, match="at least one image"):
        trainings.training_create(user=alice, character=empty, model=model)
    CreditAccount.objects.filter(user=alice).update(balance=0)
    LoraTraining.objects.update(status=TrainingStatus.FAILED)
    with pytest.raises(trainings.TrainingError, match="takes 1 credits; you have 0"):
        trainings.training_create(user=alice, character=aria, model=model)
    assert LoraTraining.objects.count() == 1


@override_settings(OFFLINE_LATENCY_SECONDS=0.05)
def test_the_tasks_chain_submit_and_polls_by_id_with_countdowns_below_the_visibility_timeout(
    alice, aria, enqueued, django_capture_on_commit_callbacks, settings
):
    from generation.tasks import training_poll_task, training_submit_task

    training = trainings.training_create(user=alice, character=aria, model=seeded_model("offline/lora-trainer"))
    with django_capture_on_commit_callbacks(execute=True):
        training_submit_task(str(training.pk))
    task, training_id = enqueued.call_args.args
    assert (task, training_id) == ("generation.tasks.training_poll_task", str(training.pk))
    assert 0 < enqueued.call_args.kwargs["countdown"] <= settings.PIPELINE_MAX_COUNTDOWN
    time.sleep(0.6)
    LoraTraining.objects.filter(pk=training.pk).update(due_at=None)
    enqueued.reset_mock()
    with django_capture_on_commit_callbacks(execute=True):
        training_poll_task(str(training.pk))
    assert LoraTraining.objects.get().status == TrainingStatus.SUCCEEDED
    assert not enqueued.called  # done: nothing more to schedule


def test_a_training_past_its_deadline_fails_with_a_refund(alice, aria, enqueued):
    balance = credit_account(alice).balance
    training = trainings.training_create(user=alice, character=aria, model=seeded_model("offline/lora-trainer"))
    later = timezone.now() + timedelta(seconds=trainings.TRAINING_DEADLINE_SECONDS + 1)
    assert trainings.trainings_sweep(now=later).failed == [str(training.pk)]
    training.refresh_from_db()
    assert training.status == TrainingStatus.FAILED and "did not finish within 3 hours" in training.error
    assert CreditAccount.objects.get(user=alice).balance == balance


def test_the_weights_are_taken_out_of_a_trainers_archive():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("output/flux_train_replicate/lora.safetensors", b"weights"), ("config.yaml", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    assert trainings.lora_from_archive(buffer, "output/flux_train_replicate/lora.safetensors") == b"weights"
    buffer.seek(0)
    with pytest.raises(trainings.TrainingError, match="holds no missing.safetensors"):
        trainings.lora_from_archive(buffer, "missing.safetensors")
