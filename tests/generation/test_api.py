from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from generation.models import ImageSlot
from generation.providers.base import GeneratedImage
from generation.services import runs
from generation.services.finish import job_finish_if_done, slot_fail
from generation.services.jobs import job_create
from generation.services.store import slot_store
from tests.factories import offline_model, png_bytes


@pytest.fixture
def partial_job(alice):
    with mock.patch("generation.enqueue.send"):
        job = job_create(user=alice, model=offline_model(), prompt="fox", images=2)
    runs.job_dispatch(job.pk)
    slot_store(job=job, slot=ImageSlot.objects.get(job=job, index=0), image=GeneratedImage(data=png_bytes(), seed=3))
    slot_fail(ImageSlot.objects.get(job=job, index=1).pk, job.pk, "Failed: Too Many Requests", "429")
    job_finish_if_done(job.pk)
    return job


def test_the_owner_gets_status_progress_images_and_errors(alice_client, partial_job):
    data = alice_client.get(reverse("generation:api-job-detail", args=[partial_job.pk])).json()
    assert data["status"] == "partial"
    assert (data["success"], data["failed"]) == (1, 1)
    assert data["progress"] == {"done": 2, "total": 2}
    assert data["errors"] == [{"index": 1, "error": "Failed: Too Many Requests", "details": "429"}]
    assert [i["index"] for i in data["images"]] == [0]
    image = alice_client.get(data["images"][0]["url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"


def test_another_user_gets_404_for_the_job_and_its_files(client, bob, alice_client, partial_job):
    url = reverse("generation:api-job-detail", args=[partial_job.pk])
    image_url = alice_client.get(url).json()["images"][0]["url"]
    client.force_login(bob)
    assert client.get(url).status_code == 404
    assert client.get(image_url).status_code == 404


def test_anonymous_users_are_sent_to_log_in(client, partial_job):
    response = client.get(reverse("generation:api-job-detail", args=[partial_job.pk]))
    assert response.status_code == 302
