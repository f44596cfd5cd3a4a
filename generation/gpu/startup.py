"""What makes a Celery worker that consumes the GPU queue (Procfile worker-gpu) the GPU worker:
at start it loads the pipeline, then beats every heartbeat.GPU_BEAT_SECONDS with its model, device
and the requests waiting, so routing sends the local model work only while it lives.

generation.tasks imports this module, so every worker connects the handler; on the others it
finds no GPU queue among the queues it consumes and does nothing (and torch is never imported).
"""

from __future__ import annotations

import os

from celery.signals import worker_ready
from django.conf import settings

from generation import heartbeat


@worker_ready.connect
def start_gpu_worker(sender: object = None, **_kwargs: object) -> None:
    consumer = getattr(sender, "task_consumer", None)
    queues = [queue.name for queue in getattr(consumer, "queues", [])]
    if settings.GPU_QUEUE not in queues:
        return
    from generation.gpu import batches
    from studio.celery import worker_beat

    batches.set_identity(getattr(sender, "hostname", "") or f"worker-{os.getpid()}", os.getpid())
    batches.start_worker()
    worker_beat.describe_with(batches.worker_details, interval=heartbeat.GPU_BEAT_SECONDS)
