from __future__ import annotations

import pytest
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache

from generation.providers import fal
from tests.generation.providers import JWKS_URL, jwk


@pytest.fixture
def fal_webhooks(settings):
    """fal's JWKS at JWKS_URL, any fal user, and no signing keys cached by an earlier test."""
    settings.FAL_WEBHOOK_JWKS_URL = JWKS_URL
    settings.FAL_USER_ID = ""
    keys = [fal.JWKS_CACHE_KEY, f"{fal.JWKS_CACHE_KEY}:refreshed", fal.JWKS_FAILED_KEY]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.fixture
def fal_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks(fal_webhooks, fal_key):
    """fal's JWKS, listing fal_key after a key of a type it does not use."""
    # Deliveries refused before their signature is checked never fetch it.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.get(JWKS_URL, json={"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, jwk(fal_key)]})
        yield mocked
