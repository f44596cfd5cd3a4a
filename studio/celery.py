from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from celery import Celery, bootsteps
from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

logger = logging.getLogger(__name__)

app = Celery("studio", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# How often the worker's event loop wakes, at the longest. A task's ack happens on its pool thread
# and does not wake the loop, so a worker at its prefetch limit only took its next message when a
# timer fired (kombu's Redis transport: every 10 s): a burst of jobs waited seconds to be
# dispatched. Waking costs a few system calls.
LOOP_WAKE_SECONDS = 0.02


def _wake() -> None:
    """Nothing: the loop's next round asks the broker for messages again when there is room."""


class WakeLoop(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Hub"}

    def start(self, worker: object) -> None:
        hub = getattr(worker, "hub", None)
        if hub is not None:
            hub.call_repeatedly(LOOP_WAKE_SECONDS, _wake)


app.steps["worker"].add(WakeLoop)


@task_prerun.connect
@task_postrun.connect
def _close_stale_db_connections(**_kwargs: object) -> None:
    # A worker outlives database restarts; drop connections that died or expired between tasks.
    from django.db import close_old_connections

    close_old_connections()


class _WorkerBeat:
    """Tells generation.heartbeat every few seconds that this worker lives, with the tasks it runs."""

    def __init__(self) -> None:
        self.running = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.hostname = ""
        self.queues: list[str] = []
        # What this worker adds about itself, and how often it beats (the GPU worker sets both:
        # generation.gpu.startup).
        self.details: Callable[[], dict] | None = None
        self.interval: float = 0.0

    def task_started(self) -> None:
        with self._lock:
            self.running += 1

    def task_finished(self) -> None:
        with self._lock:
            self.running = max(0, self.running - 1)

    def start(self, hostname: str, queues: list[str]) -> None:
        self.hostname, self.queues = hostname, queues
        threading.Thread(target=self._run, name="worker-beat", daemon=True).start()

    def describe_with(self, details: Callable[[], dict], *, interval: float) -> None:
        """Beat with `details` every `interval` seconds from now on, starting with one beat now."""
        self.details, self.interval = details, interval
        if self.hostname:
            self.beat_once()

    def beat_once(self) -> None:
        from django.db import connection

        from generation import heartbeat

        try:
            details = self.details() if self.details else {}
            heartbeat.record_worker(
                hostname=self.hostname, queues=self.queues, running=self.running, pid=os.getpid(), details=details
            )
        except Exception:  # the cache is down: the next beat tries again
            logger.warning("could not record this worker's heartbeat", exc_info=True)
        finally:
            if self.details:
                connection.close()  # details may read the database: this thread holds no connection between beats

    def _run(self) -> None:
        from generation import heartbeat

        while not self._stop.is_set():
            self.beat_once()
            self._stop.wait(self.interval or heartbeat.WORKER_BEAT_SECONDS)

    def stop(self) -> None:
        from generation import heartbeat

        self._stop.set()
        try:
            heartbeat.forget_worker(self.hostname)
        except Exception:  # the cache is down: the entry lapses on its own
            logger.warning("could not remove this worker's heartbeat", exc_info=True)


worker_beat = _WorkerBeat()


@task_prerun.connect
def _count_task_started(**_kwargs: object) -> None:
    worker_beat.task_started()


@task_postrun.connect
def _count_task_finished(**_kwargs: object) -> None:
    worker_beat.task_finished()


@worker_ready.connect
def _start_worker_beat(sender: object = None, **_kwargs: object) -> None:
    consumer = getattr(sender, "task_consumer", None)
    queues = [queue.name for queue in getattr(consumer, "queues", [])] or [app.conf.task_default_queue]
    worker_beat.start(getattr(sender, "hostname", "") or f"worker-{os.getpid()}", queues)


@worker_ready.connect
def _serve_worker_metrics(**_kwargs: object) -> None:
    # Each worker serves its own process's pipeline metrics (generation.metrics); Prometheus
    # scrapes every worker's port beside the web's /metrics (README, "Metrics and logs").
    from django.conf import settings
    from prometheus_client import start_http_server

    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)
        logger.info("serving metrics on %s:%s", settings.WORKER_METRICS_ADDR, settings.WORKER_METRICS_PORT)


@worker_shutting_down.connect
def _stop_worker_beat(**_kwargs: object) -> None:
    worker_beat.stop()
