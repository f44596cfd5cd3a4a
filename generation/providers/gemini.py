"""Google Gemini image models through generateContent: one synchronous call, one image.

The image models reject candidateCount > 1, so every call makes one image and the pipeline fans
a batch out into one request per image. The answer carries the image inline as base64.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import requests
from django.conf import settings

from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderResult,
    ResultStatus,
)
from generation.providers.http_api import HttpApi, json_or_none, unique_references

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


class Gemini(HttpApi, Provider):
    name = "gemini"
    asynchronous = False
    api_label = "Google Gemini"
    secret_setting = "GEMINI_API_KEY"  # noqa: S105 - the name of the setting, not a secret
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
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
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
        body = self.json(self.http("POST", url, json=self.build_body(request)))
        image = parse_image(body)
        return ProviderResult(
            status=ResultStatus.SUCCEEDED,
            images=[image],
            metadata={"usage": body.get("usageMetadata") or {}, "model_version": body.get("modelVersion", "")},
        )


def parse_image(body: dict[str, Any]) -> GeneratedImage:
    """The image of a generateContent answer, or a permanent ProviderError saying why there is none."""
    feedback = body.get("promptFeedback") or {}
    candidates = body.get("candidates") or []
    if not candidates and feedback.get("blockReason"):
        raise ProviderError(
            f"The prompt was blocked by Google's safety filters ({feedback['blockReason']}).", permanent=True
        )
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue  # Gemini 3 "thought" images are interim drafts, not the answer
        inline = part.get("inlineData") or part.get("inline_data")
        if isinstance(inline, dict) and inline.get("data"):
            mime_type = str(inline.get("mimeType") or inline.get("mime_type") or "")
            try:
                data = base64.b64decode(inline["data"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProviderError("Google Gemini returned an unreadable image.") from exc
            # One request is one slot: the first final image is the answer.
            return GeneratedImage(data=data, content_type=mime_type)
        if part.get("text"):
            texts.append(str(part["text"]).strip())
    explanation = " ".join(t for t in texts if t)
    said = f' The model said: "{explanation[:300]}"' if explanation else ""
    reason = str(candidate.get("finishReason") or "")
    if reason in _SAFETY_REASONS:
        message = f"Google's safety filters blocked the image ({reason})."
    elif candidates:
        message = f"Google Gemini answered without an image ({reason or 'no finish reason'})."
    else:
        message = "Google Gemini answered without any candidate."
    raise ProviderError(message + said, permanent=True)
