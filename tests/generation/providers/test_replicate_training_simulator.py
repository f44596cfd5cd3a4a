"""The Replicate trainer client end to end against the loopback simulator (tests/simulator/replicate_training.py):
destination, latest version, one create, /v1/trainings polling with progress, the weights tar; failure, cancel,
and a lost create answer found again by its webhook instead of being created twice."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest
from django.test import override_settings

from generation.lib.dataset import CaptionTrigger, DatasetImage, dataset_zip_bytes
from generation.lib.http import fetch
from generation.providers.base import ProviderError, ProviderResult, ResultStatus, TrainingRequest
from generation.providers.fal_training import FalStorage
from generation.providers.replicate_training import WEIGHTS_MEMBER, ReplicateTrainer
from models_registry.seed import MODELS
from tests.factories import png_bytes
from tests.generation.providers import api_model

KEY = "ostris/flux-dev-lora-trainer"
TRIGGER = "mira_k7"
NOWHERE = "http://127.0.0.1:9/webhooks/replicate/42"


@pytest.fixture
def sim(simulator):
    simulator.fal_training_latency = 0.6
    with override_settings(**simulator.settings_overrides()):
        yield simulator


def trainer() -> ReplicateTrainer:
    row = next(m for m in MODELS if m["key"] == KEY)
    model = api_model(
        KEY, "replicate", tasks=row["tasks"], input_schema=row["input_schema"], capabilities=row["capabilities"]
    )
    return ReplicateTrainer(model)


def dataset_url() -> str:
    """A dataset whose captions do not all hold the trigger: ai-toolkit prepends it where absent."""
    images = [
        DatasetImage(png_bytes((64, 64), (200, 40, 40)), "front view, neutral"),
        DatasetImage(png_bytes((64, 64), (40, 200, 40)), "profile, laughing"),
    ]
    data = dataset_zip_bytes(images, trigger_word=TRIGGER, caption_trigger=CaptionTrigger.PLACEHOLDER)
    return FalStorage().upload(data, file_name="sheet.zip", size=len(data))


def request(**fields) -> TrainingRequest:
    return TrainingRequest(**{"dataset_url": dataset_url(), "trigger_word": TRIGGER, "request_id": "42", **fields})


def poll_until_done(client: ReplicateTrainer, submitted: ProviderResult, timeout: float = 10.0) -> list[ProviderResult]:
    answers = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.poll(
            TrainingRequest(dataset_url="", trigger_word=TRIGGER), submitted.external_id, submitted.handles
        )
        answers.append(answer)
        if answer.status != ResultStatus.PENDING:
            return answers
        time.sleep(0.05)
    raise AssertionError("the training did not finish")


def test_a_training_runs_to_its_weights_with_progress(sim):
    client = trainer()
    submitted = client.submit(request(steps=500))
    answers = poll_until_done(client, submitted)

    done = answers[-1]
    assert done.status == ResultStatus.SUCCEEDED
    assert sim.replicate_model("sim-owner/cs-lora-42")["visibility"] == "private"
    assert done.lora.provider_version.startswith("sim-owner/cs-lora-42:")
    with tarfile.open(fileobj=io.BytesIO(fetch(done.lora.url, trusted=client.fetch_trusted_hosts()).data)) as tar:
        assert done.lora.archive_member in tar.getnames() and done.lora.archive_member == WEIGHTS_MEMBER
    progress = [a.progress for a in answers if a.status == ResultStatus.PENDING and a.progress is not None]
    assert progress and progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    # Polled on /v1/trainings, never on the prediction URLs the create answered.
    assert sim.calls_for("replicate", "training_get") and not sim.calls_for("replicate", "get")
    job = sim.job(submitted.external_id)
    assert job.input["input"]["autocaption"] is False and job.steps == 500
    assert set(job.dataset["captions"].values()) == {f"{TRIGGER}, front view, neutral", f"{TRIGGER}, profile, laughing"}


def test_a_second_training_reuses_its_destination(sim):
    client = trainer()
    client.submit(request())
    client.submit(request())
    assert [c.status for c in sim.calls_for("replicate", "model_create")] == [201, 409]
    assert len(sim.calls_for("replicate", "train")) == 2


def test_an_owner_that_is_not_the_tokens_is_refused_before_any_training(sim, settings):
    settings.REPLICATE_TRAINING_OWNER = "someone-else"
    with pytest.raises(ProviderError, match="HTTP 403") as caught:
        trainer().submit(request())
    assert caught.value.permanent and not sim.calls_for("replicate", "train")


def test_a_failed_training_fails_for_good(sim):
    sim.fail_jobs = 1
    client = trainer()
    done = poll_until_done(client, client.submit(request()))[-1]
    assert done.status == ResultStatus.FAILED and done.permanent and "Training failed." in done.error


def test_cancel_stops_a_running_training(sim):
    sim.fal_training_latency = 30
    client = trainer()
    submitted = client.submit(request())
    client.cancel(submitted.external_id, submitted.handles)
    assert sim.job(submitted.external_id).canceled
    assert poll_until_done(client, submitted)[-1].status == ResultStatus.CANCELED


def test_a_lost_create_answer_is_not_created_again_and_its_webhook_finds_it(sim, settings):
    client = trainer()
    training = request(webhook_url=NOWHERE)
    settings.PROVIDER_READ_TIMEOUT = 0.5
    sim.timeout_next(1, seconds=1.0, provider="replicate", op="train")

    with pytest.raises(ProviderError) as caught:
        client.submit(training)

    assert caught.value.may_have_been_received
    assert client.recover(training) is None  # never looked for by creating again
    (delivery,) = sim.wait_until(lambda: sim.deliveries_for("replicate"), timeout=5)
    assert ReplicateTrainer.verify_webhook(delivery.headers, delivery.body)
    payload = json.loads(delivery.body)
    adopted = client.adopt(ReplicateTrainer.webhook_provider_ids(delivery.headers, payload)[0], payload)
    assert poll_until_done(client, adopted)[-1].status == ResultStatus.SUCCEEDED
    assert len(sim.calls_for("replicate", "train")) == 1
