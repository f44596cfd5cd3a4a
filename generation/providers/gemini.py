"""Google Gemini image models through generateContent: one synchronous call, one image.

The image models reject candidateCount > 1, so every call makes one image and the pipeline fans
a batch out into one request per image. The answer carries the image inline as base64.

Every answered call is billed, so an answer that should hold an image but holds garbage (a body
that is not JSON, an inlineData that is empty, not base64 or not an image, a STOP with no part at
all) is asked for again once at most: retryable on the request's first submit, permanent after.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import requests
from django.conf import settings

from generation.lib.imaging import sniff_content_type
from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderResult,
    ResultStatus,
)
from generation.providers.http_api import HttpApi, json_or_none, sanitize_message, unique_references

# Image only: the model answers the picture without a chatty text part (docs/providers.md 3.1 allows
# ["IMAGE"] alone for the image models), and a text-only answer is then plainly a failure.
RESPONSE_MODALITIES = ["IMAGE"]
# How often a garbled (but billed) answer is asked for again.
MALFORMED_RESUBMITS = 1
ASPECT_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"})
IMAGE_SIZES = frozenset({"1K", "2K", "4K"})
# Finish reasons that mean Google's filters stopped the image, worded for the user.
_SAFETY_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


class MalformedAnswer(ProviderError):
    """An answer that should have carried an image but could not be read; see the module docstring."""


def _submit_attempt(request: GenerationRequest) -> int:
    """Which submit of this request this is (runs.build_request); 1 when unknown."""
    value = request.params.get("submit_attempt", request.params.get("attempt", 1))
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


class Gemini(HttpApi, Provider):
    name = "gemini"
    asynchronous = False
    api_label = "Google Gemini"
    secret_setting = "GEMINI_API_KEY"  # noqa: S105 - the name of the setting, not a secret
    base_url_setting = "GEMINI_API_URL"
    max_images_limit = 1  # generateContent answers one image: a batch is one request per image

    def api_headers(self) -> dict[str, str]:
        # A header, never ?key=: URLs end up in proxy and error logs.
        return {"x-goog-api-key": settings.GEMINI_API_KEY}

    def error_message(self, response: requests.Response) -> str:
        body = json_or_none(response)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            status = error.get("status")
            return f"{error['message']} ({status})" if status else str(error["message"])
        return response.text

    def build_body(self, request: GenerationRequest) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        for reference in unique_references(request.references):
            data = base64.b64encode(reference.data).decode("ascii")
            parts.append({"inline_data": {"mime_type": reference.content_type, "data": data}})
        config: dict[str, Any] = {"responseModalities": list(RESPONSE_MODALITIES)}
        image_config = {}
        # Only values the API knows: a fal-style "portrait_4_3" would be a 400 for every request.
        aspect_ratio = request.params.get("aspect_ratio")
        if aspect_ratio in ASPECT_RATIOS:
            image_config["aspectRatio"] = aspect_ratio
        image_size = request.params.get("image_size")
        if image_size in IMAGE_SIZES:
            image_config["imageSize"] = image_size
        if image_config:
            config["imageConfig"] = image_config
        if request.seed is not None and (self.model.capabilities or {}).get("seed"):
            config["seed"] = request.seed
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    def submit(self, request: GenerationRequest) -> ProviderResult:
        if request.num_images > 1:
            raise ProviderError("Gemini makes one image per request; send one request per image.", permanent=True)
        base = settings.GEMINI_API_URL.rstrip("/")
        url = f"{base}/{settings.GEMINI_API_VERSION}/models/{self.model.key}:generateContent"
        response = self.http("POST", url, json=self.build_body(request))
        try:
            body = self.json(response)
            image = parse_image(body)
        except ProviderError as exc:
            if exc.permanent and not isinstance(exc, MalformedAnswer):
                raise
            raise self._malformed(exc, request) from None
        return ProviderResult(
            status=ResultStatus.SUCCEEDED,
            images=[image],
            metadata={"usage": body.get("usageMetadata") or {}, "model_version": body.get("modelVersion", "")},
        )

    def _malformed(self, exc: ProviderError, request: GenerationRequest) -> ProviderError:
        """The error for an unreadable answer: retryable while resubmits remain, permanent after."""
        permanent = _submit_attempt(request) > MALFORMED_RESUBMITS
        message = exc.message
        if permanent:
            message += " It was not asked for again: every answer is billed."
        return ProviderError(message, permanent=permanent, details=exc.details, status_code=exc.status_code)


def _inline_image(inline: Any) -> GeneratedImage:
    """The image of an inlineData part, or MalformedAnswer when it holds none."""
    encoded = inline.get("data") if isinstance(inline, dict) else None
    if not encoded or not isinstance(encoded, str):
        raise MalformedAnswer("Google Gemini returned an image part without data.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedAnswer("Google Gemini returned an unreadable image (not base64).") from None
    sniffed = sniff_content_type(data)
    if sniffed is None:
        raise MalformedAnswer("Google Gemini returned an image part that is not a PNG, JPEG or WebP image.")
    mime_type = str(inline.get("mimeType") or inline.get("mime_type") or "")
    return GeneratedImage(data=data, content_type=mime_type or sniffed)


def parse_image(body: dict[str, Any]) -> GeneratedImage:
    """The image of a generateContent answer.

    Raises a permanent ProviderError when Google refused (a blocked prompt, a safety finish reason,
    a text-only answer: asking again gets the same), and MalformedAnswer when the answer is garbled.
    """
    feedback = body.get("promptFeedback") or {}
    candidates = body.get("candidates") or []
    if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
        reason = sanitize_message(str(feedback["blockReason"]), limit=60)
        raise ProviderError(f"The prompt was blocked by Google's safety filters ({reason}).", permanent=True)
    if not candidates:
        raise MalformedAnswer("Google Gemini answered without any candidate.")
    candidate = candidates[0] if isinstance(candidates[0], dict) else {}
    content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
    parts = content.get("parts") if isinstance(content.get("parts"), list) else []
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue  # Gemini 3 "thought" images are interim drafts, not the answer
        if "inlineData" in part or "inline_data" in part:
            # One request is one slot: the first final image is the answer.
            return _inline_image(part.get("inlineData") or part.get("inline_data"))
        if part.get("text"):
            texts.append(str(part["text"]).strip())
    explanation = sanitize_message(" ".join(t for t in texts if t), limit=300)
    said = f' The model said: "{explanation}"' if explanation else ""
    reason = sanitize_message(str(candidate.get("finishReason") or ""), limit=60)
    if reason in _SAFETY_REASONS:
        raise ProviderError(f"Google's safety filters blocked the image ({reason}).{said}", permanent=True)
    if not explanation and reason in {"", "STOP"}:
        # A finished answer with nothing in it: not a refusal, a garbled answer.
        raise MalformedAnswer(f"Google Gemini answered without an image ({reason or 'no finish reason'}).")
    raise ProviderError(
        f"Google Gemini answered without an image ({reason or 'no finish reason'}).{said}", permanent=True
    )
