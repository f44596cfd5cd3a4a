"""Test settings: the real settings, read from the environment `make test` sets, plus speed-ups."""

from __future__ import annotations

import os
import tempfile
import uuid

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
# Set in the environment (not only here) so the Celery worker processes the tests start inherit
# them: the same media folder, and a queue of this run's own so no stale message from an earlier
# run is ever consumed.
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="charstudio-media-"))
_RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("CELERY_DEFAULT_QUEUE", f"tests-{_RUN}")
os.environ.setdefault("GPU_QUEUE", f"tests-gpu-{_RUN}")
# Cache keys (rate limits, provider cool-downs, health) are this run's own too.
os.environ.setdefault("CACHE_KEY_PREFIX", f"tests-{_RUN}")
os.environ.setdefault("OFFLINE_LATENCY_SECONDS", "0.05")
# The test client and the live server speak plain http; production redirects it to https.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from studio.settings import *  # noqa: E402,F403

# Hashing passwords for real is the slowest part of creating test users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Two test runs on one machine (a developer's and an editor's) must not share a test database.
DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_charstudio_{_RUN}"  # noqa: F405
