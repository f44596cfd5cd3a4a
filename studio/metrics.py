"""GET /metrics: the web process's Prometheus metrics, for a scraper holding METRICS_TOKEN.

It serves the pipeline's counters and histograms (generation.metrics, moved by generation.events in
this process) and the gauges of shared state, read when scraped: messages waiting on each Celery
queue (generation.queues) and the providers staff paused (generation.services.routing). Each worker
serves its own counters on WORKER_METRICS_PORT (studio/celery.py).

Under gunicorn's several processes, set PROMETHEUS_MULTIPROC_DIR (an empty folder, emptied at each
start): prometheus_client then keeps every process's values in files there and this view adds them
up, instead of answering with whichever process took the scrape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import generation.metrics  # noqa: F401  (registers the pipeline's metrics before a job has run here)
from generation import queues
from generation.providers.kinds import PROVIDER_KINDS
from generation.services import routing

logger = logging.getLogger(__name__)


class ScrapeTimeGauge(Collector):
    """A gauge of shared state, read when scraped. A failed read (the broker or the database is
    down) leaves the gauge out of that scrape: the scrape itself still answers."""

    name = ""
    documentation = ""
    label = ""

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            values = self.read()
        except Exception:
            logger.warning("could not read %s for this scrape", self.name, exc_info=True)
            return
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, value in values.items():
            family.add_metric([key], value)
        yield family


class QueueDepthCollector(ScrapeTimeGauge):
    """Messages waiting on each Celery queue: a Redis list's LLEN, or the count of the filesystem
    broker's message files (generation.queues)."""

    name, documentation, label = "studio_queue_depth", "Messages waiting on a Celery queue.", "queue"

    def read(self) -> dict[str, float]:
        return queues.queue_depths()


class ProviderPausedCollector(ScrapeTimeGauge):
    """1 for each provider kind staff paused, 0 for the others."""

    name, documentation, label = "studio_provider_paused", "Whether staff paused the provider.", "provider"

    def read(self) -> dict[str, float]:
        paused = routing.paused_providers()
        return {kind: int(kind in paused) for kind in PROVIDER_KINDS}


_shared_state = CollectorRegistry(auto_describe=False)
_shared_state.register(QueueDepthCollector())
_shared_state.register(ProviderPausedCollector())


def metrics_text() -> bytes:
    """The Prometheus text exposition of the counters and of the shared-state gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    return generate_latest(counters) + generate_latest(_shared_state)


def _authorized(request: HttpRequest) -> bool:
    given = request.headers.get("Authorization", "")
    return constant_time_compare(given, f"Bearer {settings.METRICS_TOKEN}")


@login_not_required
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    # No token set: the endpoint does not exist, so it is never public by accident.
    if not settings.METRICS_TOKEN:
        raise Http404
    if not _authorized(request):
        response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
