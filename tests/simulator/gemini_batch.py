"""Gemini's Batch API and Files API upload for the provider simulator (docs/providers.md 3.3-3.4).

    POST   /gemini/{version}/models/{model}:batchGenerateContent   create (inline requests or a file)
    GET    /gemini/{version}/batches/{id}                          the Operation
    GET    /gemini/{version}/batches?pageSize=&pageToken=          {"operations": [...], "nextPageToken"}
    POST   /gemini/{version}/batches/{id}:cancel                   -> CANCELLED
    DELETE /gemini/{version}/batches/{id}
    POST   /gemini/upload/{version}/files                          resumable start: x-goog-upload-url header
    POST   /gemini/upload/{version}/files/sessions/{id}            chunks; "upload, finalize" ends it
    GET    /gemini/download/{version}/files/{id}:download?alt=media  a responses file (JSONL)
    GET    /gemini/{version}/files/{id}:download?alt=media           the same, as python-genai asks

A batch is PENDING for gemini_batch_pending_seconds, RUNNING for gemini_batch_running_seconds, then
ends as gemini_batch_outcome says: "succeeded" (every gemini_batch_fail_every-th request carries an
error instead of an image: a partial success), "failed" (an Operation error, no results) or
"expired" (EXPIRED straight from PENDING, no results). Cancel ends it CANCELLED at once. States are
spelled with gemini_batch_state_prefix ("BATCH_STATE_" as REST does, or "JOB_STATE_"); counters are
strings and left out when 0; results sit under `response`, `metadata.output` or both
(gemini_batch_results_under). Inline requests get inline results, a file input a responses file.
gemini_batch_drop_create_answer makes the next N creates create the batch and then drop the
connection: the answer is lost, the batch exists.

GeminiBatchAPI is a mixin of tests.simulator.server.Simulator, like GeminiAPI.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tests.simulator.images import make_png
from tests.simulator.records import DROP, Call, Response, now_iso

KNOBS = (
    "gemini_batch_pending_seconds",
    "gemini_batch_running_seconds",
    "gemini_batch_outcome",
    "gemini_batch_fail_every",
    "gemini_batch_state_prefix",
    "gemini_batch_results_under",
    "gemini_batch_drop_create_answer",
)
METHODS = {
    ("gemini", "batch_create"): "POST",
    ("gemini", "batch_get"): "GET",
    ("gemini", "batch_list"): "GET",
    ("gemini", "batch_cancel"): "POST",
    ("gemini", "batch_delete"): "DELETE",
    ("gemini", "file_start"): "POST",
    ("gemini", "file_upload"): "POST",
    ("gemini", "file_download"): "GET",
}
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
UPLOAD_GRANULARITY = 256 * 1024


@dataclass
class SimBatch:
    id: str
    model: str
    display_name: str
    # (key, request body) in input order.
    requests: list[tuple[str, dict[str, Any]]]
    input_file: str
    outcome: str
    fail_every: int
    pending_seconds: float
    running_seconds: float
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=now_iso)
    canceled_at: str = ""
    ended_at: str = ""
    results_file: str = ""
    inlined: list[dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    def state(self) -> str:
        if self.canceled_at:
            return "CANCELLED"
        elapsed = time.monotonic() - self.created
        if elapsed < self.pending_seconds:
            return "PENDING"
        if self.outcome == "expired":
            return "EXPIRED"
        if elapsed < self.pending_seconds + self.running_seconds:
            return "RUNNING"
        return "FAILED" if self.outcome == "failed" else "SUCCEEDED"

    def fails(self, index: int) -> bool:
        return self.fail_every > 0 and index % self.fail_every == self.fail_every - 1


class GeminiBatchAPI:
    """The Batch API's knobs, routes and handlers."""

    def _reset_gemini_batch(self) -> None:
        self.gemini_batch_pending_seconds = 0.2
        self.gemini_batch_running_seconds = 0.3
        self.gemini_batch_outcome = "succeeded"
        self.gemini_batch_fail_every = 0
        self.gemini_batch_state_prefix = "BATCH_STATE_"
        self.gemini_batch_results_under = "both"
        self.gemini_batch_drop_create_answer = 0
        self.gemini_batches: dict[str, SimBatch] = {}
        self.gemini_files: dict[str, bytes] = {}
        self._gemini_uploads: dict[str, dict[str, Any]] = {}

    def _route_gemini_batch(self, method: str, rest: list[str]) -> tuple[str, str, dict[str, str]]:
        if len(rest) == 3 and rest[1] == "models" and rest[2].endswith(":batchGenerateContent"):
            return "gemini", "batch_create", {"model": rest[2].removesuffix(":batchGenerateContent")}
        if len(rest) == 2 and rest[1] == "batches":
            return "gemini", "batch_list", {}
        if len(rest) == 3 and rest[1] == "batches":
            if rest[2].endswith(":cancel"):
                return "gemini", "batch_cancel", {"id": rest[2].removesuffix(":cancel")}
            return "gemini", "batch_delete" if method == "DELETE" else "batch_get", {"id": rest[2]}
        if rest[:1] == ["upload"] and rest[2:3] == ["files"]:
            if len(rest) == 3:
                return "gemini", "file_start", {"version": rest[1]}
            if len(rest) == 5 and rest[3] == "sessions":
                return "gemini", "file_upload", {"upload": rest[4]}
        if rest[:1] == ["download"]:
            rest = rest[1:]
        if len(rest) == 3 and rest[1] == "files" and rest[2].endswith(":download"):
            return "gemini", "file_download", {"file": f"files/{rest[2].removesuffix(':download')}"}
        return "gemini", "unknown", {}

    # --- what a batch looks like ------------------------------------------------------------
    def _batch_operation(self, batch: SimBatch) -> dict[str, Any]:
        state = batch.state()
        n = len(batch.requests)
        failed = sum(1 for i in range(n) if batch.fails(i))
        if state in ("PENDING", "RUNNING"):
            counters = {"requestCount": n, "pendingRequestCount": n}
        elif state == "SUCCEEDED":
            counters = {"requestCount": n, "successfulRequestCount": n - failed, "failedRequestCount": failed}
        else:
            counters = {"requestCount": n}
        # int64 as strings, and a 0 is left out.
        stats = {k: str(v) for k, v in counters.items() if v}
        metadata: dict[str, Any] = {
            "@type": BATCH_TYPE,
            "model": f"models/{batch.model}",
            "displayName": batch.display_name,
            "inputConfig": {"fileName": batch.input_file} if batch.input_file else {"requests": {}},
            "createTime": batch.created_at,
            "updateTime": now_iso(),
            "batchStats": stats,
            "state": f"{self.gemini_batch_state_prefix}{state}",
            "name": batch.name,
        }
        operation: dict[str, Any] = {"name": batch.name, "metadata": metadata}
        if state in ("PENDING", "RUNNING"):
            return operation
        if not batch.ended_at:
            batch.ended_at = now_iso()
        metadata["endTime"] = batch.ended_at
        operation["done"] = True
        if state == "FAILED":
            operation["error"] = {"code": 13, "message": "The batch could not be processed."}
        if state == "SUCCEEDED":
            output = self._batch_output(batch)
            if self.gemini_batch_results_under in ("both", "metadata"):
                metadata["output"] = output
            if self.gemini_batch_results_under in ("both", "response"):
                operation["response"] = {"@type": OUTPUT_TYPE, **output}
        return operation

    def _batch_output(self, batch: SimBatch) -> dict[str, Any]:
        """The results, made once when first asked for (real PNGs, one per request that succeeds)."""
        with self._lock:
            if batch.input_file:
                if not batch.results_file:
                    lines = []
                    for index, (key, request) in enumerate(batch.requests):
                        lines.append(json.dumps({"key": key, **self._batch_answer(batch, index, request)}))
                    batch.results_file = f"files/batch-{batch.id}"
                    self.gemini_files[batch.results_file] = ("\n".join(lines) + "\n").encode()
                return {"responsesFile": batch.results_file}
            if batch.inlined is None:
                batch.inlined = [
                    {**self._batch_answer(batch, index, request), "metadata": {"key": key}}
                    for index, (key, request) in enumerate(batch.requests)
                ]
            return {"inlinedResponses": {"inlinedResponses": batch.inlined}}

    def _batch_answer(self, batch: SimBatch, index: int, request: dict[str, Any]) -> dict[str, Any]:
        if batch.fails(index):
            return {
                "error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}
            }
        config = request.get("generationConfig") or request.get("generation_config") or {}
        modalities = [str(m).upper() for m in (config.get("responseModalities") or [])]
        if self.gemini_require_image_modality and "IMAGE" not in modalities:
            parts: list[dict[str, Any]] = [{"text": "Which setting would you like?"}]
        else:
            data = make_png(f"gemini-batch:{batch.id}:{index}", self.image_size)
            parts = [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}]
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return {"response": {"candidates": [candidate], "modelVersion": batch.model}}

    # --- handlers -----------------------------------------------------------------------------
    def _gemini_batch_create(self, call: Call, params: dict[str, str]) -> Response:
        body = call.json.get("batch") if isinstance(call.json, dict) else None
        if not isinstance(body, dict):
            return self._error("gemini", 400, "* BatchGenerateContentRequest.batch: batch is not specified")
        config = body.get("inputConfig") or body.get("input_config") or {}
        file_name = config.get("fileName") or config.get("file_name") or ""
        if file_name:
            data = self.gemini_files.get(file_name)
            if data is None:
                return self._error("gemini", 404, f"File {file_name} not found.")
            try:
                lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            except ValueError:
                return self._error("gemini", 400, "The input file is not valid JSONL.")
            requests_ = [(str(line.get("key") or ""), line.get("request")) for line in lines]
        else:
            wrapper = config.get("requests") or {}
            items = wrapper.get("requests") if isinstance(wrapper, dict) else None
            if not isinstance(items, list) or not items:
                return self._error("gemini", 400, "* inputConfig: requests or fileName must be given")
            requests_ = [(str((i.get("metadata") or {}).get("key") or ""), i.get("request")) for i in items]
        for key, request in requests_:
            if not key or not isinstance(request, dict) or not request.get("contents"):
                return self._error("gemini", 400, "* Every request needs contents and a key.")
        batch = SimBatch(
            id=secrets.token_hex(16),
            model=params["model"],
            display_name=str(body.get("displayName") or body.get("display_name") or ""),
            requests=requests_,
            input_file=file_name,
            outcome=self.gemini_batch_outcome,
            fail_every=int(self.gemini_batch_fail_every),
            pending_seconds=float(self.gemini_batch_pending_seconds),
            running_seconds=float(self.gemini_batch_running_seconds),
        )
        with self._lock:
            self.gemini_batches[batch.id] = batch
        if self._take_one("gemini_batch_drop_create_answer"):
            return DROP
        return Response.json(200, self._batch_operation(batch))

    def _gemini_batch_lookup(self, params: dict[str, str]) -> SimBatch | Response:
        batch = self.gemini_batches.get(params["id"])
        if batch is None:
            return self._error("gemini", 404, f"Batch batches/{params['id']} not found.")
        return batch

    def _gemini_batch_get(self, call: Call, params: dict[str, str]) -> Response:
        batch = self._gemini_batch_lookup(params)
        return batch if isinstance(batch, Response) else Response.json(200, self._batch_operation(batch))

    def _gemini_batch_list(self, call: Call, params: dict[str, str]) -> Response:
        size = int((call.query.get("pageSize") or ["50"])[0])
        start = int((call.query.get("pageToken") or ["0"])[0] or 0)
        with self._lock:
            # Newest first, as the API lists them.
            batches = sorted(self.gemini_batches.values(), key=lambda b: b.created, reverse=True)
        page = batches[start : start + size]
        body: dict[str, Any] = {"operations": [self._batch_operation(b) for b in page]}
        if start + size < len(batches):
            body["nextPageToken"] = str(start + size)
        return Response.json(200, body)

    def _gemini_batch_cancel(self, call: Call, params: dict[str, str]) -> Response:
        batch = self._gemini_batch_lookup(params)
        if isinstance(batch, Response):
            return batch
        if batch.state() in ("PENDING", "RUNNING"):
            batch.canceled_at = now_iso()
        return Response.json(200, {})

    def _gemini_batch_delete(self, call: Call, params: dict[str, str]) -> Response:
        with self._lock:
            batch = self.gemini_batches.pop(params["id"], None)
        if batch is None:
            return self._error("gemini", 404, f"Batch batches/{params['id']} not found.")
        return Response.json(200, {})

    def _gemini_file_start(self, call: Call, params: dict[str, str]) -> Response:
        headers = call.headers
        if headers.get("x-goog-upload-protocol") != "resumable" or headers.get("x-goog-upload-command") != "start":
            return self._error("gemini", 400, "Expected a resumable upload start.")
        try:
            size = int(headers.get("x-goog-upload-header-content-length", ""))
        except ValueError:
            return self._error("gemini", 400, "X-Goog-Upload-Header-Content-Length is required.")
        file = (call.json or {}).get("file") or {}
        upload = secrets.token_hex(12)
        with self._lock:
            self._gemini_uploads[upload] = {
                "size": size,
                "data": bytearray(),
                "display_name": file.get("display_name") or file.get("displayName") or "",
                "mime": headers.get("x-goog-upload-header-content-type", ""),
            }
        url = f"{self.gemini_url}/upload/{params['version']}/files/sessions/{upload}"
        return Response(
            200,
            b"",
            {
                "x-goog-upload-url": url,
                "x-goog-upload-status": "active",
                "x-goog-upload-chunk-granularity": str(UPLOAD_GRANULARITY),
            },
        )

    def _gemini_file_upload(self, call: Call, params: dict[str, str]) -> Response:
        upload = self._gemini_uploads.get(params["upload"])
        if upload is None:
            return self._error("gemini", 404, "No such upload session.")
        command = [c.strip() for c in call.headers.get("x-goog-upload-command", "").split(",")]
        offset = int(call.headers.get("x-goog-upload-offset", "-1") or -1)
        if "upload" not in command or offset != len(upload["data"]):
            return self._error("gemini", 400, f"Bad upload offset {offset}; expected {len(upload['data'])}.")
        finalize = "finalize" in command
        if not finalize and len(call.body) % UPLOAD_GRANULARITY:
            return self._error("gemini", 400, "Chunks before the last must be multiples of the granularity.")
        upload["data"].extend(call.body)
        if not finalize:
            return Response(200, b"", {"x-goog-upload-status": "active"})
        if len(upload["data"]) != upload["size"]:
            return self._error("gemini", 400, "The upload's size differs from the declared size.")
        file_id = secrets.token_hex(6)
        name = f"files/{file_id}"
        with self._lock:
            self.gemini_files[name] = bytes(upload["data"])
            self._gemini_uploads.pop(params["upload"], None)
        file = {
            "name": name,
            "displayName": upload["display_name"],
            "mimeType": upload["mime"] or "application/jsonl",
            "sizeBytes": str(upload["size"]),
            "createTime": now_iso(),
            "uri": f"{self.gemini_url}/v1beta/{name}",
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        return Response.json(200, {"file": file}, {"x-goog-upload-status": "final"})

    def _gemini_file_download(self, call: Call, params: dict[str, str]) -> Response:
        if (call.query.get("alt") or [""])[0] != "media":
            return self._error("gemini", 400, "Downloads need alt=media.")
        data = self.gemini_files.get(params["file"])
        if data is None:
            return self._error("gemini", 404, f"File {params['file']} not found.")
        return Response(200, data, {"Content-Type": "application/jsonl"})
