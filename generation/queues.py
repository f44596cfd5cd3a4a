"""How many messages wait on each Celery queue, read from the broker the app is configured with.

Redis keeps a queue as a list named after it (kombu adds one list per priority step); kombu's
filesystem transport, `make run`'s broker (studio/broker.py), keeps one `<time>_<uuid>.<queue>.msg`
file per message in its queue folder. kombu's virtual transports both answer `_size(queue)` that
way (LLEN summed over the priority lists, or the count of the queue's message files), so one read
serves both. The operations page shows it, and metrics may read it.
"""

from __future__ import annotations

import logging

from django.conf import settings

from generation import heartbeat
from studio.celery import app

logger = logging.getLogger(__name__)


def image_queue(default: str | None = None) -> str:
    """The queue of image work (generation.enqueue.IMAGE_TASKS) beside the default queue `default`
    (the app's when not given)."""
    return (default or app.conf.task_default_queue) + settings.IMAGE_QUEUE_SUFFIX


def worker_queues(default: str | None = None) -> list[str]:
    """What a worker that does everything consumes: the default queue and its image queue."""
    default = default or app.conf.task_default_queue
    return [default, image_queue(default)]


def queue_names() -> list[str]:
    """The app's default and image queues and every queue a worker said it consumes, sorted."""
    names = set(worker_queues())
    for worker in heartbeat.workers_seen():
        names.update(worker.queues)
    return sorted(name for name in names if name)


def queue_depths() -> dict[str, int]:
    """Messages waiting (not yet taken by a worker) per queue. Raises the broker's connection
    error when the broker cannot be reached: a caller decides how to show that."""
    names = queue_names()
    with app.connection_for_read() as connection:
        # One try: a page that reads this must not hang on kombu's reconnect loop.
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        return {name: int(channel._size(name)) for name in names}
