"""generation.heartbeat: the sweeper's last run, and each worker's beat (host, queues, running tasks)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.core.cache import cache

from generation import heartbeat


@pytest.fixture(autouse=True)
def no_workers_yet():
    cache.delete(heartbeat.WORKERS_KEY)
    yield
    cache.delete(heartbeat.WORKERS_KEY)


def test_a_worker_is_seen_until_its_beats_stop_or_it_leaves():
    heartbeat.record_worker(hostname="a@host", queues=["studio"], running=2, pid=10)
    heartbeat.record_worker(hostname="b@host", queues=["gpu"], running=0, pid=11)
    [a, b] = heartbeat.workers_seen()
    assert (a.hostname, a.queues, a.running, b.hostname) == ("a@host", ("studio",), 2, "b@host")
    assert a.age < 5

    stale = time.time() - heartbeat.WORKER_SEEN_SECONDS - 1
    heartbeat.record_worker(hostname="b@host", queues=["gpu"], running=0, pid=11, at=stale)
    assert [w.hostname for w in heartbeat.workers_seen()] == ["a@host"]  # killed: lapsed
    heartbeat.forget_worker("a@host")
    assert heartbeat.workers_seen() == []  # shut down cleanly: gone at once


@pytest.mark.worker
def test_a_real_worker_beats_with_its_queue_and_leaves_when_stopped(transactional_db):
    from tests.worker import start_worker, stop_worker

    def ours() -> list[heartbeat.WorkerSeen]:  # other tests' workers may beat too
        return [w for w in heartbeat.workers_seen() if w.hostname.startswith("heartbeat-")]

    process = start_worker(name="heartbeat", concurrency=2)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ours():
            time.sleep(0.1)
        [seen] = ours()
        default = settings.CELERY_TASK_DEFAULT_QUEUE
        assert sorted(seen.queues) == [default, default + "-images"] and seen.pid == process.pid
    finally:
        stop_worker(process)
    assert ours() == []
