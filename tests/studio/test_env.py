from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from studio.env import env_bool, env_int, env_int_suffixed, env_pair, env_secret


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


def test_env_int_suffixed_reads_each_set_variable_by_its_name(monkeypatch):
    monkeypatch.setenv("FAL_TESTLIMIT", "8")
    monkeypatch.setenv("COMFYUI2_TESTLIMIT", "0")
    monkeypatch.setenv("REPLICATE_TESTLIMIT", "")  # set but empty: the default stands
    monkeypatch.setenv("lower_TESTLIMIT", "5")
    assert env_int_suffixed("_TESTLIMIT") == {"fal": 8, "comfyui2": 0}
    monkeypatch.setenv("GEMINI_TESTLIMIT", "lots")
    with pytest.raises(ImproperlyConfigured):
        env_int_suffixed("_TESTLIMIT")


def test_env_int_suffixed_leaves_out_the_names_it_is_told_mean_something_else(monkeypatch):
    monkeypatch.setenv("FAL_TESTLIMIT", "3")
    monkeypatch.setenv("WEB_TESTLIMIT", "${WEB_CONCURRENCY:-3}")  # a Procfile process count, never read here
    assert env_int_suffixed("_TESTLIMIT", besides=frozenset({"WEB_TESTLIMIT"})) == {"fal": 3}
