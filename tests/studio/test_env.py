from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from studio.env import env_bool, env_int, env_pair, env_secret


def test_env_bool_rejects_anything_but_a_boolean(monkeypatch):
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(ImproperlyConfigured):
        env_bool("FLAG")
    monkeypatch.setenv("FLAG", "false")
    assert env_bool("FLAG", True) is False


def test_env_int_rejects_garbage(monkeypatch):
    monkeypatch.setenv("NUM", "12x")
    with pytest.raises(ImproperlyConfigured):
        env_int("NUM", 1)


def test_env_secret_reads_a_file(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("s3cret\n")
    monkeypatch.setenv("API_KEY_FILE", str(path))
    assert env_secret("API_KEY") == "s3cret"


def test_env_pair_reads_two_values_or_refuses(monkeypatch):
    assert env_pair("PROXY_HEADER") is None
    monkeypatch.setenv("PROXY_HEADER", "HTTP_X_FORWARDED_PROTO, https")
    assert env_pair("PROXY_HEADER") == ("HTTP_X_FORWARDED_PROTO", "https")
    for bad in ("HTTP_X_FORWARDED_PROTO", "a,b,c", "a,"):
        monkeypatch.setenv("PROXY_HEADER", bad)
        with pytest.raises(ImproperlyConfigured):
            env_pair("PROXY_HEADER")
