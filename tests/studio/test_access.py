from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_studio_needs_a_login(client):
    response = client.get(reverse("studio:home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_login_page_renders(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Log in" in response.content


def test_a_user_logs_in_and_reaches_the_studio(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("studio:home")
    assert response.status_code == 200


def test_a_wrong_password_is_refused_with_a_message(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


STUDIO_URLS = [
    ("studio:gallery", []),
    ("studio:generate", []),
    ("studio:prompt-options", []),
    ("studio:job-card", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:job-retry", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:job-cancel", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:job-download", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:asset-file", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:asset-thumbnail", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:asset-delete", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:asset-lock", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:reference-use", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:reference-upload", []),
    ("studio:reference-swap", []),
    ("studio:reference-clear", []),
    ("studio:reference-mode", []),
    ("studio:character-create", []),
    ("studio:character-rename", ["00000000-0000-0000-0000-000000000001"]),
    ("studio:character-delete", ["00000000-0000-0000-0000-000000000001"]),
]


@pytest.mark.parametrize(("name", "args"), STUDIO_URLS)
def test_every_studio_url_needs_a_login(client, name, args):
    url = reverse(name, args=args)
    for response in (client.get(url), client.post(url)):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_htmx_posts_need_the_csrf_token(alice):
    from django.test import Client

    from tests.studio.helpers import htmx

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("studio:reference-swap"), **htmx()).status_code == 403
    client.get(reverse("studio:home"))
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("studio:reference-swap"), **htmx(), HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_the_page_sends_the_csrf_token_with_every_htmx_request(alice_client):
    html = alice_client.get(reverse("studio:home")).content.decode()
    assert '<body hx-headers=\'{"X-CSRFToken": "' in html
