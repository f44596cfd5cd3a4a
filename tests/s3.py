"""S3 for tests: moto in server mode on loopback, and settings that point storage at it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
from moto.server import ThreadedMotoServer

CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_server(*buckets: str) -> Iterator[str]:
    """Run a moto S3 server with `buckets` made; yield its endpoint URL (use as a fixture body)."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def use_s3(settings, endpoint: str, bucket: str, *, expire: int = 600) -> None:
    """Point the default storage at the moto bucket, as production settings would at S3."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": endpoint,
                "region_name": CREDENTIALS["region_name"],
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": expire,
                "signature_version": "s3v4",
                "file_overwrite": False,
            },
        },
    }
