"""Replicate trainings (docs/providers.md §7.5): the exact outgoing HTTP and Replicate's training objects."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from generation.providers import get_trainer
from generation.providers.base import ProviderError, ResultStatus, TrainedLora, TrainingRequest
from generation.providers.replicate_training import WEIGHTS_MEMBER, ReplicateTrainer, destination_name
from models_registry.seed import MODELS
from tests.generation.providers import REPLICATE_SECRET, api_model, replicate_sign, sent_json

TOKEN = "r8_trainingtoken0123456789"
API = "https://api.replicate.com"
KEY = "ostris/flux-dev-lora-trainer"
VERSION = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
TRAINING_ID = "x4k2v7m3hdrj20cn1q8s0ab9yw"
GET_URL = f"{API}/v1/trainings/{TRAINING_ID}"
ZIP_URL = "https://v3.fal.media/files/koala/sheet-42.zip"
WEIGHTS = "https://replicate.delivery/xezq/AbCd/trained_model.tar"
DESTINATION_VERSION = "acme/cs-lora-42:5b1c0e" + "0" * 58


def trainer(**capabilities) -> ReplicateTrainer:
    row = next(m for m in MODELS if m["key"] == KEY)
    caps = {**row["capabilities"], **capabilities}
    model = api_model(KEY, "replicate", tasks=row["tasks"], input_schema=row["input_schema"], capabilities=caps)
    return ReplicateTrainer(model)


def training(status: str, **fields) -> dict:
    # As the SDK cassette shows, the create's urls may point at /v1/predictions: never used.
    urls = {"get": f"{API}/v1/predictions/{TRAINING_ID}", "cancel": f"{API}/v1/predictions/{TRAINING_ID}/cancel"}
    return {"id": TRAINING_ID, "model": KEY, "version": VERSION, "status": status, "urls": urls, **fields}


@pytest.fixture(autouse=True)
def _replicate_settings(settings):
    settings.REPLICATE_API_TOKEN = TOKEN
    settings.REPLICATE_API_URL = API
    settings.REPLICATE_TRAINING_OWNER = "acme"
    settings.REPLICATE_WEBHOOK_SECRET = REPLICATE_SECRET


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


def mock_create(rsps, *, version=VERSION, answer=None, status=201):
    rsps.get(
        f"{API}/v1/models/{KEY}",
        json={"owner": "ostris", "name": "flux-dev-lora-trainer", "latest_version": {"id": version}},
    )
    rsps.post(f"{API}/v1/models", json={"owner": "acme", "name": "cs-lora-42"}, status=201)
    rsps.post(f"{API}/v1/models/{KEY}/versions/{version}/trainings", json=answer or training("starting"), status=status)


class TestSubmit:
    def test_it_creates_the_destination_then_trains_on_the_latest_version(self, rsps):
        mock_create(rsps)
        hook = "https://studio.example/webhooks/replicate/42"
        request = TrainingRequest(
            dataset_url=ZIP_URL,
            trigger_word="mira_k7",
            steps=1200,
            request_id="42",
            webhook_url=hook,
            params={"lora_rank": 32, "hf_token": "no"},
        )

        result = trainer().submit(request)

        lookup, create_model, create = rsps.calls
        assert lookup.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert sent_json(create_model) == {
            "owner": "acme",
            "name": "cs-lora-42",
            "visibility": "private",
            "hardware": "cpu",
        }
        assert "Prefer" not in create.request.headers
        assert sent_json(create) == {
            "destination": "acme/cs-lora-42",
            "input": {
                "autocaption": False,
                "input_images": ZIP_URL,
                "trigger_word": "mira_k7",
                "steps": 1200,
                "lora_rank": 32,
            },
            "webhook": hook,
            "webhook_events_filter": ["completed"],
        }
        assert result.status == ResultStatus.PENDING and result.external_id == TRAINING_ID
        assert result.handles == {"get": GET_URL, "cancel": f"{GET_URL}/cancel", "version": VERSION}
        assert result.poll_after == pytest.approx(15.0)

    def test_a_pinned_version_needs_no_lookup_and_an_existing_destination_is_used(self, rsps):
        pinned = "a" * 64
        rsps.post(f"{API}/v1/models", json={"detail": "A model with that name already exists"}, status=409)
        rsps.post(f"{API}/v1/models/{KEY}/versions/{pinned}/trainings", json=training("starting"), status=201)
        trainer(version=pinned).submit(TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7", request_id="42"))
        assert [c.request.method for c in rsps.calls] == ["POST", "POST"]

    def test_a_missing_destination_is_a_refusal(self, rsps):
        rsps.get(f"{API}/v1/models/{KEY}", json={"latest_version": {"id": VERSION}})
        rsps.post(f"{API}/v1/models", json={"detail": "You can only create models for yourself"}, status=403)
        with pytest.raises(ProviderError, match="You can only create models for yourself") as caught:
            trainer().submit(TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7", request_id="42"))
        assert caught.value.permanent
        assert len(rsps.calls) == 2  # no training was created

    def test_a_lost_create_answer_may_have_been_received(self, rsps):
        rsps.get(f"{API}/v1/models/{KEY}", json={"latest_version": {"id": VERSION}})
        rsps.post(f"{API}/v1/models", status=201, json={})
        rsps.post(f"{API}/v1/models/{KEY}/versions/{VERSION}/trainings", body=requests.ReadTimeout("slow"))
        with pytest.raises(ProviderError) as caught:
            trainer().submit(TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7", request_id="42"))
        assert caught.value.may_have_been_received
        assert trainer().recover(TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7")) is None

    def test_without_a_version_to_train_it_stops_before_creating_anything(self, rsps):
        rsps.get(f"{API}/v1/models/{KEY}", json={"latest_version": None})
        with pytest.raises(ProviderError, match="lists no version"):
            trainer().submit(TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7", request_id="42"))
        assert len(rsps.calls) == 1

    def test_destination_names(self):
        assert destination_name("1F0E8C2A-5b7d") == "cs-lora-1f0e8c2a-5b7d"
        assert destination_name("") == "cs-lora-training"


class TestPoll:
    def test_it_polls_the_trainings_url_with_progress_then_the_weights(self, rsps):
        logs = "Loading model\nflux_train_replicate:  25%|██▌       | 250/1000 [02:01<06:03, 2.06it/s]"
        rsps.get(GET_URL, json=training("processing", logs=logs))
        rsps.get(
            GET_URL,
            json=training(
                "succeeded",
                output={"version": DESTINATION_VERSION, "weights": WEIGHTS},
                metrics={"predict_time": 1102.4},
            ),
        )
        client = trainer()
        request = TrainingRequest(dataset_url=ZIP_URL, trigger_word="mira_k7")
        handles = {"get": GET_URL, "cancel": f"{GET_URL}/cancel"}

        running = client.poll(request, TRAINING_ID, handles)
        done = client.poll(request, TRAINING_ID, handles)

        assert (running.status, running.progress) == (ResultStatus.PENDING, 0.25)
        assert done.status == ResultStatus.SUCCEEDED
        assert done.lora == TrainedLora(
            url=WEIGHTS,
            file_name="trained_model.tar",
            content_type="application/x-tar",
            archive_member=WEIGHTS_MEMBER,
            provider_version=DESTINATION_VERSION,
        )

    def test_a_training_without_weights_still_has_its_version(self, rsps):
        rsps.get(GET_URL, json=training("succeeded", output={"version": DESTINATION_VERSION}))
        done = trainer().poll(TrainingRequest(dataset_url="", trigger_word="x"), TRAINING_ID, {"get": GET_URL})
        assert done.status == ResultStatus.SUCCEEDED
        assert (done.lora.url, done.lora.provider_version) == ("", DESTINATION_VERSION)

    @pytest.mark.parametrize(
        ("answer", "status", "permanent"),
        [
            (training("failed", error="CUDA out of memory"), ResultStatus.FAILED, True),
            (training("succeeded", output={}), ResultStatus.FAILED, True),
            (training("canceled"), ResultStatus.CANCELED, False),
            (training("aborted"), ResultStatus.FAILED, False),
        ],
    )
    def test_endings(self, rsps, answer, status, permanent):
        rsps.get(GET_URL, json=answer)
        result = trainer().poll(TrainingRequest(dataset_url="", trigger_word="x"), TRAINING_ID, {"get": GET_URL})
        assert (result.status, result.permanent) == (status, permanent)

    def test_cancel_posts_the_trainings_cancel_url(self, rsps):
        rsps.post(f"{GET_URL}/cancel", json=training("canceled"))
        trainer().cancel(TRAINING_ID, {"get": GET_URL, "cancel": f"{GET_URL}/cancel"})
        assert rsps.calls[0].request.body in (None, b"", "")


class TestWebhooksAndRegistry:
    def test_a_signed_completion_is_verified_and_adopted_on_the_trainings_url(self):
        body = json.dumps(training("succeeded", output={"version": DESTINATION_VERSION})).encode()
        headers = replicate_sign(body)
        assert ReplicateTrainer.verify_webhook(headers, body)
        provider_ids = ReplicateTrainer.webhook_provider_ids(headers, json.loads(body))
        adopted = trainer().adopt(provider_ids[0], json.loads(body))
        assert adopted.status == ResultStatus.PENDING and adopted.handles["get"] == GET_URL

    def test_it_needs_the_token_and_the_owner(self, settings):
        settings.REPLICATE_TRAINING_OWNER = ""
        assert not trainer().is_configured()
        assert "REPLICATE_TRAINING_OWNER" in trainer().configuration_hint()

    def test_the_seeded_row_runs_on_it_and_a_bad_pinned_version_is_refused(self):
        assert isinstance(get_trainer(trainer().model), ReplicateTrainer)
        assert ReplicateTrainer.validate_model(trainer().model) == {}
        assert "64-hex" in ReplicateTrainer.validate_model(trainer(version="latest").model)["capabilities"]
