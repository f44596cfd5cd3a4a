"""Generated images on S3 (moto in server mode over loopback): stored privately, served to the
owner through a short-lived presigned URL."""

from __future__ import annotations

from unittest import mock

import pytest
import requests

from generation.models import ImageSlot
from generation.providers.base import GeneratedImage
from generation.services.jobs import job_create
from generation.services.store import slot_store
from studio.models import WorkspaceAsset
from tests.factories import offline_model, png_bytes
from tests.s3 import moto_server, s3_client, use_s3

BUCKET = "charstudio-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    yield from moto_server(BUCKET)


@pytest.fixture
def s3_storage(settings, s3_endpoint):
    use_s3(settings, s3_endpoint, BUCKET)
    return s3_client(s3_endpoint)


def test_a_generated_image_lands_in_the_bucket_and_the_owner_gets_a_presigned_url(
    s3_storage, alice_client, alice, client, bob
):
    with mock.patch("generation.enqueue.send"):
        job = job_create(user=alice, model=offline_model(), prompt="x", images=1)
    slot = ImageSlot.objects.get(job=job, index=0)

    assert slot_store(job=job, slot=slot, image=GeneratedImage(data=png_bytes((200, 250)))) is True

    asset = WorkspaceAsset.objects.get(job=job)
    keys = {o["Key"] for o in s3_storage.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {asset.file.name, asset.thumbnail.name} <= keys

    response = alice_client.get(f"/assets/{asset.pk}/file")
    assert response.status_code == 302
    presigned = response["Location"]
    assert "X-Amz-Signature=" in presigned and "X-Amz-Expires=600" in presigned
    fetched = requests.get(presigned, timeout=5)
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"
    # Without the signature the object is private.
    assert requests.get(presigned.split("?")[0], timeout=5).status_code == 403

    client.force_login(bob)
    assert client.get(f"/assets/{asset.pk}/file").status_code == 404
