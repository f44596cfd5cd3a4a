"""When a presigned storage URL stops working, read from the URL itself.

S3 SigV4 URLs carry X-Amz-Date (signing time, UTC "YYYYMMDDTHHMMSSZ") and X-Amz-Expires
(seconds); SigV2 and CloudFront URLs carry Expires (Unix seconds). A URL with neither is not
presigned, or in a form this module does not know, and is reported as having no expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit


def url_expires_at(url: str) -> datetime | None:
    """The moment the presigned URL expires (aware, UTC), or None when it says nothing readable."""
    params = {name.lower(): value for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    signed_at, lifetime = params.get("x-amz-date"), params.get("x-amz-expires")
    if signed_at is not None and lifetime is not None:
        try:
            start = datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return start + timedelta(seconds=int(lifetime))
        except (ValueError, OverflowError):
            return None
    expires = params.get("expires")
    if expires is not None:
        try:
            return datetime.fromtimestamp(int(expires), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return None


def expires_within(url: str, *, seconds: float, now: datetime | None = None) -> bool:
    """Whether the URL expires (or has expired) within `seconds` from now."""
    expires_at = url_expires_at(url)
    if expires_at is None:
        return False
    now = now or datetime.now(tz=UTC)
    return expires_at - now <= timedelta(seconds=seconds)
