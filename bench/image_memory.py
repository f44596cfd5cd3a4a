"""Peak RSS of a worker process storing 10 x 4.4 MB PNGs downloaded from a loopback server, four at
a time (generation.services.runs stores a native x4 on 4 threads). Prints "<growth MB> <png MB>".
Run by bench/worker_lean.py in a process of its own, so the peak is this work's alone."""

from __future__ import annotations

import os
import resource
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from PIL import Image  # noqa: E402

from generation.lib.imaging import process_image  # noqa: E402
from generation.services.store import _download  # noqa: E402
from studio.models import WorkspaceAsset  # noqa: E402

IMAGES = 10


def noisy_png() -> bytes:
    """A PNG of about 4.4 MB: 1216 x 1216 RGB of noise barely compresses."""
    from io import BytesIO

    image = Image.frombytes("RGB", (1216, 1216), os.urandom(1216 * 1216 * 3))
    out = BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    body = noisy_png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    url = f"http://{host}/out.png"

    def store(n: int) -> None:
        processed = process_image(_download(url, [host]))
        asset = WorkspaceAsset.with_files(processed, stem=str(n), id=uuid.uuid4(), owner_id=1)
        asset.delete_files()

    process_image(_tiny())  # Pillow's plugins loaded before the baseline
    baseline = peak_mb()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(store, range(IMAGES)))
    print(f"{peak_mb() - baseline:.1f} {len(body) / 1e6:.1f}")
    server.shutdown()


def _tiny() -> bytes:
    from io import BytesIO

    out = BytesIO()
    Image.new("RGB", (64, 64)).save(out, "PNG")
    return out.getvalue()


if __name__ == "__main__":
    main()
