from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model


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
