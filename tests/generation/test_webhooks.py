"""Provider webhooks at /webhooks/<provider>/<request id>: routing a delivery to our request, replays,
lost submits adopted, and the poll a delivery triggers. A rejected delivery must change nothing.

Each adapter's own signature checks are tested with it (tests/generation/providers/test_fal.py,
test_replicate.py); here they run end to end through the one webhook view.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from decimal import Decimal
from unittest import mock

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from generation import enqueue, tasks
from generation.models import JobStatus, ProviderRequest, RequestStatus
from generation.providers.base import GeneratedImage, Provider, ProviderResult, ResultStatus
from generation.services import runs, webhooks
from generation.services.jobs import job_create
from models_registry.models import ApiModel
from tests.factories import png_bytes
from tests.generation.providers import JWKS_URL, REPLICATE_SECRET, fal_sign, jwk, replicate_sign

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def webhook_settings(settings, fal_webhooks):
    settings.PUBLIC_BASE_URL = "https://studio.example"
    settings.REPLICATE_WEBHOOK_SECRET = REPLICATE_SECRET
    settings.FAL_KEY = "fal-test-key"
    settings.REPLICATE_API_TOKEN = "r8_test"
    keys = ["provider-health:fal", "provider-health:replicate"]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def submitted_request(user, provider: str, *, external_id: str | None = None) -> ProviderRequest:
    model, _ = ApiModel.objects.update_or_create(
        key=f"{provider}-webhook-model",
        defaults={"display_name": provider, "provider": provider, "tasks": ["t2i"], "price_per_image": Decimal("0")},
    )
    with mock.patch("generation.enqueue.send"):
        job = job_create(user=user, model=model, prompt="x", images=1)
    (request_id,) = runs.job_dispatch(job.pk)
    ProviderRequest.objects.filter(pk=request_id).update(
        status=RequestStatus.SUBMITTED, external_id=uuid.uuid4().hex if external_id is None else external_id
    )
    return ProviderRequest.objects.get(pk=request_id)


def snapshot(request: ProviderRequest) -> tuple:
    request.refresh_from_db()
    return request.status, request.polls, request.updated_at, request.job.status


def post(url: str, body: bytes, headers: dict):
    # A CSRF-enforcing client with no session: providers have neither.
    return Client(enforce_csrf_checks=True).post(url, data=body, content_type="application/json", headers=headers)


def webhook_url(request: ProviderRequest) -> str:
    return reverse("generation:webhook", args=[request.provider, request.pk])


class TestTheWebhookView:
    @pytest.mark.parametrize("provider", ["fal", "replicate"])
    def test_it_keeps_the_paths_providers_were_given(self, alice, provider):
        request = submitted_request(alice, provider)
        assert webhook_url(request) == f"/webhooks/{provider}/{request.pk}"

    @pytest.mark.parametrize("provider", ["gemini", "offline", "no-such-provider"])
    def test_a_provider_that_takes_no_webhooks_is_not_found(self, alice, fal_key, jwks, enqueued, provider):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        url = reverse("generation:webhook", args=[provider, request.pk])
        response = post(url, body, fal_sign(fal_key, body, request_id=request.external_id))
        assert response.status_code == 404
        assert len(jwks.calls) == 0
        enqueued.assert_not_called()


# --- Replicate ------------------------------------------------------------------------------


def replicate_body(request: ProviderRequest) -> bytes:
    return json.dumps({"id": request.external_id, "status": "succeeded", "output": ["https://x/1.png"]}).encode()


class TestReplicateWebhook:
    def test_it_answers_200_and_polls_the_request_after_the_commit(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        body = replicate_body(request)
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), body, replicate_sign(body))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_replayed_delivery_answers_200_and_does_nothing_more(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        body = replicate_body(request)
        headers = replicate_sign(body)
        with django_capture_on_commit_callbacks(execute=True):
            assert post(webhook_url(request), body, headers).status_code == 200
            replay = post(webhook_url(request), body, headers)
        assert replay.status_code == 200 and replay.json() == {"status": "replayed"}
        assert enqueued.call_count == 1

    @pytest.mark.parametrize(
        ("sign", "status"),
        [
            ({"secret": "whsec_" + base64.b64encode(b"forged").decode()}, 401),
            ({"timestamp": -301}, 400),
            ({"timestamp": +301}, 400),
        ],
    )
    def test_a_forged_or_stale_delivery_is_rejected_and_changes_nothing(
        self, alice, enqueued, sign, status, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        before = snapshot(request)
        body = replicate_body(request)
        if "timestamp" in sign:
            sign = {"timestamp": int(time.time()) + sign["timestamp"]}  # an offset from now
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), body, replicate_sign(body, **sign))
        assert response.status_code == status
        assert snapshot(request) == before
        enqueued.assert_not_called()

    def test_a_delivery_for_an_unknown_or_other_request_is_refused(self, alice, enqueued):
        request = submitted_request(alice, "replicate")
        other = submitted_request(alice, "fal")
        body = replicate_body(request)
        unknown = reverse("generation:webhook", args=["replicate", uuid.uuid4()])
        assert post(unknown, body, replicate_sign(body)).status_code == 404
        # A fal request on the Replicate route, and another prediction's body on ours.
        assert (
            post(reverse("generation:webhook", args=["replicate", other.pk]), body, replicate_sign(body)).status_code
            == 404
        )
        foreign = json.dumps({"id": "some-other-prediction", "status": "succeeded"}).encode()
        assert post(webhook_url(request), foreign, replicate_sign(foreign)).status_code == 400
        enqueued.assert_not_called()

    def test_a_delivery_for_a_request_not_yet_sent_asks_for_a_retry(self, alice, enqueued):
        request = submitted_request(alice, "replicate", external_id="")
        ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.PENDING)
        body = json.dumps({"id": "not-yet-known", "status": "succeeded"}).encode()
        assert post(webhook_url(request), body, replicate_sign(body)).status_code == 409
        enqueued.assert_not_called()

    def test_a_delivery_for_a_submit_whose_answer_was_lost_adopts_the_prediction(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate", external_id="")
        urls = {"get": "https://api.replicate.com/v1/predictions/p-lost", "cancel": "https://x/cancel"}
        body = json.dumps({"id": "p-lost", "status": "succeeded", "output": ["https://x/1.png"], "urls": urls}).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), body, replicate_sign(body))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        request.refresh_from_db()
        assert request.external_id == "p-lost" and request.handles == urls
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_only_post_is_allowed(self, alice):
        request = submitted_request(alice, "replicate")
        assert Client().get(webhook_url(request)).status_code == 405


# --- fal ------------------------------------------------------------------------------------


def fal_body(request: ProviderRequest) -> bytes:
    payload = {"images": [{"url": "https://v3.fal.media/files/x.png", "content_type": "image/png"}], "seed": 1}
    return json.dumps({"request_id": request.external_id, "status": "OK", "payload": payload}).encode()


class TestFalWebhookCost:
    """An unsigned POST must not be able to hold web workers on the JWKS host."""

    def test_a_post_for_an_unknown_or_other_request_never_fetches_the_jwks(self, alice, fal_key):
        request = submitted_request(alice, "fal")
        body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": {}}).encode()
        headers = fal_sign(fal_key, body, request_id="someone-else")
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
            mocked.get(JWKS_URL, json={"keys": [jwk(fal_key)]})
            unknown = post(reverse("generation:webhook", args=["fal", uuid.uuid4()]), body, headers)
            other = post(webhook_url(request), body, headers)
            assert len(mocked.calls) == 0
        assert (unknown.status_code, other.status_code) == (404, 400)

    def test_a_down_jwks_host_is_asked_once_for_many_deliveries(self, alice, fal_key, enqueued):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, body=requests.ConnectTimeout("down"))
            answers = [
                post(webhook_url(request), body, fal_sign(fal_key, body, request_id=request.external_id)).status_code
                for _ in range(3)
            ]
            assert len(mocked.calls) == 1
        assert answers == [503, 503, 503]  # fal delivers again later
        enqueued.assert_not_called()


class TestFalWebhook:
    def test_it_answers_200_and_polls_the_request_after_the_commit(
        self, alice, fal_key, jwks, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), body, fal_sign(fal_key, body, request_id=request.external_id))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_delivery_for_a_submit_whose_answer_was_lost_adopts_the_request(
        self, alice, fal_key, jwks, enqueued, django_capture_on_commit_callbacks, settings
    ):
        request = submitted_request(alice, "fal", external_id="")
        ApiModel.objects.filter(pk=request.model_id).update(key="fal-ai/flux/dev/image-to-image")
        body = json.dumps({"request_id": "fal-lost", "status": "OK", "payload": {"images": []}}).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), body, fal_sign(fal_key, body, request_id="fal-lost"))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        request.refresh_from_db()
        # The URLs fal would have answered: on the app id, the subpath dropped (as fal_client builds them).
        base = f"{settings.FAL_QUEUE_URL.rstrip('/')}/fal-ai/flux/requests/fal-lost"
        assert request.external_id == "fal-lost"
        assert request.handles == {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_replayed_delivery_answers_200_and_does_nothing_more(
        self, alice, fal_key, jwks, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        headers = fal_sign(fal_key, body, request_id=request.external_id)
        with django_capture_on_commit_callbacks(execute=True):
            post(webhook_url(request), body, headers)
            replay = post(webhook_url(request), body, headers)
        assert replay.status_code == 200 and replay.json() == {"status": "replayed"}
        assert enqueued.call_count == 1

    @pytest.mark.parametrize(
        ("case", "status"),
        [("forged", 401), ("tampered", 401), ("stale", 400), ("future", 400), ("other user", 401)],
    )
    def test_a_bad_delivery_is_rejected_and_changes_nothing(
        self, alice, fal_key, jwks, enqueued, settings, case, status, django_capture_on_commit_callbacks
    ):
        settings.FAL_USER_ID = "github|12345"
        request = submitted_request(alice, "fal")
        before = snapshot(request)
        body = fal_body(request)
        now = int(time.time())
        key, sent, kwargs = fal_key, body, {"request_id": request.external_id}
        if case == "forged":
            key = Ed25519PrivateKey.generate()
        elif case == "tampered":
            sent = body.replace(b"x.png", b"y.png")
        elif case == "stale":
            kwargs["timestamp"] = now - 301
        elif case == "future":
            kwargs["timestamp"] = now + 301
        else:
            kwargs["user_id"] = "github|99999"
        with django_capture_on_commit_callbacks(execute=True):
            response = post(webhook_url(request), sent, fal_sign(key, body, **kwargs))
        assert response.status_code == status
        assert snapshot(request) == before
        enqueued.assert_not_called()

    def test_a_delivery_for_another_request_is_refused(self, alice, fal_key, jwks, enqueued):
        request = submitted_request(alice, "fal")
        body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": {}}).encode()
        response = post(webhook_url(request), body, fal_sign(fal_key, body, request_id="someone-else"))
        assert response.status_code == 400
        unknown = reverse("generation:webhook", args=["fal", uuid.uuid4()])
        assert post(unknown, body, fal_sign(fal_key, body, request_id="someone-else")).status_code == 404
        enqueued.assert_not_called()


# --- asking for webhooks, and what a delivery triggers ---------------------------------------


class Pending(Provider):
    """A queue provider: submit answers PENDING; poll answers `poll_result`."""

    asynchronous = True

    def __init__(self, model: ApiModel, poll_result: ProviderResult | None = None) -> None:
        super().__init__(model)
        self.poll_result = poll_result or ProviderResult(status=ResultStatus.PENDING, poll_after=1.0)
        self.sent = None

    def submit(self, request):
        self.sent = request
        return ProviderResult(status=ResultStatus.PENDING, external_id="ext-1", handles={"get": "x"}, poll_after=1.0)

    def poll(self, request, external_id, handles):
        return self.poll_result


class TestAskingForWebhooks:
    @pytest.mark.parametrize("provider", ["fal", "replicate"])
    def test_requests_name_their_webhook_and_poll_seldom(self, alice, provider):
        request = submitted_request(alice, provider)
        ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.PENDING, external_id="")
        fake = Pending(request.model)
        with mock.patch("generation.services.runs.get_provider", return_value=fake):
            step = runs.request_submit(request.pk)
        assert fake.sent.webhook_url == f"https://studio.example/webhooks/{provider}/{request.pk}"
        assert step.action == "poll" and step.countdown == webhooks.WEBHOOK_POLL_SECONDS

    def test_without_a_public_url_or_a_secret_polling_alone_is_used(self, alice, settings):
        fal = submitted_request(alice, "fal")
        replicate = submitted_request(alice, "replicate")
        settings.REPLICATE_WEBHOOK_SECRET = ""
        assert webhooks.webhook_url_for(replicate) is None  # a delivery could not be verified
        assert webhooks.webhook_url_for(fal) is not None
        settings.PUBLIC_BASE_URL = ""
        assert webhooks.webhook_url_for(fal) is None
        ProviderRequest.objects.filter(pk=fal.pk).update(status=RequestStatus.PENDING, external_id="")
        with mock.patch("generation.services.runs.get_provider", return_value=Pending(fal.model)):
            assert runs.request_submit(fal.pk) == runs.Next("poll", 1.0)


class TestWebhookTask:
    def test_it_applies_a_finished_request(self, alice):
        request = submitted_request(alice, "replicate")
        done = ProviderResult(status=ResultStatus.SUCCEEDED, images=[GeneratedImage(data=png_bytes())])
        with mock.patch("generation.services.runs.get_provider", return_value=Pending(request.model, done)):
            tasks.request_webhook_task(str(request.pk))
        request.refresh_from_db()
        assert request.status == RequestStatus.SUCCEEDED and request.job.status == JobStatus.SUCCEEDED

    def test_a_pending_answer_leaves_the_regular_poll_chain_alone(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        with (
            mock.patch("generation.services.runs.get_provider", return_value=Pending(request.model)),
            django_capture_on_commit_callbacks(execute=True),
        ):
            tasks.request_webhook_task(str(request.pk))
        enqueued.assert_not_called()
        request.refresh_from_db()
        assert request.status == RequestStatus.SUBMITTED and request.polls == 1
