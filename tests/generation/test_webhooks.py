"""Provider webhooks: signatures (Replicate HMAC, fal Ed25519 + JWKS), timestamps, replays, routing
to our request, and the poll they trigger. A rejected delivery must change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal
from unittest import mock

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
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

pytestmark = pytest.mark.django_db

# The test vectors of providers.md §1.5 and §2.3.
DOC_SECRET = "whsec_cmVwbGljYXRlLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk="
DOC_REPLICATE = {
    "webhook-id": "msg_2yQYZ8mXbD9xV3kq",
    "webhook-timestamp": "1767225600",
    "webhook-signature": "v1,nMaUU90MzJLliUmAMjlMnqH/4QMbAygE057x3lR5ErU=",
}
DOC_REPLICATE_BODY = b'{"id":"ufawqhfynnddngldkgtslldrkq","status":"succeeded"}'
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
JWKS_URL = "https://jwks.fal.test/.well-known/jwks.json"


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.PUBLIC_BASE_URL = "https://studio.example"
    settings.REPLICATE_WEBHOOK_SECRET = DOC_SECRET
    settings.FAL_WEBHOOK_JWKS_URL = JWKS_URL
    settings.FAL_USER_ID = ""
    settings.FAL_KEY = "fal-test-key"
    settings.REPLICATE_API_TOKEN = "r8_test"
    keys = [webhooks.JWKS_CACHE_KEY, f"{webhooks.JWKS_CACHE_KEY}:refreshed", webhooks.JWKS_FAILED_KEY]
    keys += ["provider-health:fal"]
    keys += ["provider-health:replicate"]
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


# --- Replicate ------------------------------------------------------------------------------


def replicate_sign(body: bytes, *, secret: str = DOC_SECRET, timestamp: int | None = None, msg_id: str = "") -> dict:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    signature = "v1," + base64.b64encode(digest).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def replicate_body(request: ProviderRequest) -> bytes:
    return json.dumps({"id": request.external_id, "status": "succeeded", "output": ["https://x/1.png"]}).encode()


def post(url: str, body: bytes, headers: dict):
    # A CSRF-enforcing client with no session: providers have neither.
    return Client(enforce_csrf_checks=True).post(url, data=body, content_type="application/json", headers=headers)


def replicate_url(request: ProviderRequest) -> str:
    return reverse("generation:webhook-replicate", args=[request.pk])


class TestReplicateSignature:
    def test_it_verifies_the_documented_test_vector(self):
        assert webhooks.replicate_verify(headers=DOC_REPLICATE, body=DOC_REPLICATE_BODY, now=1767225600) == (
            "msg_2yQYZ8mXbD9xV3kq"
        )

    def test_it_accepts_any_of_several_listed_signatures(self):
        headers = {**DOC_REPLICATE, "webhook-signature": "v1,bm90LWl0 " + DOC_REPLICATE["webhook-signature"]}
        assert webhooks.replicate_verify(headers=headers, body=DOC_REPLICATE_BODY, now=1767225610)

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
        ],
    )
    def test_it_rejects_tampering_and_stale_or_future_timestamps(self, change, status):
        change = dict(change)
        body = change.pop("body", DOC_REPLICATE_BODY)
        now = change.pop("now", 1767225600)
        with pytest.raises(webhooks.WebhookRejected) as exc:
            webhooks.replicate_verify(headers={**DOC_REPLICATE, **change}, body=body, now=now)
        assert exc.value.status == status

    def test_it_rejects_a_delivery_signed_with_another_secret(self, settings):
        settings.REPLICATE_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"another-secret").decode()
        with pytest.raises(webhooks.WebhookRejected):
            webhooks.replicate_verify(headers=DOC_REPLICATE, body=DOC_REPLICATE_BODY, now=1767225600)


class TestReplicateWebhook:
    def test_it_answers_200_and_polls_the_request_after_the_commit(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        body = replicate_body(request)
        with django_capture_on_commit_callbacks(execute=True):
            response = post(replicate_url(request), body, replicate_sign(body))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_replayed_delivery_answers_200_and_does_nothing_more(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate")
        body = replicate_body(request)
        headers = replicate_sign(body)
        with django_capture_on_commit_callbacks(execute=True):
            assert post(replicate_url(request), body, headers).status_code == 200
            replay = post(replicate_url(request), body, headers)
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
            response = post(replicate_url(request), body, replicate_sign(body, **sign))
        assert response.status_code == status
        assert snapshot(request) == before
        enqueued.assert_not_called()

    def test_a_delivery_for_an_unknown_or_other_request_is_refused(self, alice, enqueued):
        request = submitted_request(alice, "replicate")
        other = submitted_request(alice, "fal")
        body = replicate_body(request)
        unknown = reverse("generation:webhook-replicate", args=[uuid.uuid4()])
        assert post(unknown, body, replicate_sign(body)).status_code == 404
        # A fal request on the Replicate route, and another prediction's body on ours.
        assert post(replicate_url(other), body, replicate_sign(body)).status_code == 404
        foreign = json.dumps({"id": "some-other-prediction", "status": "succeeded"}).encode()
        assert post(replicate_url(request), foreign, replicate_sign(foreign)).status_code == 400
        enqueued.assert_not_called()

    def test_a_delivery_for_a_request_not_yet_sent_asks_for_a_retry(self, alice, enqueued):
        request = submitted_request(alice, "replicate", external_id="")
        ProviderRequest.objects.filter(pk=request.pk).update(status=RequestStatus.PENDING)
        body = json.dumps({"id": "not-yet-known", "status": "succeeded"}).encode()
        assert post(replicate_url(request), body, replicate_sign(body)).status_code == 409
        enqueued.assert_not_called()

    def test_a_delivery_for_a_submit_whose_answer_was_lost_adopts_the_prediction(
        self, alice, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "replicate", external_id="")
        urls = {"get": "https://api.replicate.com/v1/predictions/p-lost", "cancel": "https://x/cancel"}
        body = json.dumps({"id": "p-lost", "status": "succeeded", "output": ["https://x/1.png"], "urls": urls}).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = post(replicate_url(request), body, replicate_sign(body))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        request.refresh_from_db()
        assert request.external_id == "p-lost" and request.handles == urls
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_only_post_is_allowed(self, alice):
        request = submitted_request(alice, "replicate")
        assert Client().get(replicate_url(request)).status_code == 405


# --- fal ------------------------------------------------------------------------------------


def jwk(private_key: Ed25519PrivateKey, *, pad: bool = False) -> dict:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x if pad else x.rstrip("=")}


def fal_sign(
    private_key: Ed25519PrivateKey,
    body: bytes,
    *,
    request_id: str,
    user_id: str = "github|12345",
    timestamp: int | None = None,
) -> dict:
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": timestamp,
        "X-Fal-Webhook-Signature": private_key.sign(message).hex(),
    }


@pytest.fixture
def fal_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks(fal_key):
    # Deliveries refused before their signature is checked never fetch it.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.get(JWKS_URL, json={"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, jwk(fal_key)]})
        yield mocked


def fal_body(request: ProviderRequest) -> bytes:
    payload = {"images": [{"url": "https://v3.fal.media/files/x.png", "content_type": "image/png"}], "seed": 1}
    return json.dumps({"request_id": request.external_id, "status": "OK", "payload": payload}).encode()


def fal_url(request: ProviderRequest) -> str:
    return reverse("generation:webhook-fal", args=[request.pk])


class TestFalSignature:
    def test_it_verifies_the_documented_test_vector_with_a_padded_key(self):
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": DOC_FAL_X + "="}]})
            delivery = webhooks.fal_verify(headers=DOC_FAL, body=DOC_FAL_BODY, now=1767225600)
        assert delivery == "024ca5b1-45d3-4afd-883e-ad3abe2a1c4d:1767225600"

    def test_it_fetches_the_jwks_once_and_caches_it(self, fal_key, jwks):
        for _ in range(3):
            headers = fal_sign(fal_key, b"{}", request_id=str(uuid.uuid4()))
            webhooks.fal_verify(headers=headers, body=b"{}")
        assert len(jwks.calls) == 1

    def test_it_refetches_the_jwks_once_when_fal_rotated_its_key(self, fal_key):
        cache.set(webhooks.JWKS_CACHE_KEY, [jwk(Ed25519PrivateKey.generate())])
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, json={"keys": [jwk(fal_key)]})
            webhooks.fal_verify(headers=fal_sign(fal_key, b"{}", request_id="a"), body=b"{}")
            forged = fal_sign(Ed25519PrivateKey.generate(), b"{}", request_id="b")
            with pytest.raises(webhooks.WebhookRejected):
                webhooks.fal_verify(headers=forged, body=b"{}")
            # A forged delivery made no second fetch: refreshes are rate limited.
            assert len(mocked.calls) == 1

    def test_an_unreachable_jwks_asks_fal_to_deliver_again_later(self, fal_key):
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, status=502)
            with pytest.raises(webhooks.WebhookRejected) as exc:
                webhooks.fal_verify(headers=fal_sign(fal_key, b"{}", request_id="a"), body=b"{}")
        assert exc.value.status == 503


class TestFalWebhookCost:
    """An unsigned POST must not be able to hold web workers on the JWKS host."""

    def test_a_post_for_an_unknown_or_other_request_never_fetches_the_jwks(self, alice, fal_key):
        request = submitted_request(alice, "fal")
        body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": {}}).encode()
        headers = fal_sign(fal_key, body, request_id="someone-else")
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
            mocked.get(JWKS_URL, json={"keys": [jwk(fal_key)]})
            unknown = post(reverse("generation:webhook-fal", args=[uuid.uuid4()]), body, headers)
            other = post(fal_url(request), body, headers)
            assert len(mocked.calls) == 0
        assert (unknown.status_code, other.status_code) == (404, 400)

    def test_a_down_jwks_host_is_asked_once_for_many_deliveries(self, alice, fal_key, enqueued):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        with responses.RequestsMock() as mocked:
            mocked.get(JWKS_URL, body=requests.ConnectTimeout("down"))
            answers = [
                post(fal_url(request), body, fal_sign(fal_key, body, request_id=request.external_id)).status_code
                for _ in range(3)
            ]
            assert len(mocked.calls) == 1
        assert answers == [503, 503, 503]  # fal delivers again later
        enqueued.assert_not_called()

    def test_the_failure_is_forgotten_after_a_minute(self, fal_key, jwks):
        cache.set(webhooks.JWKS_FAILED_KEY, 1)
        with pytest.raises(webhooks.WebhookRejected):
            webhooks.fal_verify(headers=fal_sign(fal_key, b"{}", request_id="a"), body=b"{}")
        assert len(jwks.calls) == 0
        assert webhooks.JWKS_FAILURE_SECONDS == 60
        cache.delete(webhooks.JWKS_FAILED_KEY)  # what the cache timeout does
        webhooks.fal_verify(headers=fal_sign(fal_key, b"{}", request_id="a"), body=b"{}")
        assert len(jwks.calls) == 1

    def test_the_jwks_fetch_uses_a_short_timeout(self, fal_key, jwks, settings):
        settings.FAL_WEBHOOK_JWKS_TIMEOUT = 3.0
        settings.PROVIDER_CONNECT_TIMEOUT = 5.0
        settings.PROVIDER_READ_TIMEOUT = 60.0
        webhooks.fal_verify(headers=fal_sign(fal_key, b"{}", request_id="a"), body=b"{}")
        assert jwks.calls[0].request.req_kwargs["timeout"] == (3.0, 3.0)


class TestFalWebhook:
    def test_it_answers_200_and_polls_the_request_after_the_commit(
        self, alice, fal_key, jwks, enqueued, django_capture_on_commit_callbacks
    ):
        request = submitted_request(alice, "fal")
        body = fal_body(request)
        with django_capture_on_commit_callbacks(execute=True):
            response = post(fal_url(request), body, fal_sign(fal_key, body, request_id=request.external_id))
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_delivery_for_a_submit_whose_answer_was_lost_adopts_the_request(
        self, alice, fal_key, jwks, enqueued, django_capture_on_commit_callbacks, settings
    ):
        request = submitted_request(alice, "fal", external_id="")
        ApiModel.objects.filter(pk=request.model_id).update(key="fal-ai/flux/dev/image-to-image")
        body = json.dumps({"request_id": "fal-lost", "status": "OK", "payload": {"images": []}}).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = post(fal_url(request), body, fal_sign(fal_key, body, request_id="fal-lost"))
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
            post(fal_url(request), body, headers)
            replay = post(fal_url(request), body, headers)
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
            response = post(fal_url(request), sent, fal_sign(key, body, **kwargs))
        assert response.status_code == status
        assert snapshot(request) == before
        enqueued.assert_not_called()

    def test_a_delivery_for_another_request_is_refused(self, alice, fal_key, jwks, enqueued):
        request = submitted_request(alice, "fal")
        body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": {}}).encode()
        response = post(fal_url(request), body, fal_sign(fal_key, body, request_id="someone-else"))
        assert response.status_code == 400
        unknown = reverse("generation:webhook-fal", args=[uuid.uuid4()])
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
