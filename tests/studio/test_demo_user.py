"""`manage.py ensure_demo_user`: the demo/demo superuser exists only where DEBUG is on (`make run`)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def test_with_debug_on_it_creates_the_demo_login(settings):
    settings.DEBUG = True
    out = StringIO()
    call_command("ensure_demo_user", stdout=out)

    demo = get_user_model().objects.get(username="demo")
    assert demo.is_superuser and demo.check_password("demo")
    assert "Log in at http://127.0.0.1:8000/ as  demo / demo" in out.getvalue()


def test_with_debug_off_it_refuses_clearly_and_creates_nobody(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match=r"Refusing to create the demo login .* with DEBUG off") as refused:
        call_command("ensure_demo_user")

    assert refused.value.returncode != 0  # what manage.py exits with
    assert not get_user_model().objects.exists()


def test_it_names_the_address_make_run_serves(settings):
    settings.DEBUG = True
    out = StringIO()
    call_command("ensure_demo_user", "--url", "http://127.0.0.1:8080/", stdout=out)
    assert "Log in at http://127.0.0.1:8080/ as  demo / demo" in out.getvalue()
