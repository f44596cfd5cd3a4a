from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Serve the studio and run a real Celery worker (with beat) beside it, on the configured "
        "broker (kombu's filesystem transport by default). Ctrl-C stops both."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--concurrency", type=int, default=4)

    def handle(self, *args: Any, addr: str, concurrency: int, **options: Any) -> None:
        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            for folder in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
                os.makedirs(settings.CELERY_BROKER_TRANSPORT_OPTIONS[folder], exist_ok=True)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "studio",
                "worker",
                "--beat",
                "--loglevel",
                "INFO",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
            # Its own process group, so the terminal's Ctrl-C reaches it only through us.
            start_new_session=True,
        )
        self.stdout.write(f"Celery worker started (pid {worker.pid}).")
        # Ctrl-C arrives as KeyboardInterrupt; a plain kill (SIGTERM, a closed terminal) must stop
        # the worker too, so turn those into an exit that runs the cleanup below.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _exit_on_signal)
        try:
            call_command("runserver", addr, use_reloader=False)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.stdout.write("Stopping the Celery worker...")
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
