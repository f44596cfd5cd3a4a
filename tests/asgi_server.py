"""The studio on ASGI (studio.asgi, as the Procfile serves it) under uvicorn, in this process.

For the browser tests and bench/browser.py: pytest-django's live_server is WSGI, which buffers an
async response (the live stream, studio/live.py) until it ends. Static files are served as
live_server serves them.
"""

from __future__ import annotations

import socket
import threading
import time


class AsgiServer:
    """`with AsgiServer() as server:` serves at server.url until the block ends."""

    def __init__(self) -> None:
        import uvicorn
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from studio.asgi import application

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            ASGIStaticFilesHandler(application), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)

    def __enter__(self) -> AsgiServer:
        self.thread = threading.Thread(target=self.server.run, name="asgi-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
