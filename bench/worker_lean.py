"""The worker rows of issue 9's table, measured in one run, as differences and ratios against L.

    orchestration overhead     wall - L of x1 and x4 jobs, offline engine and fal (1 MP images)
    fal pick-up                wall - L of an x1 fal job as L varies 1.5-2.95 s (learnt schedule)
    connections and burst      fresh PostgreSQL connections per 100 x4 jobs, per worker thread, and
                               the burst's wall against the provider bound, on 2 workers
    synchronous provider       40 Gemini requests at a concurrency of 4: wall / bound, refused re-runs
    image memory               worker peak RSS storing 10 x 4.4 MB PNGs (a process of its own)

Run with `make bench-lean` (it starts PostgreSQL and Redis); `bench/worker_lean.py gemini memory` runs
only the sections named (`burst-shared`, the burst with both workers on both queues, only so). Real
Celery workers run the jobs against the loopback provider simulator (tests/simulator/); the web
side (job_create) runs here.
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["CELERY_DEFAULT_QUEUE"] = f"bench-lean-{uuid.uuid4().hex[:8]}"

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from generation import progress  # noqa: E402
from generation.models import FINAL_JOB_STATUSES, CreditAccount, GenerationJob, ProviderRequest  # noqa: E402
from generation.queues import image_queue  # noqa: E402
from generation.services.credits import credit_account  # noqa: E402
from generation.services.jobs import job_create  # noqa: E402
from models_registry.models import ApiModel  # noqa: E402
from studio.celery import app  # noqa: E402
from studio.models import WorkspaceAsset  # noqa: E402
from tests.factories import offline_model, wait_for_job  # noqa: E402
from tests.simulator import Simulator  # noqa: E402
from tests.worker import ARTIFACTS, sessions_opened, start_worker, stop_worker  # noqa: E402

L = 2.0
RUNS = 5  # jobs per overhead row: a median of 3 moved by 5-10 ms between runs on this machine
FAL_MODEL = "fal-ai/flux-2"
GEMINI_MODEL = "gemini-2.5-flash-image"
OFFLINE_CONCURRENCY = 16
GEMINI_CONCURRENCY = 4
THREADS = 8


def median_range(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):4.0f} ms (range {min(ms):.0f}-{max(ms):.0f})"


def row(label: str, figure: str, target: str, met: bool) -> None:
    print(f"  {label:<44} {figure:<34} target {target:<18} {'met' if met else 'NOT met'}")


@contextmanager
def workers(simulator: Simulator, count: int, name: str, *, split: bool = False, **env: str):
    """`count` workers on a queue of their own (and its image queue), this process sending its
    jobs there. `split`: as the Procfile runs them, the first consumes the default queue only and
    the others the image queue only; else each consumes both."""
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    previous = app.conf.CELERY_TASK_DEFAULT_QUEUE
    app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    processes = []
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue):
            for n in range(count):
                processes.append(
                    start_worker(
                        name=f"{name}{n}",
                        concurrency=THREADS,
                        queues=(queue if n == 0 else image_queue(queue)) if split else None,
                        extra_env={
                            **simulator.worker_env(),
                            "CELERY_DEFAULT_QUEUE": queue,
                            "DB_CONN_MAX_AGE": "60",  # production's default, not the tests' 0
                            "OFFLINE_CONCURRENCY": str(OFFLINE_CONCURRENCY),
                            "GEMINI_CONCURRENCY": str(GEMINI_CONCURRENCY),
                            "FAL_RATE_PER_SECOND": "100",
                            **env,
                        },
                    )
                )
            yield processes
    finally:
        for process in processes:
            stop_worker(process)
        app.conf.CELERY_TASK_DEFAULT_QUEUE = previous


def timed(user, model: ApiModel, images: int, latency: float, *, simulate: bool = True) -> float:
    """wall - L of one job: from job_create until its owner's pages are told it ended.

    The end is the "job changed" message on the owner's progress channel (generation.progress),
    what the studio's live stream waits on: polling the database every few ms instead took CPU
    from the worker on this 2-core machine and added half a polling gap to every figure.
    """
    params = {"simulate": {"latency": latency}} if simulate else {}
    listener = progress._client().pubsub(ignore_subscribe_messages=True)
    listener.subscribe(progress.channel(user.pk))
    try:
        start = time.perf_counter()
        job = job_create(user=user, model=model, prompt=f"knight {uuid.uuid4().hex[:8]}", images=images, params=params)
        deadline = start + 60
        while True:
            message = listener.get_message(timeout=1.0)
            if message is None or message["data"].decode() == str(job.pk):
                job.refresh_from_db()
                if job.status in FINAL_JOB_STATUSES:
                    break
            assert time.perf_counter() < deadline, f"job {job.pk} still {job.status}"
        wall = time.perf_counter() - start
    finally:
        listener.close()
    assert job.status == "succeeded", job.errors
    return wall - latency


def burst(user, model: ApiModel, jobs: int, images: int, latency: float, *, simulate: bool = True):
    params = {"simulate": {"latency": latency}} if simulate else {}
    start = time.perf_counter()
    global start_of_burst
    start_of_burst = timezone.now()
    created = [
        job_create(user=user, model=model, prompt=f"burst {n} {uuid.uuid4().hex[:6]}", images=images, params=params)
        for n in range(jobs)
    ]
    for job in created:
        job = wait_for_job(job, timeout=300, interval=0.05)
        assert job.status == "succeeded", job.errors
    wall = time.perf_counter() - start
    waits = [
        (j.started_at - j.created_at).total_seconds()
        for j in GenerationJob.objects.filter(pk__in=[j.pk for j in created])
        if j.started_at
    ]
    return wall, waits


def section_overhead(user, simulator: Simulator) -> None:
    print(f"orchestration overhead (wall - L), L = {L:.0f} s, medians of {RUNS}:")
    native = offline_model("bench/lean-native")
    fal = ApiModel.objects.get(key=FAL_MODEL)
    simulator.configure(latencies={"fal": L}, image_size=(1024, 1024))
    with workers(simulator, 1, "lean-overhead"):
        timed(user, native, 1, L)  # warm imports and connections
        for _ in range(3):  # the fal schedule learns the model's latency from recent jobs
            timed(user, fal, 1, L, simulate=False)
        for label, model, simulate in (("offline", native, True), ("fal 1 MP", fal, False)):
            for images, limit in ((1, 0.060), (4, 0.120)):
                walls = [timed(user, model, images, L, simulate=simulate) for _ in range(RUNS)]
                met = statistics.median(walls) <= limit
                row(f"{label} x{images}", median_range(walls), f"<= {limit * 1000:.0f} ms", met)

        print("fal pick-up (wall - L of x1) as L varies, 3 warm-up jobs per L, medians of 3:")
        worst = 0.0
        for latency in (1.5, 1.8, 2.1, 2.4, 2.7, 2.95):
            simulator.configure(latencies={"fal": latency}, image_size=(512, 512))
            for _ in range(3):
                timed(user, fal, 1, latency, simulate=False)
            walls = [timed(user, fal, 1, latency, simulate=False) for _ in range(3)]
            worst = max(worst, statistics.median(walls))
            row(f"fal L = {latency:.2f} s", median_range(walls), "<= 150 ms", statistics.median(walls) <= 0.150)
        row("fal worst median over L", f"{worst * 1000:.0f} ms", "<= 150 ms", worst <= 0.150)


start_of_burst = None


def print_timeline(since) -> None:
    """Where a burst's time went: each step's p50 and max, in seconds after the first job was created."""

    def spread(label: str, stamps: list) -> None:
        offsets = sorted((stamp - since).total_seconds() for stamp in stamps if stamp)
        if offsets:
            p50, most = offsets[len(offsets) // 2], offsets[-1]
            print(f"    {label:<34} p50 {p50:6.2f} s  max {most:6.2f} s  ({len(offsets)})")

    jobs = GenerationJob.objects.filter(created_at__gte=since)
    requests = ProviderRequest.objects.filter(job__in=jobs)
    print("  timeline (seconds after the first job was created):")
    spread("job created", list(jobs.values_list("created_at", flat=True)))
    spread("dispatched (job started)", list(jobs.values_list("started_at", flat=True)))
    spread("submit sent", list(requests.values_list("sent_at", flat=True)))
    spread("image stored", list(WorkspaceAsset.objects.filter(job__in=jobs).values_list("created_at", flat=True)))
    spread("job finished", list(jobs.values_list("finished_at", flat=True)))


def section_burst(user, simulator: Simulator, *, split: bool = True) -> None:
    layout = "one on the default queue, one on the image queue" if split else "each on both queues"
    print(f"100 x4 offline jobs at once on 2 workers (8 threads each; {layout}), L = 1 s:")
    model = offline_model("bench/lean-burst")
    with workers(simulator, 2, "lean-burst", split=split):
        timed(user, model, 4, 0.0)  # warm
        before = sessions_opened()
        wall, waits = burst(user, model, 100, 4, 1.0)
        opened = sessions_opened() - before
    threads = 2 * THREADS
    bound = math.ceil(100 / OFFLINE_CONCURRENCY) * 1.0
    row(
        "fresh PG connections per 100 x4 jobs",
        f"{opened} ({opened / threads:.2f} per task thread)",
        "<= 2 per thread",
        opened / threads <= 2,
    )
    row(
        "burst wall / provider bound",
        f"{wall:.2f} s / {bound:.0f} s = {wall / bound:.2f}x",
        "<= 1.2x",
        wall <= 1.2 * bound,
    )
    waits.sort()
    p50 = waits[len(waits) // 2] if waits else float("nan")
    print(f"  (wait before dispatch: p50 {p50 * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms)")
    print_timeline(start_of_burst)


def section_gemini(user, simulator: Simulator) -> None:
    print(f"synchronous provider: 40 Gemini requests (10 x4 fan-out), concurrency {GEMINI_CONCURRENCY}, L = 1 s:")
    model = ApiModel.objects.get(key=GEMINI_MODEL)
    simulator.configure(latencies={"gemini": 1.0}, image_size=(512, 512))
    with workers(simulator, 1, "lean-gemini", GEMINI_RATE_PER_SECOND="100") as (worker,):
        timed(user, model, 1, 1.0, simulate=False)  # warm; times the model's calls
        log = ARTIFACTS / "celery-lean-gemini0.log"
        mark = len(log.read_bytes())
        first = ProviderRequest.objects.count()
        wall, _ = burst(user, model, 10, 4, 1.0, simulate=False)
        requests = ProviderRequest.objects.count() - first
        text = log.read_bytes()[mark:].decode(errors="replace")
        submits = len(re.findall(r"request_submit_task\[[^\]]+\] received", text))
        refused = len(re.findall(r"provider gemini: no free slot for request", text))
    bound = math.ceil(40 / GEMINI_CONCURRENCY) * 1.0
    reruns = refused / max(1, requests)
    row("wall / bound", f"{wall:.2f} s / {bound:.0f} s = {wall / bound:.2f}x", "<= 1.15x", wall <= 1.15 * bound)
    row("refused-slot re-runs per request", f"{reruns:.2f} ({refused} for {requests})", "<= 1", reruns <= 1)
    print(f"  (submit steps run: {submits} for {requests} requests, a slot's hand-over and the waiter's own step)")


def section_memory() -> None:
    print("worker peak RSS storing 10 x 4.4 MB PNGs (4 store threads, as a native x4 does):")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("image_memory.py"))],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    ).stdout
    grown = float(out.split()[0])
    size = float(out.split()[1])
    row("peak RSS growth", f"+{grown:.0f} MB (PNGs of {size:.1f} MB)", "<= +50 MB", grown <= 50)


SECTIONS = ("overhead", "burst", "gemini", "memory")


def main() -> None:
    # `worker_lean.py gemini memory` runs only those sections; no argument runs them all.
    chosen = set(sys.argv[1:]) or set(SECTIONS)
    # The jobs this process creates log a line each (generation.events): only the figures here.
    logging.getLogger("generation.events").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    call_command("seed_models", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{uuid.uuid4().hex[:6]}")
    CreditAccount.objects.filter(pk=credit_account(user).pk).update(balance=100000)
    print(f"issue 9, worker rows; one run, {os.cpu_count()} CPUs, {settings.DATABASES['default']['ENGINE']}")
    unlimited = {"job": 0, "upload": 0}
    with Simulator() as simulator, override_settings(**simulator.settings_overrides(), USER_RATE_LIMITS=unlimited):
        # The burst goes last: run right after its 100 jobs, the Gemini row once read 1.15x and
        # 1.10 re-runs per request (1.06x and 0.90 on its own, in two runs of two).
        for name, section in (
            ("overhead", section_overhead),
            ("gemini", section_gemini),
            ("burst", section_burst),
            # Not run by default: the same burst with both workers on both queues, to compare.
            ("burst-shared", lambda user, simulator: section_burst(user, simulator, split=False)),
        ):
            if name in chosen:
                section(user, simulator)
    if "memory" in chosen:
        section_memory()


if __name__ == "__main__":
    main()
