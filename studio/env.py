"""Strict readers for settings that come from the environment.

A typo in a boolean or a number should stop the process at start-up, not quietly fall back to a
default, so each reader raises ImproperlyConfigured on anything it cannot parse.
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_pair(name: str) -> tuple[str, str] | None:
    """Two comma-separated values, e.g. SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https; None when unset."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ImproperlyConfigured(f"{name} must be two comma-separated values, got {raw!r}")
    return parts[0], parts[1]


def env_secret(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(name, default)


def env_int_suffixed(suffix: str, *, besides: frozenset[str] = frozenset()) -> dict[str, int]:
    """Every variable named <NAME><suffix> that is set, read as env_int reads one, keyed by NAME in
    lower case: FAL_CONCURRENCY=8 gives {"fal": 8} for suffix "_CONCURRENCY". Names in `besides`
    mean something else and are left out."""
    pattern = re.compile(rf"([A-Z][A-Z0-9]*){re.escape(suffix)}")
    found: dict[str, int] = {}
    for name in sorted(os.environ):
        match = pattern.fullmatch(name)
        if match and name not in besides and os.environ[name] != "":
            found[match.group(1).lower()] = env_int(name, 0)
    return found
