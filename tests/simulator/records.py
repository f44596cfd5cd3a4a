"""What the provider simulator keeps: the calls it received, its fault rules, its webhook deliveries and jobs.

Plain data shared by the core (tests/simulator/server.py) and the provider modules (fal.py, replicate.py,
gemini.py); nothing here knows about HTTP serving.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# API heads: fal's queue, fal's REST host (storage upload) and its signed upload URLs, Replicate, Gemini.
PROVIDERS = ("fal", "falrest", "falcdn", "replicate", "gemini")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Call:
    """One request the simulator received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any
    provider: str  # fal | falrest | falcdn | replicate | gemini | files | meta | unknown
    # fal: submit/status/result/cancel; falrest: initiate; falcdn: upload; replicate: create/get/list/cancel;
    # gemini: generate; files: file
    op: str
    started: float  # time.monotonic()
    finished: float | None = None
    status: int | None = None
    fault: str = ""  # the fault rule kind that answered it, if any
    response: bytes = b""  # the answer's body

    @property
    def response_json(self) -> Any:
        try:
            return json.loads(self.response)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def prompt(self) -> str | None:
        """The prompt the call carried, whatever the provider's body shape."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.provider == "fal":
            return body.get("prompt")
        if self.provider == "replicate":
            return (body.get("input") or {}).get("prompt")
        if self.provider == "gemini":
            for content in body.get("contents") or []:
                for part in content.get("parts") or []:
                    if isinstance(part, dict) and part.get("text"):
                        return part["text"]
        return None


@dataclass
class Fault:
    """A rule that answers matching API calls with a failure instead of the normal answer.

    kind: "status" (an error answer), "timeout" (sleep `seconds`, then answer normally, usually to a
    client that gave up), "malformed" (200 with a cut-off JSON body) or "drop" (close the connection
    without an answer). provider None matches any of fal/replicate/gemini (never file downloads);
    op None any operation. remaining None means forever; fraction < 1 applies it at random.
    """

    kind: str
    provider: str | None = None
    op: str | None = None
    remaining: int | None = 1
    fraction: float = 1.0
    status: int = 500
    retry_after: float | None = None
    retry_after_header: bool | None = None  # None: fal/Replicate send the header, Gemini only RetryInfo
    body: Any = None
    seconds: float = 0.0
    hits: int = 0

    def matches(self, provider: str, op: str) -> bool:
        if self.provider is None:
            if provider not in PROVIDERS:
                return False
        elif self.provider != provider:
            return False
        if self.op is not None and self.op != op:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class Delivery:
    """One webhook POST the simulator made."""

    provider: str
    url: str
    headers: dict[str, str]
    body: bytes
    forged: bool
    status: int | None = None
    error: str = ""
    at: float = 0.0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Job:
    """One generation on the simulated provider side."""

    provider: str
    id: str
    model: str
    input: dict[str, Any]
    num_images: int
    latency: float
    fail: bool
    prefix: str = ""  # fal: the owner/app part its URLs use
    webhook: str | None = None
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=now_iso)
    canceled: bool = False
    canceled_at: str | None = None
    files: list[str] = field(default_factory=list)
    seed: int = field(default_factory=lambda: random.randrange(2**31))
    # "training" for a LoRA trainer's job (tests/simulator/fal_training.py, replicate_training.py)
    kind: str = "generation"
    steps: int = 0  # a training's steps
    dataset: dict[str, Any] = field(default_factory=dict)  # what a training read from its ZIP

    def elapsed(self) -> float:
        return time.monotonic() - self.created

    @property
    def done(self) -> bool:
        return self.canceled or self.elapsed() >= self.latency

    def state(self) -> str:
        """queued | running | succeeded | failed | canceled"""
        if self.canceled:
            return "canceled"
        elapsed = self.elapsed()
        if elapsed >= self.latency:
            return "failed" if self.fail else "succeeded"
        return "queued" if elapsed < self.latency * 0.25 else "running"


@dataclass
class Response:
    """An answer to write back; `DROP` (status 0) closes the connection without one."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


DROP = Response(0)  # close the connection without answering
