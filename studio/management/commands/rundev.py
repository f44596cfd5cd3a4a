from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from generation.queues import worker_queues


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
        worker = WorkerSupervisor(_worker_command(concurrency), out=self.stdout)
        worker.start()
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
            worker.stop()


def _worker_command(concurrency: int) -> list[str]:
    return [
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
        # Both the default queue and the image queue: one worker does everything here.
        "--queues",
        ",".join(worker_queues()),
        "--schedule",
        str(settings.VAR_DIR / "celerybeat-schedule"),
    ]


class WorkerSupervisor:
    """Runs the Celery worker and starts it again when it dies, as a process manager would in
    production: a dead worker must not leave the studio serving pages while every job waits."""

    RESTART_DELAY_SECONDS = 1.0

    def __init__(self, command: list[str], *, out: Any) -> None:
        self.command = command
        self.out = out
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        # Its own process group, so the terminal's Ctrl-C reaches it only through us.
        self.process = subprocess.Popen(self.command, start_new_session=True)
        self.out.write(f"Celery worker started (pid {self.process.pid}).")

    def _watch(self) -> None:
        while not self._stopping.is_set():
            code = self.process.wait()
            if self._stopping.wait(self.RESTART_DELAY_SECONDS):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.out.write(f"The Celery worker exited (code {code}); starting it again.")
                self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
