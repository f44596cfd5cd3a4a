"""References sent to providers: one per stored file, and presigned URLs with life left in them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.files.base import ContentFile

from generation.lib.presign import expires_within, url_expires_at
from generation.models import JobMode
from generation.services import runs
from generation.services.jobs import job_create
from studio.models import WorkspaceAsset
from tests.factories import offline_model, png_bytes
from tests.s3 import moto_server, use_s3

BUCKET = "charstudio-references"
SIGNED_AT = datetime(2026, 1, 1, tzinfo=UTC)
SIGV4 = (
    "https://b.s3.amazonaws.com/u/ref.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z"
    "&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd"
)
SIGV2 = "https://b.s3.amazonaws.com/u/ref.png?AWSAccessKeyId=AKIA&Signature=abc%3D&Expires=1767225900"


class TestPresignedExpiry:
    def test_it_reads_a_sigv4_url(self):
        assert url_expires_at(SIGV4) == SIGNED_AT + timedelta(seconds=600)

    def test_it_reads_a_sigv2_or_cloudfront_url(self):
        assert url_expires_at(SIGV2) == SIGNED_AT + timedelta(seconds=300)

    @pytest.mark.parametrize(
        "url",
        [
            "https://b.s3.amazonaws.com/u/ref.png",
            "https://b.s3.amazonaws.com/u/ref.png?X-Amz-Date=20260101T000000Z",  # no lifetime
            "https://b.s3.amazonaws.com/u/ref.png?X-Amz-Date=yesterday&X-Amz-Expires=600",
            "https://b.s3.amazonaws.com/u/ref.png?Expires=soon",
        ],
    )
    def test_it_says_nothing_about_a_url_it_cannot_read(self, url):
        assert url_expires_at(url) is None
        assert expires_within(url, seconds=300, now=SIGNED_AT) is False

    @pytest.mark.parametrize(
        ("seconds_after_signing", "within"),
        [(0, False), (299, False), (300, True), (301, True), (900, True)],
    )
    def test_it_flags_urls_with_five_minutes_or_less_left(self, seconds_after_signing, within):
        now = SIGNED_AT + timedelta(seconds=seconds_after_signing)
        assert expires_within(SIGV4, seconds=300, now=now) is within


def make_asset(owner, name: str = "ref.png") -> WorkspaceAsset:
    asset = WorkspaceAsset(owner=owner, source="upload", width=64, height=80, content_type="image/png")
    asset.file.save(name, ContentFile(png_bytes()), save=False)
    asset.save()
    return asset


def i2i_job(user, references):
    with mock.patch("generation.enqueue.send"):
        return job_create(
            user=user, model=offline_model(), prompt="x", mode=JobMode.I2I_MODIFY, references=[r.pk for r in references]
        )


@pytest.mark.django_db
class TestDeduplication:
    def test_the_same_reference_twice_is_sent_once(self, alice):
        ref = make_asset(alice)
        job = i2i_job(alice, [ref, ref])
        assert len(job.references) == 2
        assert [r.key for r in runs._references(job)] == [ref.file.name]

    def test_two_assets_of_one_stored_file_are_sent_once(self, alice):
        ref = make_asset(alice)
        copy = WorkspaceAsset.objects.create(owner=alice, source="upload", file=ref.file.name, content_type="image/png")
        other = make_asset(alice, "other.png")
        references = runs._references(i2i_job(alice, [ref, copy, other]))
        assert [r.key for r in references] == [ref.file.name, other.file.name]

    def test_local_disk_gives_no_url_and_the_bytes_travel_instead(self, alice):
        (reference,) = runs._references(i2i_job(alice, [make_asset(alice)]))
        assert reference.url is None and reference.data == png_bytes()


@pytest.fixture(scope="module")
def s3_endpoint():
    yield from moto_server(BUCKET)


def expires_param(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


@pytest.mark.django_db
class TestPresignedReferences:
    def test_a_url_about_to_expire_is_signed_again_for_an_hour(self, alice, settings, s3_endpoint):
        use_s3(settings, s3_endpoint, BUCKET, expire=120)  # the storage hands out two-minute URLs
        (reference,) = runs._references(i2i_job(alice, [make_asset(alice)]))
        assert expires_param(reference.url) == runs.REFERENCE_URL_EXPIRE_SECONDS
        fetched = requests.get(reference.url, timeout=5)
        assert fetched.status_code == 200 and fetched.content == png_bytes()

    def test_a_url_with_enough_life_left_is_kept(self, alice, settings, s3_endpoint):
        use_s3(settings, s3_endpoint, BUCKET, expire=600)
        (reference,) = runs._references(i2i_job(alice, [make_asset(alice)]))
        assert expires_param(reference.url) == 600
