from __future__ import annotations

import base64
import json

import pytest
import responses
from django.test import override_settings

from generation.providers.base import GenerationRequest, ProviderError
from generation.providers.gemini_batch import (
    CANCELLED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    GeminiBatch,
    normalize_state,
    parse_batch,
)
from tests.generation.providers import PNG, api_model, sent_json

API_KEY = "AIzaSy-planted-gemini-key"
BASE = "https://generativelanguage.googleapis.com"
CREATE_URL = f"{BASE}/v1beta/models/gemini-2.5-flash-image:batchGenerateContent"
PNG_B64 = base64.b64encode(PNG).decode()


def flash():
    return api_model(
        "gemini-2.5-flash-image",
        "gemini",
        tasks=["t2i", "i2i"],
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
        capabilities={"batch_api": True},
    )


def image_response() -> dict:
    parts = [{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}]}


def lines(client: GeminiBatch, n: int = 2):
    return [client.line(f"job1:{i}", GenerationRequest(prompt=f"a fox {i}")) for i in range(n)]


@pytest.fixture(autouse=True)
def _gemini_settings(settings):
    settings.GEMINI_API_KEY = API_KEY
    settings.GEMINI_API_URL = BASE
    settings.GEMINI_API_VERSION = "v1beta"


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


class TestParsing:
    @pytest.mark.parametrize(
        ("raw", "state"),
        [
            ("BATCH_STATE_PENDING", PENDING),
            ("JOB_STATE_PENDING", PENDING),
            ("BATCH_STATE_RUNNING", RUNNING),
            ("JOB_STATE_SUCCEEDED", SUCCEEDED),
            ("BATCH_STATE_FAILED", FAILED),
            ("JOB_STATE_CANCELLED", CANCELLED),
            ("BATCH_STATE_EXPIRED", EXPIRED),
            ("BATCH_STATE_UNSPECIFIED", "UNSPECIFIED"),
            ("", "UNSPECIFIED"),
        ],
    )
    def test_it_reads_both_state_spellings(self, raw, state):
        assert normalize_state(raw) == state

    def test_it_reads_the_documented_completed_file_batch(self):
        # docs/providers.md 3.3, the real completed example: counters as strings, 0s left out.
        body = {
            "name": "batches/leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3",
            "metadata": {
                "displayName": "my batch name",
                "output": {"responsesFile": "files/batch-leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3"},
                "batchStats": {"requestCount": "2", "successfulRequestCount": "2"},
                "state": "BATCH_STATE_SUCCEEDED",
            },
            "done": True,
        }
        status = parse_batch(body)
        assert status.state == SUCCEEDED and status.done and status.is_final
        assert (status.request_count, status.succeeded_count, status.failed_count) == (2, 2, 0)
        assert status.responses_file == "files/batch-leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3"
        assert status.display_name == "my batch name"

    def test_it_reads_inline_results_under_response_or_metadata_output(self):
        inlined = {"inlinedResponses": {"inlinedResponses": [{"response": image_response(), "metadata": {"key": "a"}}]}}
        for body in (
            {"name": "batches/x", "metadata": {"state": "BATCH_STATE_SUCCEEDED"}, "done": True, "response": inlined},
            {"name": "batches/x", "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": inlined}, "done": True},
        ):
            status = parse_batch(body)
            assert status.inlined is not None and len(status.inlined) == 1

    def test_a_succeeded_state_without_results_yet_has_none(self):
        status = parse_batch({"name": "batches/x", "metadata": {"state": "BATCH_STATE_SUCCEEDED"}})
        assert status.state == SUCCEEDED and not status.has_results and not status.done


class TestCreate:
    def test_it_sends_inline_requests_field_for_field(self, rsps):
        rsps.post(CREATE_URL, json={"name": "batches/abc", "metadata": {"state": "BATCH_STATE_PENDING"}})
        client = GeminiBatch(flash())
        status, input_file = client.create(display_name="cs-1", lines=lines(client))

        call = rsps.calls[0]
        assert call.request.method == "POST"
        assert call.request.url == CREATE_URL
        assert call.request.headers["x-goog-api-key"] == API_KEY
        assert call.request.headers["Content-Type"] == "application/json"
        body = sent_json(call)
        assert list(body) == ["batch"]
        assert set(body["batch"]) == {"displayName", "inputConfig"}
        assert body["batch"]["displayName"] == "cs-1"
        requests_ = body["batch"]["inputConfig"]["requests"]["requests"]  # the doubled requests.requests
        assert [r["metadata"] for r in requests_] == [{"key": "job1:0"}, {"key": "job1:1"}]
        assert set(requests_[0]) == {"request", "metadata"}
        assert requests_[0]["request"]["contents"][0]["parts"][0] == {"text": "a fox 0"}
        assert requests_[0]["request"]["generationConfig"]["responseModalities"] == ["IMAGE"]
        assert status.name == "batches/abc" and status.state == PENDING and input_file == ""

    def test_above_the_inline_limit_it_uploads_a_jsonl_file_resumably(self, rsps, settings):
        settings.GEMINI_BATCH_INLINE_LIMIT_BYTES = 100
        upload_url = f"{BASE}/upload/v1beta/files?upload_id=xyz&upload_protocol=resumable"
        rsps.post(f"{BASE}/upload/v1beta/files", headers={"x-goog-upload-url": upload_url})
        rsps.post(
            upload_url,
            json={"file": {"name": "files/abc123", "uri": f"{BASE}/v1beta/files/abc123"}},
            headers={"x-goog-upload-status": "final"},
        )
        rsps.post(CREATE_URL, json={"name": "batches/b1", "metadata": {"state": "BATCH_STATE_PENDING"}})
        client = GeminiBatch(flash())
        status, input_file = client.create(display_name="cs-2", lines=lines(client))

        start, data, create = rsps.calls
        assert start.request.headers["x-goog-api-key"] == API_KEY
        assert start.request.headers["X-Goog-Upload-Protocol"] == "resumable"
        assert start.request.headers["X-Goog-Upload-Command"] == "start"
        assert start.request.headers["X-Goog-Upload-Header-Content-Type"] == "application/jsonl"
        size = int(start.request.headers["X-Goog-Upload-Header-Content-Length"])
        assert sent_json(start) == {
            "file": {"display_name": "cs-2", "mime_type": "application/jsonl", "size_bytes": str(size)}
        }
        assert "x-goog-api-key" not in data.request.headers  # the upload URL is its own authorization
        assert data.request.headers["X-Goog-Upload-Offset"] == "0"
        assert data.request.headers["X-Goog-Upload-Command"] == "upload, finalize"
        jsonl = [json.loads(x) for x in data.request.body.splitlines()]
        assert len(data.request.body) == size
        assert [x["key"] for x in jsonl] == ["job1:0", "job1:1"] and set(jsonl[0]) == {"key", "request"}
        # The file's name (files/...), not its uri.
        assert sent_json(create) == {"batch": {"displayName": "cs-2", "inputConfig": {"fileName": "files/abc123"}}}
        assert input_file == "files/abc123" and status.name == "batches/b1"

    def test_an_upload_that_does_not_say_final_fails(self, rsps, settings):
        settings.GEMINI_BATCH_INLINE_LIMIT_BYTES = 100
        upload_url = f"{BASE}/upload/v1beta/files?upload_id=xyz"
        rsps.post(f"{BASE}/upload/v1beta/files", headers={"x-goog-upload-url": upload_url})
        rsps.post(upload_url, json={}, headers={"x-goog-upload-status": "active"})
        client = GeminiBatch(flash())
        with pytest.raises(ProviderError, match="did not finish the upload"):
            client.create(display_name="cs-3", lines=lines(client))

    def test_an_upload_url_off_the_api_host_is_refused(self, rsps, settings):
        settings.GEMINI_BATCH_INLINE_LIMIT_BYTES = 100
        rsps.post(f"{BASE}/upload/v1beta/files", headers={"x-goog-upload-url": "https://evil.test/u"})
        client = GeminiBatch(flash())
        with pytest.raises(ProviderError, match="another host") as caught:
            client.create(display_name="cs-4", lines=lines(client))
        assert caught.value.permanent
        assert len(rsps.calls) == 1

    def test_a_lost_answer_says_the_batch_may_exist(self, rsps):
        rsps.post(CREATE_URL, body=b'{"name": "batc')
        client = GeminiBatch(flash())
        with pytest.raises(ProviderError) as caught:
            client.create(display_name="cs-5", lines=lines(client))
        assert caught.value.may_have_been_received


class TestReading:
    def test_find_pages_through_the_list_by_display_name(self, rsps):
        list_url = f"{BASE}/v1beta/batches"
        rsps.get(
            list_url,
            match=[responses.matchers.query_param_matcher({"pageSize": "50"})],
            json={"operations": [{"name": "batches/a", "metadata": {"displayName": "other"}}], "nextPageToken": "t2"},
        )
        rsps.get(
            list_url,
            match=[responses.matchers.query_param_matcher({"pageSize": "50", "pageToken": "t2"})],
            json={
                "operations": [{"name": "batches/b", "metadata": {"displayName": "cs-9", "state": "JOB_STATE_RUNNING"}}]
            },
        )
        found = GeminiBatch(flash()).find("cs-9")
        assert found is not None and found.name == "batches/b" and found.state == RUNNING

    def test_cancel_and_delete(self, rsps):
        rsps.post(f"{BASE}/v1beta/batches/abc:cancel", json={})
        rsps.delete(f"{BASE}/v1beta/batches/abc", json={})
        client = GeminiBatch(flash())
        client.cancel("batches/abc")
        client.delete("batches/abc")
        assert [c.request.method for c in rsps.calls] == ["POST", "DELETE"]
        assert all(c.request.headers["x-goog-api-key"] == API_KEY for c in rsps.calls)

    def test_a_resource_name_from_an_answer_cannot_walk_the_path(self, rsps):
        with pytest.raises(ProviderError) as caught:
            GeminiBatch(flash()).get("batches/../files/x")
        assert caught.value.permanent and not rsps.calls

    def test_results_from_a_responses_file_with_images_and_errors(self, rsps):
        file_lines = [
            {"key": "k0", "response": image_response()},
            {"key": "k1", "error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}},
            {"key": "k2", "response": {"promptFeedback": {"blockReason": "SAFETY"}}},
        ]
        rsps.get(
            f"{BASE}/download/v1beta/files/batch-abc:download",
            match=[responses.matchers.query_param_matcher({"alt": "media"})],
            body="\n".join(json.dumps(x) for x in file_lines) + "\n",
        )
        status = parse_batch({"name": "batches/abc", "done": True, "response": {"responsesFile": "files/batch-abc"}})
        results = list(GeminiBatch(flash()).results(status))
        assert [r.key for r in results] == ["k0", "k1", "k2"]
        assert results[0].image is not None and results[0].image.data == PNG
        assert results[0].image.metadata["batch"] is True
        assert results[1].image is None and "bad" in results[1].error and results[1].permanent
        assert results[2].image is None and "safety" in results[2].error.lower() and results[2].permanent
        assert rsps.calls[0].request.headers["x-goog-api-key"] == API_KEY


# --- against the simulator, through the real adapter ------------------------------------------


@pytest.fixture
def sim(simulator):
    simulator.configure(gemini_batch_pending_seconds=0.05, gemini_batch_running_seconds=0.05)
    with override_settings(**simulator.settings_overrides()):
        yield simulator


def wait_final(client: GeminiBatch, sim, name: str):
    return sim.wait_until(lambda: (s := client.get(name)).is_final and s or None, timeout=5)


class TestAgainstTheSimulator:
    def test_an_inline_batch_runs_through_its_states_to_results(self, sim):
        sim.configure(gemini_batch_pending_seconds=0.3, gemini_batch_running_seconds=0.3)
        client = GeminiBatch(flash())
        status, _ = client.create(display_name="cs-sim-1", lines=lines(client, 3))
        assert status.state == PENDING and status.request_count == 3
        seen = {status.state}
        while not status.is_final:
            status = client.get(status.name)
            seen.add(status.state)
        assert {PENDING, RUNNING, SUCCEEDED} <= seen
        assert status.succeeded_count == 3 and status.failed_count == 0
        results = list(client.results(status))
        assert [r.key for r in results] == ["job1:0", "job1:1", "job1:2"]
        assert all(r.image is not None for r in results)
        create = sim.calls_for("gemini", "batch_create")[0]
        assert create.headers["x-goog-api-key"] == sim.keys["gemini"]

    def test_a_file_batch_uploads_in_chunks_and_streams_its_results(self, sim, settings):
        settings.GEMINI_BATCH_INLINE_LIMIT_BYTES = 10
        settings.GEMINI_BATCH_UPLOAD_CHUNK_BYTES = 256 * 1024
        client = GeminiBatch(flash())
        # Long prompts so the JSONL spans several chunks.
        many = [client.line(f"job2:{i}", GenerationRequest(prompt="x" * 100_000)) for i in range(6)]
        status, input_file = client.create(display_name="cs-sim-2", lines=many)
        assert input_file.startswith("files/")
        chunks = sim.calls_for("gemini", "file_upload")
        assert len(chunks) == 3
        assert [c.headers["x-goog-upload-command"] for c in chunks] == ["upload", "upload", "upload, finalize"]
        assert all("x-goog-api-key" not in c.headers for c in chunks)
        final = wait_final(client, sim, status.name)
        assert final.responses_file
        assert [r.key for r in client.results(final)] == [f"job2:{i}" for i in range(6)]

    def test_a_partial_success_carries_per_request_errors(self, sim):
        sim.configure(gemini_batch_fail_every=2)
        client = GeminiBatch(flash())
        status, _ = client.create(display_name="cs-sim-3", lines=lines(client, 4))
        final = wait_final(client, sim, status.name)
        assert final.state == SUCCEEDED and (final.succeeded_count, final.failed_count) == (2, 2)
        results = list(client.results(final))
        assert [r.image is not None for r in results] == [True, False, True, False]
        assert "invalid argument" in results[1].error.lower()

    @pytest.mark.parametrize(("outcome", "state"), [("failed", FAILED), ("expired", EXPIRED)])
    def test_failed_and_expired_batches_have_no_results(self, sim, outcome, state):
        sim.configure(gemini_batch_outcome=outcome)
        client = GeminiBatch(flash())
        status, _ = client.create(display_name=f"cs-sim-{outcome}", lines=lines(client))
        final = wait_final(client, sim, status.name)
        assert final.state == state and not final.has_results
        if outcome == "failed":
            assert final.error

    def test_cancel_ends_it_cancelled_and_delete_removes_it(self, sim):
        sim.configure(gemini_batch_pending_seconds=5)
        client = GeminiBatch(flash())
        status, _ = client.create(display_name="cs-sim-5", lines=lines(client))
        client.cancel(status.name)
        assert client.get(status.name).state == CANCELLED
        client.delete(status.name)
        with pytest.raises(ProviderError) as caught:
            client.get(status.name)
        assert caught.value.status_code == 404

    def test_the_sdk_spelling_and_results_only_in_metadata_output(self, sim):
        sim.configure(gemini_batch_state_prefix="JOB_STATE_", gemini_batch_results_under="metadata")
        client = GeminiBatch(flash())
        status, _ = client.create(display_name="cs-sim-6", lines=lines(client))
        final = wait_final(client, sim, status.name)
        assert final.raw_state == "JOB_STATE_SUCCEEDED" and final.state == SUCCEEDED
        assert len(list(client.results(final))) == 2

    def test_a_lost_create_answer_is_found_by_its_display_name(self, sim):
        sim.configure(gemini_batch_drop_create_answer=1)
        client = GeminiBatch(flash())
        with pytest.raises(ProviderError) as caught:
            client.create(display_name="cs-sim-lost", lines=lines(client))
        assert caught.value.may_have_been_received
        found = client.find("cs-sim-lost")
        assert found is not None and found.name.startswith("batches/")
        assert len(sim.gemini_batches) == 1
