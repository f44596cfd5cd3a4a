"""The provider simulator: a loopback fal.ai / Replicate / Gemini for end-to-end tests.

Usage (fixtures from tests/simulator/fixtures.py, registered in tests/conftest.py):

    def test_something(simulator):                 # reset before and after the test
        simulator.latency = 0.2                    # a generation runs 0.2 s
        simulator.rate_limit_next(3, retry_after=1, provider="gemini")
        ...                                        # point the studio at it:
        simulator.settings_overrides()             #   for override_settings in this process
        simulator.worker_env()                     #   for a worker process (tests/worker.py)
        simulator.calls_for("fal", "submit")       # what arrived, oldest first
        simulator.max_concurrency("gemini")        # the most calls seen in flight at once

Knobs (attributes, or configure(**knobs)): latency, latencies {provider: s}, num_images, image_size,
replicate_output_string, replicate_prefer_wait, gemini_mode ("image" | "text" | "blocked"),
gemini_block_reason, concurrency_cap, webhooks_enabled, forge_webhook_signatures,
webhook_timestamp_skew, echo_credentials, accepted_keys, fail_jobs, timeout_seconds,
fal_max_num_images, replicate_max_outputs, fal_urls_base (hand out URLs on a foreign host),
fal_job_error_status (what a failed job's result GET replays: 422 or a 5xx), fal_status_override (an
unknown status), fal_status_retry_after (Retry-After on pending polls), gemini_require_image_modality
(text only unless responseModalities has IMAGE), gemini_broken_next / gemini_broken_kind (garbled
image parts), fal_training_latency (how long a LoRA training runs, fal or Replicate), replicate_owner
(the token's user, who may own training destinations). uploaded(file_url) gives back what fal storage
received, job(id).dataset what a trainer read from its ZIP, replicate_model(name) a destination. Fault
rules: fail_next, rate_limit_next, fail_fraction, outage, timeout_next, malformed_next, drop_next,
clear_faults. server.py is the core; fal.py, fal_training.py (fal storage and LoRA trainers), replicate.py,
replicate_training.py and gemini.py hold each API's protocol details.
"""

from __future__ import annotations

from tests.simulator.server import Call, Delivery, Fault, Simulator

__all__ = ["Call", "Delivery", "Fault", "Simulator"]
