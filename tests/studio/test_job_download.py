"""Download all: a ZIP of a job's images, streamed, named by batch index."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from generation.models import JobStatus
from tests.studio.helpers import make_job

pytestmark = pytest.mark.django_db


def download(client, job):
    return client.get(reverse("studio:job-download", args=[job.pk]))


def test_it_streams_a_zip_of_the_images_in_batch_order(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.PARTIAL, failed=(1,))
    response = download(alice_client, job)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="job-{job.pk.hex[:8]}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    assert archive.namelist() == ["image-01.png", "image-03.png", "image-04.png"]
    for asset in job.assets.order_by("batch_index"):
        with asset.file.open("rb") as fh:
            assert archive.read(f"image-{asset.batch_index + 1:02d}.png") == fh.read()


def test_a_job_without_images_has_nothing_to_download(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.FAILED, failed=(0,), images=1)
    assert download(alice_client, job).status_code == 404


def test_another_users_zip_is_a_404(alice_client, bob, model):
    assert download(alice_client, make_job(bob, model)).status_code == 404
