"""A reference upload is stored as a full re-encode: bytes the sender hid in the file never reach storage."""

from __future__ import annotations

from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from studio.models import WorkspaceAsset
from tests.generation.lib.test_imaging import PAYLOAD, png_with_stored_payload
from tests.studio.helpers import htmx

pytestmark = pytest.mark.django_db


def pixels(data: bytes) -> bytes:
    with Image.open(BytesIO(data)) as image:
        return image.tobytes()


def test_a_payload_in_stored_png_data_is_not_stored_and_the_pixels_are(alice_client, alice, model):
    source = png_with_stored_payload()
    upload = SimpleUploadedFile("me.png", source, content_type="image/png")
    alice_client.post(reverse("studio:reference-upload"), {"image": upload}, **htmx())

    asset = WorkspaceAsset.objects.get(owner=alice)
    with asset.file.open("rb") as stored, asset.thumbnail.open("rb") as thumbnail:
        data, thumb = stored.read(), thumbnail.read()
    assert PAYLOAD not in data and PAYLOAD not in thumb
    assert pixels(data) == pixels(source)
