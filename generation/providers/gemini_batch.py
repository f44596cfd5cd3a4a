"""Gemini's Batch API (docs/providers.md 3.3-3.4): the same image requests at half price, answered
within 24 hours.

One batch is one long-running operation, `batches/{id}`, holding one request per image, each with
our key (the slot's ImageSlot.batch_key). Requests go inline while the whole create body stays
under settings.GEMINI_BATCH_INLINE_LIMIT_BYTES (20 MB), else as a JSONL file sent through the Files API's resumable
upload, in chunks. The state is read from `metadata.state` in either spelling (`BATCH_STATE_*` from
REST, `JOB_STATE_*` from the SDKs); counters are strings and missing when 0; results are inline
(`inlinedResponses.inlinedResponses`) or a responses file, under `response` or mirrored under
`metadata.output`. A responses file is read line by line from the stream, never whole.

Creating a batch is not idempotent: a create whose answer was lost must not be sent again before
`find` (list batches, by display name) has looked for it. The caller (generation.services.batches)
records its intent before calling `create` and owns that recovery.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings

from generation.providers.base import GeneratedImage, GenerationRequest, ProviderError
from generation.providers.gemini import Gemini, parse_image
from generation.providers.http_api import sanitize_message

# How many pages of the batch list `find` reads before it gives up (50 batches a page).
FIND_MAX_PAGES = 20
LIST_PAGE_SIZE = 50
# A results line holds a base64 image of a few MB at most; read the stream in pieces this size.
STREAM_CHUNK_BYTES = 64 * 1024

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED, UNSPECIFIED = (
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "EXPIRED",
    "UNSPECIFIED",
)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
# The SDKs' JOB_STATE_* vocabulary has a few names of its own for the same states.
_STATE_ALIASES = {"QUEUED": PENDING, "CANCELLING": RUNNING, "PAUSED": RUNNING, "PARTIALLY_SUCCEEDED": SUCCEEDED}


def normalize_state(raw: Any) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED or UNSPECIFIED, from either spelling."""
    text = str(raw or "").upper()
    for prefix in ("BATCH_STATE_", "JOB_STATE_"):
        text = text.removeprefix(prefix)
    text = _STATE_ALIASES.get(text, text)
    return text if text in {PENDING, RUNNING, *FINAL_STATES} else UNSPECIFIED


def _count(stats: dict[str, Any], name: str) -> int:
    """An int64 counter, sent as a string and left out when 0."""
    try:
        return int(stats.get(name) or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class BatchLine:
    """One request of a batch: our key and a GenerateContentRequest body."""

    key: str
    request: dict[str, Any]


@dataclass
class BatchStatus:
    """A batch as the API last described it."""

    name: str
    state: str
    done: bool = False
    display_name: str = ""
    request_count: int = 0
    succeeded_count: int = 0
    failed_count: int = 0
    pending_count: int = 0
    responses_file: str = ""
    # The inline results, in input order; None when the batch has none (yet, or a file instead).
    inlined: list[dict[str, Any]] | None = None
    error: str = ""
    raw_state: str = ""

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def has_results(self) -> bool:
        return self.inlined is not None or bool(self.responses_file)


@dataclass
class BatchResult:
    """One result line: the image for `key`, or why there is none."""

    key: str
    image: GeneratedImage | None = None
    error: str = ""
    permanent: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_batch(body: dict[str, Any]) -> BatchStatus:
    """A batch from an Operation body (create, get, one entry of list)."""
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    stats = metadata.get("batchStats") if isinstance(metadata.get("batchStats"), dict) else {}
    # Results sit in `response` and are mirrored in `metadata.output` (python-genai reads the latter).
    output: dict[str, Any] = {}
    for candidate in (body.get("response"), metadata.get("output")):
        if isinstance(candidate, dict) and (candidate.get("inlinedResponses") or candidate.get("responsesFile")):
            output = candidate
            break
    inlined = None
    wrapper = output.get("inlinedResponses")
    if isinstance(wrapper, dict):
        items = wrapper.get("inlinedResponses")
        inlined = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    error = body.get("error") or metadata.get("error")
    message = ""
    if isinstance(error, dict):
        message = sanitize_message(str(error.get("message") or error.get("status") or "the batch failed"))
    raw_state = str(metadata.get("state") or "")
    return BatchStatus(
        name=str(body.get("name") or metadata.get("name") or ""),
        state=normalize_state(raw_state),
        raw_state=raw_state,
        done=bool(body.get("done")),
        display_name=str(metadata.get("displayName") or metadata.get("display_name") or ""),
        request_count=_count(stats, "requestCount"),
        succeeded_count=_count(stats, "successfulRequestCount"),
        failed_count=_count(stats, "failedRequestCount"),
        pending_count=_count(stats, "pendingRequestCount"),
        responses_file=str(output.get("responsesFile") or ""),
        inlined=inlined,
        error=message,
    )


def parse_result(item: dict[str, Any], key: str) -> BatchResult:
    """One inline result or responses-file line: its image, or its error."""
    error = item.get("error") or item.get("status")
    response = item.get("response")
    if isinstance(response, dict):
        try:
            image = parse_image(response)
        except ProviderError as exc:
            return BatchResult(key=key, error=exc.message, permanent=exc.permanent)
        image.metadata = {**image.metadata, "batch": True}
        return BatchResult(key=key, image=image, metadata={"usage": response.get("usageMetadata") or {}})
    if isinstance(error, dict):
        text = sanitize_message(str(error.get("message") or error.get("status") or "failed"), limit=280)
        # 4xx-coded line errors (INVALID_ARGUMENT, a refused request) would fail again.
        code = error.get("code")
        permanent = isinstance(code, int) and 400 <= code < 500 and code not in (408, 429)
        return BatchResult(key=key, error=f"Google Gemini could not make this image: {text}", permanent=permanent)
    return BatchResult(key=key, error="Google Gemini's batch answered this image with neither an image nor an error.")


def _key_of(item: dict[str, Any]) -> str:
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    return str(item.get("key") or metadata.get("key") or "")


class GeminiBatch(Gemini):
    """The batch lane of the Gemini models whose capabilities say batch_api."""

    # --- building -----------------------------------------------------------------------
    def line(self, key: str, request: GenerationRequest) -> BatchLine:
        """One batch request: the same body generateContent gets (responseModalities ["IMAGE"])."""
        return BatchLine(key=key, request=self.build_body(request))

    def _url(self, path: str) -> str:
        return f"{settings.GEMINI_API_URL.rstrip('/')}/{settings.GEMINI_API_VERSION}/{path}"

    @staticmethod
    def inline_body(display_name: str, lines: list[BatchLine]) -> dict[str, Any]:
        # camelCase throughout, as python-genai sends it; note the doubled requests.requests.
        requests_ = [{"request": line.request, "metadata": {"key": line.key}} for line in lines]
        return {"batch": {"displayName": display_name, "inputConfig": {"requests": {"requests": requests_}}}}

    # --- create -------------------------------------------------------------------------
    def create(self, *, display_name: str, lines: list[BatchLine], input_file: str = "") -> tuple[BatchStatus, str]:
        """Send one batch; returns its status and the uploaded input file's name ("" when inline).

        `input_file` reuses a JSONL file uploaded by an earlier try. Raises ProviderError; one with
        may_have_been_received set means Google may hold the batch: look for it with `find` before
        any new create.
        """
        body = self.inline_body(display_name, lines)
        encoded = json.dumps(body, separators=(",", ":")).encode()
        if not input_file and len(encoded) >= settings.GEMINI_BATCH_INLINE_LIMIT_BYTES:
            input_file = self.upload_jsonl(display_name, lines)
        if input_file:
            body = {"batch": {"displayName": display_name, "inputConfig": {"fileName": input_file}}}
            encoded = json.dumps(body, separators=(",", ":")).encode()
        url = self._url(f"models/{self.model.key}:batchGenerateContent")
        response = self.http("POST", url, data=encoded, headers={"Content-Type": "application/json"})
        status = parse_batch(self.json(response))
        if not status.name.startswith("batches/"):
            raise ProviderError(
                "Google Gemini accepted the batch but named no batch in its answer.",
                may_have_been_received=True,
                details="the request may have been received",
            )
        return status, input_file

    def upload_jsonl(self, display_name: str, lines: Iterable[BatchLine]) -> str:
        """Upload the requests as a JSONL file (Files API, resumable); returns `files/...`."""
        with tempfile.TemporaryFile() as spool:
            for line in lines:
                spool.write(json.dumps({"key": line.key, "request": line.request}, separators=(",", ":")).encode())
                spool.write(b"\n")
            size = spool.tell()
            spool.seek(0)
            return self.upload_file(spool, size=size, display_name=display_name)

    def upload_file(self, source: IO[bytes], *, size: int, display_name: str) -> str:
        base = settings.GEMINI_API_URL.rstrip("/")
        start = self.http(
            "POST",
            f"{base}/upload/{settings.GEMINI_API_VERSION}/files",
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
                "Content-Type": "application/json",
            },
            json={"file": {"display_name": display_name, "mime_type": "application/jsonl", "size_bytes": str(size)}},
        )
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise ProviderError("Google Gemini's Files API gave no upload URL.")
        chunk_size = int(settings.GEMINI_BATCH_UPLOAD_CHUNK_BYTES)
        offset = 0
        while True:
            chunk = source.read(chunk_size)
            last = offset + len(chunk) >= size
            # The upload URL carries its own authorization: the key is not sent to it.
            response = self.http(
                "POST",
                upload_url,
                with_key=False,
                data=chunk,
                headers={
                    "Content-Length": str(len(chunk)),
                    "X-Goog-Upload-Offset": str(offset),
                    "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                },
            )
            offset += len(chunk)
            if last:
                break
        if response.headers.get("x-goog-upload-status", "").lower() != "final":
            raise ProviderError("Google Gemini's Files API did not finish the upload.")
        file = self.json(response).get("file") or {}
        name = str(file.get("name") or "") if isinstance(file, dict) else ""
        if not name.startswith("files/"):
            raise ProviderError("Google Gemini's Files API named no file for the upload.")
        return name  # `files/...`, what input_config wants (not the uri)

    # --- reading ------------------------------------------------------------------------
    def get(self, name: str) -> BatchStatus:
        return parse_batch(self.json(self.http("GET", self._url(self._checked(name)))))

    def find(self, display_name: str) -> BatchStatus | None:
        """The batch with this display name, from the batch list (for a create whose answer was lost)."""
        token = ""
        for _ in range(FIND_MAX_PAGES):
            params = {"pageSize": LIST_PAGE_SIZE, **({"pageToken": token} if token else {})}
            body = self.json(self.http("GET", self._url("batches"), params=params))
            for operation in body.get("operations") or []:
                if isinstance(operation, dict):
                    status = parse_batch(operation)
                    if status.display_name == display_name and status.name:
                        return status
            token = str(body.get("nextPageToken") or "")
            if not token:
                return None
        return None

    def cancel(self, name: str, handles: dict[str, Any] | None = None) -> None:
        self.http("POST", self._url(f"{self._checked(name)}:cancel"), json={})

    def delete(self, name: str) -> None:
        self.http("DELETE", self._url(self._checked(name)))

    def results(self, status: BatchStatus) -> Iterator[BatchResult]:
        """Every result of a finished batch: the inline list, or the responses file line by line."""
        if status.inlined is not None:
            for item in status.inlined:
                yield parse_result(item, _key_of(item))
            return
        if not status.responses_file:
            return
        file_id = self._checked(status.responses_file, prefix="files/")
        base = settings.GEMINI_API_URL.rstrip("/")
        url = f"{base}/download/{settings.GEMINI_API_VERSION}/{file_id}:download"
        response = self.http("GET", url, params={"alt": "media"}, stream=True)
        try:
            yield from self._lines(response.iter_lines(chunk_size=STREAM_CHUNK_BYTES))
        finally:
            response.close()

    @staticmethod
    def _lines(lines: Iterable[bytes]) -> Iterator[BatchResult]:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                continue  # a torn line names no key; its slot is failed as "no result"
            if isinstance(item, dict):
                yield parse_result(item, _key_of(item))

    @staticmethod
    def _checked(name: str, prefix: str = "batches/") -> str:
        """A resource name from an answer, refused unless it is one plain `batches/{id}` segment."""
        rest = name.removeprefix(prefix) if isinstance(name, str) else ""
        if not name.startswith(prefix) or not rest or not all(c.isalnum() or c in "-_" for c in rest):
            raise ProviderError(f"Google Gemini named an unexpected resource ({name[:60]!r}).", permanent=True)
        return name
