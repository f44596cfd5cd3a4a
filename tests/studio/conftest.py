from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import offline_model


@pytest.fixture
def model(db):
    """The offline engine: configured everywhere, t2i + i2i + i2i_multi, 4 images per request."""
    return offline_model()


@pytest.fixture
def bob_client(bob):
    client = Client()
    client.force_login(bob)
    return client
