from __future__ import annotations

from unittest import mock

import pytest
from django.contrib.auth import get_user_model

pytest_plugins = ["tests.simulator.fixtures"]


@pytest.fixture(autouse=True)
def _provider_health_forgotten():
    """A provider a test marked unhealthy (routing.provider_mark_unhealthy) stays so in the shared
    cache for a minute: forget it, so no later test routes around it."""
    yield
    from django.core.cache import cache

    from generation.providers.kinds import PROVIDER_KINDS
    from generation.services import routing

    cache.delete_many([routing._health_key(kind) for kind in PROVIDER_KINDS])


@pytest.fixture
def alice(db):
    """The owner in most tests."""
    return get_user_model().objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(db):
    """Another user: everything of alice's must be invisible to him."""
    return get_user_model().objects.create_user("bob", password="bob-password")


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("staff", email="staff@example.com", password="staff-password")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and then: the pipeline's store threads keep their connections
    (generation.services.runs); close them before the test database is dropped."""
    yield
    from generation.services.runs import store_pool_shutdown

    store_pool_shutdown()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """One real worker process for the session (tests using it need `transactional_db`)."""
    from tests.worker import start_worker, stop_worker

    with django_db_blocker.unblock():
        process = start_worker()
    yield process
    stop_worker(process)


@pytest.fixture
def enqueued():
    """The pipeline's messages, recorded at its one seam (generation.enqueue.send) instead of sent.

    They are recorded at commit: wrap the call in django_capture_on_commit_callbacks(execute=True).
    """
    with mock.patch("generation.enqueue.send") as send:
        yield send
