"""A real Celery worker process for tests, against the same Redis and test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from generation.queues import worker_queues

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(
    *,
    concurrency: int = 8,
    extra_env: dict[str, str] | None = None,
    name: str = "worker",
    queues: str | None = None,
    pool: str = "threads",
):
    """Start `celery worker` on this run's queue and its image queue (or `queues`), pointed at the
    test database; wait until ready."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"celery-{name}.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "DB_CONN_MAX_AGE": "0",
        **(extra_env or {}),
    }
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_worker
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "studio",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--queues",
            queues or ",".join(worker_queues(settings.CELERY_TASK_DEFAULT_QUEUE)),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"{name}-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_file = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited early: {log_path.read_text()[-3000:]}")
        if b"ready." in log_path.read_bytes():
            return process
        time.sleep(0.1)
    stop_worker(process)
    raise RuntimeError(f"celery worker did not start: {log_path.read_text()[-3000:]}")


def stop_worker(process, *, kill: bool = False) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    process.log_file.close()


def sessions_opened() -> int:
    """Connections PostgreSQL has accepted to this database since its statistics began."""
    time.sleep(1.2)  # backends report their statistics at most once a second
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]
