from __future__ import annotations

import base64
import uuid

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache
from responses import matchers

from generation.providers import fal
from generation.providers.base import GenerationRequest, LoraWeight, ProviderError, Reference, ResultStatus
from generation.providers.fal import NSFW_ERROR, Fal, parse_result
from generation.providers.webhook_signing import WebhookRejected
from models_registry.seed import MODELS
from tests.generation.providers import JWKS_URL, PNG, api_model, fal_sign, jwk, sent_json

FAL_KEY = "8a1b2c3d-key-id:f00dfeedsecret"
REQUEST_ID = "80e732af-660e-45cd-bd63-580e4f2a94cc"
# Status, result and cancel URLs drop the model's sub-path ("flash"): fal hands them out and
# the adapter must use them as given.
BASE = f"https://queue.fal.run/fal-ai/flux-2/requests/{REQUEST_ID}"
SUBMITTED = {
    "request_id": REQUEST_ID,
    "status": "IN_QUEUE",
    "queue_position": 0,
    "response_url": BASE,
    "status_url": f"{BASE}/status",
    "cancel_url": f"{BASE}/cancel",
}
HANDLES = {"status_url": f"{BASE}/status", "response_url": BASE, "cancel_url": f"{BASE}/cancel"}
OUTPUT = {
    "images": [
        {
            "url": f"https://v3.fal.media/files/lion/img{i}.jpg",
            "width": 768,
            "height": 1024,
            "content_type": "image/jpeg",
        }
        for i in range(4)
    ],
    "timings": {"inference": 0.41},
    "seed": 42,
    "has_nsfw_concepts": [False, True, False, False],
    "prompt": "a red fox in snow",
}
STATUS_QUERY = [matchers.query_param_matcher({"logs": "false"})]


def seeded(key: str):
    row = next(m for m in MODELS if m["key"] == key)
    return api_model(
        row["key"],
        row["provider"],
        tasks=row["tasks"],
        input_schema=row["input_schema"],
        capabilities=row["capabilities"],
    )


def ref(name: str, *, url: str | None = None, data: bytes = PNG) -> Reference:
    return Reference(data=data, content_type="image/png", url=url, key=f"refs/{name}")


@pytest.fixture(autouse=True)
def _fal_settings(settings):
    settings.FAL_KEY = FAL_KEY
    settings.FAL_QUEUE_URL = "https://queue.fal.run"


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


class TestLoras:
    """fal-ai/flux-lora and its image-to-image variant take a `loras` list (docs/providers.md §7.4)."""

    LORA = LoraWeight(
        path="https://media.studio.test/loras/mira.safetensors?X-Amz-Signature=abc", scale=0.8, trigger_word="mira_k7"
    )

    def test_the_payload_carries_the_loras_and_the_prompt_leads_with_the_trigger_word(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora", json=SUBMITTED)
        request = GenerationRequest(
            prompt="woman laughing in the rain",
            num_images=4,
            seed=7,
            loras=[self.LORA],
            params={"loras": [{"path": "https://elsewhere.test/x.safetensors"}], "image_size": "portrait_4_3"},
        )
        Fal(seeded("fal-ai/flux-lora")).submit(request)
        assert sent_json(rsps.calls[0]) == {
            "prompt": "mira_k7, woman laughing in the rain",
            "num_images": 4,
            "seed": 7,
            "image_size": "portrait_4_3",
            "loras": [{"path": self.LORA.path, "scale": 0.8}],
        }

    def test_image_to_image_sends_the_reference_strength_and_loras(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora/image-to-image", json=SUBMITTED)
        request = GenerationRequest(
            prompt="mira_k7 on a beach",
            references=[ref("a", url="https://media.studio.test/a.png")],
            denoise=0.6,
            loras=[self.LORA],
        )
        Fal(seeded("fal-ai/flux-lora/image-to-image")).submit(request)
        body = sent_json(rsps.calls[0])
        assert body["prompt"] == "mira_k7 on a beach"
        assert body["image_url"] == "https://media.studio.test/a.png"
        assert body["strength"] == 0.6
        assert body["loras"] == [{"path": self.LORA.path, "scale": 0.8}]

    def test_a_model_without_a_loras_input_refuses_rather_than_dropping_the_lora(self, rsps):
        request = GenerationRequest(prompt="x", loras=[self.LORA])
        with pytest.raises(ProviderError, match="cannot apply a LoRA") as caught:
            Fal(seeded("fal-ai/flux-2/flash")).submit(request)
        assert caught.value.permanent
        assert len(rsps.calls) == 0

    def test_without_loras_flux_lora_is_plain_text_to_image(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-lora", json=SUBMITTED)
        Fal(seeded("fal-ai/flux-lora")).submit(GenerationRequest(prompt="a fox"))
        assert sent_json(rsps.calls[0]) == {"prompt": "a fox", "num_images": 1}


class TestFalSubmit:
    def test_it_queues_the_model_input_with_key_auth(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-2/flash", json=SUBMITTED)
        request = GenerationRequest(
            prompt="a red fox in snow",
            num_images=2,
            seed=42,
            negative_prompt="blurry",  # flux-2/flash has no negative_prompt input
            params={"image_size": "portrait_4_3", "guidance_scale": 9, "prompt": "not this one"},
        )
        result = Fal(seeded("fal-ai/flux-2/flash")).submit(request)

        call = rsps.calls[0]
        assert call.request.method == "POST"
        assert call.request.url == "https://queue.fal.run/fal-ai/flux-2/flash"
        assert call.request.headers["Authorization"] == f"Key {FAL_KEY}"
        assert call.request.headers["Content-Type"] == "application/json"
        assert sent_json(call) == {
            "prompt": "a red fox in snow",
            "num_images": 2,
            "seed": 42,
            "image_size": "portrait_4_3",
        }
        assert result.status == ResultStatus.PENDING
        assert result.external_id == REQUEST_ID
        assert result.handles == HANDLES
        assert result.poll_after is None  # the pipeline's poll schedule decides

    def test_it_asks_for_a_webhook_in_the_query(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-2", json=SUBMITTED)
        hook = "https://studio.test/webhooks/fal/?request=12&sig=a b"
        Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="x", webhook_url=hook))
        assert rsps.calls[0].request.url == (
            "https://queue.fal.run/fal-ai/flux-2?fal_webhook=https%3A%2F%2Fstudio.test%2Fwebhooks%2Ffal%2F"
            "%3Frequest%3D12%26sig%3Da+b"
        )

    def test_it_sends_references_as_an_image_urls_list_without_duplicates(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-2/flash/edit", json=SUBMITTED)
        presigned = "https://bucket.s3.test/refs/a.png?X-Amz-Signature=abc"
        references = [ref("a.png", url=presigned), ref("b.png"), ref("a.png", url=presigned), ref("b.png")]
        Fal(seeded("fal-ai/flux-2/flash/edit")).submit(
            GenerationRequest(prompt="same outfit", references=references, denoise=0.4)
        )
        body = sent_json(rsps.calls[0])
        assert body["image_urls"] == [presigned, "data:image/png;base64," + base64.b64encode(PNG).decode()]
        assert "strength" not in body  # no denoise_field for this model

    def test_it_sends_one_reference_as_image_url(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-pro/kontext", json=SUBMITTED)
        references = [ref("a.png", url="https://s3.test/a.png"), ref("b.png", url="https://s3.test/b.png")]
        Fal(seeded("fal-ai/flux-pro/kontext")).submit(GenerationRequest(prompt="edit", references=references))
        body = sent_json(rsps.calls[0])
        assert body["image_url"] == "https://s3.test/a.png"
        assert "image_urls" not in body

    def test_it_sends_an_array_when_the_capabilities_require_it(self, rsps):
        model = api_model(
            "fal-ai/some/edit",
            "fal",
            input_schema={"properties": {"prompt": {}, "image_url": {}}},
            capabilities={"requires_image_urls_array": True},
        )
        rsps.post("https://queue.fal.run/fal-ai/some/edit", json=SUBMITTED)
        Fal(model).submit(GenerationRequest(prompt="edit", references=[ref("a.png", url="https://s3.test/a.png")]))
        assert sent_json(rsps.calls[0])["image_urls"] == ["https://s3.test/a.png"]

    def test_it_sends_image_strength_and_negative_prompt_where_the_schema_has_them(self, rsps):
        model = api_model(
            "fal-ai/flux/dev/image-to-image",
            "fal",
            input_schema={"properties": {"prompt": {}, "image": {}, "strength": {}, "negative_prompt": {}}},
            capabilities={"denoise_field": "strength"},
        )
        rsps.post("https://queue.fal.run/fal-ai/flux/dev/image-to-image", json=SUBMITTED)
        request = GenerationRequest(
            prompt="p", negative_prompt="blurry", denoise=0.35, references=[ref("a.png", url="https://s3.test/a.png")]
        )
        Fal(model).submit(request)
        assert sent_json(rsps.calls[0]) == {
            "prompt": "p",
            "negative_prompt": "blurry",
            "image": "https://s3.test/a.png",
            "strength": 0.35,
        }

    def test_it_refuses_more_images_than_one_request_makes(self, rsps):
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="p", num_images=5))
        assert info.value.permanent
        single = api_model("fal-ai/one", "fal", input_schema={"properties": {"prompt": {}}})
        with pytest.raises(ProviderError):
            Fal(single).submit(GenerationRequest(prompt="p", num_images=2))
        assert len(rsps.calls) == 0

    def test_it_refuses_more_references_than_the_model_takes(self, rsps):
        references = [ref(f"{i}.png", url=f"https://s3.test/{i}.png") for i in range(5)]
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2/flash/edit")).submit(GenerationRequest(prompt="p", references=references))
        assert info.value.permanent

    def test_it_reports_a_422_detail_list_permanently(self, rsps):
        detail = [
            {"loc": ["body", "num_images"], "msg": "ensure this value is less than or equal to 4", "type": "x"},
            {"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"},
        ]
        rsps.post("https://queue.fal.run/fal-ai/flux-2", json={"detail": detail}, status=422)
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.status_code == 422
        assert info.value.message == (
            "fal.ai answered HTTP 422: num_images: ensure this value is less than or equal to 4; prompt: field required"
        )

    def test_it_reports_a_string_detail(self, rsps):
        rsps.post("https://queue.fal.run/fal-ai/flux-2", json={"detail": "Unauthorized"}, status=401)
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == "fal.ai answered HTTP 401: Unauthorized"

    def test_it_retries_a_429_after_the_retry_after_header(self, rsps):
        rsps.post(
            "https://queue.fal.run/fal-ai/flux-2",
            json={"detail": "Too many requests"},
            status=429,
            headers={"Retry-After": "3"},
        )
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.retry_after == 3.0

    def test_it_follows_fals_retryable_header(self, rsps):
        rsps.post(
            "https://queue.fal.run/fal-ai/flux-2",
            json={"detail": "Request timed out", "error_type": "request_timeout"},
            status=504,
            headers={"X-Fal-Retryable": "false"},
        )
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent


class TestFalPoll:
    def test_it_polls_the_given_status_url_then_fetches_four_images(self, rsps):
        status_url = HANDLES["status_url"]
        # No logs and no queue_position: fal_client would crash here, the adapter must not.
        rsps.get(status_url, json={"status": "IN_QUEUE", "request_id": REQUEST_ID}, status=202, match=STATUS_QUERY)
        rsps.get(status_url, json={"status": "IN_PROGRESS", "queue_position": 2}, status=202, match=STATUS_QUERY)
        rsps.get(
            status_url,
            json={"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 0.8}, "error": None},
            match=STATUS_QUERY,
        )
        rsps.get(BASE, json=OUTPUT)
        fal = Fal(seeded("fal-ai/flux-2/flash"))
        request = GenerationRequest(prompt="p", num_images=4)

        first = fal.poll(request, REQUEST_ID, HANDLES)
        second = fal.poll(request, REQUEST_ID, HANDLES)
        done = fal.poll(request, REQUEST_ID, HANDLES)

        assert first.status == second.status == ResultStatus.PENDING
        assert first.poll_after is None  # no Retry-After: the pipeline's poll schedule decides
        assert rsps.calls[0].request.headers["Authorization"] == f"Key {FAL_KEY}"
        assert rsps.calls[0].request.url == f"{status_url}?logs=false"
        assert rsps.calls[3].request.method == "GET"
        assert rsps.calls[3].request.url == BASE
        assert done.status == ResultStatus.SUCCEEDED
        assert [image.url for image in done.images] == [f"https://v3.fal.media/files/lion/img{i}.jpg" for i in range(4)]
        assert all((i.width, i.height, i.content_type, i.seed) == (768, 1024, "image/jpeg", 42) for i in done.images)
        assert [image.error for image in done.images] == ["", NSFW_ERROR, "", ""]

    def test_it_fails_permanently_when_the_model_rejected_the_input(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={"status": "COMPLETED", "logs": None, "error": "Invalid status code: 422", "error_type": None},
        )
        detail = [{"loc": ["body", "image_urls", 0], "msg": "Image is too large", "type": "image_too_large"}]
        rsps.get(BASE, json={"detail": detail}, status=422)
        result = Fal(seeded("fal-ai/flux-2/flash/edit")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED
        assert result.permanent
        assert result.error == "fal.ai answered HTTP 422: image_urls.0: Image is too large"

    @pytest.mark.parametrize("status", [500, 503, 504])
    def test_it_fails_retryably_when_the_failed_result_replays_a_server_error(self, rsps, status):
        rsps.get(
            HANDLES["status_url"],
            json={
                "status": "COMPLETED",
                "logs": None,
                "error": "Runner disconnected",
                "error_type": "runner_disconnected",
            },
        )
        rsps.get(BASE, json={"detail": "Internal Server Error"}, status=status)
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED
        assert not result.permanent
        assert result.error == "fal.ai failed the request: Runner disconnected (runner_disconnected)"
        # The result was fetched: its status, not the error text, decides.
        assert [c.request.url for c in rsps.calls][1] == BASE

    def test_a_failed_result_replaying_a_422_is_permanent_whatever_the_error_type(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={"status": "COMPLETED", "logs": None, "error": "Invalid status code: 422", "error_type": "x"},
        )
        detail = [{"loc": ["body", "prompt"], "msg": "see https://fal.ai/docs/x and /srv/app/main.py", "type": "v"}]
        rsps.get(BASE, json={"detail": detail}, status=422)
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert (result.status, result.permanent) == (ResultStatus.FAILED, True)
        assert result.error == "fal.ai answered HTTP 422: prompt: see [url] and [path]"

    def test_a_throttled_result_fetch_polls_again(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "COMPLETED", "logs": None, "error": "boom"})
        rsps.get(BASE, json={"detail": "slow down"}, status=429, headers={"Retry-After": "90"})
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert not info.value.permanent
        assert info.value.retry_after == 90.0

    @pytest.mark.parametrize("status", ["FAILED", "", None, 7])
    def test_it_fails_an_unknown_status_at_once_and_cancels_it(self, rsps, status):
        rsps.get(HANDLES["status_url"], json={"status": status, "logs": None})
        rsps.put(HANDLES["cancel_url"], json={"status": "CANCELLATION_REQUESTED"}, status=202)
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert (result.status, result.permanent) == (ResultStatus.FAILED, True)
        assert result.error == f"fal.ai answered an unknown request status ({status or 'none'})."
        assert [c.request.method for c in rsps.calls] == ["GET", "PUT"]

    @pytest.mark.parametrize("status", [429, 503])
    def test_a_throttled_status_poll_reports_the_whole_retry_after(self, rsps, status):
        rsps.get(HANDLES["status_url"], json={"detail": "busy"}, status=status, headers={"Retry-After": "120"})
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert not info.value.permanent
        assert info.value.retry_after == 120.0  # not capped: the pipeline decides what to do with it
        assert info.value.status_code == status

    def test_a_pending_answer_with_retry_after_sets_the_next_poll(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "IN_QUEUE"}, status=202, headers={"Retry-After": "120"})
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.PENDING
        assert result.poll_after == 120.0


class TestFalStaysOnItsHost:
    @pytest.mark.parametrize(
        "foreign",
        [
            "http://169.254.169.254/latest/meta-data/iam",
            "http://127.0.0.1:6379/requests/1/status",
            "https://queue.fal.run.evil.test/fal-ai/flux-2/requests/1/status",
            "http://queue.fal.run/fal-ai/flux-2/requests/1/status",  # same host, other scheme and port
            "https://queue.fal.run:8443/fal-ai/flux-2/requests/1/status",
            "https://evil.test\\@queue.fal.run/fal-ai/flux-2/requests/1/status",
        ],
    )
    def test_a_status_url_on_another_host_is_never_requested(self, rsps, foreign):
        handles = {**HANDLES, "status_url": foreign, "cancel_url": foreign}
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, handles)
        assert info.value.permanent
        assert info.value.message == "fal.ai answered with a URL on another host; it was not followed."
        assert "169.254" not in info.value.message
        with pytest.raises(ProviderError):
            Fal(seeded("fal-ai/flux-2")).cancel(REQUEST_ID, handles)
        assert len(rsps.calls) == 0  # not a connection attempt, let alone the key

    def test_a_foreign_response_url_is_never_requested(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "COMPLETED", "logs": None})
        handles = {**HANDLES, "response_url": "http://169.254.169.254/latest"}
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, handles)
        assert (result.status, result.permanent) == (ResultStatus.FAILED, True)
        assert [c.request.url for c in rsps.calls] == [f"{HANDLES['status_url']}?logs=false"]

    def test_a_redirect_from_the_api_host_is_not_followed_with_the_key(self, rsps):
        rsps.get(HANDLES["status_url"], status=302, headers={"Location": "http://169.254.169.254/steal"})
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert info.value.permanent
        assert len(rsps.calls) == 1
        assert rsps.calls[0].request.url.startswith("https://queue.fal.run/")

    def test_its_api_host_is_the_configured_queue_url(self, rsps, settings):
        settings.FAL_QUEUE_URL = "http://127.0.0.1:9999/fal"
        local = {
            name: url.replace("https://queue.fal.run", "http://127.0.0.1:9999/fal") for name, url in HANDLES.items()
        }
        rsps.get(local["status_url"], json={"status": "IN_PROGRESS"}, status=202)
        assert (
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, local).status
            == ResultStatus.PENDING
        )
        with pytest.raises(ProviderError):
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert len(rsps.calls) == 1

    def test_it_reports_a_cancelled_request_as_canceled(self, rsps):
        rsps.get(
            HANDLES["status_url"],
            json={"status": "COMPLETED", "logs": None, "error": "Request cancelled", "error_type": "client_cancelled"},
        )
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.CANCELED

    def test_it_fails_with_the_detail_when_the_result_call_answers_422(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "COMPLETED", "logs": None})
        detail = [{"loc": ["body"], "msg": "content policy violation", "type": "content_policy_violation"}]
        rsps.get(BASE, json={"detail": detail}, status=422)
        result = Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert result.status == ResultStatus.FAILED
        assert result.permanent
        assert result.error.endswith("content policy violation")

    def test_it_polls_again_after_a_transient_result_failure(self, rsps):
        rsps.get(HANDLES["status_url"], json={"status": "COMPLETED", "logs": None})
        rsps.get(BASE, body="bad gateway", status=502)
        with pytest.raises(ProviderError) as info:
            Fal(seeded("fal-ai/flux-2")).poll(GenerationRequest(prompt="p"), REQUEST_ID, HANDLES)
        assert not info.value.permanent


class TestFalStatusStream:
    """GET {status_url}/stream: the status objects as server-sent events until the request ends."""

    STREAM = f"{BASE}/status/stream"

    @staticmethod
    def events(*statuses: str) -> str:
        return "".join(f'data: {{"status": "{status}", "request_id": "{REQUEST_ID}"}}\n\n' for status in statuses)

    def test_it_waits_until_an_event_says_the_request_ended(self, rsps):
        events = self.events("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
        rsps.get(self.STREAM, body=events, content_type="text/event-stream")
        assert Fal(seeded("fal-ai/flux-2")).wait_for_end(HANDLES, timeout=1.0)
        assert rsps.calls[0].request.headers["Authorization"] == f"Key {FAL_KEY}"

    def test_a_stream_that_ends_while_pending_tells_nothing(self, rsps):
        rsps.get(self.STREAM, body=self.events("IN_PROGRESS"), content_type="text/event-stream")
        assert not Fal(seeded("fal-ai/flux-2")).wait_for_end(HANDLES, timeout=1.0)

    @pytest.mark.parametrize(
        "answer", [{"status": 404, "json": {"detail": "Not found"}}, {"body": requests.ConnectionError("reset")}]
    )
    def test_a_failed_stream_just_lets_the_pipeline_poll(self, rsps, answer):
        rsps.get(self.STREAM, **answer)
        assert not Fal(seeded("fal-ai/flux-2")).wait_for_end(HANDLES, timeout=1.0)

    def test_a_status_url_on_another_host_is_not_streamed_from(self, rsps):
        handles = {**HANDLES, "status_url": "https://evil.test/fal-ai/flux-2/requests/1/status"}
        assert not Fal(seeded("fal-ai/flux-2")).wait_for_end(handles, timeout=1.0)
        assert len(rsps.calls) == 0


class TestFalCancel:
    def test_it_puts_to_the_cancel_url(self, rsps):
        rsps.put(HANDLES["cancel_url"], json={"status": "CANCELLATION_REQUESTED"}, status=202)
        Fal(seeded("fal-ai/flux-2")).cancel(REQUEST_ID, HANDLES)
        call = rsps.calls[0]
        assert (call.request.method, call.request.url) == ("PUT", HANDLES["cancel_url"])
        assert call.request.headers["Authorization"] == f"Key {FAL_KEY}"
        assert not call.request.body

    def test_it_ignores_an_already_completed_request(self, rsps):
        rsps.put(HANDLES["cancel_url"], json={"status": "ALREADY_COMPLETED"}, status=400)
        Fal(seeded("fal-ai/flux-2")).cancel(REQUEST_ID, HANDLES)

    def test_it_raises_on_other_failures(self, rsps):
        rsps.put(HANDLES["cancel_url"], status=503)
        with pytest.raises(ProviderError):
            Fal(seeded("fal-ai/flux-2")).cancel(REQUEST_ID, HANDLES)


class TestFalResults:
    def test_it_parses_a_webhook_payload(self):
        body = {
            "request_id": REQUEST_ID,
            "gateway_request_id": REQUEST_ID,
            "status": "OK",
            "payload": {
                "images": [
                    {
                        "url": "https://url.to/image.png",
                        "content_type": "image/png",
                        "file_name": "image.png",
                        "file_size": 1824075,
                        "width": 1024,
                        "height": 1024,
                    }
                ],
                "seed": 196619188014358660,
            },
        }
        [image] = parse_result(body["payload"])
        assert (image.url, image.content_type, image.width, image.seed) == (
            "https://url.to/image.png",
            "image/png",
            1024,
            196619188014358660,
        )
        assert image.metadata == {"file_name": "image.png", "file_size": 1824075}

    def test_it_decodes_sync_mode_data_uris(self):
        encoded = base64.b64encode(PNG).decode()
        [image] = parse_result({"images": [{"url": f"data:image/png;base64,{encoded}"}]})
        assert image.data == PNG
        assert image.url is None
        assert image.content_type == "image/png"

    def test_it_tolerates_odd_shapes(self):
        assert parse_result(None) == []
        assert parse_result({"images": "nope"}) == []
        [single] = parse_result({"image": {"url": "https://v3.fal.media/files/a.png"}})
        assert single.url == "https://v3.fal.media/files/a.png"
        [bare] = parse_result({"images": ["https://v3.fal.media/files/b.png"], "has_nsfw_concepts": None})
        assert bare.url == "https://v3.fal.media/files/b.png"
        assert bare.error == ""


class TestFalConfiguration:
    def test_it_needs_a_key(self, settings):
        fal = Fal(seeded("fal-ai/flux-2"))
        assert fal.is_configured()
        settings.FAL_KEY = ""
        assert not fal.is_configured()
        assert fal.configuration_hint() == "Set FAL_KEY to use fal.ai models."
        assert Fal.name == "fal"
        assert Fal.asynchronous


# The test vector of docs/providers.md §1.5: fal's key published with base64url padding.
DOC_FAL_X = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
DOC_FAL = {
    "X-Fal-Webhook-Request-Id": "024ca5b1-45d3-4afd-883e-ad3abe2a1c4d",
    "X-Fal-Webhook-User-Id": "github|12345",
    "X-Fal-Webhook-Timestamp": "1767225600",
    "X-Fal-Webhook-Signature": (
        "4bd6a444bbae5cf901ed0762d2ae60a7cd3c9e9117a2ac1692913031330ea750"
        "fd6366b79729e55bc0d8641c6c4947b6b3e8aad5cf11ef34807b7facf0c24a00"
    ),
}
DOC_FAL_BODY = b'{"request_id":"024ca5b1-45d3-4afd-883e-ad3abe2a1c4d","status":"OK"}'


@pytest.mark.usefixtures("fal_webhooks")
class TestFalWebhookSignature:
    def test_it_verifies_the_documented_test_vector_with_a_padded_key(self):
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": DOC_FAL_X + "="}]})
            delivery = Fal.verify_webhook(DOC_FAL, DOC_FAL_BODY, now=1767225600)
        assert delivery == "024ca5b1-45d3-4afd-883e-ad3abe2a1c4d:1767225600"

    def test_it_fetches_the_jwks_once_and_caches_it(self, fal_key, jwks):
        for _ in range(3):
            Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id=str(uuid.uuid4())), b"{}")
        assert len(jwks.calls) == 1

    def test_it_refetches_the_jwks_once_when_fal_rotated_its_key(self, fal_key):
        cache.set(fal.JWKS_CACHE_KEY, [jwk(Ed25519PrivateKey.generate())])
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, json={"keys": [jwk(fal_key)]})
            Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
            forged = fal_sign(Ed25519PrivateKey.generate(), b"{}", request_id="b")
            with pytest.raises(WebhookRejected):
                Fal.verify_webhook(forged, b"{}")
            # A forged delivery made no second fetch: refreshes are rate limited.
            assert len(mocked.calls) == 1

    @pytest.mark.parametrize("down", [{"status": 502}, {"body": requests.ConnectTimeout("down")}])
    def test_an_unreachable_jwks_asks_fal_to_deliver_again_later(self, fal_key, down):
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, **down)
            with pytest.raises(WebhookRejected) as exc:
                Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
        assert exc.value.status == 503

    def test_a_failed_fetch_is_remembered_for_a_minute(self, fal_key, jwks):
        cache.set(fal.JWKS_FAILED_KEY, 1)
        with pytest.raises(WebhookRejected) as exc:
            Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
        assert exc.value.status == 503 and len(jwks.calls) == 0
        assert fal.JWKS_FAILURE_SECONDS == 60
        cache.delete(fal.JWKS_FAILED_KEY)  # what the cache timeout does
        Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
        assert len(jwks.calls) == 1

    def test_the_jwks_fetch_uses_a_short_timeout(self, fal_key, jwks, settings):
        settings.FAL_WEBHOOK_JWKS_TIMEOUT = 3.0
        settings.PROVIDER_CONNECT_TIMEOUT = 5.0
        settings.PROVIDER_READ_TIMEOUT = 60.0
        Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
        assert jwks.calls[0].request.req_kwargs["timeout"] == (3.0, 3.0)

    @pytest.mark.parametrize(
        ("change", "status"),
        [
            ({"X-Fal-Webhook-Timestamp": "1767225600"}, 400),  # long ago
            ({"X-Fal-Webhook-Signature": "not hex"}, 401),
            ({"X-Fal-Webhook-User-Id": "github|99999"}, 401),  # signed for another user
            ({"X-Fal-Webhook-Request-Id": "someone-else"}, 401),  # not what was signed
            ({"X-Fal-Webhook-Signature": ""}, 400),
        ],
    )
    def test_it_rejects_bad_headers(self, fal_key, jwks, change, status):
        headers = {**fal_sign(fal_key, b"{}", request_id="a"), **change}
        with pytest.raises(WebhookRejected) as exc:
            Fal.verify_webhook(headers, b"{}")
        assert exc.value.status == status

    def test_it_refuses_another_fal_users_delivery_when_one_is_configured(self, fal_key, jwks, settings):
        settings.FAL_USER_ID = "github|12345"
        Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a"), b"{}")
        with pytest.raises(WebhookRejected):
            Fal.verify_webhook(fal_sign(fal_key, b"{}", request_id="a", user_id="github|99999"), b"{}")


class TestFalWebhookIds:
    def test_the_signed_header_comes_first_then_the_body(self):
        headers = {"X-Fal-Webhook-Request-Id": "from-header"}
        assert Fal.webhook_provider_ids(headers, {"request_id": "from-body"}) == ["from-header", "from-body"]
        assert Fal.webhook_provider_ids(headers, {"request_id": "from-header"}) == ["from-header"]
        assert Fal.webhook_provider_ids({}, {"request_id": "from-body"}) == ["from-body"]
        assert Fal.webhook_provider_ids({}, {}) == []

    def test_fal_always_takes_webhooks(self):
        assert Fal.webhooks_verifiable()
