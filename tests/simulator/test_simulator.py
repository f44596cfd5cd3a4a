"""The simulator itself speaks the providers' protocols as docs/providers.md describes them (no Django needed)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from tests.simulator.server import MALFORMED_BODY
from tests.simulator.signing import (
    FalSigner,
    b64url,
    fal_verify,
    standard_webhook_headers,
    standard_webhook_verify,
)


def fal_headers(sim):
    return {"Authorization": f"Key {sim.keys['fal']}"}


def replicate_headers(sim):
    return {"Authorization": f"Bearer {sim.keys['replicate']}"}


def gemini_headers(sim):
    return {"x-goog-api-key": sim.keys["gemini"]}


def is_png(data: bytes) -> bool:
    return Image.open(io.BytesIO(data)).format == "PNG"


def gemini_body(prompt="a cat"):
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }


# --- signatures: the reference's test vectors ---------------------------------------------------


def test_fal_signer_matches_the_reference_test_vector():
    signer = FalSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    body = b'{"request_id":"024ca5b1-45d3-4afd-883e-ad3abe2a1c4d","status":"OK"}'

    assert signer.jwks()["keys"][0]["x"] == "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    headers = signer.headers(
        request_id="024ca5b1-45d3-4afd-883e-ad3abe2a1c4d", user_id="github|12345", timestamp=1767225600, body=body
    )
    assert headers["X-Fal-Webhook-Signature"] == (
        "4bd6a444bbae5cf901ed0762d2ae60a7cd3c9e9117a2ac1692913031330ea750"
        "fd6366b79729e55bc0d8641c6c4947b6b3e8aad5cf11ef34807b7facf0c24a00"
    )
    assert fal_verify(signer.jwks(), headers, body)
    assert not fal_verify(signer.jwks(), headers, body + b" ")
    assert not fal_verify(FalSigner().jwks(), headers, body)
    assert b64url(signer.public_bytes) == signer.jwks()["keys"][0]["x"]


def test_standard_webhook_signature_matches_the_reference_test_vector():
    secret = "whsec_cmVwbGljYXRlLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk="
    body = b'{"id":"ufawqhfynnddngldkgtslldrkq","status":"succeeded"}'
    headers = standard_webhook_headers(secret, webhook_id="msg_2yQYZ8mXbD9xV3kq", timestamp=1767225600, body=body)

    assert headers["webhook-signature"] == "v1,nMaUU90MzJLliUmAMjlMnqH/4QMbAygE057x3lR5ErU="
    assert standard_webhook_verify(secret, headers, body)
    assert not standard_webhook_verify(secret, headers, body[:-1])


# --- fal ----------------------------------------------------------------------------------------


def test_fal_queue_round_trip_uses_urls_without_the_sub_path(simulator):
    simulator.latency = 0.2
    submit = requests.post(
        f"{simulator.fal_url}/fal-ai/flux-2/flash",
        json={"prompt": "a fox", "num_images": 3, "seed": 7},
        headers=fal_headers(simulator),
        timeout=5,
    )
    assert submit.status_code == 200
    body = submit.json()
    request_id = body["request_id"]
    base = f"{simulator.fal_url}/fal-ai/flux-2/requests/{request_id}"
    assert body["status_url"] == f"{base}/status"
    assert body["response_url"] == base
    assert body["cancel_url"] == f"{base}/cancel"
    assert body["queue_position"] == 0

    pending = requests.get(body["status_url"], params={"logs": "false"}, headers=fal_headers(simulator), timeout=5)
    assert pending.status_code == 202 and pending.json()["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    early = requests.get(body["response_url"], headers=fal_headers(simulator), timeout=5)
    assert early.status_code == 400
    # A URL built from the full model id finds nothing, as on fal.
    built = requests.get(
        f"{simulator.fal_url}/fal-ai/flux-2/flash/requests/{request_id}/status",
        headers=fal_headers(simulator),
        timeout=5,
    )
    assert built.status_code == 404

    time.sleep(0.25)
    done = requests.get(body["status_url"], params={"logs": "true"}, headers=fal_headers(simulator), timeout=5)
    assert done.status_code == 200
    assert done.json()["status"] == "COMPLETED" and done.json()["error"] is None
    result = requests.get(body["response_url"], headers=fal_headers(simulator), timeout=5).json()
    assert len(result["images"]) == 3 and result["seed"] == 7 and result["has_nsfw_concepts"] == [False] * 3
    assert result["prompt"] == "a fox"
    datas = [requests.get(image["url"], timeout=5).content for image in result["images"]]
    assert all(is_png(d) for d in datas) and len(set(datas)) == 3
    assert {image["content_type"] for image in result["images"]} == {"image/png"}

    ops = [c.op for c in simulator.calls_for("fal")]
    assert ops[0] == "submit" and ops.count("status") == 3 and ops.count("result") == 2
    assert simulator.calls_for("fal", "submit")[0].json["num_images"] == 3


def test_fal_rejects_a_wrong_key_and_cancels_a_running_request(simulator):
    simulator.latency = 5
    denied = requests.post(f"{simulator.fal_url}/fal-ai/flux-2", json={"prompt": "x"}, headers={}, timeout=5)
    assert denied.status_code == 401 and denied.json() == {"detail": "Unauthorized"}
    bearer = {"Authorization": f"Bearer {simulator.keys['fal']}"}
    assert (
        requests.post(f"{simulator.fal_url}/fal-ai/flux-2", json={"prompt": "x"}, headers=bearer, timeout=5).status_code
        == 401
    )

    body = requests.post(
        f"{simulator.fal_url}/fal-ai/flux-2", json={"prompt": "x"}, headers=fal_headers(simulator), timeout=5
    ).json()
    cancel = requests.put(body["cancel_url"], headers=fal_headers(simulator), timeout=5)
    assert cancel.status_code == 202 and cancel.json() == {"status": "CANCELLATION_REQUESTED"}
    status = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5).json()
    assert status["status"] == "COMPLETED" and "cancel" in status["error_type"]
    again = requests.put(body["cancel_url"], headers=fal_headers(simulator), timeout=5)
    assert again.status_code == 400 and again.json()["status"] == "ALREADY_COMPLETED"


def test_fal_validation_errors_are_detail_lists(simulator):
    answer = requests.post(
        f"{simulator.fal_url}/fal-ai/flux-2", json={"num_images": 2}, headers=fal_headers(simulator), timeout=5
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_a_failed_fal_generation_completes_with_an_error_and_replays_it(simulator):
    simulator.configure(latency=0.05, fail_jobs=1)
    body = requests.post(
        f"{simulator.fal_url}/fal-ai/flux-2", json={"prompt": "x"}, headers=fal_headers(simulator), timeout=5
    ).json()
    time.sleep(0.1)
    status = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5)
    assert status.status_code == 200 and status.json()["error"]
    result = requests.get(body["response_url"], headers=fal_headers(simulator), timeout=5)
    assert result.status_code == 422 and result.json()["detail"][0]["type"] == "content_policy_violation"


def fal_submit(simulator, model="fal-ai/flux-2"):
    return requests.post(
        f"{simulator.fal_url}/{model}", json={"prompt": "x"}, headers=fal_headers(simulator), timeout=5
    ).json()


@pytest.mark.parametrize(
    ("status", "error", "error_type"),
    [
        (422, "Invalid status code: 422", None),
        (500, "Runner disconnected", "runner_disconnected"),
        (503, "Runner disconnected", "runner_disconnected"),
    ],
)
def test_a_failed_fal_job_replays_the_chosen_status(simulator, status, error, error_type):
    simulator.configure(latency=0.05, fail_jobs=1, fal_job_error_status=status)
    body = fal_submit(simulator)
    time.sleep(0.1)
    answer = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5).json()
    assert answer["status"] == "COMPLETED"
    assert (answer["error"], answer["error_type"]) == (error, error_type)
    result = requests.get(body["response_url"], headers=fal_headers(simulator), timeout=5)
    assert result.status_code == status
    assert result.json()["detail"]


def test_fal_can_hand_out_urls_on_a_foreign_host(simulator):
    simulator.fal_urls_base = "http://169.254.169.254/fal"
    body = fal_submit(simulator, "fal-ai/flux-2/flash")
    base = f"http://169.254.169.254/fal/fal-ai/flux-2/requests/{body['request_id']}"
    assert (body["status_url"], body["response_url"], body["cancel_url"]) == (f"{base}/status", base, f"{base}/cancel")


def test_fal_status_can_be_unknown_or_ask_for_a_later_poll(simulator):
    simulator.configure(latency=5, fal_status_retry_after=120)
    body = fal_submit(simulator)
    pending = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5)
    assert pending.status_code == 202 and pending.headers["Retry-After"] == "120"
    simulator.fal_status_override = "FAILED"
    unknown = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5)
    assert unknown.status_code == 200 and unknown.json()["status"] == "FAILED"
    simulator.rate_limit_next(1, retry_after=120, provider="fal", op="status")
    limited = requests.get(body["status_url"], headers=fal_headers(simulator), timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "120"


def test_fal_status_stream_sends_the_status_as_events_until_the_request_ends(simulator):
    simulator.configure(latency=0.3, concurrency_cap=1)
    body = fal_submit(simulator)
    stream = f"{body['status_url']}/stream"
    assert requests.get(stream, timeout=5).status_code == 401  # the key, as on every fal call

    started = time.monotonic()
    answer = requests.get(stream, headers=fal_headers(simulator), timeout=5)
    ended = time.monotonic() - started

    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/event-stream"
    events = [line for line in answer.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert [json.loads(event[6:])["status"] for event in events] == ["IN_QUEUE", "COMPLETED"]
    assert 0.2 < ended < 0.6  # answered when the request ended (0.3 s after its submit), not before
    # Held open while the request runs, it is no concurrent request of fal's: it never hit the cap.
    assert simulator.max_concurrency("fal") <= 1


# --- Replicate ----------------------------------------------------------------------------------


def test_replicate_create_with_prefer_wait_finishes_in_one_call(simulator):
    simulator.latency = 0.1
    answer = requests.post(
        f"{simulator.replicate_url}/v1/predictions",
        json={"version": "abc123", "input": {"prompt": "a fox", "num_outputs": 2}},
        headers={**replicate_headers(simulator), "Prefer": "wait=5"},
        timeout=10,
    )
    assert answer.status_code == 201
    prediction = answer.json()
    assert prediction["status"] == "succeeded" and len(prediction["output"]) == 2
    assert prediction["urls"]["get"] == f"{simulator.replicate_url}/v1/predictions/{prediction['id']}"
    assert all(is_png(requests.get(url, timeout=5).content) for url in prediction["output"])


def test_replicate_prediction_lifecycle_polling_string_output_and_cancel(simulator):
    simulator.configure(latency=0.2, replicate_output_string=True)
    created = requests.post(
        f"{simulator.replicate_url}/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "a fox"}},
        headers=replicate_headers(simulator),
        timeout=5,
    )
    assert created.status_code == 201
    prediction = created.json()
    assert prediction["status"] in {"starting", "processing"} and prediction["output"] is None
    assert prediction["model"] == "black-forest-labs/flux-schnell"
    time.sleep(0.25)
    done = requests.get(prediction["urls"]["get"], headers=replicate_headers(simulator), timeout=5).json()
    assert done["status"] == "succeeded" and isinstance(done["output"], str)

    simulator.latency = 5
    other = requests.post(
        f"{simulator.replicate_url}/v1/predictions",
        json={"version": "v", "input": {"prompt": "y"}},
        headers=replicate_headers(simulator),
        timeout=5,
    ).json()
    canceled = requests.post(other["urls"]["cancel"], headers=replicate_headers(simulator), timeout=5)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"

    denied = requests.get(prediction["urls"]["get"], headers={"Authorization": "Bearer nope"}, timeout=5)
    assert denied.status_code == 401 and denied.json()["status"] == 401
    missing_version = requests.post(
        f"{simulator.replicate_url}/v1/predictions",
        json={"input": {"prompt": "y"}},
        headers=replicate_headers(simulator),
        timeout=5,
    )
    assert missing_version.status_code == 422


# --- Gemini -------------------------------------------------------------------------------------


def test_gemini_generate_content_returns_one_inline_png(simulator):
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    answer = requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5)
    assert answer.status_code == 200
    candidate = answer.json()["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    inline = [p["inlineData"] for p in candidate["content"]["parts"] if "inlineData" in p]
    assert len(inline) == 1 and inline[0]["mimeType"] == "image/png"
    assert is_png(base64.b64decode(inline[0]["data"]))
    assert answer.json()["usageMetadata"]["totalTokenCount"] > 0

    simulator.gemini_mode = "blocked"
    blocked = requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).json()
    assert blocked["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"} and "candidates" not in blocked
    simulator.gemini_mode = "text"
    text = requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).json()
    assert all("inlineData" not in p for p in text["candidates"][0]["content"]["parts"])

    many = requests.post(
        url,
        json={**gemini_body(), "generationConfig": {"candidateCount": 2}},
        headers=gemini_headers(simulator),
        timeout=5,
    )
    assert many.status_code == 400 and many.json()["error"]["status"] == "INVALID_ARGUMENT"
    bad_key = requests.post(url, json=gemini_body(), headers={"x-goog-api-key": "nope"}, timeout=5)
    assert bad_key.status_code == 400
    assert bad_key.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def gemini_parts(simulator, body):
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    answer = requests.post(url, json=body, headers=gemini_headers(simulator), timeout=5)
    assert answer.status_code == 200
    return answer.json()["candidates"][0]["content"]["parts"]


@pytest.mark.parametrize("config", [{}, {"responseModalities": ["TEXT"]}, None])
def test_gemini_answers_text_only_unless_asked_for_an_image(simulator, config):
    body = gemini_body()
    if config is None:
        del body["generationConfig"]
    else:
        body["generationConfig"] = config
    assert all("inlineData" not in p for p in gemini_parts(simulator, body))
    for modalities in (["IMAGE"], ["TEXT", "IMAGE"], ["image"]):
        body["generationConfig"] = {"responseModalities": modalities}
        assert any("inlineData" in p for p in gemini_parts(simulator, body))
    simulator.gemini_require_image_modality = False
    body["generationConfig"] = {}
    assert any("inlineData" in p for p in gemini_parts(simulator, body))


@pytest.mark.parametrize("kind", ["not-an-image", "not-base64", "no-data"])
def test_gemini_can_answer_broken_image_parts(simulator, kind):
    simulator.configure(gemini_broken_next=1, gemini_broken_kind=kind)
    (broken,) = [p["inlineData"] for p in gemini_parts(simulator, gemini_body()) if "inlineData" in p]
    if kind == "no-data":
        assert "data" not in broken
    elif kind == "not-base64":
        with pytest.raises(ValueError):
            base64.b64decode(broken["data"], validate=True)
    else:
        assert not base64.b64decode(broken["data"]).startswith(b"\x89PNG")
    (fine,) = [p["inlineData"] for p in gemini_parts(simulator, gemini_body()) if "inlineData" in p]
    assert is_png(base64.b64decode(fine["data"]))


def test_gemini_429_carries_retry_info_and_fal_429_a_retry_after_header(simulator):
    simulator.rate_limit_next(1, retry_after=2, provider="gemini")
    simulator.rate_limit_next(1, retry_after=1, provider="fal")
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    answer = requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5)
    assert answer.status_code == 429 and "Retry-After" not in answer.headers
    error = answer.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in error["details"]
    assert requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).status_code == 200

    fal = requests.post(
        f"{simulator.fal_url}/fal-ai/flux-2", json={"prompt": "x"}, headers=fal_headers(simulator), timeout=5
    )
    assert fal.status_code == 429 and fal.headers["Retry-After"] == "1"


# --- knobs --------------------------------------------------------------------------------------


def test_faults_outage_malformed_drop_and_timeout(simulator):
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"

    def post(timeout=5):
        return requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=timeout)

    outage = simulator.outage("gemini")
    assert post().status_code == 503 and post().status_code == 503
    assert outage.hits == 2
    simulator.clear_faults()

    simulator.malformed_next(1, provider="gemini")
    assert post().content == MALFORMED_BODY
    simulator.drop_next(1, provider="gemini")
    with pytest.raises(requests.ConnectionError):
        post()
    simulator.timeout_next(1, seconds=1.0, provider="gemini")
    with pytest.raises(requests.ReadTimeout):
        post(timeout=(2, 0.3))
    assert post().status_code == 200
    # A fault for one provider leaves the others alone.
    simulator.fail_next(1, 500, provider="replicate")
    assert post().status_code == 200


def test_a_fraction_of_calls_fails_and_a_count_limits_it(simulator):
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    simulator.latency = 0
    rule = simulator.fail_fraction(0.5, 429, provider="gemini", retry_after=1)
    statuses = [
        requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).status_code
        for _ in range(40)
    ]
    assert 5 <= statuses.count(429) <= 35 and statuses.count(429) == rule.hits
    assert set(statuses) == {200, 429}

    simulator.clear_faults()
    rule = simulator.fail_fraction(1.0, 500, provider="gemini", n=2)
    statuses = [
        requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).status_code
        for _ in range(4)
    ]
    assert statuses == [500, 500, 200, 200] and rule.hits == 2


def test_concurrency_cap_answers_429_and_the_maximum_is_recorded(simulator):
    simulator.configure(latency=0.3, concurrency_cap=2)
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    statuses = []

    def call():
        statuses.append(
            requests.post(url, json=gemini_body(), headers=gemini_headers(simulator), timeout=5).status_code
        )

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 200, 429, 429]
    # Rejected calls count while they are in flight: more than the cap was seen.
    assert simulator.max_concurrency("gemini") > 2
    assert simulator.max_concurrency("fal") == 0


def test_reset_wakes_sleeping_handlers_and_forgets_everything(simulator):
    simulator.latency = 30
    url = f"{simulator.gemini_url}/v1beta/models/gemini-2.5-flash-image:generateContent"
    started = time.monotonic()
    thread = threading.Thread(
        target=requests.post, args=(url,), kwargs={"json": gemini_body(), "headers": gemini_headers(simulator)}
    )
    thread.start()
    simulator.wait_until(lambda: simulator.calls_for("gemini"))
    simulator.reset()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert simulator.latency == 0.1


def test_webhooks_are_signed_and_can_be_forged(simulator):
    """Deliveries go to any URL; a tiny receiver here checks their signatures."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        simulator.latency = 0.05
        requests.post(
            f"{simulator.fal_url}/fal-ai/flux-2",
            params={"fal_webhook": f"{hook}/fal"},
            json={"prompt": "x", "num_images": 2},
            headers=fal_headers(simulator),
            timeout=5,
        )
        requests.post(
            f"{simulator.replicate_url}/v1/predictions",
            json={"version": "v", "input": {"prompt": "y"}, "webhook": f"{hook}/replicate"},
            headers=replicate_headers(simulator),
            timeout=5,
        )
        simulator.wait_until(lambda: len(simulator.deliveries) == 2, timeout=5)
        jwks = requests.get(simulator.jwks_url, timeout=5).json()
        by_path = {path: (headers, body) for path, headers, body in received}
        fal_headers_, fal_body = by_path["/fal"]
        assert fal_verify(jwks, fal_headers_, fal_body)
        delivered = simulator.deliveries_for("fal")[0].json
        assert delivered["status"] == "OK" and len(delivered["payload"]["images"]) == 2
        rep_headers, rep_body = by_path["/replicate"]
        assert standard_webhook_verify(simulator.replicate_webhook_secret, rep_headers, rep_body)
        assert simulator.deliveries_for("replicate")[0].status == 200

        simulator.forge_webhook_signatures = True
        received.clear()
        requests.post(
            f"{simulator.fal_url}/fal-ai/flux-2",
            params={"fal_webhook": f"{hook}/fal"},
            json={"prompt": "x"},
            headers=fal_headers(simulator),
            timeout=5,
        )
        simulator.wait_until(lambda: received, timeout=5)
        _, headers, body = received[0]
        assert not fal_verify(jwks, headers, body)
    finally:
        server.shutdown()
        server.server_close()


def test_replicate_lists_predictions_so_a_lost_create_is_found_again(simulator, settings, db):
    from generation.providers.base import GenerationRequest
    from generation.providers.replicate import Replicate
    from tests.generation.providers import api_model

    for name, value in simulator.settings_overrides().items():
        setattr(settings, name, value)
    simulator.latency = 5
    sent_at = time.time()
    # A create the simulator took but whose answer never reached us.
    lost = requests.post(
        f"{simulator.replicate_url}/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "a fox", "seed": 7}},
        headers=replicate_headers(simulator),
        timeout=5,
    ).json()
    listing = requests.get(f"{simulator.replicate_url}/v1/predictions", headers=replicate_headers(simulator), timeout=5)
    assert listing.status_code == 200 and [p["id"] for p in listing.json()["results"]] == [lost["id"]]

    model = api_model("black-forest-labs/flux-schnell", "replicate", input_schema={"properties": {"seed": {}}})
    request = GenerationRequest(prompt="a fox", seed=7, params={"sent_at": sent_at})
    found = Replicate(model).recover(request)
    assert found.external_id == lost["id"] and found.handles["get"] == lost["urls"]["get"]
    creates = [c for c in simulator.calls if c.provider == "replicate" and c.op == "create"]
    assert len(creates) == 1  # found, not created again


# --- fal storage upload and LoRA trainers (docs/providers.md §7.2, §7.3) --------------------------


def _initiate(sim, content_type="application/zip"):
    answer = requests.post(
        f"{sim.fal_rest_url}/storage/upload/initiate?storage_type=fal-cdn-v3",
        json={"content_type": content_type, "file_name": "d.zip"},
        headers=fal_headers(sim),
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()


def test_fal_storage_takes_a_put_to_the_signed_url_and_serves_the_file(simulator):
    urls = _initiate(simulator)
    put = requests.put(urls["upload_url"], data=b"PK zip", headers={"Content-Type": "application/zip"}, timeout=5)
    assert put.status_code == 200
    served = requests.get(urls["file_url"], timeout=5)
    assert served.content == b"PK zip" and served.headers["Content-Type"] == "application/zip"


def test_fal_storage_refuses_a_key_on_the_signed_url_a_bad_signature_and_another_content_type(simulator):
    urls = _initiate(simulator)
    keyed = requests.put(
        urls["upload_url"], data=b"x", headers={"Content-Type": "application/zip", **fal_headers(simulator)}, timeout=5
    )
    assert keyed.status_code == 400
    unsigned = requests.put(
        urls["upload_url"].split("?")[0], data=b"x", headers={"Content-Type": "application/zip"}, timeout=5
    )
    assert unsigned.status_code == 403
    other_type = requests.put(urls["upload_url"], data=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert other_type.status_code == 403
    assert simulator.uploaded(urls["file_url"]) is None


def test_fal_storage_initiate_needs_the_key(simulator):
    answer = requests.post(f"{simulator.fal_rest_url}/storage/upload/initiate", json={}, timeout=5)
    assert answer.status_code == 401


def test_a_fal_trainer_checks_its_own_field_names_and_steps(simulator):
    url = f"{simulator.fal_url}/fal-ai/flux-2-trainer"
    wrong_field = requests.post(
        url, json={"images_data_url": "https://x.test/d.zip"}, headers=fal_headers(simulator), timeout=5
    )
    assert wrong_field.status_code == 422
    assert wrong_field.json()["detail"][0]["loc"] == ["body", "image_data_url"]
    few_steps = requests.post(
        url, json={"image_data_url": "https://x.test/d.zip", "steps": 50}, headers=fal_headers(simulator), timeout=5
    )
    assert few_steps.status_code == 422 and few_steps.json()["detail"][0]["loc"] == ["body", "steps"]


def test_replicate_trainings_need_an_owned_destination_and_the_trainers_version(simulator):
    from tests.simulator.replicate_training import TRAINER_MODEL, TRAINER_VERSION

    api = f"{simulator.replicate_url}/v1"
    model = requests.get(f"{api}/models/{TRAINER_MODEL}", headers=replicate_headers(simulator), timeout=5).json()
    assert model["latest_version"]["id"] == TRAINER_VERSION
    body = {"owner": "sim-owner", "name": "cs-lora-1", "visibility": "private", "hardware": "cpu"}
    first = requests.post(f"{api}/models", json=body, headers=replicate_headers(simulator), timeout=5)
    again = requests.post(f"{api}/models", json=body, headers=replicate_headers(simulator), timeout=5)
    other = requests.post(f"{api}/models", json={**body, "owner": "x"}, headers=replicate_headers(simulator), timeout=5)
    assert (first.status_code, again.status_code, other.status_code) == (201, 409, 403)

    trainings = f"{api}/models/{TRAINER_MODEL}/versions/{TRAINER_VERSION}/trainings"
    no_destination = {"destination": "sim-owner/missing", "input": {"input_images": "https://x.test/d.zip"}}
    missing = requests.post(trainings, json=no_destination, headers=replicate_headers(simulator), timeout=5)
    assert (
        missing.status_code == 404 and missing.json()["detail"] == "The specified training destination does not exist"
    )
    created = requests.post(
        trainings,
        json={"destination": "sim-owner/cs-lora-1", "input": {"input_images": "https://x.test/d.zip"}},
        headers=replicate_headers(simulator),
        timeout=5,
    )
    assert created.status_code == 201 and "/v1/predictions/" in created.json()["urls"]["get"]
    training_id = created.json()["id"]
    got = requests.get(f"{api}/trainings/{training_id}", headers=replicate_headers(simulator), timeout=5)
    assert got.status_code == 200 and got.json()["urls"]["get"].endswith(f"/v1/trainings/{training_id}")
    assert (
        requests.get(f"{api}/predictions/{training_id}", headers=replicate_headers(simulator), timeout=5).status_code
        == 404
    )
