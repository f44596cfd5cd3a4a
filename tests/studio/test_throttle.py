"""Per-user limits (studio.throttle): past the jobs or uploads a user may start in a minute, a clear
message where other bad input shows, and nothing is made, stored or charged; other users go on."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from generation.models import GenerationJob
from generation.services.credits import credit_account
from generation.services.jobs import JobRequestError, job_create
from studio import throttle
from studio.models import WorkspaceAsset
from tests.factories import png_bytes
from tests.studio.helpers import htmx

pytestmark = pytest.mark.django_db

# Each test counts in a minute of its own, far from the real clock: no minute boundary can split a
# test's requests, and no test sees another's counts.
_MINUTES = itertools.count(int(time.time() // 60) + 10_000_000)


@pytest.fixture(autouse=True)
def frozen_minute(monkeypatch, settings):
    now = next(_MINUTES) * throttle.WINDOW_SECONDS + 1.0
    monkeypatch.setattr(throttle, "time", SimpleNamespace(time=lambda: now))
    settings.USER_RATE_LIMITS = {"job": 2, "upload": 2}


def generate(client, model):
    data = {"prompt": "silver hair", "model": model.pk, "images": 1, "enhance": "on", "enhance_present": "1"}
    return client.post(reverse("studio:generate"), data, **htmx())


def upload(client):
    image = SimpleUploadedFile("me.png", png_bytes(), content_type="image/png")
    return client.post(reverse("studio:reference-upload"), {"image": image}, **htmx())


def stored_files(settings) -> int:
    return sum(1 for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file())


def test_past_the_job_limit_the_prompt_bar_says_so_and_nothing_is_made_or_charged(
    alice_client, alice, bob_client, bob, model, settings
):
    generate(alice_client, model)
    generate(alice_client, model)
    response = generate(alice_client, model)

    assert response["HX-Retarget"] == "#prompt-errors"
    assert b"Too many jobs: at most 2 a minute. Try again in 59 seconds." in response.content
    assert GenerationJob.objects.filter(owner=alice).count() == 2
    assert credit_account(alice).balance == settings.STARTING_CREDITS - 2

    # The service raises its own error type, so every caller handles it like other bad input.
    with pytest.raises(JobRequestError) as refused:
        job_create(user=alice, model=model, prompt="x")
    assert refused.value.code == "rate_limited"

    generate(bob_client, model)
    assert GenerationJob.objects.filter(owner=bob).count() == 1


def test_past_the_upload_limit_the_upload_says_so_and_nothing_is_stored(
    alice_client, alice, bob_client, bob, model, settings
):
    upload(alice_client)
    upload(alice_client)
    files = stored_files(settings)
    response = upload(alice_client)

    html = response.content.decode()
    assert 'id="upload-errors"' in html
    assert "Too many uploads: at most 2 a minute. Try again in 59 seconds." in html
    assert WorkspaceAsset.objects.filter(owner=alice).count() == 2
    assert stored_files(settings) == files

    upload(bob_client)
    assert WorkspaceAsset.objects.filter(owner=bob).count() == 1


def test_the_count_starts_again_each_minute(alice, monkeypatch):
    for _ in range(2):
        throttle.rate_limit(user=alice, action="upload")
    with pytest.raises(ValidationError):
        throttle.rate_limit(user=alice, action="upload")

    later = throttle.time.time() + throttle.WINDOW_SECONDS
    monkeypatch.setattr(throttle, "time", SimpleNamespace(time=lambda: later))
    throttle.rate_limit(user=alice, action="upload")


def test_a_limit_of_zero_is_no_limit(alice, settings):
    settings.USER_RATE_LIMITS = {"job": 0}
    for _ in range(50):
        throttle.rate_limit(user=alice, action="job")
