"""Whether workers are running: every sweep (sent by beat, run by a worker) leaves its time here,
and every worker process beats with its host, queues and running tasks (studio/celery.py).

Pages read it to say "Generations are paused: no worker is running" instead of showing jobs
queued for ever when the worker (or beat) is down; operations read which workers are alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

LAST_SWEEP_KEY = "sweeper:last-run"


def record_sweep(at: float | None = None) -> None:
    cache.set(LAST_SWEEP_KEY, at if at is not None else time.time(), timeout=None)


def last_sweep_age(now: float | None = None) -> float | None:
    """Seconds since a worker last ran the sweeper, None when none has since the cache was new."""
    last = cache.get(LAST_SWEEP_KEY)
    if last is None:
        return None
    return max(0.0, (now if now is not None else time.time()) - float(last))


def silence_limit() -> float:
    """How long without a sweep means no worker: three missed sweeps, not one late one."""
    return 3.0 * settings.SWEEP_INTERVAL_SECONDS


def workers_silent(now: float | None = None) -> bool:
    age = last_sweep_age(now)
    return age is None or age > silence_limit()


# --- workers ------------------------------------------------------------------------------------
# Each worker process says every WORKER_BEAT_SECONDS who it is, which queues it consumes and how
# many tasks it runs; an entry lapses after WORKER_SEEN_SECONDS without a beat (a killed worker).
WORKER_BEAT_SECONDS = 10
WORKER_SEEN_SECONDS = 60
WORKERS_KEY = "workers:seen"


@dataclass(frozen=True)
class WorkerSeen:
    hostname: str
    queues: tuple[str, ...]
    running: int
    pid: int
    at: float
    # What a worker adds about itself: the GPU worker's model, device, batch limit and queue depth.
    details: dict = field(default_factory=dict)

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.at)


def record_worker(
    *, hostname: str, queues: list[str], running: int, pid: int, at: float | None = None, details: dict | None = None
) -> None:
    """One worker's beat. The entries share one cache key: read-modify-write may drop another
    worker's entry for one beat, which its next beat restores."""
    seen = {name: entry for name, entry in (cache.get(WORKERS_KEY) or {}).items() if _fresh(entry)}
    seen[hostname] = {
        "queues": list(queues),
        "running": running,
        "pid": pid,
        "at": at if at is not None else time.time(),
        "details": details or {},
    }
    cache.set(WORKERS_KEY, seen, timeout=WORKER_SEEN_SECONDS)


def forget_worker(hostname: str) -> None:
    """A worker shutting down cleanly leaves at once instead of lapsing."""
    seen = cache.get(WORKERS_KEY) or {}
    if seen.pop(hostname, None) is not None:
        cache.set(WORKERS_KEY, seen, timeout=WORKER_SEEN_SECONDS)


def workers_seen() -> list[WorkerSeen]:
    """The workers heard from in the last WORKER_SEEN_SECONDS, by hostname."""
    entries = cache.get(WORKERS_KEY) or {}
    return sorted(
        (
            WorkerSeen(
                hostname=name,
                queues=tuple(entry.get("queues", ())),
                running=int(entry.get("running", 0)),
                pid=int(entry.get("pid", 0)),
                at=float(entry["at"]),
                details=dict(entry.get("details") or {}),
            )
            for name, entry in entries.items()
            if _fresh(entry)
        ),
        key=lambda worker: worker.hostname,
    )


def _fresh(entry: dict) -> bool:
    return isinstance(entry, dict) and time.time() - float(entry.get("at", 0)) <= WORKER_SEEN_SECONDS


# The GPU worker (Procfile worker-gpu) beats this often, and is taken for dead after three missed
# beats: the local provider's polls then move its waiting images to the next model of the chain.
GPU_BEAT_SECONDS = 2
GPU_SEEN_SECONDS = 3 * GPU_BEAT_SECONDS


def gpu_workers() -> list[WorkerSeen]:
    """The GPU workers that hold a loaded pipeline (generation.gpu.batches says so in their beat)
    and beat within GPU_SEEN_SECONDS."""
    return [worker for worker in workers_seen() if worker.details.get("gpu") and worker.age <= GPU_SEEN_SECONDS]
