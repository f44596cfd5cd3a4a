"""Under ASGI (the Procfile's web), files and ZIPs go out a chunk at a time, not read whole first."""

from __future__ import annotations

import io
import os
import warnings
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from studio.files import FILE_CHUNK_BYTES
from studio.models import WorkspaceAsset
from tests.studio.helpers import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def asgi_get(user, url: str) -> tuple[int, bool, list[bytes]]:
    """(status, whether the body came as an async stream, its chunks), served as on ASGI."""

    async def get():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(url)
        chunks = [chunk async for chunk in response.streaming_content]
        return response.status_code, response.is_async, chunks

    with warnings.catch_warnings():
        # Django warns when an ASGI response reads a synchronous stream whole: that must not happen.
        warnings.simplefilter("error")
        return async_to_sync(get)()


def test_an_image_goes_out_as_an_async_stream_of_its_bytes(alice, model):
    job = make_job(alice, model, images=1)
    asset = WorkspaceAsset.objects.get(job=job)
    with asset.file.storage.open(asset.file.name, "wb") as stored:
        stored.write(os.urandom(300_000))  # a full-size image's weight: several chunks

    status, is_async, chunks = asgi_get(alice, reverse("studio:asset-file", args=[asset.pk]))

    assert status == 200 and is_async
    with asset.file.open("rb") as stored:
        data = stored.read()
    assert b"".join(chunks) == data
    # Big chunks: each one is a hop to a thread (75 at FileResponse's 4 KB default).
    assert len(chunks) == -(-len(data) // FILE_CHUNK_BYTES) == 3


def test_a_jobs_zip_goes_out_in_many_chunks_as_it_is_written(alice, model):
    job = make_job(alice, model, images=3)

    status, is_async, chunks = asgi_get(alice, reverse("studio:job-download", args=[job.pk]))

    assert status == 200 and is_async
    assert len(chunks) > 3  # written and sent image by image, not one buffered body
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert len(archive.namelist()) == 3 and archive.testzip() is None
