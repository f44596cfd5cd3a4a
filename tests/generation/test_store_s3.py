"""Generated images on S3 (moto in server mode over loopback): stored privately, served to the
owner through a short-lived presigned URL."""

from __future__ import annotations

import socket
from unittest import mock

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from generation.models import ImageSlot
from generation.providers.base import GeneratedImage
from generation.services.jobs import job_create
from generation.services.store import slot_store
from studio.models import WorkspaceAsset
from tests.factories import offline_model, png_bytes

BUCKET = "charstudio-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_storage(settings, s3_endpoint):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 600,
                "signature_version": "s3v4",
                "file_overwrite": False,
            },
        },
    }
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def test_a_generated_image_lands_in_the_bucket_and_the_owner_gets_a_presigned_url(
    s3_storage, alice_client, alice, client, bob
):
    with mock.patch("generation.services.jobs._enqueue_dispatch"):
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
