from __future__ import annotations

import email.utils
import logging
import time

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from generation.providers.base import ProviderError, Reference
from generation.providers.comfyui import ComfyUI
from generation.providers.fal import Fal
from generation.providers.gemini import Gemini
from generation.providers.http_api import (
    MAY_HAVE_BEEN_RECEIVED,
    HttpApi,
    google_retry_delay,
    sanitize_message,
    unique_references,
    url_origin,
)
from generation.providers.replicate import Replicate
from tests.generation.providers import api_model

URL = "https://api.example.test/v1/things"
PLANTED_KEY = "sk-planted-0123456789abcdef"


class Example(HttpApi):
    api_label = "Example"

    def api_base_url(self) -> str:
        return "https://api.example.test/v1"

    def api_secret(self) -> str:
        return PLANTED_KEY

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {PLANTED_KEY}"}

    def error_message(self, response: requests.Response) -> str:
        return response.json().get("why", "") if response.headers.get("Content-Type") == "application/json" else ""


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture(autouse=True)
def _timeouts(settings):
    settings.PROVIDER_CONNECT_TIMEOUT = 2.5
    settings.PROVIDER_READ_TIMEOUT = 17.0


class TestHttpApiRequest:
    def test_it_returns_the_response_and_sends_auth_and_timeouts_from_settings(self, rsps):
        rsps.get(URL, json={"ok": True})
        response = Example().http("GET", URL)
        assert response.json() == {"ok": True}
        request = rsps.calls[0].request
        assert request.headers["Authorization"] == f"Bearer {PLANTED_KEY}"
        assert request.req_kwargs["timeout"] == (2.5, 17.0)

    def test_it_does_not_follow_redirects(self, rsps):
        # A redirect would carry custom key headers (x-goog-api-key) to another host.
        rsps.get(URL, status=302, headers={"Location": "https://elsewhere.test/steal"})
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert info.value.permanent
        assert "redirect" in info.value.message
        assert len(rsps.calls) == 1


class TestHttpApiErrors:
    @pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
    def test_it_makes_client_errors_permanent(self, rsps, status):
        rsps.post(URL, json={"why": "bad input"}, status=status)
        with pytest.raises(ProviderError) as info:
            Example().http("POST", URL, json={})
        assert info.value.permanent
        assert info.value.status_code == status
        assert info.value.message == f"Example answered HTTP {status}: bad input"

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_it_makes_throttling_and_server_errors_retryable(self, rsps, status):
        rsps.post(URL, body="<html>nginx</html>", status=status)
        with pytest.raises(ProviderError) as info:
            Example().http("POST", URL)
        assert not info.value.permanent
        assert info.value.status_code == status

    def test_it_reads_retry_after_seconds(self, rsps):
        rsps.get(URL, status=429, headers={"Retry-After": "7"})
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert info.value.retry_after == 7.0

    def test_it_reads_retry_after_as_an_http_date(self, rsps):
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        rsps.get(URL, status=429, headers={"Retry-After": when})
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert 100 <= info.value.retry_after <= 121

    def test_it_reads_google_retry_info(self, rsps):
        body = {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"},
                ],
            }
        }
        rsps.get(URL, json=body, status=429)
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert info.value.retry_after == 12.0

    def test_it_makes_read_timeouts_retryable_and_says_the_request_may_have_landed(self, rsps):
        rsps.post(URL, body=requests.ReadTimeout("read timed out"))
        with pytest.raises(ProviderError) as info:
            Example().http("POST", URL)
        assert not info.value.permanent
        assert info.value.status_code is None
        assert info.value.details == MAY_HAVE_BEEN_RECEIVED
        assert info.value.message == "Example timed out (ReadTimeout)."

    def test_it_knows_a_refused_connection_sent_nothing(self, rsps):
        refused = requests.ConnectionError(MaxRetryError(None, URL, NewConnectionError(None, "refused")))
        rsps.post(URL, body=refused)
        with pytest.raises(ProviderError) as info:
            Example().http("POST", URL)
        assert not info.value.permanent
        assert info.value.details == ""

    def test_it_knows_a_connect_timeout_sent_nothing(self, rsps):
        rsps.post(URL, body=requests.ConnectTimeout())
        with pytest.raises(ProviderError) as info:
            Example().http("POST", URL)
        assert not info.value.permanent
        assert info.value.details == ""

    def test_it_makes_an_unreadable_2xx_body_retryable(self, rsps):
        rsps.get(URL, body="not json")
        api = Example()
        with pytest.raises(ProviderError) as info:
            api.json(api.http("GET", URL))
        assert not info.value.permanent
        assert info.value.details == ""

    def test_it_says_a_garbled_answer_to_a_post_may_hide_a_received_request(self, rsps):
        rsps.post(URL, body="<html>ok</html>", status=201)
        api = Example()
        with pytest.raises(ProviderError) as info:
            api.json(api.http("POST", URL))
        assert not info.value.permanent
        assert info.value.details == MAY_HAVE_BEEN_RECEIVED

    def test_it_refuses_to_rebuild_a_missing_handle(self):
        with pytest.raises(ProviderError) as info:
            Example().handle({"status_url": None}, "status_url")
        assert info.value.permanent
        assert Example().handle({"get": "https://x.test/p/1"}, "get") == "https://x.test/p/1"


class TestHttpApiSecrets:
    def test_it_never_puts_the_key_in_messages_or_logs(self, rsps, caplog):
        caplog.set_level(logging.DEBUG)
        # Some APIs echo the credential back in their error text.
        rsps.get(URL, json={"why": f"key {PLANTED_KEY} is not valid"}, status=401)
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert PLANTED_KEY not in str(info.value)
        assert PLANTED_KEY not in info.value.details
        assert "[redacted]" in str(info.value)
        assert PLANTED_KEY not in caplog.text
        assert "Example GET https://api.example.test/v1/things failed (permanent)" in caplog.text

    def test_it_never_puts_the_key_in_transport_errors(self, rsps, caplog):
        caplog.set_level(logging.DEBUG)
        rsps.get(URL, body=requests.ConnectionError(f"reset while sending Bearer {PLANTED_KEY}"))
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert PLANTED_KEY not in str(info.value)
        assert PLANTED_KEY not in info.value.details
        assert PLANTED_KEY not in caplog.text

    def test_it_keeps_the_webhook_query_out_of_logs(self, rsps, caplog):
        rsps.post(URL, status=500)
        with pytest.raises(ProviderError):
            Example().http("POST", URL + "?fal_webhook=https%3A%2F%2Fapp.test%2Fhook%3Ftoken%3Dsecret")
        assert "token" not in caplog.text

    @pytest.mark.parametrize(
        ("adapter", "model", "setting", "url", "body"),
        [
            (Fal, api_model("fal-ai/flux-2", "fal"), "FAL_KEY", "https://queue.fal.run/fal-ai/flux-2", "detail"),
            (
                Replicate,
                api_model("a/b", "replicate"),
                "REPLICATE_API_TOKEN",
                "https://api.replicate.com/v1/models/a/b/predictions",
                "detail",
            ),
            (
                Gemini,
                api_model("gemini-2.5-flash-image", "gemini"),
                "GEMINI_API_KEY",
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent",
                "error",
            ),
        ],
    )
    def test_it_scrubs_each_adapters_key(self, rsps, settings, caplog, adapter, model, setting, url, body):
        from generation.providers.base import GenerationRequest

        caplog.set_level(logging.DEBUG)
        settings.FAL_QUEUE_URL = "https://queue.fal.run"
        settings.REPLICATE_API_URL = "https://api.replicate.com"
        settings.GEMINI_API_URL = "https://generativelanguage.googleapis.com"
        settings.GEMINI_API_VERSION = "v1beta"
        setattr(settings, setting, PLANTED_KEY)
        echo = f"API key {PLANTED_KEY} not valid"
        rsps.post(url, json={"detail": echo} if body == "detail" else {"error": {"message": echo}}, status=403)
        with pytest.raises(ProviderError) as info:
            adapter(model).submit(GenerationRequest(prompt="a fox"))
        assert info.value.permanent
        assert PLANTED_KEY not in str(info.value)
        assert PLANTED_KEY not in caplog.text


class TestHttpApiStaysOnItsHost:
    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/latest/meta-data/",
            "https://api.example.test.evil.test/v1/things",
            "http://api.example.test/v1/things",
            "https://api.example.test:444/v1/things",
            "https://user@api.example.test/v1/things",
            "https://evil.test\\@api.example.test/v1/things",
            "ftp://api.example.test/v1/things",
            "",
        ],
    )
    def test_it_never_sends_anything_off_the_api_host(self, rsps, caplog, url):
        with pytest.raises(ProviderError) as info:
            Example().http("GET", url)
        assert info.value.permanent
        assert info.value.message == "Example answered with a URL on another host; it was not followed."
        assert len(rsps.calls) == 0
        assert PLANTED_KEY not in caplog.text

    def test_the_api_host_ignores_case_default_port_and_a_trailing_dot(self):
        Example().check_api_host("HTTPS://API.Example.test.:443/other/path?q=1")

    def test_without_a_configured_base_url_nothing_is_sent(self, rsps):
        class Unconfigured(Example):
            def api_base_url(self) -> str:
                return ""

        with pytest.raises(ProviderError):
            Unconfigured().http("GET", URL)
        assert len(rsps.calls) == 0

    @pytest.mark.parametrize(
        ("adapter", "setting", "base", "trusted", "expected"),
        [
            (
                Fal,
                "FAL_QUEUE_URL",
                "http://127.0.0.1:9000/fal",
                ["127.0.0.1:9000", "10.0.0.5:8188"],
                ("127.0.0.1:9000",),
            ),
            (Fal, "FAL_QUEUE_URL", "http://127.0.0.1:9000/fal", ["127.0.0.1"], ("127.0.0.1:9000",)),
            (Fal, "FAL_QUEUE_URL", "https://queue.fal.run", ["10.0.0.5:8188"], ()),
            (Replicate, "REPLICATE_API_URL", "http://127.0.0.1:9000/r", ["127.0.0.1:9001"], ()),
            (
                ComfyUI,
                "COMFYUI_BASE_URL",
                "http://10.0.0.5:8188",
                ["http://10.0.0.5:8188", "127.0.0.1"],
                ("10.0.0.5:8188",),
            ),
            (ComfyUI, "COMFYUI_BASE_URL", "http://[fd00::5]:8188", ["[fd00::5]:8188"], ("[fd00::5]:8188",)),
        ],
    )
    def test_each_provider_trusts_only_its_own_host_for_downloads(
        self, settings, adapter, setting, base, trusted, expected
    ):
        setattr(settings, setting, base)
        settings.TRUSTED_FETCH_HOSTS = trusted
        assert adapter(api_model("m", adapter.name)).fetch_trusted_hosts() == expected


class TestSanitizeMessage:
    def test_it_strips_urls_paths_addresses_and_keys(self, settings):
        settings.REPLICATE_API_TOKEN = "r8-configured-token"
        text = (
            "Could not fetch https://bucket.s3.test/refs/a.png?X-Amz-Signature=deadbeef "
            "(see http://10.0.0.5:8188/view). "
            'File "/srv/app/.venv/lib/python3.12/site-packages/x.py", line 3; C:\\models\\flux.safetensors; '
            "connect 169.254.169.254:80 refused; Authorization: Key 8a1b2c3d:f00d; Bearer r8_Abc123def456; "
            "AIzaSyD-0123456789abcdef; api_key=hunter2; r8-configured-token; data:image/png;base64,iVBORw0KGgo="
        )
        assert sanitize_message(text) == (
            'Could not fetch [url] (see [url]). File "[path]", line 3; [path]; connect [address] refused; '
            "[redacted]; [redacted]; [redacted]; [redacted]; [redacted]; [data]"
        )

    def test_it_keeps_what_users_need_to_read(self):
        text = "num_images: ensure this value is <= 4 (fal-ai/flux-2/flash, image/png); token expired; key missing"
        assert sanitize_message(text) == text

    def test_it_redacts_the_given_secret_and_trims_to_one_short_line(self):
        assert sanitize_message("a\n\n b\tSECRETVALUE", ["SECRETVALUE"]) == "a b [redacted]"
        trimmed = sanitize_message("word " * 200, limit=50)
        assert len(trimmed) == 50 and trimmed.endswith("…")

    def test_every_adapter_error_goes_through_it(self, rsps):
        rsps.get(URL, json={"why": "bad input at /srv/app/main.py, see https://docs.example.test/e"}, status=422)
        with pytest.raises(ProviderError) as info:
            Example().http("GET", URL)
        assert info.value.message == "Example answered HTTP 422: bad input at [path], see [url]"


class TestHelpers:
    def test_it_reads_url_origins(self):
        assert url_origin("https://Queue.Fal.Run./a?b") == ("https", "queue.fal.run", 443)
        assert url_origin("http://127.0.0.1:9/") == ("http", "127.0.0.1", 9)
        assert url_origin("https://a.test:99999/") is None
        assert url_origin("https://a.test /x") is None

    def test_it_ignores_google_bodies_without_retry_info(self):
        assert google_retry_delay({"error": {"details": [{"@type": "x.QuotaFailure"}]}}) is None
        assert google_retry_delay("nope") is None
        assert google_retry_delay({"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "1.5s"}]}})

    def test_it_drops_duplicate_references(self):
        a = Reference(data=b"a", content_type="image/png", key="refs/a.png")
        a_again = Reference(data=b"a2", content_type="image/png", key="refs/a.png")
        b = Reference(data=b"b", content_type="image/png", url="https://s3.test/b.png")
        b_again = Reference(data=b"b", content_type="image/png", url="https://s3.test/b.png")
        c = Reference(data=b"c", content_type="image/png")
        c_again = Reference(data=b"c", content_type="image/png")
        assert unique_references([a, b, a_again, c, b_again, c_again]) == [a, b, c]
