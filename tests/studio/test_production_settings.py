"""studio.settings as production reads it: `check --deploy` is clean, https is enforced only when
DEBUG is off, and the CSP lets images load from where presigned media URLs point.

Each test runs Django in a subprocess with an environment of its own, because settings are read
from the environment once, at import."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

BASE_DIR = Path(django_settings.BASE_DIR)

SHOW_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
from django.core.files.storage import default_storage
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SECURE_PROXY_SSL_HEADER": settings.SECURE_PROXY_SSL_HEADER,
    "img-src": settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["img-src"],
    "media_url": default_storage.url("assets/x.png"),
}))
"""


def environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A production environment and nothing of the test run's (its database, Redis, media folder)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "studio.example.com",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def settings_in(env: dict[str, str]) -> dict:
    result = run(["-c", SHOW_SETTINGS], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_finds_nothing_with_the_production_environment(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], environment(tmp_path))

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNING" not in output and "?: (security" not in output


def test_production_enforces_https_behind_the_configured_proxy(tmp_path):
    values = settings_in(environment(tmp_path))

    assert values["SECURE_SSL_REDIRECT"] and values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["img-src"] == ["'self'", "data:", "blob:"]  # local media: nothing more


def test_debug_keeps_plain_http_working(tmp_path):
    values = settings_in(environment(tmp_path, DEBUG="1", SECRET_KEY=None, ALLOWED_HOSTS=None))

    assert values["DEBUG"] is True
    assert not values["SECURE_SSL_REDIRECT"] and not values["SESSION_COOKIE_SECURE"]
    assert not values["CSRF_COOKIE_SECURE"] and not values["SECURE_HSTS_SECONDS"]


@pytest.mark.parametrize(
    "storage",
    [
        {"AWS_S3_REGION_NAME": "eu-west-1"},
        {"AWS_S3_ENDPOINT_URL": "https://minio.example.net:9000", "AWS_S3_REGION_NAME": "us-east-1"},
    ],
    ids=["aws", "custom-endpoint"],
)
def test_images_may_load_from_where_presigned_media_urls_point(tmp_path, storage):
    env = environment(
        tmp_path, AWS_STORAGE_BUCKET_NAME="studio-media", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b", **storage
    )
    values = settings_in(env)

    media = urlsplit(values["media_url"])
    assert f"{media.scheme}://{media.netloc}" in values["img-src"]
    assert "X-Amz-Signature=" in media.query
