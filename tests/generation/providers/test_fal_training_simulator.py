"""The fal trainer client end to end against the loopback simulator (tests/simulator/fal_training.py):
a dataset ZIP built by generation.lib.dataset, uploaded by fal storage's two steps, trained on fal's queue
with progress, and its LoRA file fetched; failure, cancel, and a lost submit answer found again by its
webhook instead of being sent twice."""

from __future__ import annotations

import struct
import time

import pytest
from django.test import override_settings

from generation.lib.dataset import CaptionTrigger, DatasetImage, dataset_zip_bytes
from generation.lib.http import fetch
from generation.providers.base import ProviderError, ProviderResult, ResultStatus, TrainingRequest
from generation.providers.fal_training import FalStorage, FalTrainer
from generation.providers.training import TrainerSpec
from models_registry.seed import MODELS
from tests.factories import png_bytes
from tests.generation.providers import api_model

TRIGGER = "mira_k7"
SHOTS = ["front view, neutral", "three-quarter left, smiling", "profile, laughing", "from above, serious"]
FAST = "fal-ai/flux-lora-fast-training"
# A loopback port nobody listens on: the simulator's webhook POST fails there, but is recorded.
NOWHERE = "http://127.0.0.1:9/webhooks/fal/42"


@pytest.fixture
def sim(simulator):
    with override_settings(**simulator.settings_overrides()):
        yield simulator


def trainer(key: str = FAST) -> FalTrainer:
    row = next(m for m in MODELS if m["key"] == key)
    model = api_model(
        key, "fal", tasks=row["tasks"], input_schema=row["input_schema"], capabilities=row["capabilities"]
    )
    return FalTrainer(model)


def dataset(style: CaptionTrigger) -> bytes:
    images = [DatasetImage(png_bytes((64, 64), (40 * n, 90, 200 - 40 * n)), shot, shot) for n, shot in enumerate(SHOTS)]
    return dataset_zip_bytes(images, trigger_word=TRIGGER, caption_trigger=style)


def upload(style: CaptionTrigger = CaptionTrigger.LITERAL) -> str:
    data = dataset(style)
    return FalStorage().upload(data, file_name="sheet-42.zip", size=len(data))


def poll_until_done(client: FalTrainer, submitted: ProviderResult, timeout: float = 10.0) -> list[ProviderResult]:
    """Every poll answer until a final one, polling every 50 ms (the adapter asks 15 s; tests are faster)."""
    answers: list[ProviderResult] = []
    request = TrainingRequest(dataset_url="", trigger_word=TRIGGER)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.poll(request, submitted.external_id, submitted.handles)
        answers.append(answer)
        if answer.status != ResultStatus.PENDING:
            return answers
        time.sleep(0.05)
    raise AssertionError("the training did not finish")


class TestUpload:
    def test_the_zip_reaches_fal_storage_by_initiate_and_a_put_without_the_key(self, sim):
        data = dataset(CaptionTrigger.LITERAL)
        file_url = FalStorage().upload(data, file_name="Mira sheet.zip", size=len(data))

        assert sim.uploaded(file_url) == data
        (initiate,) = sim.calls_for("falrest", "initiate")
        assert initiate.query["storage_type"] == ["fal-cdn-v3"]
        assert initiate.json == {"content_type": "application/zip", "file_name": "Mira sheet.zip"}
        (put,) = sim.calls_for("falcdn", "upload")
        assert put.status == 200 and "authorization" not in put.headers
        assert put.headers["content-type"] == "application/zip"

    def test_a_wrong_key_is_refused_for_good(self, sim, settings):
        settings.FAL_KEY = "not-the-key"
        with pytest.raises(ProviderError, match="HTTP 401") as caught:
            FalStorage().upload(b"zip", file_name="d.zip", size=3)
        assert caught.value.permanent
        assert sim.calls_for("falcdn") == []

    def test_a_failed_put_is_retryable(self, sim):
        sim.fail_next(provider="falcdn", status=503)
        with pytest.raises(ProviderError, match="the upload failed") as caught:
            upload()
        assert not caught.value.permanent


class TestTraining:
    @pytest.mark.parametrize(
        "key", [FAST, "fal-ai/flux-lora-portrait-trainer", "fal-ai/turbo-flux-trainer", "fal-ai/flux-2-trainer"]
    )
    def test_each_trainer_trains_on_captions_that_carry_the_trigger(self, sim, key):
        sim.fal_training_latency = 0.6
        client = trainer(key)
        file_url = upload(TrainerSpec.of(client.model).caption_trigger)

        submitted = client.submit(TrainingRequest(dataset_url=file_url, trigger_word=TRIGGER, steps=1000))
        answers = poll_until_done(client, submitted)

        done = answers[-1]
        assert done.status == ResultStatus.SUCCEEDED
        job = sim.job(submitted.external_id)
        assert job.model == key and job.steps == 1000
        assert job.dataset["images"] == ["01.png", "02.png", "03.png", "04.png"]
        captions = job.dataset["captions"]
        assert all(caption.count(TRIGGER) == 1 for caption in captions.values()), captions
        assert captions["02.png"] == f"{TRIGGER}, three-quarter left, smiling"
        # The LoRA: a small safetensors file on the simulated CDN, fetchable as the pipeline will copy it.
        lora = fetch(done.lora.url, trusted=client.fetch_trusted_hosts())
        header_length = struct.unpack("<Q", lora.data[:8])[0]
        assert lora.data[8 : 8 + header_length].startswith(b"{")
        assert done.lora.file_name == "pytorch_lora_weights.safetensors"
        assert done.lora.file_size == len(lora.data)
        assert done.lora.config_url.endswith("-config.json")

    def test_fast_training_would_lose_the_trigger_if_captions_carried_a_placeholder(self, sim):
        # fal fast-training applies trigger_word only when there are no captions (§7.3): why its
        # registry row says "literal".
        client = trainer(FAST)
        submitted = client.submit(TrainingRequest(dataset_url=upload(CaptionTrigger.PLACEHOLDER), trigger_word=TRIGGER))
        captions = sim.job(submitted.external_id).dataset["captions"]
        assert all("[trigger]" in c and TRIGGER not in c for c in captions.values())

    def test_progress_climbs_from_the_trainers_logs(self, sim):
        sim.fal_training_latency = 1.5
        client = trainer()
        submitted = client.submit(TrainingRequest(dataset_url=upload(), trigger_word=TRIGGER, steps=400))
        answers = poll_until_done(client, submitted)

        progress = [a.progress for a in answers if a.status == ResultStatus.PENDING and a.progress is not None]
        assert len(progress) >= 3
        assert progress == sorted(progress) and progress[-1] > progress[0]
        assert all(0 <= p <= 1 for p in progress)
        assert answers[-1].progress == 1.0
        status_calls = sim.calls_for("fal", "status")
        assert all(call.query["logs"] == ["true"] for call in status_calls)

    def test_a_dataset_the_trainer_cannot_read_fails_for_good_with_its_reason(self, sim):
        file_url = FalStorage().upload(b"not a zip", file_name="broken.zip", size=9)
        client = trainer()
        submitted = client.submit(TrainingRequest(dataset_url=file_url, trigger_word=TRIGGER))
        done = poll_until_done(client, submitted)[-1]
        assert done.status == ResultStatus.FAILED and done.permanent
        assert "images_data_url: The archive is not a ZIP file." in done.error

    def test_a_runner_failure_is_retryable(self, sim):
        sim.configure(fail_jobs=1, fal_job_error_status=503)
        client = trainer()
        submitted = client.submit(TrainingRequest(dataset_url=upload(), trigger_word=TRIGGER))
        done = poll_until_done(client, submitted)[-1]
        assert done.status == ResultStatus.FAILED and not done.permanent

    def test_a_wrong_zip_field_is_refused_at_submit(self, sim):
        # §7.7.1: image_data_url (flux-2's) sent to fast-training; the simulated trainer names the field it lacks.
        client = trainer()
        client.model.input_schema = trainer("fal-ai/flux-2-trainer").model.input_schema
        with pytest.raises(ProviderError, match="images_data_url: Field required") as caught:
            client.submit(TrainingRequest(dataset_url=upload(), trigger_word=TRIGGER))
        assert caught.value.permanent

    def test_cancel_stops_a_running_training(self, sim):
        sim.fal_training_latency = 30
        client = trainer()
        submitted = client.submit(TrainingRequest(dataset_url=upload(), trigger_word=TRIGGER))

        client.cancel(submitted.external_id, submitted.handles)

        assert sim.job(submitted.external_id).canceled
        assert poll_until_done(client, submitted)[-1].status == ResultStatus.CANCELED
        (cancel,) = sim.calls_for("fal", "cancel")
        assert cancel.method == "PUT" and cancel.status == 202


class TestLostSubmitAnswer:
    def test_it_is_never_sent_again_and_its_webhook_finds_it(self, sim, settings):
        sim.fal_training_latency = 0.3
        client = trainer()
        file_url = upload()
        # fal takes the training, but its answer comes after the client stopped waiting.
        settings.PROVIDER_READ_TIMEOUT = 0.5
        sim.timeout_next(1, seconds=1.0, provider="fal", op="submit")

        with pytest.raises(ProviderError) as caught:
            client.submit(TrainingRequest(dataset_url=file_url, trigger_word=TRIGGER, webhook_url=NOWHERE))

        # The training was received, and may be billed: the error says so, and the caller must not
        # submit again (generation.services.runs never does). Its webhook names it.
        assert caught.value.may_have_been_received
        assert len(sim.calls_for("fal", "submit")) == 1
        (delivery,) = sim.wait_until(lambda: sim.deliveries_for("fal"), timeout=5)
        payload = delivery.json
        provider_id = FalTrainer.webhook_provider_ids(delivery.headers, payload)[0]
        assert FalTrainer.verify_webhook(delivery.headers, delivery.body).startswith(provider_id)
        assert payload["status"] == "OK" and payload["payload"]["diffusers_lora_file"]["url"]

        adopted = client.adopt(provider_id, payload)
        done = poll_until_done(client, adopted)[-1]

        assert done.status == ResultStatus.SUCCEEDED and done.lora is not None
        assert len(sim.calls_for("fal", "submit")) == 1

    def test_a_dropped_connection_is_reported_as_maybe_received(self, sim):
        client = trainer()
        file_url = upload()
        sim.drop_next(provider="fal", op="submit")
        with pytest.raises(ProviderError) as caught:
            client.submit(TrainingRequest(dataset_url=file_url, trigger_word=TRIGGER))
        assert caught.value.may_have_been_received and not caught.value.permanent
        assert len(sim.calls_for("fal", "submit")) == 1
