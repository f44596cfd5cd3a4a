"""The suite must run against the real services, not stand-ins: prove it."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from kombu import Connection


@pytest.mark.django_db
def test_the_database_is_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        (version,) = cursor.fetchone()
    assert version.startswith("PostgreSQL")


def test_the_cache_is_a_live_redis():
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    key, value = f"probe-{uuid.uuid4()}", uuid.uuid4().hex
    cache.set(key, value, 30)
    # Read it back with a separate client, so the value must really be in the server.
    raw = redis.Redis.from_url(settings.REDIS_URL)
    assert raw.ping() is True
    assert any(k.decode().endswith(key) for k in raw.scan_iter(match=f"*{key}"))
    assert cache.get(key) == value


def test_the_celery_broker_is_a_live_redis():
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.transport.driver_type == "redis"
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == settings.CELERY_VISIBILITY_TIMEOUT
