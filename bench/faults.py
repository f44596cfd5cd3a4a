"""Fault suite: real workers, beat, PostgreSQL, Redis and the provider simulator, broken on purpose.

Run with `make faults` (or `.venv/bin/python bench/faults.py [--quick] [--only kill,redis] [--rounds N]`).
It starts its own PostgreSQL and Redis through tests/infra/services.sh on ports of its own
(SERVICES_DIR=/tmp/cs-faults, 54349, 63819), migrates that database, starts the loopback provider
simulator in this process and `celery worker --pool threads` plus `celery beat` as real processes,
and stops all of them at the end, on Ctrl-C and on an exception too.

Each fault is a scenario with about four x4 jobs in flight: offline native x4, offline fan-out
(4 x 1), fal native x4 and fal fan-out, provider latency 1-2 s. Each round tops the jobs in flight
back up to four (redis and pg rounds first let the last round's jobs end, for at most 30 s); after
the last round every job gets until the last fault + WAIT seconds to end. Faults:

    kill    SIGKILL the worker's process group at random moments (some while fal submits are held
            open by the simulator), a new worker started at once
    outage  worker and beat SIGKILLed and kept down longer than CELERY_TASK_TIME_LIMIT
    redis   `redis-cli shutdown nosave`, restarted a few seconds later (empty)
    pg      pg_terminate_backend() on every connection to the database but this one
    storm   a run of fal 429s with Retry-After 2 s while FAL_CONCURRENCY=3 (and the simulator
            answers 429 above 3 calls in flight)

One row per fault: jobs; images requested; images delivered (distinct assets); lost (requested -
delivered) with the slots failed with an error in brackets; duplicate assets (rows per (job, batch
index) beyond one) with orphan files (in MEDIA_ROOT, no asset row) in brackets; double charges
(a job with more than one charge, or more refunds than charges); double provider submits (fal: the
simulator accepted more than one submit for one ProviderRequest, matched by prompt tag and seed;
offline: ProviderRequest.attempts beyond one); jobs not final; time to recover (for each job, from
the latest fault it lived through to its finished_at; the worst job). Targets: 0 lost, 0 duplicate
or orphan, 0 double charge, 0 double submit, every job final within 60 s of its fault.
Exit status 1 when any target fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Never the ports `make test` (54329/63799) or the other sessions (54339/63809) use.
os.environ.setdefault("SERVICES_DIR", "/tmp/cs-faults")
os.environ.setdefault("TEST_PG_PORT", "54349")
os.environ.setdefault("TEST_REDIS_PORT", "63819")
SERVICES_DIR = Path(os.environ["SERVICES_DIR"])
FOREIGN_PORTS = {"54329", "63799", "54339", "63809"}
SERVICES = str(ROOT / "tests" / "infra" / "services.sh")
LOGS = ROOT / "test-artifacts" / "faults"

# The suite's settings (any of them may be overridden from the environment). Shared by this
# process and every worker and beat it starts.
SUITE_ENV = {
    "DJANGO_SETTINGS_MODULE": "studio.settings",
    "SECRET_KEY": "faults-suite-only-not-a-secret",
    "DEBUG": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    # The suite's web process serves plain http on loopback (for the providers' webhooks).
    "SECURE_SSL_REDIRECT": "0",
    "VAR_DIR": str(SERVICES_DIR / "var"),
    "MEDIA_ROOT": str(SERVICES_DIR / "media"),
    "CELERY_DEFAULT_QUEUE": "faults",
    "CACHE_KEY_PREFIX": "faults",
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "CELERY_TASK_TIME_LIMIT": "20",
    "CELERY_TASK_SOFT_TIME_LIMIT": "15",
    # The sweeper runs on production's defaults (SWEEP_INTERVAL_SECONDS 15, SWEEP_GRACE_SECONDS 10):
    # the recovery times printed are the ones a deployment gets.
    "OFFLINE_LATENCY_SECONDS": "1.5",
    "PROVIDER_READ_TIMEOUT": "10",
    "PROVIDER_CONNECT_TIMEOUT": "3",
    "DB_CONN_MAX_AGE": "60",  # production's default: workers keep their connections
    "LOG_LEVEL": "INFO",
}
for _name, _value in SUITE_ENV.items():
    os.environ.setdefault(_name, _value)

JOBS_IN_FLIGHT = 4
IMAGES = 4
TARGET_RECOVERY = 60.0
FAL_NATIVE = "fal-ai/flux-2/flash"
FAL_FANOUT = "fal-ai/faults/fanout"
TAG = re.compile(r"fx[0-9a-f]{10}")
FULL_ROUNDS = {"kill": 20, "outage": 2, "redis": 3, "pg": 3, "storm": 1}
QUICK_ROUNDS = {"kill": 4, "outage": 1, "redis": 2, "pg": 2, "storm": 1}
FAULTS = tuple(FULL_ROUNDS)


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def services(command: str) -> str:
    result = subprocess.run(
        [SERVICES, command],
        env={**os.environ, "WITH_BROWSER": "0"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"services.sh {command} failed: {result.stderr[-2000:]}")
    return result.stdout


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Result:
    name: str
    rounds: int = 0
    jobs: list[str] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)  # time.time() of each fault (or outage end)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    passed: bool = False


class Suite:
    """Everything the suite started, so that all of it can be stopped whatever happens."""

    def __init__(self, *, rounds: dict[str, int], wait: float) -> None:
        self.rounds = rounds
        self.wait = wait
        self.simulator = None
        self.worker = None
        self.beat = None
        self.web = None
        self.logs: list = []
        self.worker_env: dict[str, str] = {}
        self.starts = 0
        self.seen_orphans: set[str] = set()
        self.kinds_cycle = 0
        self.resets = 0

    def connection_reset(self, _request: object, _address: object) -> None:
        self.resets += 1

    # --- processes ------------------------------------------------------------------------
    def start_worker(self, name: str, **extra: str) -> None:
        """`celery worker` as the Procfile runs it (with heartbeat, gossip and mingle, unlike
        tests/worker.py's), in a process group of its own; returns once it is ready."""
        self.starts += 1
        self.worker, path = self._celery(
            f"worker-{name}-{self.starts:03d}",
            ["worker", "--pool", "threads", "--concurrency", os.environ.get("WORKER_CONCURRENCY", "8")],
            ["--hostname", f"{name}-{self.starts:03d}@%h"],
            extra,
        )
        if not wait_until(lambda: b" ready." in path.read_bytes() or self.worker.poll() is not None, 60):
            raise RuntimeError(f"celery worker did not start: {path.read_text()[-2000:]}")
        if self.worker.poll() is not None:
            raise RuntimeError(f"celery worker exited: {path.read_text()[-2000:]}")

    def _celery(self, name: str, command: list[str], options: list[str], extra: dict[str, str]):
        path = LOGS / f"celery-{name}.log"
        log_file = open(path, "wb")  # noqa: SIM115 - closed by _stop
        self.logs.append(log_file)
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "studio", *command, "--loglevel", "INFO", *options],
            env={**os.environ, **self.worker_env, **extra},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return process, path

    @staticmethod
    def _stop(process) -> None:
        """SIGKILL the process's whole group (the worker and any child it has)."""
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill_worker(self) -> None:
        self._stop(self.worker)
        self.worker = None

    def start_beat(self) -> None:
        schedule = SERVICES_DIR / "celerybeat-schedule"
        for stale in SERVICES_DIR.glob("celerybeat-schedule*"):
            stale.unlink()  # a SIGKILLed beat may leave its shelve half written
        self.starts += 1
        self.beat, path = self._celery(f"beat-{self.starts:03d}", ["beat"], ["--schedule", str(schedule)], {})
        if not wait_until(lambda: b"beat: Starting" in path.read_bytes() or self.beat.poll() is not None, 60):
            raise RuntimeError(f"celery beat did not start: {path.read_text()[-2000:]}")
        if self.beat.poll() is not None:
            raise RuntimeError(f"celery beat exited: {path.read_text()[-2000:]}")

    def kill_beat(self) -> None:
        self._stop(self.beat)
        self.beat = None

    def start_web(self) -> str:
        """gunicorn as the Procfile's `web` runs it, so the simulator's signed webhooks reach the
        studio (as in production with PUBLIC_BASE_URL set). Returns its base URL."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        path = LOGS / "web.log"
        log_file = open(path, "wb")  # noqa: SIM115 - closed by stop_everything
        self.logs.append(log_file)
        self.web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "studio.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            env={**os.environ, **self.worker_env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        if not wait_until(lambda: answers() or self.web.poll() is not None, 60) or self.web.poll() is not None:
            raise RuntimeError(f"gunicorn did not start: {path.read_text()[-2000:]}")
        return f"http://127.0.0.1:{port}"

    def kill_web(self) -> None:
        self._stop(self.web)
        self.web = None

    def stop_everything(self) -> None:
        for stop in (self.kill_worker, self.kill_beat, self.kill_web):
            try:
                stop()
            except Exception as exc:
                log(f"cleanup: {exc!r}")
        # Anything else this process started and still runs (a worker whose start was interrupted):
        # our own children, by pid, with their process groups.
        for pid in _children():
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass
        for log_file in self.logs:
            log_file.close()
        if self.simulator is not None:
            self.simulator.close()
            self.simulator = None

    # --- data -----------------------------------------------------------------------------
    def setup_data(self) -> None:
        from decimal import Decimal

        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from generation.models import CreditAccount
        from generation.services.credits import credit_account
        from models_registry.models import ApiModel, FallbackChain
        from tests.factories import offline_model

        call_command("migrate", verbosity=0)
        call_command("seed_models", verbosity=0)
        # No fallback: a failure has to stay visible as a failure, not move to an unconfigured model.
        FallbackChain.objects.all().delete()
        self.user, _ = get_user_model().objects.get_or_create(username=f"faults-{uuid.uuid4().hex[:6]}")
        CreditAccount.objects.filter(pk=credit_account(self.user).pk).update(balance=100_000)
        fal_schema = {
            "type": "object",
            "properties": {"prompt": {"type": "string"}, "seed": {"type": "integer"}},
            "required": ["prompt"],
        }
        fanout, _ = ApiModel.objects.update_or_create(
            key=FAL_FANOUT,
            defaults={
                "display_name": "fal fan-out (faults)",
                "provider": "fal",
                "tasks": ["t2i"],
                "input_schema": fal_schema,
                "capabilities": {"seed": True},
                "price_per_image": Decimal("0.0100"),
            },
        )
        self.models = {
            "offline-x4": offline_model("faults/offline-native"),
            "offline-fan": offline_model("faults/offline-fanout", max_images=1, input_schema={"properties": {}}),
            "fal-x4": ApiModel.objects.get(key=FAL_NATIVE),
            "fal-fan": fanout,
        }
        assert self.models["offline-x4"].max_images == IMAGES and self.models["fal-x4"].max_images == IMAGES
        assert self.models["offline-fan"].max_images == 1 and fanout.max_images == 1

    def create_job(self, result: Result, kind: str) -> None:
        from generation.services.jobs import job_create

        tag = f"fx{uuid.uuid4().hex[:10]}"
        params = {"simulate": {"latency": round(random.uniform(1.0, 2.0), 2)}} if kind.startswith("offline") else {}
        try:
            job = job_create(
                user=self.user,
                model=self.models[kind],
                prompt=f"portrait {tag} silver hair",
                images=IMAGES,
                enhance=False,
                params=params,
            )
        except Exception as exc:
            result.notes.append(f"job_create failed: {exc!r}"[:200])
            return
        result.jobs.append(str(job.pk))

    def top_up(self, result: Result, kinds: tuple[str, ...]) -> None:
        from generation.models import ACTIVE_JOB_STATUSES, GenerationJob

        active = GenerationJob.objects.filter(pk__in=result.jobs, status__in=ACTIVE_JOB_STATUSES).count()
        for _ in range(max(0, JOBS_IN_FLIGHT - active)):
            self.create_job(result, kinds[self.kinds_cycle % len(kinds)])
            self.kinds_cycle += 1

    def wait_final(self, result: Result) -> None:
        from generation.models import ACTIVE_JOB_STATUSES, GenerationJob

        deadline = (result.faults[-1] if result.faults else time.time()) + self.wait
        log(f"{result.name}: waiting up to {max(0, deadline - time.time()):.0f} s for {len(result.jobs)} jobs")
        while time.time() < deadline:
            if not GenerationJob.objects.filter(pk__in=result.jobs, status__in=ACTIVE_JOB_STATUSES).exists():
                return
            time.sleep(0.5)

    def settle(self, result: Result, timeout: float = 30.0) -> None:
        """Between rounds of the one-off faults: let the last round's jobs end (bounded), so the next
        round hits fresh work in flight rather than jobs already waiting for the sweeper."""
        from generation.models import ACTIVE_JOB_STATUSES, GenerationJob

        active = GenerationJob.objects.filter(pk__in=result.jobs, status__in=ACTIVE_JOB_STATUSES)
        wait_until(lambda: not active.exists(), timeout, 0.5)

    def ensure_alive(self, result: Result, label: str) -> None:
        """A worker or beat that died on its own is a finding: count it, and start a new one."""
        if self.worker is not None and self.worker.poll() is not None:
            result.notes.append(f"{label}: worker process died (exit {self.worker.returncode}), restarted")
            result.figures["worker_deaths"] = result.figures.get("worker_deaths", 0) + 1
            self.kill_worker()
            self.start_worker(result.name)
        if self.beat is not None and self.beat.poll() is not None:
            result.notes.append(f"{label}: beat process died (exit {self.beat.returncode}), restarted")
            result.figures["beat_deaths"] = result.figures.get("beat_deaths", 0) + 1
            self.kill_beat()
            self.start_beat()

    # --- measuring ------------------------------------------------------------------------
    def orphans(self) -> set[str]:
        from studio.models import WorkspaceAsset

        media = Path(os.environ["MEDIA_ROOT"])

        def unreferenced() -> set[str]:
            files = {str(p.relative_to(media)) for p in (media / "assets").rglob("*") if p.is_file()}
            referenced = set()
            for name, thumb in WorkspaceAsset.objects.values_list("file", "thumbnail"):
                referenced.update((name, thumb))
            return files - referenced

        first = unreferenced()
        if not first:
            return set()
        time.sleep(2)  # a store in progress writes its files just before its row
        return first & unreferenced()

    def measure(self, result: Result) -> None:
        if self.resets:
            result.notes.append(f"{self.resets} simulator connection(s) reset by their client")
            self.resets = 0
        from django.db.models import Count, Q

        from generation.models import (
            ACTIVE_JOB_STATUSES,
            CreditLedger,
            GenerationJob,
            ImageSlot,
            LedgerKind,
            ProviderRequest,
            SlotStatus,
        )
        from studio.models import WorkspaceAsset

        jobs = list(GenerationJob.objects.filter(pk__in=result.jobs).select_related("model"))
        requested = sum(j.images_requested for j in jobs)
        per_slot = WorkspaceAsset.objects.filter(job_id__in=result.jobs).values("job_id", "batch_index")
        per_slot = per_slot.annotate(n=Count("id"))
        delivered = len(per_slot)
        duplicates = sum(row["n"] - 1 for row in per_slot)
        failed = ImageSlot.objects.filter(job_id__in=result.jobs, status=SlotStatus.FAILED).exclude(error="").count()
        errors = Counter(
            ImageSlot.objects.filter(job_id__in=result.jobs, status=SlotStatus.FAILED).values_list("error", flat=True)
        )
        for error, count in errors.most_common(3):
            result.notes.append(f"{count} slot(s) failed: {error[:110]}")
        ledger = CreditLedger.objects.filter(job_id__in=result.jobs).values("job_id")
        ledger = ledger.annotate(
            charges=Count("id", filter=Q(kind=LedgerKind.CHARGE)), refunds=Count("id", filter=Q(kind=LedgerKind.REFUND))
        )
        double_charges = sum(1 for row in ledger if row["charges"] > 1 or row["refunds"] > row["charges"])
        uncharged = len(jobs) - sum(1 for row in ledger if row["charges"] >= 1)
        if uncharged:
            result.notes.append(f"{uncharged} job(s) with no charge row")

        # Double provider submits. fal: accepted submits per (prompt tag, seed), seen by the simulator.
        accepted = Counter()
        for call in self.simulator.calls_for("fal", "submit"):
            body = call.json if isinstance(call.json, dict) else {}
            match = TAG.search(str(body.get("prompt") or ""))
            if call.status == 200 and match:
                # The endpoint too: after a fallback, the next model's submit carries the same tag and seed.
                endpoint = call.path.removeprefix("/fal/")
                accepted[(endpoint, match.group(0), body.get("seed"))] += 1
        tags = {str(j.pk): TAG.search(j.prompt).group(0) for j in jobs}
        seeds = {str(j.pk): int((j.params or {}).get("seed", 0)) for j in jobs}
        fal_doubles = offline_doubles = fal_attempts = unseen = wasted = 0
        matched = set()
        for request in ProviderRequest.objects.filter(job_id__in=result.jobs).select_related("model"):
            job_id = str(request.job_id)
            if request.provider == "fal":
                key = (
                    request.model.key,
                    tags[job_id],
                    (seeds[job_id] + min(request.slot_indexes or [0])) % 2**31,
                )
                matched.add(key)
                fal_doubles += max(0, accepted.get(key, 0) - 1)
                # The provider ran (and billed) it, but the studio gave the request up.
                wasted += request.status == "failed" and bool(accepted.get(key))
                fal_attempts += max(0, request.attempts - 1)
                # The provider made it, so the simulator took its submit: else the matching is wrong.
                unseen += request.status == "succeeded" and not accepted.get(key)
            else:
                offline_doubles += max(0, request.attempts - 1)
        double_submits = fal_doubles + offline_doubles
        if wasted:
            result.notes.append(f"{wasted} fal request(s) the provider accepted but the studio failed (paid, lost)")
        if unseen:
            result.notes.append(f"{unseen} succeeded fal request(s) with no accepted submit found: matching broken?")
        ours = set(tags.values())
        unmatched = sum(n for key, n in accepted.items() if key[1] in ours and key not in matched)
        if unmatched:
            result.notes.append(f"{unmatched} accepted fal submit(s) matched no ProviderRequest")
        result.notes.append(
            f"double submits: fal {fal_doubles} (simulator log; fal attempts beyond 1: {fal_attempts}), "
            f"offline {offline_doubles} (attempts)"
        )

        not_final = [j for j in jobs if j.status in ACTIVE_JOB_STATUSES]
        for job in not_final[:3]:  # where the stuck ones stand, for whoever fixes them
            slots = Counter(ImageSlot.objects.filter(job=job).values_list("status", flat=True))
            requests = [
                f"{r.provider}:{r.status}{'+id' if r.external_id else ''}:attempts={r.attempts}"
                for r in ProviderRequest.objects.filter(job=job)
            ]
            result.notes.append(f"not final: job {job.pk} {job.model.key} slots {dict(slots)} requests {requests}")
        statuses = Counter(j.status for j in jobs)
        result.notes.append("job statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        worst = 0.0
        for job in jobs:
            if job.finished_at is None:
                worst = float("inf")
                continue
            finished = job.finished_at.timestamp()
            before = [t for t in result.faults if t <= finished and t >= job.created_at.timestamp() - 0.001]
            reference = max(before) if before else job.created_at.timestamp()
            worst = max(worst, finished - reference)

        orphans = self.orphans() - self.seen_orphans
        self.seen_orphans |= orphans
        if orphans:
            result.notes.append(f"orphan files (no asset row): {', '.join(sorted(orphans)[:3])}")
        result.figures.update(
            jobs=len(jobs),
            requested=requested,
            delivered=delivered,
            lost=requested - delivered,
            failed=failed,
            duplicates=duplicates,
            orphans=len(orphans),
            double_charges=double_charges,
            double_submits=double_submits,
            not_final=len(not_final),
            recover=worst,
        )
        f = result.figures
        result.passed = (
            f["lost"] == 0
            and f["duplicates"] == 0
            and f["orphans"] == 0
            and f["double_charges"] == 0
            and f["double_submits"] == 0
            and f["not_final"] == 0
            and f["recover"] <= TARGET_RECOVERY
            and len(jobs) > 0
        )

    # --- scenarios ------------------------------------------------------------------------
    def fresh_processes(self, name: str, **extra: str) -> None:
        self.kill_worker()
        if self.beat is None:
            self.start_beat()
        self.start_worker(name, **extra)

    def sim_defaults(self) -> None:
        self.simulator.clear_faults()
        self.simulator.configure(latency=1.5, concurrency_cap=None)

    def scenario(self, name: str) -> Result:
        from models_registry.models import FallbackChain

        result = Result(name, rounds=self.rounds[name])
        self.sim_defaults()
        getattr(self, f"run_{name}")(result)
        self.wait_final(result)
        self.simulator.clear_faults()
        FallbackChain.objects.all().delete()  # only the storm sets one, for its own jobs
        self.measure(result)
        return result

    ALL_KINDS = ("offline-x4", "fal-x4", "offline-fan", "fal-fan")

    def run_kill(self, result: Result) -> None:
        self.fresh_processes("kill")
        sim = self.simulator
        slow_rounds = 0
        for n in range(result.rounds):
            sim.clear_faults()
            sim.latency = round(random.uniform(1.0, 2.0), 2)
            slow = n % 3 == 1
            if slow:
                # fal holds these submits 3 s before answering: the kill lands while they are in flight.
                sim.timeout_next(8, seconds=3.0, provider="fal", op="submit")
                self.create_job(result, random.choice(("fal-x4", "fal-fan")))
            self.top_up(result, self.ALL_KINDS)
            if slow:
                in_flight = wait_until(lambda: sim.in_flight["fal"] > 0, 6, 0.05)
                slow_rounds += bool(in_flight)
                time.sleep(random.uniform(0.1, 1.5))
            else:
                time.sleep(random.uniform(0.2, 3.0))
            self.ensure_alive(result, f"round {n + 1}")
            self.kill_worker()
            result.faults.append(time.time())
            self.start_worker("kill")
            time.sleep(random.uniform(0.2, 1.5))
        result.notes.append(f"{slow_rounds} kill(s) landed while a held fal submit was in flight")

    def run_outage(self, result: Result) -> None:
        self.fresh_processes("outage")
        down = int(os.environ["CELERY_TASK_TIME_LIMIT"]) + 5
        for n in range(result.rounds):
            self.top_up(result, self.ALL_KINDS)
            time.sleep(random.uniform(1.0, 3.0))
            self.ensure_alive(result, f"round {n + 1}")
            self.kill_worker()
            self.kill_beat()
            log(f"outage round {n + 1}: worker and beat down for {down} s")
            time.sleep(down)
            result.faults.append(time.time())  # recovery counts from the restart
            self.start_beat()
            self.start_worker("outage")
            time.sleep(2)

    def run_redis(self, result: Result) -> None:
        self.fresh_processes("redis")
        port = os.environ["TEST_REDIS_PORT"]
        for n in range(result.rounds):
            self.settle(result)
            self.top_up(result, self.ALL_KINDS)
            time.sleep(random.uniform(1.0, 3.0))
            self.ensure_alive(result, f"round {n + 1} before")
            subprocess.run(["redis-cli", "-p", port, "shutdown", "nosave"], capture_output=True, timeout=10)
            time.sleep(random.uniform(2.0, 5.0))
            services("start")  # Redis again, empty: every queued and unacked message is gone
            result.faults.append(time.time())
            time.sleep(3)
            self.ensure_alive(result, f"round {n + 1} after")
            time.sleep(random.uniform(1.0, 3.0))

    def run_pg(self, result: Result) -> None:
        from django.db import connection

        self.fresh_processes("pg")
        for n in range(result.rounds):
            self.settle(result)
            self.top_up(result, self.ALL_KINDS)
            time.sleep(random.uniform(1.0, 3.0))
            # Celery's Django fixup closes connections after every task, so a connection lives only
            # while a task runs: terminate every one there is, again and again for 3 s.
            killed, until = 0, time.monotonic() + 3
            with connection.cursor() as cursor:
                while time.monotonic() < until:
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    killed += cursor.fetchone()[0]
                    time.sleep(0.1)
            result.faults.append(time.time())
            result.notes.append(f"round {n + 1}: terminated {killed} connection(s) in 3 s")
            time.sleep(2)
            self.ensure_alive(result, f"round {n + 1}")
            time.sleep(random.uniform(1.0, 3.0))

    def run_storm(self, result: Result) -> None:
        from models_registry.models import FallbackChain, FallbackEntry

        concurrency = 3
        # A storm that outlasts the retries moves the images down the chain (here to the offline
        # engine) rather than failing them: give fal's models somewhere to go.
        chain, _ = FallbackChain.objects.get_or_create(task="t2i")
        chain.entries.all().delete()
        for position, kind in enumerate(("fal-x4", "fal-fan", "offline-x4")):
            FallbackEntry.objects.create(chain=chain, model=self.models[kind], position=position)
        self.fresh_processes("storm", FAL_CONCURRENCY=str(concurrency))
        sim = self.simulator
        for n in range(result.rounds):
            sim.configure(concurrency_cap=concurrency, latency=round(random.uniform(1.0, 2.0), 2))
            with sim._lock:  # the simulator keeps one maximum per provider; count this storm's own
                sim.max_in_flight["fal"] = 0
            self.top_up(result, ("fal-x4", "fal-fan"))
            storm = sim.rate_limit_next(15, retry_after=2, provider="fal")
            result.faults.append(time.time())
            wait_until(lambda: storm.hits >= 15, 40, 0.1)  # noqa: B023 - used at once
            result.notes.append(
                f"round {n + 1}: {storm.hits} storm 429s served; most fal calls in flight "
                f"{sim.max_concurrency('fal')} (limit {concurrency})"
            )
            self.ensure_alive(result, f"round {n + 1}")
            time.sleep(random.uniform(1.0, 3.0))

    def run(self, only: list[str]) -> list[Result]:
        results = []
        for name in only:
            log(f"--- {name}: {self.rounds[name]} round(s)")
            results.append(self.scenario(name))
            log(f"{name}: {'PASS' if results[-1].passed else 'FAIL'}")
        return results


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing bracket.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def print_table(results: list[Result], wait: float) -> None:
    header = (
        f"{'fault':<7} {'rnd':>3} {'jobs':>4} {'img':>4} {'got':>4} {'lost(failed)':>12} {'dup(orphan)':>11} "
        f"{'dbl-chg':>7} {'dbl-sub':>7} {'not-final':>9} {'recover':>8} {'died':>4}  result"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        f = r.figures
        recover = f"{f['recover']:.1f}s" if f["recover"] != float("inf") else f">{wait:.0f}s"
        lost = f"{f['lost']:.0f} ({f['failed']:.0f})"
        dup = f"{f['duplicates']:.0f} ({f['orphans']:.0f})"
        died = f.get("worker_deaths", 0) + f.get("beat_deaths", 0)
        print(
            f"{r.name:<7} {r.rounds:>3} {f['jobs']:>4.0f} {f['requested']:>4.0f} {f['delivered']:>4.0f} "
            f"{lost:>12} {dup:>11} "
            f"{f['double_charges']:>7.0f} {f['double_submits']:>7.0f} {f['not_final']:>9.0f} {recover:>8} "
            f"{died:>4.0f}  {'PASS' if r.passed else 'FAIL'}"
        )
    print()
    for r in results:
        for note in r.notes:
            print(f"  {r.name}: {note}")
    print()
    print(
        "died: worker or beat processes that exited on their own (restarted; a finding, not a target). "
        "targets: 0 lost, 0 duplicate/orphan, 0 double charge, 0 double submit, every job final within "
        f"{TARGET_RECOVERY:.0f} s of its latest fault; worker logs in {LOGS}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(FAULTS), help=f"comma-separated, from: {','.join(FAULTS)}")
    parser.add_argument("--rounds", type=int, help="rounds of every selected fault (default: kill 20, redis 3, ...)")
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run of the harness")
    parser.add_argument("--wait", type=float, default=75.0, help="seconds after the last fault a scenario waits")
    parser.add_argument("--seed", type=int, help="random seed for fault moments (printed when not given)")
    parser.add_argument(
        "--no-webhooks",
        dest="webhooks",
        action="store_false",
        help="no web process and no PUBLIC_BASE_URL: providers are only polled",
    )
    args = parser.parse_args(argv)

    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; choose from {','.join(FAULTS)}")
    ports = {os.environ["TEST_PG_PORT"], os.environ["TEST_REDIS_PORT"]}
    if ports & FOREIGN_PORTS:
        parser.error(f"ports {sorted(ports & FOREIGN_PORTS)} belong to other runs; the suite uses its own")
    rounds = dict(QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    if args.rounds:
        rounds = dict.fromkeys(rounds, args.rounds)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    random.seed(seed)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Ctrl-C even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    suite = Suite(rounds=rounds, wait=args.wait)
    started = time.monotonic()
    results: list[Result] = []
    try:
        LOGS.mkdir(parents=True, exist_ok=True)
        for old in LOGS.glob("celery-*.log"):
            old.unlink()
        pg_port, redis_port = os.environ["TEST_PG_PORT"], os.environ["TEST_REDIS_PORT"]
        log(f"services in {SERVICES_DIR} (PostgreSQL {pg_port}, Redis {redis_port})")
        services("start")
        for line in services("env").splitlines():
            name, _, value = line.partition("=")
            os.environ[name] = value

        from tests.simulator import Simulator

        suite.simulator = Simulator().start()
        # A SIGKILLed worker resets its connections: count those instead of printing a traceback each.
        suite.simulator._server.handle_error = suite.connection_reset
        suite.worker_env = suite.simulator.worker_env()
        os.environ.update(suite.worker_env)  # this process creates the jobs: it checks the fal key too
        if args.webhooks:
            # Queue submits carry webhooks naming our request: a submit whose answer a kill lost
            # is then adopted when its webhook arrives instead of failing (never re-sent).
            suite.worker_env["PUBLIC_BASE_URL"] = suite.start_web()
            os.environ["PUBLIC_BASE_URL"] = suite.worker_env["PUBLIC_BASE_URL"]
        log(f"webhooks: {'on, ' + suite.worker_env['PUBLIC_BASE_URL'] if args.webhooks else 'off (polling only)'}")

        import django

        django.setup()
        # The jobs this process creates report their events; the suite's table is what it prints.
        logging.getLogger("generation.events").setLevel(logging.WARNING)
        suite.setup_data()
        settings_line = " ".join(
            f"{k}={os.environ[k]}" for k in SUITE_ENV if k.startswith(("CELERY", "SWEEP", "OFFLINE"))
        )
        log(f"seed {seed}; {settings_line}; simulator {suite.simulator.base_url}")
        results = suite.run(only)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        suite.stop_everything()
        try:
            services("stop")
        except Exception as exc:
            log(f"services.sh stop failed: {exc!r}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print_table(results, args.wait)
    log(f"done in {time.monotonic() - started:.0f} s (seed {seed})")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
