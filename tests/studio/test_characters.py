"""Characters in the sidebar: create, rename, delete, select."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from generation.models import GenerationJob, LoraTraining, TrainingStatus
from studio.models import Character
from studio.services import character_create
from tests.studio.helpers import htmx, make_character, make_job, make_ready_training

pytestmark = pytest.mark.django_db


def test_create_selects_the_new_character(alice_client, alice):
    response = alice_client.post(reverse("studio:character-create"), {"name": "  Mira  "})

    mira = Character.objects.get(owner=alice)
    assert mira.name == "Mira"
    assert response.status_code == 302
    assert response["Location"] == f"/?character={mira.pk}"
    html = alice_client.get(reverse("studio:home")).content.decode()
    assert f'id="selected-character" value="{mira.pk}"' in html
    assert "Created Mira." in html


@pytest.mark.parametrize(("name", "message"), [("", "Give the character a name."), ("x" * 101, "under 100 characters")])
def test_a_bad_name_is_shown_next_to_the_field(alice_client, name, message):
    response = alice_client.post(reverse("studio:character-create"), {"name": name})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Character.objects.exists()


@pytest.mark.parametrize("name", ["Mira", "mira", "  MIRA "])
def test_a_name_the_user_already_has_is_refused_whatever_its_case(alice_client, alice, name):
    make_character(alice, "Mira")

    response = alice_client.post(reverse("studio:character-create"), {"name": name})

    assert response.status_code == 400
    assert "You already have a character with this name." in response.content.decode()
    assert Character.objects.filter(owner=alice).count() == 1


def test_another_user_may_have_the_same_name(alice_client, alice, bob):
    make_character(bob, "Mira")
    assert alice_client.post(reverse("studio:character-create"), {"name": "mira"}).status_code == 302
    assert Character.objects.filter(name__iexact="mira").count() == 2


def test_rename_to_a_name_the_user_already_has_keeps_the_name_and_says_why(alice_client, alice):
    make_character(alice, "Mira")
    zed = make_character(alice, "Zed")

    html = alice_client.post(
        reverse("studio:character-rename", args=[zed.pk]), {"name": "MIRA"}, **htmx()
    ).content.decode()

    assert "You already have a character with this name." in html
    assert Character.objects.get(pk=zed.pk).name == "Zed"
    # Only the case of its own name changes: that is no duplicate.
    alice_client.post(reverse("studio:character-rename", args=[zed.pk]), {"name": "ZED"}, **htmx())
    assert Character.objects.get(pk=zed.pk).name == "ZED"


def test_two_posts_at_once_with_one_name_make_one_character(alice, monkeypatch):
    make_character(alice, "Mira")
    # Both posts passed the check before either saved: the database constraint decides.
    monkeypatch.setattr(Character, "validate_constraints", lambda self, exclude=None: None)

    with pytest.raises(ValidationError, match="You already have a character with this name."):
        character_create(owner=alice, name="mira")
    assert Character.objects.filter(owner=alice).count() == 1


def test_rename_rerenders_the_sidebar(alice_client, alice):
    mira = make_character(alice, "Mira")
    response = alice_client.post(reverse("studio:character-rename", args=[mira.pk]), {"name": "Mirabel"}, **htmx())

    mira.refresh_from_db()
    assert mira.name == "Mirabel"
    html = response.content.decode()
    assert html.lstrip().startswith('<aside id="sidebar"')
    assert "Mirabel" in html


def test_rename_to_nothing_keeps_the_name_and_says_why(alice_client, alice):
    mira = make_character(alice, "Mira")
    html = alice_client.post(
        reverse("studio:character-rename", args=[mira.pk]), {"name": " "}, **htmx()
    ).content.decode()
    assert "Give the character a name." in html
    assert Character.objects.get(pk=mira.pk).name == "Mira"


def test_delete_keeps_the_characters_images(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    job = make_job(alice, model, images=1)
    job.character = mira
    job.save()
    alice_client.get(reverse("studio:home"), {"character": str(mira.pk)})

    response = alice_client.post(reverse("studio:character-delete", args=[mira.pk]))

    assert response.status_code == 302 and response["Location"] == "/"
    assert not Character.objects.exists()
    assert GenerationJob.objects.filter(pk=job.pk).exists()
    assert 'id="selected-character" value=""' in alice_client.get("/").content.decode()


def test_delete_takes_its_loras_and_their_files_out_of_storage(
    alice_client, alice, model, django_capture_on_commit_callbacks
):
    mira = make_character(alice, "Mira")
    training = make_ready_training(alice, mira)
    dataset = default_storage.save(f"datasets/{alice.pk}/{training.pk}/dataset.zip", ContentFile(b"zip"))
    lora = training.lora_file.name
    assert default_storage.exists(lora) and default_storage.exists(dataset)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("studio:character-delete", args=[mira.pk]))

    assert response.status_code == 302
    assert not LoraTraining.objects.exists()
    assert not default_storage.exists(lora) and not default_storage.exists(dataset)


def test_delete_waits_for_a_running_training_to_be_canceled(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    training = make_ready_training(alice, mira)
    LoraTraining.objects.filter(pk=training.pk).update(status=TrainingStatus.RUNNING)

    response = alice_client.post(reverse("studio:character-delete", args=[mira.pk]), follow=True)

    assert "Mira is still training a LoRA: cancel the training on the dataset page" in response.content.decode()
    assert Character.objects.filter(pk=mira.pk).exists()
    assert default_storage.exists(LoraTraining.objects.get(pk=training.pk).lora_file.name)


@pytest.mark.parametrize("name", ["studio:character-rename", "studio:character-delete"])
def test_another_users_character_is_a_404(alice_client, bob, name):
    theirs = make_character(bob, "Bob's hero")
    assert alice_client.post(reverse(name, args=[theirs.pk]), {"name": "Mine now"}).status_code == 404
    assert Character.objects.get(pk=theirs.pk).name == "Bob's hero"


@pytest.mark.parametrize("name", ["studio:character-rename", "studio:character-delete"])
def test_they_reject_get(alice_client, alice, name):
    mira = make_character(alice)
    assert alice_client.get(reverse(name, args=[mira.pk])).status_code == 405
    assert alice_client.get(reverse("studio:character-create")).status_code == 405
