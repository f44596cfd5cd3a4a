"""`make run`'s stack, for real: SQLite, local media and a Celery worker on the filesystem broker,
started by `manage.py rundev` from nothing but an empty var/ folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

JOB_SCRIPT = """
import time
from django.contrib.auth import get_user_model
from generation.services.jobs import job_create
from models_registry.models import ApiModel
user = get_user_model().objects.get(username="demo")
job = job_create(user=user, model=ApiModel.objects.get(key="offline/portrait-engine"), prompt="a fox", images=2)
deadline = time.monotonic() + 60
while job.status in ("queued", "running") and time.monotonic() < deadline:
    time.sleep(0.1)
    job.refresh_from_db()
print("JOB", job.status, job.succeeded_count)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "DEBUG": "1",
            "VAR_DIR": str(tmp_path / "var"),
            "MEDIA_ROOT": str(tmp_path / "var" / "media"),
            "OFFLINE_LATENCY_SECONDS": "0.2",
        }
    )
    env.pop("SECRET_KEY", None)
    return env


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_the_embedded_default_serves_the_studio_and_runs_jobs(embedded_env, stop_signal):
    manage(embedded_env, "migrate", "--noinput")
    manage(embedded_env, "seed_models")
    assert "demo / demo" in manage(embedded_env, "ensure_demo_user")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "rundev", "--addr", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=embedded_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                login = requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "rundev did not start"
                time.sleep(0.2)
        assert login.status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=5).status_code == 200

        # A job created beside the running server goes through its worker on the filesystem broker.
        assert "JOB succeeded 2" in manage(embedded_env, "shell", "-c", JOB_SCRIPT)
    finally:
        stop_rundev(server, stop_signal)
    # Either way both stop: no worker is left behind.
    assert nothing_left_running(embedded_env)


def test_a_worker_that_dies_under_make_run_is_started_again(embedded_env, tmp_path):
    manage(embedded_env, "migrate", "--noinput")
    manage(embedded_env, "seed_models")
    manage(embedded_env, "ensure_demo_user")
    log_path = tmp_path / "rundev.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "rundev", "--addr", f"127.0.0.1:{free_port()}"],
            cwd=ROOT,
            env={**embedded_env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        first = wait_for_line(log_path, "Celery worker started (pid ")
        os.kill(int(first.split("(pid ")[1].rstrip(").")), signal.SIGKILL)
        wait_for_line(log_path, "starting it again")
        # The new worker picks up work as the first did.
        assert "JOB succeeded 2" in manage(embedded_env, "shell", "-c", JOB_SCRIPT)
    finally:
        stop_rundev(server, signal.SIGTERM)
    assert nothing_left_running(embedded_env)


def stop_rundev(server: subprocess.Popen, stop_signal: int) -> None:
    # Ctrl-C reaches the whole foreground group; a kill reaches rundev alone.
    if stop_signal == signal.SIGINT:
        os.killpg(server.pid, signal.SIGINT)
    else:
        server.send_signal(stop_signal)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def nothing_left_running(env: dict) -> bool:
    leftover = subprocess.run(["pgrep", "-f", env["VAR_DIR"]], capture_output=True, text=True)
    return leftover.stdout.strip() == ""


def wait_for_line(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if text in line:
                return line.strip()
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in rundev's output: {path.read_text()[-2000:]}")


def test_make_run_serves_and_names_the_port_it_is_given():
    dry_run = subprocess.run(["make", "-n", "run", "PORT=8081"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "ensure_demo_user --url http://127.0.0.1:8081/" in dry_run.stdout
    assert "rundev --addr 127.0.0.1:8081" in dry_run.stdout
