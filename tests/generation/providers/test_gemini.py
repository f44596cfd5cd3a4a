from __future__ import annotations

import base64

import pytest
import responses

from generation.providers.base import GenerationRequest, ProviderError, Reference, ResultStatus
from generation.providers.gemini import Gemini
from tests.generation.providers import PNG, api_model, sent_json

API_KEY = "AIzaSy-planted-gemini-key"
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent"
PNG_B64 = base64.b64encode(PNG).decode()


def answer(parts: list[dict], finish_reason: str = "STOP") -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish_reason, "index": 0}],
        "usageMetadata": {"promptTokenCount": 270, "candidatesTokenCount": 1299, "totalTokenCount": 1569},
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": "mI0CaJ7sM5a0qtsPkY2xwQk",
    }


def flash():
    return api_model(
        "gemini-2.5-flash-image",
        "gemini",
        tasks=["t2i", "i2i", "i2i_multi"],
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
        capabilities={"batch_api": True, "max_reference_images": 3},
    )


@pytest.fixture(autouse=True)
def _gemini_settings(settings):
    settings.GEMINI_API_KEY = API_KEY
    settings.GEMINI_API_URL = "https://generativelanguage.googleapis.com"
    settings.GEMINI_API_VERSION = "v1beta"


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


class TestGeminiSubmit:
    def test_it_posts_generate_content_with_the_key_in_a_header(self, rsps):
        rsps.post(
            URL, json=answer([{"text": "Here you go."}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}])
        )
        result = Gemini(flash()).submit(GenerationRequest(prompt="a red fox in snow", seed=3))

        call = rsps.calls[0]
        assert call.request.method == "POST"
        assert call.request.url == URL  # no ?key= in the URL
        assert call.request.headers["x-goog-api-key"] == API_KEY
        assert "Authorization" not in call.request.headers
        assert sent_json(call) == {
            "contents": [{"role": "user", "parts": [{"text": "a red fox in snow"}]}],
            # Image only (docs/providers.md 3.1); no seed: the capabilities lack it.
            "generationConfig": {"responseModalities": ["IMAGE"]},
        }
        assert result.status == ResultStatus.SUCCEEDED
        [image] = result.images
        assert image.data == PNG
        assert image.content_type == "image/png"
        assert image.url is None
        assert result.metadata["usage"]["totalTokenCount"] == 1569

    def test_it_sends_references_as_inline_data_and_image_config(self, rsps, settings):
        settings.GEMINI_API_VERSION = "v1"
        url = "https://generativelanguage.googleapis.com/v1/models/gemini-3-pro-image-preview:generateContent"
        rsps.post(url, json=answer([{"inline_data": {"mime_type": "image/png", "data": PNG_B64}}]))
        jpeg = Reference(data=b"\xff\xd8\xffjpeg", content_type="image/jpeg", key="refs/b.jpg")
        references = [Reference(data=PNG, content_type="image/png", key="refs/a.png"), jpeg, jpeg]
        model = api_model("gemini-3-pro-image-preview", "gemini", capabilities={"seed": True})
        request = GenerationRequest(
            prompt="the same character, smiling",
            references=references,
            seed=11,
            params={"aspect_ratio": "3:4", "image_size": "2K"},
        )
        result = Gemini(model).submit(request)

        assert sent_json(rsps.calls[0]) == {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "the same character, smiling"},
                        {"inline_data": {"mime_type": "image/png", "data": PNG_B64}},
                        {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(jpeg.data).decode()}},
                    ],
                }
            ],
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": {"aspectRatio": "3:4", "imageSize": "2K"},
                "seed": 11,
            },
        }
        assert result.images[0].data == PNG  # snake_case answers are read too

    def test_it_drops_image_options_gemini_does_not_know(self, rsps):
        rsps.post(URL, json=answer([{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]))
        Gemini(flash()).submit(GenerationRequest(prompt="p", params={"image_size": "portrait_4_3"}))
        assert "imageConfig" not in sent_json(rsps.calls[0])["generationConfig"]

    def test_it_makes_one_image_per_request(self, rsps):
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p", num_images=2))
        assert info.value.permanent
        assert len(rsps.calls) == 0

    def test_it_skips_thought_images(self, rsps):
        draft = base64.b64encode(b"draft").decode()
        parts = [
            {"inlineData": {"mimeType": "image/png", "data": draft}, "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": PNG_B64}, "thoughtSignature": "abc"},
        ]
        rsps.post(URL, json=answer(parts))
        result = Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert [image.data for image in result.images] == [PNG]


class TestGeminiRefusals:
    def test_it_reports_a_blocked_prompt(self, rsps):
        rsps.post(URL, json={"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "gemini-2.5-flash-image"})
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == "The prompt was blocked by Google's safety filters (SAFETY)."

    def test_it_explains_an_answer_without_an_image(self, rsps):
        rsps.post(URL, json=answer([{"text": "I can't make that image. Could you describe the scene?"}]))
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == (
            "Google Gemini answered without an image (STOP). The model said: \"I can't make that image. "
            'Could you describe the scene?"'
        )

    def test_it_names_the_safety_finish_reason(self, rsps):
        rsps.post(URL, json=answer([], finish_reason="IMAGE_SAFETY"))
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == "Google's safety filters blocked the image (IMAGE_SAFETY)."


MALFORMED = {
    "not-base64": answer([{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]),
    "not-an-image": answer([{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"<html>").decode()}}]),
    "inline-data-without-data": answer([{"inlineData": {"mimeType": "image/png"}}]),
    "a-stop-with-no-parts": answer([]),
    "no-candidates": {"candidates": [], "modelVersion": "gemini-2.5-flash-image"},
}


class TestGeminiMalformedAnswers:
    """Every answer is billed: a garbled one is asked for again once, then the request fails."""

    @pytest.mark.parametrize("case", list(MALFORMED))
    def test_the_first_garbled_answer_is_retryable(self, rsps, case):
        rsps.post(URL, json=MALFORMED[case])
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p", params={"attempt": 1, "submit_attempt": 1}))
        assert not info.value.permanent
        assert info.value.message.startswith("Google Gemini ")

    @pytest.mark.parametrize("case", list(MALFORMED))
    def test_a_garbled_answer_to_a_resubmit_is_permanent(self, rsps, case):
        rsps.post(URL, json=MALFORMED[case])
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p", params={"attempt": 1, "submit_attempt": 2}))
        assert info.value.permanent
        assert info.value.message.endswith("It was not asked for again: every answer is billed.")

    def test_a_body_that_is_not_json_counts_as_garbled(self, rsps):
        rsps.post(URL, body=b'{"candidates": [{"content"', content_type="application/json")
        rsps.post(URL, body=b'{"candidates": [{"content"', content_type="application/json")
        gemini = Gemini(flash())
        with pytest.raises(ProviderError) as first:
            gemini.submit(GenerationRequest(prompt="p", params={"submit_attempt": 1}))
        with pytest.raises(ProviderError) as second:
            gemini.submit(GenerationRequest(prompt="p", params={"submit_attempt": 2}))
        assert (first.value.permanent, second.value.permanent) == (False, True)

    def test_without_a_submit_count_it_goes_by_the_slot_attempt(self, rsps):
        rsps.post(URL, json=MALFORMED["not-an-image"])
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p", params={"attempt": 2}))
        assert info.value.permanent

    def test_it_reads_the_content_type_from_the_bytes_when_the_answer_has_none(self, rsps):
        rsps.post(URL, json=answer([{"inlineData": {"data": PNG_B64}}]))
        [image] = Gemini(flash()).submit(GenerationRequest(prompt="p")).images
        assert (image.data, image.content_type) == (PNG, "image/png")

    def test_what_the_model_said_is_sanitized(self, rsps):
        said = f"See https://example.test/help, /etc/passwd and {API_KEY}"
        rsps.post(URL, json=answer([{"text": said}]))
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent  # a text-only answer is the model declining: asking again gets the same
        assert info.value.message.endswith('The model said: "See [url], [path] and [redacted]"')


class TestGeminiErrors:
    def test_it_retries_resource_exhausted_after_the_retry_delay(self, rsps):
        body = {
            "error": {
                "code": 429,
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            }
                        ],
                    },
                    {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
                ],
            }
        }
        rsps.post(URL, json=body, status=429)
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent
        assert info.value.retry_after == 37.0
        assert info.value.message == (
            "Google Gemini answered HTTP 429: You exceeded your current quota, please check your plan and "
            "billing details. (RESOURCE_EXHAUSTED)"
        )

    def test_it_fails_permanently_on_invalid_argument(self, rsps):
        body = {
            "error": {
                "code": 400,
                "message": "Multiple candidates is not enabled for models/gemini-2.5-flash-image",
                "status": "INVALID_ARGUMENT",
            }
        }
        rsps.post(URL, json=body, status=400)
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert "INVALID_ARGUMENT" in info.value.message

    def test_it_retries_an_overloaded_model(self, rsps):
        body = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
        rsps.post(URL, json=body, status=503)
        with pytest.raises(ProviderError) as info:
            Gemini(flash()).submit(GenerationRequest(prompt="p"))
        assert not info.value.permanent


class TestGeminiConfiguration:
    def test_it_is_synchronous_and_needs_a_key(self, settings):
        gemini = Gemini(flash())
        assert not Gemini.asynchronous
        assert gemini.is_configured()
        settings.GEMINI_API_KEY = ""
        assert not gemini.is_configured()
        assert "GEMINI_API_KEY" in gemini.configuration_hint()
