"""Batch Mode's results file, read through the real adapter: peak memory against the file's size.

A Gemini batch's results come as one JSONL file, each line a whole GenerateContentResponse with its
image in base64; a batch of hundreds of images is hundreds of megabytes. GeminiBatch.results()
streams it line by line, so the memory it needs is about one line, whatever the file's size. This
writes a results file of about 40 MiB (distinct noise PNGs, which do not compress), serves it on
loopback from a separate process (so the server's buffers are not counted), reads it through the
adapter decoding every image, and prints the peak of Python allocations (tracemalloc) beside the
file's size, and the same peak for reading the whole body at once, all from this one run.

Run with `make bench-batch-stream`; it needs no database.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from PIL import Image  # noqa: E402

from generation.providers.gemini_batch import GeminiBatch, parse_batch  # noqa: E402
from models_registry.models import ApiModel  # noqa: E402

LINES = 100
SIDE = 320  # a 320x320 noise PNG is about 300 KB, 400 KB in base64
MIB = 1024 * 1024


def noise_png(seed: int) -> bytes:
    rng = __import__("random").Random(seed)
    image = Image.frombytes("RGB", (SIDE, SIDE), bytes(rng.getrandbits(8) for _ in range(SIDE * SIDE * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_results(folder: Path) -> Path:
    files = folder / "download" / "v1beta" / "files"
    files.mkdir(parents=True)
    path = files / "batch-bench:download"
    images = [base64.b64encode(noise_png(seed)).decode() for seed in range(8)]
    with path.open("w") as out:
        for index in range(LINES):
            part = {"inlineData": {"mimeType": "image/png", "data": images[index % len(images)]}}
            response = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}]}
            out.write(json.dumps({"key": f"job-{index}", "response": response}) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_results(folder)
        size = path.stat().st_size
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            settings.GEMINI_API_URL = f"http://127.0.0.1:{port}"
            settings.GEMINI_API_VERSION = "v1beta"
            settings.GEMINI_API_KEY = "bench-key"
            client = GeminiBatch(ApiModel(key="gemini-2.5-flash-image", provider="gemini", tasks=["t2i"]))
            status = parse_batch(
                {"name": "batches/bench", "done": True, "response": {"responsesFile": "files/batch-bench"}}
            )

            tracemalloc.start()
            started = time.monotonic()
            images = sum(1 for result in client.results(status) if result.image is not None)
            streamed_seconds = time.monotonic() - started
            streamed_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

            # The same file read whole, as a client that calls response.content would.
            url = f"{settings.GEMINI_API_URL}/download/v1beta/files/batch-bench:download"
            tracemalloc.start()
            body = client.http("GET", url, params={"alt": "media"}).content
            whole = [json.loads(line) for line in body.splitlines() if line.strip()]
            whole_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            del body, whole
        finally:
            server.terminate()
            server.wait()

    print(f"results file: {size / MIB:.1f} MiB, {LINES} lines, {images} images decoded in {streamed_seconds:.2f} s")
    print(f"streamed (GeminiBatch.results): peak {streamed_peak / MIB:.1f} MiB = {streamed_peak / size:.3f} x the file")
    print(f"read whole (for comparison):    peak {whole_peak / MIB:.1f} MiB = {whole_peak / size:.3f} x the file")
    print(f"streaming needs {whole_peak / streamed_peak:.1f}x less memory; target: peak well under the file's size")


if __name__ == "__main__":
    main()
