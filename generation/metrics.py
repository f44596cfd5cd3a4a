"""The pipeline's Prometheus metrics: defined here, updated only by generation.events.

Labels stay few and bounded (status, kind, provider, outcome, error class, queue, op): a user, job
or request id as a label would make one time series per job and exhaust Prometheus. Ids go in the
event's log line instead.

Counters and histograms live in prometheus_client's default registry, which each worker serves on
its own port (studio/celery.py) and the web serves at /metrics (studio/metrics.py), which also reads
the gauges of shared state (queue depth, paused providers) at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_CREATED = Counter("studio_jobs_created", "Jobs created, by kind.", ["kind"])
JOBS_FINISHED = Counter("studio_jobs_finished", "Jobs closed, by final status and kind.", ["status", "kind"])
IMAGES = Counter("studio_images", "Images ended, by the provider that ran them and outcome.", ["provider", "outcome"])
IMAGE_STORE_SECONDS = Histogram(
    "studio_image_store_seconds",
    "Time to download or decode, verify, re-encode and save one image.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PROVIDER_CALL_SECONDS = Histogram(
    "studio_provider_call_seconds",
    "Provider API calls (submit, poll, recover), by outcome: ok, permanent, retryable, rate_limited.",
    ["provider", "op", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
PROVIDER_ERRORS = Counter(
    "studio_provider_errors", "Failed provider calls, by error class.", ["provider", "op", "error_class"]
)
SWEEPER_RECOVERIES = Counter(
    "studio_sweeper_recoveries", "Lost work the sweeper found, by what it did about it.", ["kind"]
)
CREDITS = Counter("studio_credits", "Credits charged and refunded.", ["kind"])
SPEND_USD = Counter("studio_spend_usd", "What finished jobs' images cost at the models' prices, in USD.", ["provider"])
