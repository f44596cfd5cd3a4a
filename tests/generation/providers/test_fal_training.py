"""fal's LoRA trainers and storage upload (docs/providers.md §7.2, §7.3): the exact outgoing HTTP and fal's answers."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import responses
from responses import matchers

from generation.providers import get_trainer, trainer_class
from generation.providers.base import ProviderError, ResultStatus, TrainedLora, TrainingRequest
from generation.providers.fal_training import FalStorage, FalTrainer
from models_registry.seed import MODELS
from tests.generation.providers import api_model, sent_json

FAL_KEY = "8a1b2c3d-key-id:f00dfeedsecret"
REQUEST_ID = "1f0e8c2a-5b7d-4c1e-9a3f-2d6b8e4c7a10"
# As for images, the URLs fal hands out are used as given (they drop any sub-path).
BASE = f"https://queue.fal.run/fal-ai/flux-lora-fast-training/requests/{REQUEST_ID}"
HANDLES = {"status_url": f"{BASE}/status", "response_url": BASE, "cancel_url": f"{BASE}/cancel"}
SUBMITTED = {"request_id": REQUEST_ID, "status": "IN_QUEUE", "queue_position": 0, **HANDLES}
ZIP_URL = "https://v3.fal.media/files/koala/sheet-42.zip"
OUTPUT = {
    "diffusers_lora_file": {
        "url": "https://v3.fal.media/files/koala/q8Xw2_pytorch_lora_weights.safetensors",
        "content_type": "application/octet-stream",
        "file_name": "pytorch_lora_weights.safetensors",
        "file_size": 89745128,
    },
    "config_file": {
        "url": "https://v3.fal.media/files/koala/q8Xw2_config.json",
        "content_type": "application/octet-stream",
        "file_name": "config.json",
        "file_size": 1187,
    },
    "debug_preprocessed_output": None,
}
LOGS_QUERY = [matchers.query_param_matcher({"logs": "true"})]
INITIATE = "https://rest.fal.ai/storage/upload/initiate"
UPLOAD_URL = "https://storage.googleapis.com/fal-upload/abc123?X-Goog-Signature=f00d"


def trainer(key: str = "fal-ai/flux-lora-fast-training") -> FalTrainer:
    row = next(m for m in MODELS if m["key"] == key)
    model = api_model(
        key, "fal", tasks=row["tasks"], input_schema=row["input_schema"], capabilities=row["capabilities"]
    )
    return FalTrainer(model)


def training(**fields) -> TrainingRequest:
    return TrainingRequest(**{"dataset_url": ZIP_URL, "trigger_word": "mira_k7", **fields})


@pytest.fixture(autouse=True)
def _fal_settings(settings):
    settings.FAL_KEY = FAL_KEY
    settings.FAL_QUEUE_URL = "https://queue.fal.run"
    settings.FAL_REST_URL = "https://rest.fal.ai"
    settings.FAL_STORAGE_TYPE = "fal-cdn-v3"
    settings.TRUSTED_FETCH_HOSTS = []


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def public_dns(monkeypatch):
    """storage.googleapis.com resolves to a public address, as it does on the internet; the signed
    upload URL goes through generation.lib.http's address checks."""
    real = socket.getaddrinfo
    answers = {"storage.googleapis.com": "142.250.74.27", "upload.internal": "10.0.0.8"}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            assert ipaddress.ip_address(answers[host])
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], int(port or 443)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class TestLookup:
    def test_fal_trainer_rows_run_on_the_trainer_adapter(self):
        model = api_model("fal-ai/turbo-flux-trainer", "fal", tasks=["lora_training"])
        assert trainer_class("fal") is FalTrainer
        assert isinstance(get_trainer(model), FalTrainer)

    def test_a_kind_without_trainers_says_so(self):
        assert trainer_class("gemini") is None
        with pytest.raises(LookupError, match="has no LoRA trainer"):
            get_trainer(api_model("x", "gemini", tasks=["lora_training"]))


class TestSubmit:
    def test_fast_training_gets_images_data_url_trigger_word_and_steps(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora-fast-training", json=SUBMITTED)

        result = trainer().submit(training(steps=1500, params={"create_masks": False, "prompt": "no", "x": 1}))

        call = rsps.calls[0]
        assert call.request.headers["Authorization"] == f"Key {FAL_KEY}"
        assert sent_json(call) == {
            "images_data_url": ZIP_URL,
            "trigger_word": "mira_k7",
            "steps": 1500,
            "create_masks": False,
        }
        assert result.status == ResultStatus.PENDING
        assert result.external_id == REQUEST_ID
        assert result.handles == HANDLES
        assert result.poll_after == pytest.approx(15.0)

    @pytest.mark.parametrize("key", ["fal-ai/flux-lora-portrait-trainer", "fal-ai/turbo-flux-trainer"])
    def test_portrait_and_turbo_take_a_trigger_phrase(self, rsps, key):
        rsps.post(f"https://queue.fal.run/{key}", json=SUBMITTED)
        trainer(key).submit(training())
        body = sent_json(rsps.calls[0])
        assert body["trigger_phrase"] == "mira_k7" and "trigger_word" not in body
        assert body["images_data_url"] == ZIP_URL

    def test_flux_2_takes_image_data_url_and_the_trigger_as_default_caption(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-2-trainer", json=SUBMITTED)
        trainer("fal-ai/flux-2-trainer").submit(training())
        assert sent_json(rsps.calls[0]) == {"image_data_url": ZIP_URL, "default_caption": "mira_k7", "steps": 1000}

    def test_an_opaque_url_says_the_archive_is_a_zip(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora-fast-training", json=SUBMITTED)
        presigned = "https://bucket.s3.amazonaws.com/datasets/42?X-Amz-Signature=abc"
        trainer().submit(training(dataset_url=presigned))
        assert sent_json(rsps.calls[0])["data_archive_format"] == "zip"

    def test_it_asks_for_a_webhook_in_the_query(self, rsps):
        hook = "https://studio.example/webhooks/fal/42"
        rsps.post(
            "https://queue.fal.run/fal-ai/flux-lora-fast-training",
            json=SUBMITTED,
            match=[matchers.query_param_matcher({"fal_webhook": hook})],
        )
        trainer().submit(training(webhook_url=hook))

    @pytest.mark.parametrize(("key", "steps"), [("fal-ai/flux-2-trainer", 99), ("fal-ai/turbo-flux-trainer", 10001)])
    def test_steps_out_of_the_trainers_range_are_refused_before_any_call(self, rsps, key, steps):
        with pytest.raises(ProviderError, match="Steps must be between") as caught:
            trainer(key).submit(training(steps=steps))
        assert caught.value.permanent

    def test_a_lost_answer_is_reported_as_maybe_received(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora-fast-training", body=b'{"request_id": "1f0e')
        with pytest.raises(ProviderError) as caught:
            trainer().submit(training())
        assert caught.value.may_have_been_received

    def test_an_answer_without_its_urls_is_permanent(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora-fast-training", json={"request_id": REQUEST_ID})
        with pytest.raises(ProviderError) as caught:
            trainer().submit(training())
        assert caught.value.permanent


class TestPoll:
    def test_it_reports_progress_from_the_logs_then_the_lora(self, rsps):
        status_url = HANDLES["status_url"]
        rsps.get(status_url, json={"status": "IN_QUEUE", "queue_position": 3}, status=202, match=LOGS_QUERY)
        logs = [
            {"message": "Preprocessing images", "level": "INFO", "source": "user", "timestamp": "2026-05-01T12:00:01Z"},
            {"message": "step 250/1000, loss 0.21", "level": "INFO", "source": "user", "timestamp": "2026-05-01"},
        ]
        rsps.get(status_url, json={"status": "IN_PROGRESS", "logs": logs}, status=202, match=LOGS_QUERY)
        rsps.get(status_url, json={"status": "COMPLETED", "logs": [], "error": None}, match=LOGS_QUERY)
        rsps.get(BASE, json=OUTPUT)
        fal = trainer()

        queued = fal.poll(training(), REQUEST_ID, HANDLES)
        running = fal.poll(training(), REQUEST_ID, HANDLES)
        done = fal.poll(training(), REQUEST_ID, HANDLES)

        assert (queued.status, queued.progress, queued.metadata) == (ResultStatus.PENDING, None, {"queue_position": 3})
        assert queued.poll_after == pytest.approx(15.0)
        assert (running.status, running.progress) == (ResultStatus.PENDING, 0.25)
        assert done.status == ResultStatus.SUCCEEDED
        assert done.lora == TrainedLora(
            url=OUTPUT["diffusers_lora_file"]["url"],
            file_name="pytorch_lora_weights.safetensors",
            content_type="application/octet-stream",
            file_size=89745128,
            config_url=OUTPUT["config_file"]["url"],
        )
        assert done.images == []

    def test_a_result_without_a_lora_file_fails_for_good(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "COMPLETED", "logs": None, "error": None})
        rsps.get(BASE, json={"config_file": {"url": "https://v3.fal.media/files/c.json"}})
        result = trainer().poll(training(), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED and result.permanent
        assert "without a LoRA file" in result.error

    def test_a_refused_dataset_fails_permanently_with_fals_words(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={"status": "COMPLETED", "logs": None, "error": "Invalid status code: 422", "error_type": None},
        )
        detail = [{"loc": ["body", "images_data_url"], "msg": "Could not read the archive", "type": "invalid_archive"}]
        rsps.get(BASE, json={"detail": detail}, status=422)
        result = trainer().poll(training(), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED and result.permanent
        assert "images_data_url: Could not read the archive" in result.error

    def test_a_runner_failure_is_retryable(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={
                "status": "COMPLETED",
                "logs": None,
                "error": "Runner disconnected",
                "error_type": "runner_disconnected",
            },
        )
        rsps.get(BASE, json={"detail": "Runner disconnected"}, status=503)
        result = trainer().poll(training(), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED and not result.permanent

    def test_a_cancelled_training_is_canceled(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={
                "status": "COMPLETED",
                "logs": None,
                "error": "Request was cancelled",
                "error_type": "request_cancelled",
            },
        )
        assert trainer().poll(training(), REQUEST_ID, HANDLES).status == ResultStatus.CANCELED


class TestCancelAndAdopt:
    def test_cancel_puts_the_given_cancel_url(self, rsps):
        rsps.put(HANDLES["cancel_url"], json={"status": "CANCELLATION_REQUESTED"}, status=202)
        trainer().cancel(REQUEST_ID, HANDLES)
        assert rsps.calls[0].request.method == "PUT"

    def test_an_adopted_training_is_polled_on_the_app_urls(self):
        adopted = trainer().adopt(REQUEST_ID, {})
        assert adopted.handles == HANDLES


class TestStorageUpload:
    def test_it_initiates_with_the_key_then_puts_the_bytes_without_it(self, rsps, public_dns):
        rsps.post(
            INITIATE,
            json={"upload_url": UPLOAD_URL, "file_url": ZIP_URL},
            match=[
                matchers.query_param_matcher({"storage_type": "fal-cdn-v3"}),
                matchers.json_params_matcher({"content_type": "application/zip", "file_name": "sheet-42.zip"}),
            ],
        )
        rsps.put(UPLOAD_URL, status=200)
        data = b"PK\x03\x04 a dataset"

        assert FalStorage().upload(data, file_name="sheet-42.zip", size=len(data)) == ZIP_URL

        initiate, put = rsps.calls
        assert initiate.request.headers["Authorization"] == f"Key {FAL_KEY}"
        assert put.request.method == "PUT" and put.request.body == data
        assert put.request.headers["Content-Type"] == "application/zip"
        assert "Authorization" not in put.request.headers
        assert FAL_KEY not in str(put.request.headers)

    def test_an_answer_without_its_urls_is_retryable(self, rsps):
        rsps.post(INITIATE, json={"upload_url": UPLOAD_URL})
        with pytest.raises(ProviderError, match="without its upload_url and file_url") as caught:
            FalStorage().upload(b"zip", file_name="d.zip", size=3)
        assert not caught.value.permanent

    def test_an_upload_url_on_a_private_address_is_never_put_to(self, rsps, public_dns):
        rsps.post(INITIATE, json={"upload_url": "https://upload.internal/put/1", "file_url": ZIP_URL})
        with pytest.raises(ProviderError, match="may not be used") as caught:
            FalStorage().upload(b"zip", file_name="d.zip", size=3)
        assert caught.value.permanent
        assert len(rsps.calls) == 1

    def test_a_failed_put_keeps_its_permanence(self, rsps, public_dns):
        rsps.post(INITIATE, json={"upload_url": UPLOAD_URL, "file_url": ZIP_URL})
        rsps.put(UPLOAD_URL, status=503)
        with pytest.raises(ProviderError, match="the upload failed") as busy:
            FalStorage().upload(b"zip", file_name="d.zip", size=3)
        assert not busy.value.permanent and busy.value.status_code == 503

    def test_an_initiate_refusal_shows_fals_words(self, rsps):
        rsps.post(INITIATE, json={"detail": "Unauthorized"}, status=401)
        with pytest.raises(ProviderError, match="fal.ai storage answered HTTP 401: Unauthorized") as caught:
            FalStorage().upload(b"zip", file_name="d.zip", size=3)
        assert caught.value.permanent

    def test_a_dataset_over_the_single_upload_limit_is_refused_before_any_call(self, rsps):
        with pytest.raises(ProviderError, match="at most 90 MB") as caught:
            FalStorage().upload(b"", file_name="d.zip", size=91 * 1024 * 1024)
        assert caught.value.permanent

    def test_storage_needs_the_fal_key(self, settings):
        settings.FAL_KEY = ""
        storage = FalStorage()
        assert not storage.is_configured()
        assert storage.configuration_hint() == "Set FAL_KEY to upload training datasets to fal.ai storage."
