"""Download all: a ZIP of a job's images, streamed; each image has the name it downloads under alone."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from generation.models import GenerationJob, JobStatus
from tests.studio.helpers import make_character, make_job

pytestmark = pytest.mark.django_db


def download(client, job):
    return client.get(reverse("studio:job-download", args=[job.pk]))


def test_it_streams_a_zip_of_the_images_in_batch_order(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.PARTIAL, failed=(1,))
    response = download(alice_client, job)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    short = job.pk.hex[:8]
    assert response["Content-Disposition"] == f'attachment; filename="silver-hair-portrait-{short}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    assert archive.namelist() == [f"silver-hair-portrait-{short}-{n:02d}.png" for n in (1, 3, 4)]
    for asset in job.assets.order_by("batch_index"):
        with asset.file.open("rb") as fh:
            assert archive.read(f"silver-hair-portrait-{short}-{asset.batch_index + 1:02d}.png") == fh.read()


def zip_names(client, job) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(b"".join(download(client, job).streaming_content))).namelist()


def download_name(client, asset) -> str:
    response = client.get(reverse("studio:asset-file", args=[asset.pk]), {"download": "1"})
    return response["Content-Disposition"].removeprefix('attachment; filename="').removesuffix('"')


def test_an_image_has_the_same_name_alone_as_in_the_zip(alice_client, alice, model):
    job = make_job(alice, model, images=2, prompt="Silver hair, red eyes — night city!")
    second = job.assets.get(batch_index=1)

    assert download_name(alice_client, second) == f"silver-hair-red-eyes-night-city-{job.pk.hex[:8]}-02.png"
    assert download_name(alice_client, second) in zip_names(alice_client, job)


def test_a_characters_images_are_named_after_it_and_long_prompts_are_cut_at_a_word(alice_client, alice, model):
    mira = make_character(alice, "Mira the Brave")
    for_mira = make_job(alice, model, images=1, prompt="anything")
    GenerationJob.objects.filter(pk=for_mira.pk).update(character=mira)
    rambling = make_job(alice, model, images=1, prompt="a very long prompt " * 20)
    copy = make_job(alice, model, images=1, prompt="")

    assert zip_names(alice_client, for_mira) == [f"mira-the-brave-{for_mira.pk.hex[:8]}-01.png"]
    assert zip_names(alice_client, rambling) == [
        f"a-very-long-prompt-a-very-long-prompt-a-{rambling.pk.hex[:8]}-01.png"
    ]
    assert zip_names(alice_client, copy) == [f"portrait-{copy.pk.hex[:8]}-01.png"]


def test_a_job_without_images_has_nothing_to_download(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.FAILED, failed=(0,), images=1)
    assert download(alice_client, job).status_code == 404


def test_another_users_zip_is_a_404(alice_client, bob, model):
    assert download(alice_client, make_job(bob, model)).status_code == 404
