"""Liveness and readiness for load balancers, orchestrators and deploys: /healthz and /readyz.

/healthz says the web process answers and nothing more: it touches no database, cache or broker,
so a dependency's outage never gets healthy web processes restarted.

/readyz runs one check per dependency (database, cache, broker, migrations, workers) and answers
200 when every one passes, 503 otherwise, with each check's name, "ok" or "failing" and a short
reason. The reasons are fixed words and an exception's class name, never its message: a driver's
message names hosts, ports and sometimes credentials (details go to the log, once per change).

Probes come every few seconds from several places, so every check is bounded. The checks run at
once, each on a thread of its own, and the answer waits for them CHECK_TIMEOUT_SECONDS at most: a
dependency that hangs (a black-holed host, a half-open socket) reads "timed out" instead of
holding a web worker. A check still running from an earlier probe is waited on again rather than
started twice, so a hanging dependency never piles up threads or connections.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from dataclasses import dataclass

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import load_backend
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from generation import heartbeat
from studio.celery import app as celery_app

logger = logging.getLogger(__name__)

# How long /readyz waits for its checks in all; each connection attempt is bounded below it too.
CHECK_TIMEOUT_SECONDS = 2.0
# Loading the migration graph reads every migration module: a passing answer is kept a minute, a
# failing one (migrate not run yet) only a few seconds, so readiness follows `migrate` quickly.
MIGRATIONS_OK_CACHE_SECONDS = 60.0
MIGRATIONS_PENDING_CACHE_SECONDS = 5.0

OK = "ok"
FAILING = "failing"


class CheckFailed(Exception):
    """A check's verdict, with the short reason /readyz may show."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str = ""

    def as_json(self) -> dict[str, str]:
        if self.ok:
            return {"status": OK}
        return {"status": FAILING, "reason": self.reason}


# --- the checks: each returns None or raises (CheckFailed with a reason, or anything else) ---------


@contextmanager
def _probe_database() -> Iterator[BaseDatabaseWrapper]:
    """A new connection to the default database, with short timeouts, closed after the check.

    It stands in for the thread's default connection meanwhile, so the ORM queries of the
    migration loader use it too: a probe leaves no connection open in its threads, never reuses
    one that broke, and opening one proves the database still accepts new connections.
    """
    settings_dict = copy.deepcopy(connections.settings[DEFAULT_DB_ALIAS])
    options = settings_dict.setdefault("OPTIONS", {})
    probe = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)
    if probe.vendor == "postgresql":
        # libpq counts whole seconds, 2 at least; the statement timeout is in milliseconds.
        options["connect_timeout"] = max(2, math.ceil(CHECK_TIMEOUT_SECONDS))
        timeout = f"-c statement_timeout={int(CHECK_TIMEOUT_SECONDS * 1000)}"
        options["options"] = f"{options.get('options', '')} {timeout}".strip()
    elif probe.vendor == "sqlite":
        options["timeout"] = CHECK_TIMEOUT_SECONDS
    previous = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = probe
    try:
        yield probe
    finally:
        probe.close()
        connections[DEFAULT_DB_ALIAS] = previous


def check_database() -> None:
    with _probe_database() as probe, probe.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


class _MigrationsAnswer:
    """The last migration plan's size, kept per process (loading the graph is the costly part)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.until = 0.0
        self.lock = threading.Lock()

    def get(self) -> int | None:
        with self.lock:
            return self.pending if time.monotonic() < self.until else None

    def put(self, pending: int) -> None:
        ttl = MIGRATIONS_PENDING_CACHE_SECONDS if pending else MIGRATIONS_OK_CACHE_SECONDS
        with self.lock:
            self.pending, self.until = pending, time.monotonic() + ttl

    def clear(self) -> None:
        with self.lock:
            self.pending, self.until = None, 0.0


_migrations = _MigrationsAnswer()


def unapplied_migrations() -> int:
    """How many migrations this code has that the database has not applied (cached, see above)."""
    pending = _migrations.get()
    if pending is None:
        with _probe_database() as probe:
            executor = MigrationExecutor(probe)
            pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
        _migrations.put(pending)
    return pending


def check_migrations() -> None:
    pending = unapplied_migrations()
    if pending:
        raise CheckFailed(f"{pending} unapplied migration{'s' if pending != 1 else ''}")


# Each process writes its own key: two processes probing at once never read each other's value.
_CACHE_PROBE_KEY = f"health:probe:{uuid.uuid4().hex}"


def check_cache() -> None:
    token = uuid.uuid4().hex
    cache.set(_CACHE_PROBE_KEY, token, timeout=60)
    if cache.get(_CACHE_PROBE_KEY) != token:
        raise CheckFailed("a value written was not read back")


def check_broker() -> None:
    with celery_app.connection_for_read(connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS)


def check_workers() -> None:
    if not heartbeat.workers_seen():
        raise CheckFailed(f"no worker heard from in the last {heartbeat.WORKER_SEEN_SECONDS} s")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "migrations": check_migrations,
    "workers": check_workers,
}

# What a failure that is not a CheckFailed says, by check: the exception's class is added.
_UNREACHABLE = {
    "database": "unreachable",
    "cache": "unreachable",
    "broker": "unreachable",
    "migrations": "could not read the migration state",
    "workers": "could not read the worker heartbeats",
}


# --- running them, bounded ---------------------------------------------------------------------

_executor = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
_in_flight: dict[str, Future] = {}
_in_flight_lock = threading.Lock()
# The last verdict per check in this process, so a failure is logged when it starts and ends,
# not on every probe.
_last_ok: dict[str, bool] = {}


def _run(name: str) -> None:
    CHECKS[name]()


def _submit(name: str) -> Future:
    with _in_flight_lock:
        future = _in_flight.get(name)
        if future is None or future.done():
            future = _in_flight[name] = _executor.submit(_run, name)
        return future


def _verdict(name: str, future: Future) -> CheckResult:
    if not future.done():
        return CheckResult(name, False, "timed out")
    exc = future.exception()
    if exc is None:
        return CheckResult(name, True)
    if isinstance(exc, CheckFailed):
        return CheckResult(name, False, str(exc))
    return CheckResult(name, False, f"{_UNREACHABLE[name]} ({type(exc).__name__})")


def _log_change(result: CheckResult, future: Future) -> None:
    before = _last_ok.get(result.name)
    _last_ok[result.name] = result.ok
    if result.ok and before is False:
        logger.warning("readiness: %s ok again", result.name)
    elif not result.ok and before is not False:
        exc = future.exception() if future.done() else None
        # The log may say what the body must not: the driver's own message, with the host.
        detail = None if isinstance(exc, CheckFailed) else exc
        logger.warning("readiness: %s failing: %s", result.name, result.reason, exc_info=detail)


def run_checks(timeout: float = CHECK_TIMEOUT_SECONDS) -> list[CheckResult]:
    futures = {name: _submit(name) for name in CHECKS}
    wait_for(futures.values(), timeout=timeout)
    results = []
    for name, future in futures.items():
        result = _verdict(name, future)
        _log_change(result, future)
        results.append(result)
    return results


def reset() -> None:
    """Forget the cached migration answer and the last verdicts (tests; a changed database)."""
    _migrations.clear()
    _last_ok.clear()


# --- views ---------------------------------------------------------------------------------------
# No login, GET or HEAD only (so no CSRF), never cached by anything between the prober and us.


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The web process answers: nothing else is looked at."""
    return JsonResponse({"status": OK})


@login_not_required
@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Every dependency answers: 200 with each check "ok", else 503 naming what fails."""
    results = run_checks()
    ready = all(result.ok for result in results)
    body = {"status": OK if ready else FAILING, "checks": {result.name: result.as_json() for result in results}}
    response = JsonResponse(body, status=200 if ready else 503)
    # A 503 here is the answer, not a server error: Django would log one at ERROR on every probe
    # (django.request); the checks log each failure once, when it starts (_log_change).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
