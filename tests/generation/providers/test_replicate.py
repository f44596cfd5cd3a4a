from __future__ import annotations

import base64

import pytest
import requests
import responses

from generation.providers.base import GenerationRequest, ProviderError, Reference, ResultStatus
from generation.providers.replicate import CREATE_MAY_HAVE_BEEN_RECEIVED, Replicate
from generation.providers.webhook_signing import WebhookRejected
from models_registry.seed import MODELS
from tests.generation.providers import PNG, REPLICATE_SECRET, api_model, sent_json

TOKEN = "r8_planted0123456789"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
PREDICTION_ID = "gm3qorzdhgbfurvjtvhg6dckhu"
GET_URL = f"https://api.replicate.com/v1/predictions/{PREDICTION_ID}"
CANCEL_URL = f"{GET_URL}/cancel"
HANDLES = {"get": GET_URL, "cancel": CANCEL_URL}


def prediction(status: str, **fields) -> dict:
    return {
        "id": PREDICTION_ID,
        "model": "stability-ai/sdxl",
        "version": SDXL_VERSION,
        "input": {"prompt": "a red fox"},
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": None,
        "source": "api",
        "status": status,
        "created_at": "2026-05-01T12:00:00.000Z",
        "urls": {
            "get": GET_URL,
            "cancel": CANCEL_URL,
            "stream": "https://stream.replicate.com/v1/files/bcwr",
            "web": f"https://replicate.com/p/{PREDICTION_ID}",
        },
        "metrics": {"predict_time": 0.91},
        **fields,
    }


def sdxl():
    row = next(m for m in MODELS if m["key"] == "stability-ai/sdxl")
    return api_model(
        row["key"], "replicate", tasks=row["tasks"], input_schema=row["input_schema"], capabilities=row["capabilities"]
    )


def flux_schnell():
    schema = {"properties": {"prompt": {}, "num_outputs": {"maximum": 4}, "aspect_ratio": {}, "seed": {}}}
    return api_model("black-forest-labs/flux-schnell", "replicate", input_schema=schema)


@pytest.fixture(autouse=True)
def _replicate_settings(settings):
    settings.REPLICATE_API_TOKEN = TOKEN
    settings.REPLICATE_API_URL = "https://api.replicate.com"


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


class TestReplicateSubmit:
    def test_the_quality_presets_steps_and_guidance_reach_sdxl(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", json=prediction("starting"), status=201)
        params = {"num_inference_steps": 25, "guidance_scale": 7.5, "quality": "high"}
        Replicate(sdxl()).submit(GenerationRequest(prompt="a red fox", params=params))
        sent = sent_json(rsps.calls[0])["input"]
        assert (sent["num_inference_steps"], sent["guidance_scale"]) == (25, 7.5)
        assert "quality" not in sent  # the preset's name is the studio's, not a model input

    def test_it_creates_by_pinned_version_with_a_short_wait(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", json=prediction("starting"), status=201)
        request = GenerationRequest(
            prompt="a red fox",
            negative_prompt="blurry",
            num_images=2,
            seed=7,
            denoise=0.7,
            references=[Reference(data=PNG, content_type="image/png", url="https://s3.test/ref.png")],
            params={"scheduler": "K_EULER", "num_outputs": 4},  # not in the schema / managed: dropped
        )
        result = Replicate(sdxl()).submit(request)

        call = rsps.calls[0]
        assert call.request.method == "POST"
        assert call.request.url == "https://api.replicate.com/v1/predictions"
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert call.request.headers["Prefer"] == "wait=5"
        assert sent_json(call) == {
            "version": SDXL_VERSION,
            "input": {
                "prompt": "a red fox",
                "num_outputs": 2,
                "seed": 7,
                "negative_prompt": "blurry",
                "image": "https://s3.test/ref.png",
                "prompt_strength": 0.7,
            },
        }
        assert result.status == ResultStatus.PENDING
        assert result.external_id == PREDICTION_ID
        assert result.handles == HANDLES

    def test_it_creates_by_model_path_with_a_webhook(self, rsps):
        url = "https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions"
        rsps.post(url, json=prediction("processing"), status=201)
        request = GenerationRequest(
            prompt="p", params={"aspect_ratio": "3:4"}, webhook_url="https://studio.test/webhooks/replicate/"
        )
        Replicate(flux_schnell()).submit(request)
        assert rsps.calls[0].request.url == url
        assert sent_json(rsps.calls[0]) == {
            "input": {"prompt": "p", "num_outputs": 1, "aspect_ratio": "3:4"},
            "webhook": "https://studio.test/webhooks/replicate/",
            "webhook_events_filter": ["completed"],
        }

    def test_it_sends_a_data_uri_when_no_url_can_be_given(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", json=prediction("starting"), status=201)
        Replicate(sdxl()).submit(GenerationRequest(prompt="p", references=[Reference(PNG, "image/png")]))
        assert sent_json(rsps.calls[0])["input"]["image"].startswith("data:image/png;base64,iVBORw0KGgo")

    def test_it_returns_images_when_the_wait_was_enough(self, rsps):
        output = ["https://replicate.delivery/xezq/a/out-0.png", "https://replicate.delivery/xezq/b/out-1.png"]
        rsps.post("https://api.replicate.com/v1/predictions", json=prediction("succeeded", output=output), status=201)
        result = Replicate(sdxl()).submit(GenerationRequest(prompt="p", num_images=2))
        assert result.status == ResultStatus.SUCCEEDED
        assert [image.url for image in result.images] == output
        assert result.external_id == PREDICTION_ID

    def test_it_keeps_polling_a_processing_answer_with_partial_output(self, rsps):
        partial = prediction("processing", output=["https://replicate.delivery/xezq/a/out-0.png"])
        rsps.post("https://api.replicate.com/v1/predictions", json=partial, status=201)
        result = Replicate(sdxl()).submit(GenerationRequest(prompt="p", num_images=2))
        assert result.status == ResultStatus.PENDING
        assert result.images == []

    def test_it_flags_a_create_read_timeout_as_maybe_received(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", body=requests.ReadTimeout())
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.details == CREATE_MAY_HAVE_BEEN_RECEIVED
        assert len(rsps.calls) == 1  # never re-posted by the adapter

    def test_a_create_5xx_is_an_answer_so_it_may_be_retried(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", body="upstream error", status=502)
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.may_have_been_received is False

    def test_it_flags_a_garbled_201_as_maybe_received(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", body="<html>", status=201)
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert info.value.may_have_been_received is True
        assert info.value.details == CREATE_MAY_HAVE_BEEN_RECEIVED

    def test_it_knows_a_connect_timeout_created_nothing(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", body=requests.ConnectTimeout())
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.details == ""

    def test_it_reports_problem_details_permanently(self, rsps):
        problem = {
            "type": "https://replicate.com/docs/errors",
            "title": "Input validation failed",
            "status": 422,
            "detail": "- input.num_outputs: Must be less than or equal to 4",
        }
        rsps.post("https://api.replicate.com/v1/predictions", json=problem, status=422)
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.details == ""
        assert info.value.message == (
            "Replicate answered HTTP 422: Input validation failed: - input.num_outputs: Must be less than or equal to 4"
        )

    def test_it_reads_the_throttle_delay_from_a_429_body(self, rsps):
        throttled = {"detail": "Request was throttled. Your rate limit resets in ~30s."}
        rsps.post("https://api.replicate.com/v1/predictions", json=throttled, status=429)
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.retry_after == 30.0

    def test_it_refuses_more_images_than_one_prediction_makes(self, rsps):
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).submit(GenerationRequest(prompt="p", num_images=5))
        assert info.value.permanent
        single = api_model("owner/single", "replicate", input_schema={"properties": {"prompt": {}}})
        with pytest.raises(ProviderError):
            Replicate(single).submit(GenerationRequest(prompt="p", num_images=2))


class TestReplicatePoll:
    def test_it_polls_the_get_url_until_it_succeeds(self, rsps):
        rsps.post("https://api.replicate.com/v1/predictions", json=prediction("starting"), status=201)
        rsps.get(GET_URL, json=prediction("processing"))
        rsps.get(GET_URL, json=prediction("succeeded", output=["https://replicate.delivery/xezq/a/out-0.png"]))
        replicate = Replicate(sdxl())
        request = GenerationRequest(prompt="p")
        submitted = replicate.submit(request)

        running = replicate.poll(request, submitted.external_id, submitted.handles)
        done = replicate.poll(request, submitted.external_id, submitted.handles)

        assert running.status == ResultStatus.PENDING
        assert rsps.calls[1].request.method == "GET"
        assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "Prefer" not in rsps.calls[1].request.headers
        assert done.status == ResultStatus.SUCCEEDED
        assert [image.url for image in done.images] == ["https://replicate.delivery/xezq/a/out-0.png"]

    def test_it_accepts_a_single_string_output(self, rsps):
        rsps.get(GET_URL, json=prediction("succeeded", output="https://replicate.delivery/xezq/one.webp"))
        result = Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert [image.url for image in result.images] == ["https://replicate.delivery/xezq/one.webp"]

    def test_it_fails_permanently_on_nsfw(self, rsps):
        error = "NSFW content detected. Try running it again, or try a different prompt."
        rsps.get(GET_URL, json=prediction("failed", error=error))
        result = Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert result.status == ResultStatus.FAILED
        assert result.permanent
        assert result.error == f"Replicate: {error}"

    def test_it_fails_retryably_on_a_timeout(self, rsps):
        rsps.get(GET_URL, json=prediction("failed", error="Prediction timed out after 300 seconds"))
        result = Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert result.status == ResultStatus.FAILED
        assert not result.permanent

    def test_it_reports_canceled_and_aborted(self, rsps):
        rsps.get(GET_URL, json=prediction("canceled"))
        rsps.get(GET_URL, json=prediction("aborted"))
        replicate = Replicate(sdxl())
        canceled = replicate.poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        aborted = replicate.poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert canceled.status == ResultStatus.CANCELED
        assert aborted.status == ResultStatus.FAILED
        assert not aborted.permanent
        assert aborted.metadata["billed"] is False

    def test_it_fails_when_it_succeeded_without_output(self, rsps):
        rsps.get(GET_URL, json=prediction("succeeded", output=None, data_removed=True))
        result = Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert result.status == ResultStatus.FAILED

    def test_it_keeps_urls_paths_and_keys_out_of_a_failure_message(self, rsps, settings):
        settings.FAL_KEY = "fal-other-provider-key-123"
        error = (
            f"Traceback: /src/predict.py line 9: cannot open https://s3.test/ref.png?X-Amz-Signature=abc "
            f"with {TOKEN} or fal-other-provider-key-123"
        )
        rsps.get(GET_URL, json=prediction("failed", error=error))
        result = Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert result.error == "Replicate: Traceback: [path] line 9: cannot open [url] with [redacted] or [redacted]"

    @pytest.mark.parametrize("status", [429, 503])
    def test_a_throttled_poll_reports_the_whole_retry_after(self, rsps, status):
        rsps.get(GET_URL, json={"detail": "Request was throttled."}, status=status, headers={"Retry-After": "120"})
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert not info.value.permanent
        assert info.value.retry_after == 120.0


class TestReplicateStaysOnItsHost:
    FOREIGN = {
        "get": "http://169.254.169.254/latest/meta-data/",
        "cancel": "http://127.0.0.1:8080/v1/predictions/x/cancel",
    }

    def test_urls_from_a_prediction_on_another_host_are_never_requested(self, rsps):
        rsps.post(
            "https://api.replicate.com/v1/predictions",
            json=prediction("starting", urls=self.FOREIGN),
            status=201,
        )
        replicate = Replicate(sdxl())
        submitted = replicate.submit(GenerationRequest(prompt="p"))
        with pytest.raises(ProviderError) as info:
            replicate.poll(GenerationRequest(prompt="p"), submitted.external_id, submitted.handles)
        assert info.value.permanent
        assert info.value.message == "Replicate answered with a URL on another host; it was not followed."
        with pytest.raises(ProviderError):
            replicate.cancel(submitted.external_id, submitted.handles)
        assert [c.request.url for c in rsps.calls] == ["https://api.replicate.com/v1/predictions"]

    def test_a_redirect_is_not_followed_with_the_token(self, rsps):
        rsps.get(GET_URL, status=307, headers={"Location": "http://127.0.0.1:8080/collect"})
        with pytest.raises(ProviderError) as info:
            Replicate(sdxl()).poll(GenerationRequest(prompt="p"), PREDICTION_ID, HANDLES)
        assert info.value.permanent
        assert [c.request.url for c in rsps.calls] == [GET_URL]


class TestReplicateCancel:
    def test_it_posts_an_empty_body_to_the_cancel_url(self, rsps):
        rsps.post(CANCEL_URL, json=prediction("canceled"))
        Replicate(sdxl()).cancel(PREDICTION_ID, HANDLES)
        call = rsps.calls[0]
        assert (call.request.method, call.request.url) == ("POST", CANCEL_URL)
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert not call.request.body

    def test_it_ignores_an_unknown_prediction(self, rsps):
        rsps.post(CANCEL_URL, json={"detail": "Not found."}, status=404)
        Replicate(sdxl()).cancel(PREDICTION_ID, HANDLES)


class TestReplicateConfiguration:
    def test_it_needs_a_token(self, settings):
        replicate = Replicate(sdxl())
        assert replicate.is_configured()
        settings.REPLICATE_API_TOKEN = ""
        assert not replicate.is_configured()
        assert "REPLICATE_API_TOKEN" in replicate.configuration_hint()


class TestRecover:
    """A create whose answer was lost is found in the prediction list, never created again."""

    LIST_URL = "https://api.replicate.com/v1/predictions"
    SENT_AT = 1777636800.0  # 2026-05-01T12:00:00Z

    def lost(self, **fields) -> GenerationRequest:
        fields.setdefault("seed", 42)
        return GenerationRequest(prompt="a red fox", params={"sent_at": self.SENT_AT}, **fields)

    def listing(self, *predictions) -> dict:
        return {"next": None, "previous": None, "results": list(predictions)}

    @responses.activate
    def test_it_finds_ours_by_prompt_and_seed_and_polls_it_from_there(self):
        ours = prediction("processing", id="p-ours", input={"prompt": "a red fox", "seed": 42})
        sibling = prediction("processing", id="p-sibling", input={"prompt": "a red fox", "seed": 43})
        older = prediction(
            "succeeded", id="p-old", input={"prompt": "a red fox", "seed": 42}, created_at="2026-04-30T09:00:00Z"
        )
        responses.get(self.LIST_URL, json=self.listing(sibling, ours, older))
        found = Replicate(flux_schnell()).recover(self.lost())
        assert found.status == ResultStatus.PENDING and found.external_id == "p-ours"
        assert found.handles["get"] == GET_URL
        assert [c.request.method for c in responses.calls] == ["GET"]  # nothing was created

    @responses.activate
    def test_it_finds_ours_by_its_webhook(self):
        hook = "https://studio.example/webhooks/replicate/abc"
        ours = prediction("succeeded", id="p-ours", input={"prompt": "other"}, webhook=hook, output=["https://x/1.png"])
        responses.get(self.LIST_URL, json=self.listing(ours))
        found = Replicate(flux_schnell()).recover(self.lost(seed=None, webhook_url=hook))
        assert found.status == ResultStatus.SUCCEEDED and found.external_id == "p-ours"

    @responses.activate
    def test_two_candidates_or_none_find_nothing(self):
        twin = {"prompt": "a red fox", "seed": 42}
        responses.get(
            self.LIST_URL,
            json=self.listing(
                prediction("processing", id="a", input=twin), prediction("processing", id="b", input=twin)
            ),
        )
        assert Replicate(flux_schnell()).recover(self.lost()) is None
        responses.get(self.LIST_URL, json=self.listing())
        assert Replicate(flux_schnell()).recover(self.lost()) is None

    @responses.activate
    def test_without_a_seed_or_a_webhook_it_does_not_guess(self):
        assert Replicate(flux_schnell()).recover(self.lost(seed=None)) is None
        assert len(responses.calls) == 0


# The test vector of docs/providers.md §2.3 (signed with REPLICATE_SECRET).
DOC_REPLICATE = {
    "webhook-id": "msg_2yQYZ8mXbD9xV3kq",
    "webhook-timestamp": "1767225600",
    "webhook-signature": "v1,nMaUU90MzJLliUmAMjlMnqH/4QMbAygE057x3lR5ErU=",
}
DOC_REPLICATE_BODY = b'{"id":"ufawqhfynnddngldkgtslldrkq","status":"succeeded"}'


class TestReplicateWebhookSignature:
    @pytest.fixture(autouse=True)
    def _secret(self, settings):
        settings.REPLICATE_WEBHOOK_SECRET = REPLICATE_SECRET

    def test_it_verifies_the_documented_test_vector(self):
        assert Replicate.verify_webhook(DOC_REPLICATE, DOC_REPLICATE_BODY, now=1767225600) == "msg_2yQYZ8mXbD9xV3kq"

    def test_it_accepts_any_of_several_listed_signatures(self):
        headers = {**DOC_REPLICATE, "webhook-signature": "v1,bm90LWl0 " + DOC_REPLICATE["webhook-signature"]}
        assert Replicate.verify_webhook(headers, DOC_REPLICATE_BODY, now=1767225610)

    @pytest.mark.parametrize(
        ("change", "status"),
        [
            ({"body": b'{"id":"ufawqhfynnddngldkgtslldrkq","status":"failed"}'}, 401),
            ({"webhook-signature": "v1,nMaUU90MzJLliUmAMjlMnqH/4QMbAygE057x3lR5ErX="}, 401),
            ({"webhook-signature": "v2," + DOC_REPLICATE["webhook-signature"][3:]}, 401),
            ({"webhook-id": "msg_other"}, 401),
            ({"now": 1767225600 + 301}, 400),
            ({"now": 1767225600 - 301}, 400),
            ({"webhook-timestamp": ""}, 400),
            ({"webhook-timestamp": "soon"}, 400),
        ],
    )
    def test_it_rejects_tampering_and_stale_or_future_timestamps(self, change, status):
        change = dict(change)
        body = change.pop("body", DOC_REPLICATE_BODY)
        now = change.pop("now", 1767225600)
        with pytest.raises(WebhookRejected) as exc:
            Replicate.verify_webhook({**DOC_REPLICATE, **change}, body, now=now)
        assert exc.value.status == status

    @pytest.mark.parametrize("secret", ["whsec_" + base64.b64encode(b"another-secret").decode(), "whsec_not base64!"])
    def test_it_rejects_a_delivery_signed_with_another_secret(self, settings, secret):
        settings.REPLICATE_WEBHOOK_SECRET = secret
        with pytest.raises(WebhookRejected) as exc:
            Replicate.verify_webhook(DOC_REPLICATE, DOC_REPLICATE_BODY, now=1767225600)
        assert exc.value.status == 401

    def test_without_a_secret_no_delivery_verifies_and_none_is_asked_for(self, settings):
        assert Replicate.webhooks_verifiable()
        settings.REPLICATE_WEBHOOK_SECRET = ""
        assert not Replicate.webhooks_verifiable()
        with pytest.raises(WebhookRejected) as exc:
            Replicate.verify_webhook(DOC_REPLICATE, DOC_REPLICATE_BODY, now=1767225600)
        assert exc.value.status == 401

    def test_the_delivery_names_its_prediction_by_its_id(self):
        assert Replicate.webhook_provider_ids({}, prediction("succeeded")) == [PREDICTION_ID]
        assert Replicate.webhook_provider_ids({}, {"status": "succeeded"}) == []
