"""GET /metrics: only for the bearer of METRICS_TOKEN, and the queue depth read from the broker."""

from __future__ import annotations

import socket
import uuid
from unittest import mock

import pytest
import requests
from django.urls import reverse

from generation.services import routing
from studio.celery import _serve_worker_metrics, app
from studio.metrics import ProviderPausedCollector, QueueDepthCollector

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, authorization: str | None = None):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    return client.get(reverse("metrics"), **headers)


@pytest.mark.django_db
class TestMetricsEndpoint:
    def test_it_does_not_exist_without_a_token_configured(self, client, settings):
        settings.METRICS_TOKEN = ""

        assert scrape(client).status_code == 404
        assert scrape(client, "Bearer ").status_code == 404

    @pytest.mark.parametrize("authorization", [None, "", "Bearer wrong-token", TOKEN, f"Basic {TOKEN}"])
    def test_it_refuses_anything_but_the_token(self, client, token, authorization):
        response = scrape(client, authorization)

        assert response.status_code == 401
        assert b"studio_" not in response.content

    def test_the_token_gets_the_metrics_without_a_login(self, client, token):
        response = scrape(client, f"Bearer {token}")

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        assert response["Cache-Control"] == "no-store"
        text = response.content.decode()
        for name in (
            "studio_jobs_created_total",
            "studio_jobs_finished_total",
            "studio_images_total",
            "studio_provider_call_seconds",
            "studio_provider_errors_total",
            "studio_credits_total",
            "studio_spend_usd_total",
            "studio_sweeper_recoveries_total",
            "studio_queue_depth",
            "studio_provider_paused",
        ):
            assert f"# TYPE {name}" in text, name

    def test_it_answers_get_only(self, client, token):
        response = client.post(reverse("metrics"), HTTP_AUTHORIZATION=f"Bearer {token}")

        assert response.status_code == 405


def gauge(collector, **labels: str) -> float | None:
    for family in collector.collect():
        for sample in family.samples:
            if sample.labels == labels:
                return sample.value
    return None


def test_queue_depth_counts_the_messages_waiting_on_the_redis_broker():
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as connection:
        assert connection.transport.driver_type == "redis"  # the test services' broker
        waiting = connection.SimpleQueue(queue)
        try:
            with mock.patch("generation.queues.queue_names", return_value=[queue]):
                assert gauge(QueueDepthCollector(), queue=queue) == 0
                waiting.put({"n": 1})
                waiting.put({"n": 2})
                assert gauge(QueueDepthCollector(), queue=queue) == 2
                waiting.get(timeout=1).ack()
                assert gauge(QueueDepthCollector(), queue=queue) == 1
        finally:
            waiting.clear()
            waiting.close()


def test_queue_depth_is_left_out_when_the_broker_cannot_be_reached():
    with mock.patch("generation.queues.queue_depths", side_effect=ConnectionError("refused")):
        assert list(QueueDepthCollector().collect()) == []


@pytest.mark.django_db
def test_a_paused_provider_reads_1_and_the_others_0():
    routing.provider_pause("fal", reason="billing")

    assert gauge(ProviderPausedCollector(), provider="fal") == 1
    assert gauge(ProviderPausedCollector(), provider="replicate") == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_worker_serves_its_metrics_on_its_port_when_one_is_set(settings):
    settings.WORKER_METRICS_PORT, settings.WORKER_METRICS_ADDR = free_port(), "127.0.0.1"

    _serve_worker_metrics()

    url = f"http://127.0.0.1:{settings.WORKER_METRICS_PORT}/metrics"
    text = requests.get(url, timeout=5).text
    assert "# TYPE studio_provider_call_seconds histogram" in text
    assert "# TYPE studio_jobs_finished_total counter" in text


def test_a_worker_serves_nothing_without_a_port(settings):
    settings.WORKER_METRICS_PORT = 0

    with mock.patch("prometheus_client.start_http_server") as start:
        _serve_worker_metrics()

    start.assert_not_called()
