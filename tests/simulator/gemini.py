"""Gemini's generateContent for the provider simulator (docs/providers.md 3.1 generateContent, 3.2 errors and 429).

    POST /gemini/{version}/models/{model}:generateContent

Synchronous: the answer comes after `latency` seconds and carries the images inline (base64 PNG parts), or
only text, or a blocked prompt (gemini_mode), or IMAGE_SAFETY without an image (fail_jobs). Auth is the
`x-goog-api-key` header or `?key=`; a bad key is 400 API_KEY_INVALID. Errors are google.rpc statuses; a 429
carries QuotaFailure and, instead of a Retry-After header, RetryInfo in the body.

GeminiAPI is a mixin of tests.simulator.server.Simulator, whose core it uses (`_error`, `_lock`, `_sleep`,
`_latency`, `_take_one`, ...).
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from tests.simulator.images import make_png
from tests.simulator.records import Call, Response

KNOBS = (
    "gemini_mode",
    "gemini_block_reason",
    "gemini_require_image_modality",
    "gemini_broken_next",
    "gemini_broken_kind",
)
METHODS = {("gemini", "generate"): "POST"}
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GeminiAPI:
    """Gemini's knobs, routes and handlers."""

    # A 429 says when to retry in the body's RetryInfo only (a fault rule may add the header anyway).
    _gemini_retry_after_header = False
    _gemini_fault_messages = {
        429: "You exceeded your current quota, please check your plan and billing details.",
        503: "The model is overloaded. Please try again later.",
    }

    def _reset_gemini(self) -> None:
        # "image" | "text" (a STOP with only text) | "blocked" (promptFeedback.blockReason, no candidates)
        self.gemini_mode = "image"
        self.gemini_block_reason = "PROHIBITED_CONTENT"
        # A generateContent whose generationConfig.responseModalities lacks "IMAGE" is answered with
        # text only. Stricter than the real API, which may still draw: it proves the studio asks.
        self.gemini_require_image_modality = True
        # The next N Gemini answers carry a broken image part (each still billed, as on Google):
        # gemini_broken_kind "not-an-image" (base64 of HTML), "not-base64" or "no-data".
        self.gemini_broken_next = 0
        self.gemini_broken_kind = "not-an-image"

    def _route_gemini(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if len(rest) == 3 and rest[1] == "models" and rest[2].endswith(":generateContent"):
            return "gemini", "generate", {"version": rest[0], "model": rest[2].removesuffix(":generateContent")}
        return self._route_gemini_batch(method, rest)

    def _gemini_auth(self, call: Call) -> Response | None:
        if call.op == "file_upload":
            return None  # the upload URL is its own authorization (gemini_batch.py checks its session)
        presented = call.headers.get("x-goog-api-key") or (call.query.get("key") or [""])[0]
        if presented == self.accepted_keys.get("gemini", ""):
            return None
        text = "API key not valid. Please pass a valid API key."
        if self.echo_credentials:
            text += f" (got {presented!r})"
        response = self._error("gemini", 400, text)
        body = json.loads(response.body)
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ]
        return Response.json(400, body)

    @staticmethod
    def _gemini_error_body(status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}
        if status == 429:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                }
            ]
            if retry_after is not None:
                error["details"].append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
                )
        return {"error": error}

    def _gemini_generate(self, call: Call, params: dict[str, str]) -> Response:
        body = call.json
        contents = body.get("contents") if isinstance(body, dict) else None
        if not isinstance(contents, list) or not contents:
            return self._error("gemini", 400, "* GenerateContentRequest.contents: contents is not specified")
        config = body.get("generationConfig") or body.get("generation_config") or {}
        if isinstance(config, dict) and (config.get("candidateCount") or config.get("candidate_count") or 1) > 1:
            return self._error(
                "gemini", 400, f"Multiple candidates is not enabled for models/{params['model']}.", header=False
            )
        modalities = config.get("responseModalities") or config.get("response_modalities") or []
        wants_image = isinstance(modalities, list) and "IMAGE" in [str(m).upper() for m in modalities]
        self._sleep(self._latency("gemini"))
        response_id = secrets.token_urlsafe(16)
        usage = {"promptTokenCount": 270, "candidatesTokenCount": 1299, "totalTokenCount": 1569}
        common = {"usageMetadata": usage, "modelVersion": params["model"], "responseId": response_id}
        mode = self.gemini_mode
        if mode == "blocked":
            return Response.json(200, {"promptFeedback": {"blockReason": self.gemini_block_reason}, **common})
        if self._take_one("fail_jobs"):
            candidate = {"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY", "index": 0}
            return Response.json(200, {"candidates": [candidate], **common})
        parts: list[dict[str, Any]] = []
        if self._take_one("gemini_broken_next"):
            parts.append({"inlineData": self._broken_inline_data()})
        elif mode == "text" or self.num_images == 0 or (self.gemini_require_image_modality and not wants_image):
            parts.append({"text": "I can make that picture; tell me more about the setting you would like."})
        else:
            parts.append({"text": "Here is your image."})
            for index in range(max(1, self.num_images or 1)):
                data = make_png(f"gemini:{response_id}:{index}", self.image_size)
                parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}})
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return Response.json(200, {"candidates": [candidate], **common})

    def _broken_inline_data(self) -> dict[str, str]:
        kind = self.gemini_broken_kind
        if kind == "no-data":
            return {"mimeType": "image/png"}
        if kind == "not-base64":
            return {"mimeType": "image/png", "data": "this is not base64!"}
        return {"mimeType": "image/png", "data": base64.b64encode(b"<html>an error page</html>").decode()}
