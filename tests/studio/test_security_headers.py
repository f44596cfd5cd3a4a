"""Response headers: a Content-Security-Policy that allows nothing inline, a Permissions-Policy, and
`Cache-Control: private` on a logged-in user's pages (`no-store` on htmx partials)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from generation.models import JobStatus
from tests.studio.helpers import htmx, make_job

pytestmark = pytest.mark.django_db

TEMPLATES = Path(django_settings.BASE_DIR) / "templates"


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parsed = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


def assert_strict_csp(response) -> None:
    csp = directives(response)
    assert csp["default-src"] == ["'self'"]
    for name in ("script-src", "style-src"):
        assert csp[name] == ["'self'"]
        assert "'unsafe-inline'" not in csp[name] and "'unsafe-eval'" not in csp[name]
    assert {"'self'", "data:", "blob:"} <= set(csp["img-src"])
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]


def assert_permissions_policy(response) -> None:
    policy = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment"):
        assert f"{feature}=()" in policy


def cache_control(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",")}


def test_the_studio_page_is_private_and_under_the_policy(alice_client):
    response = alice_client.get(reverse("studio:home"))

    assert response.status_code == 200
    assert_strict_csp(response)
    assert_permissions_policy(response)
    assert "private" in cache_control(response)


def test_an_htmx_partial_is_private_and_never_stored(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(1,))
    response = alice_client.get(reverse("studio:job-card", args=[job.pk]), **htmx())

    assert response.status_code == 200
    assert {"private", "no-store"} <= cache_control(response)
    assert_strict_csp(response)
    assert_permissions_policy(response)


def test_the_login_page_is_under_the_policy_and_not_cached(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert_strict_csp(response)
    assert_permissions_policy(response)
    assert {"private", "no-store"} <= cache_control(response)  # LoginView's never_cache


def test_the_admin_is_under_the_policy_and_has_no_inline_script(staff_client):
    for url in (reverse("admin:index"), reverse("admin:models_registry_apimodel_changelist")):
        response = staff_client.get(url)
        assert response.status_code == 200
        assert_strict_csp(response)
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url


def test_htmx_runs_without_eval_and_without_its_injected_style(alice_client):
    html = alice_client.get(reverse("studio:home")).content.decode()
    config = json.loads(re.search(r"""<meta name="htmx-config" content='([^']*)'>""", html).group(1))
    assert config["includeIndicatorStyles"] is False and config["allowEval"] is False
    assert "style" not in config["attributesToSettle"]
    css = (Path(django_settings.BASE_DIR) / "static/studio/studio.css").read_text()
    assert ".htmx-request .htmx-indicator" in css


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_carries_inline_script_style_or_handlers(path):
    html = re.sub(r"{#.*?#}|{% comment %}.*?{% endcomment %}", "", path.read_text(), flags=re.DOTALL)
    assert not re.search(r"\sstyle\s*=", html), "style attribute"
    assert not re.search(r"<style[\s>]", html), "<style> block"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "on* handler attribute"
    assert not re.search(r"\shx-on", html), "hx-on needs eval"
    assert not re.search(r"""javascript:|=\s*['"]js:""", html), "code in an attribute needs eval"
