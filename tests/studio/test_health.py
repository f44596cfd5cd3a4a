"""/healthz and /readyz (studio/health.py): no login, no-store, bounded checks, and bodies that
name what fails without a host, a port or a URL."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from unittest import mock

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse
from kombu import Connection

from generation import heartbeat
from studio import health
from studio.celery import app as celery_app
from tests.studio.test_production_settings import environment, run

CHECKS = {"database", "cache", "broker", "migrations", "workers"}


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def own_cache_namespace():
    """The run's cache under a prefix of this test's own: a real worker of another test (the
    session's shared one) beats into the run's prefix, and must not count as heard from here."""
    caches = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"health-{uuid.uuid4().hex[:8]}"}}
    health.reset()
    with override_settings(CACHES=caches):
        yield
    health.reset()


@pytest.fixture
def a_worker():
    heartbeat.record_worker(hostname="worker-1@host", queues=[settings.CELERY_TASK_DEFAULT_QUEUE], running=0, pid=1)


def unreachable_cache(port: int) -> dict:
    return {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0"}
    }


def readyz(client):
    response = client.get(reverse("readyz"))
    assert response["Content-Type"] == "application/json"
    return response, response.json()


def failing(body) -> dict[str, str]:
    return {name: check["reason"] for name, check in body["checks"].items() if check["status"] == "failing"}


def cache_control(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",")}


# --- /healthz ------------------------------------------------------------------------------------


def test_healthz_answers_without_a_login_and_touches_nothing(client):
    # No django_db mark: pytest-django fails any database access in this test.
    with mock.patch.object(health, "run_checks") as checks:
        response = client.get(reverse("healthz"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-store" in cache_control(response)
    checks.assert_not_called()


def test_healthz_and_readyz_take_get_and_head_only(client):
    for name in ("healthz", "readyz"):
        assert client.post(reverse(name)).status_code == 405
    assert client.head(reverse("healthz")).status_code == 200


# --- /readyz -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ready_when_every_check_passes(client, a_worker):
    response, body = readyz(client)

    assert response.status_code == 200
    assert body == {"status": "ok", "checks": {name: {"status": "ok"} for name in CHECKS}}
    assert "no-store" in cache_control(response)


@pytest.mark.django_db
def test_the_database_down_is_503_naming_the_database(client, a_worker):
    with mock.patch.dict(settings.DATABASES["default"], {"HOST": "127.0.0.1", "PORT": str(closed_port())}):
        response, body = readyz(client)

    assert response.status_code == 503
    assert body["status"] == "failing"
    assert failing(body)["database"] == "unreachable (OperationalError)"
    assert body["checks"]["broker"] == {"status": "ok"}


@pytest.mark.django_db
def test_the_broker_down_is_503(client, a_worker):
    port = closed_port()

    def unreachable_broker(**kwargs):
        return Connection(f"redis://127.0.0.1:{port}/1", **kwargs)

    with mock.patch.object(celery_app, "connection_for_read", unreachable_broker):
        response, body = readyz(client)

    assert response.status_code == 503
    assert failing(body) == {"broker": "unreachable (OperationalError)"}


@pytest.mark.django_db
def test_the_cache_down_is_503_and_so_are_the_worker_heartbeats_kept_there(client):
    with override_settings(CACHES=unreachable_cache(closed_port())):
        response, body = readyz(client)

    assert response.status_code == 503
    assert failing(body) == {
        "cache": "unreachable (ConnectionError)",
        "workers": "could not read the worker heartbeats (ConnectionError)",
    }


@pytest.mark.django_db
def test_no_worker_heard_from_is_503(client):
    response, body = readyz(client)

    assert response.status_code == 503
    assert failing(body) == {"workers": f"no worker heard from in the last {heartbeat.WORKER_SEEN_SECONDS} s"}


@pytest.mark.django_db
def test_a_worker_that_left_no_longer_counts(client, a_worker):
    heartbeat.forget_worker("worker-1@host")

    response, body = readyz(client)

    assert response.status_code == 503
    assert "no worker" in failing(body)["workers"]


@pytest.mark.django_db
def test_an_unapplied_migration_is_503(client, a_worker):
    with mock.patch.object(health.MigrationExecutor, "migration_plan", return_value=[(object(), False)]):
        response, body = readyz(client)

    assert response.status_code == 503
    assert failing(body) == {"migrations": "1 unapplied migration"}


@pytest.mark.django_db
def test_the_migration_plan_is_read_once_a_minute_not_on_every_probe(client, a_worker):
    real = health.MigrationExecutor.migration_plan
    with mock.patch.object(health.MigrationExecutor, "migration_plan", autospec=True, side_effect=real) as plan:
        for _ in range(3):
            assert readyz(client)[0].status_code == 200
    assert plan.call_count == 1


def test_a_check_that_hangs_answers_timed_out_and_is_not_started_again():
    release, calls = threading.Event(), []

    def hangs() -> None:
        calls.append(1)
        release.wait(10)

    with mock.patch.dict(health.CHECKS, {"broker": hangs}):
        try:
            started = time.monotonic()
            first = {r.name: r for r in health.run_checks(timeout=0.3)}
            second = {r.name: r for r in health.run_checks(timeout=0.3)}
            elapsed = time.monotonic() - started
        finally:
            release.set()

    assert (first["broker"].ok, first["broker"].reason) == (False, "timed out")
    assert (second["broker"].ok, second["broker"].reason) == (False, "timed out")
    assert calls == [1]  # the second probe waited on the first one's check
    assert elapsed < 2


# --- what the bodies never say --------------------------------------------------------------------


def secrets_and_places() -> list[str]:
    """Every URL the studio is configured with, and each one's host and port."""
    from tests.worker import database_url

    urls = [database_url(), settings.REDIS_URL, settings.CELERY_BROKER_URL]
    urls += [os.environ.get(name, "") for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")]
    db = settings.DATABASES["default"]
    places = [str(db.get("HOST") or ""), str(db.get("PORT") or ""), str(db.get("PASSWORD") or "")]
    return [value for value in [*urls, *places] if value and len(value) > 2]


@pytest.mark.django_db
def test_no_body_names_a_url_host_or_port_healthy_or_failing(client, a_worker):
    port = closed_port()

    def unreachable_broker(**kwargs):
        return Connection(f"redis://user:broker-password@127.0.0.1:{port}/1", **kwargs)

    with (
        mock.patch.dict(settings.DATABASES["default"], {"HOST": "127.0.0.1", "PORT": str(port)}),
        mock.patch.object(celery_app, "connection_for_read", unreachable_broker),
        override_settings(CACHES=unreachable_cache(port)),
    ):
        response, body = readyz(client)
    assert set(failing(body)) == CHECKS
    bodies = [response.content.decode(), readyz(client)[0].content.decode()]  # failing, then healthy
    bodies.append(client.get(reverse("healthz")).content.decode())
    assert json.loads(bodies[1])["status"] == "ok"

    for text in bodies:
        for value in [*secrets_and_places(), "127.0.0.1", str(port), "redis://", "postgres://", "broker-password"]:
            assert value not in text


# --- production: probes come over plain http ---------------------------------------------------

PROBE_OVER_HTTP = """
import json, django
django.setup()
from django.test import Client
client = Client()
print(json.dumps({path: client.get(path, HTTP_HOST="studio.example.com").status_code
                  for path in ("/healthz", "/readyz", "/accounts/login/")}))
"""


def test_production_does_not_redirect_the_probes_to_https(tmp_path):
    result = run(["-c", PROBE_OVER_HTTP], environment(tmp_path))

    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    assert codes["/healthz"] == 200
    assert codes["/readyz"] in {200, 503}  # its checks' business, but never a redirect
    assert codes["/accounts/login/"] == 301  # everything else still goes to https
