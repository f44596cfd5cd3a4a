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
