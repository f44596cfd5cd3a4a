"""Per image: open, download, delete (owner only, POST) and lock as the character's portrait."""

from __future__ import annotations

import re

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from generation.models import GenerationJob
from studio.models import Character, WorkspaceAsset
from tests.studio.helpers import htmx, make_asset, make_character, make_job

pytestmark = pytest.mark.django_db


def test_the_owner_opens_and_downloads_an_image(alice_client, alice, model):
    job = make_job(alice, model, images=1)
    asset = job.assets.get()
    url = reverse("studio:asset-file", args=[asset.pk])

    opened = alice_client.get(url)
    assert opened.status_code == 200 and opened["Content-Type"] == "image/png"
    assert "attachment" not in opened.get("Content-Disposition", "")
    downloaded = alice_client.get(url, {"download": "1"})
    assert downloaded["Content-Disposition"] == f'attachment; filename="silver-hair-portrait-{job.pk.hex[:8]}-01.png"'
    assert alice_client.get(reverse("studio:asset-thumbnail", args=[asset.pk])).status_code == 200


def test_another_users_image_is_a_404_everywhere(alice_client, bob, model):
    asset = make_asset(bob)
    assert alice_client.get(reverse("studio:asset-file", args=[asset.pk])).status_code == 404
    assert alice_client.get(reverse("studio:asset-thumbnail", args=[asset.pk])).status_code == 404
    assert alice_client.post(reverse("studio:asset-delete", args=[asset.pk]), **htmx()).status_code == 404
    assert alice_client.post(reverse("studio:asset-lock", args=[asset.pk]), **htmx()).status_code == 404
    assert WorkspaceAsset.objects.filter(pk=asset.pk).exists()


def test_delete_removes_the_image_and_its_files_and_the_card_shows_the_gap(
    alice_client, alice, model, django_capture_on_commit_callbacks
):
    job = make_job(alice, model, images=2)
    asset = job.assets.get(batch_index=1)
    names = [asset.file.name, asset.thumbnail.name]

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("studio:asset-delete", args=[asset.pk]), **htmx())

    assert response.status_code == 200
    assert not WorkspaceAsset.objects.filter(pk=asset.pk).exists()
    assert not any(default_storage.exists(name) for name in names)
    html = response.content.decode()
    assert html.lstrip().startswith(f'<article id="job-{job.pk}"')
    assert 'class="tile deleted"' in html


def test_delete_rejects_get(alice_client, alice):
    asset = make_asset(alice)
    assert alice_client.get(reverse("studio:asset-delete", args=[asset.pk])).status_code == 405


def test_deleting_a_reference_or_a_portrait_updates_the_bar_and_the_sidebar(alice_client, alice, model):
    asset = make_asset(alice)
    mira = make_character(alice, "Mira", locked_reference=asset)
    alice_client.post(reverse("studio:reference-use", args=[asset.pk]), **htmx())

    html = alice_client.post(reverse("studio:asset-delete", args=[asset.pk]), **htmx()).content.decode()

    assert '<div id="prompt-controls" class="prompt-controls" hx-swap-oob="true">' in html
    assert 'name="ref1"' not in html
    assert '<aside id="sidebar" class="sidebar" aria-labelledby="sidebar-title" hx-swap-oob="true">' in html
    mira.refresh_from_db()
    assert mira.locked_reference is None


def test_lock_as_portrait_sets_the_selected_characters_portrait(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    asset = make_asset(alice)
    alice_client.get(reverse("studio:home"), {"character": str(mira.pk)})

    response = alice_client.post(reverse("studio:asset-lock", args=[asset.pk]), **htmx())

    mira.refresh_from_db()
    assert mira.locked_reference == asset
    html = response.content.decode()
    assert "Locked as Mira's portrait." in html or "Locked as Mira&#x27;s portrait." in html
    assert reverse("studio:asset-thumbnail", args=[asset.pk]) in html


def test_lock_without_a_selected_character_explains_what_to_do(alice_client, alice):
    asset = make_asset(alice)
    html = alice_client.post(reverse("studio:asset-lock", args=[asset.pk]), **htmx()).content.decode()
    assert "Select or create a character first" in html


def test_lock_onto_another_users_character_is_a_404(alice_client, alice, bob):
    asset = make_asset(alice)
    theirs = make_character(bob, "Bob's hero")
    response = alice_client.post(reverse("studio:asset-lock", args=[asset.pk]), {"character": str(theirs.pk)}, **htmx())
    assert response.status_code == 404
    assert Character.objects.get(pk=theirs.pk).locked_reference is None


def test_lock_without_javascript_redirects_with_a_message(alice_client, alice):
    mira = make_character(alice, "Mira")
    asset = make_asset(alice)
    response = alice_client.post(
        reverse("studio:asset-lock", args=[asset.pk]), {"character": str(mira.pk)}, follow=True
    )
    assert b"Locked as Mira" in response.content


def lock_buttons(html: str) -> list[str]:
    return re.findall(r'<button[^>]*aria-label="Lock as portrait"[^>]*>', html)


def test_lock_is_enabled_on_every_render_of_a_card_once_a_character_is_selected(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    job = make_job(alice, model, images=2)
    # Mira's job: with Mira selected the gallery shows only hers.
    GenerationJob.objects.filter(pk=job.pk).update(character=mira)
    home = reverse("studio:home")

    for html in (
        alice_client.get(home, {"character": str(mira.pk)}).content.decode(),  # the full page
        alice_client.get(home).content.decode(),  # a later page load: the session's selection
        alice_client.get(reverse("studio:job-card", args=[job.pk]), **htmx()).content.decode(),
        alice_client.get(reverse("studio:gallery"), **htmx()).content.decode(),  # "Load more"
    ):
        buttons = lock_buttons(html)
        assert len(buttons) == 2
        assert not any(" disabled" in button for button in buttons), buttons

    html = alice_client.get(home, {"character": "none"}).content.decode()
    assert all(" disabled" in button for button in lock_buttons(html))
