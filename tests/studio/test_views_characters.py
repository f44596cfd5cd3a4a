"""The character wizard (four steps, state in the session) and the character page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from generation.models import GenerationJob, JobKind
from studio import wizard
from studio.models import Character, ProfileSet
from tests.factories import png_bytes
from tests.studio.helpers import htmx, make_asset, make_character, make_job

pytestmark = pytest.mark.django_db

STEP = reverse("studio:character-wizard-step")
APPEARANCE = {
    "gender": "woman",
    "age": "young adult",
    "hair_color": "red",
    "hair_style": "long wavy hair",
    "eye_color": "green",
    "features": "freckles",
}
IDENTITY = {"personality": "curious, bold", "style": "anime", "content_mode": "sfw"}


def _walk_to_base(client, name="Aria", **headers):
    client.post(STEP, {"step": 1, "action": "next", "name": name}, **headers)
    client.post(STEP, {"step": 2, "action": "next", **APPEARANCE}, **headers)
    return client.post(STEP, {"step": 3, "action": "next", **IDENTITY}, **headers)


def test_each_step_moves_on_with_htmx_and_keeps_the_answers_in_the_session(alice_client, model, enqueued):
    response = alice_client.post(STEP, {"step": 1, "action": "next", "name": " Aria "}, **htmx())
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="wizard"' in html and "<html" not in html  # a fragment, not a page
    assert "What does Aria look like?" in html

    alice_client.post(STEP, {"step": 2, "action": "next", **APPEARANCE}, **htmx())
    # A reload shows the same step, its earlier answers kept.
    page = alice_client.get(reverse("studio:character-wizard")).content.decode()
    assert "Who is Aria?" in page
    back = alice_client.post(STEP, {"step": 3, "action": "back", **IDENTITY}, **htmx()).content.decode()
    assert 'value="green" selected' in back and "freckles" in back
    assert not Character.objects.exists()


def test_the_last_step_creates_the_character_and_one_job_of_three_base_images(alice_client, alice, model, enqueued):
    response = _walk_to_base(alice_client, **htmx())

    aria = Character.objects.get(owner=alice)
    assert aria.name == "Aria"
    assert aria.appearance == APPEARANCE
    assert aria.identity == IDENTITY
    job = GenerationJob.objects.get(owner=alice)
    assert job.kind == JobKind.BASE_IMAGE
    assert job.images_requested == 3
    assert job.model == model  # the offline engine when no provider is configured
    assert job.character == aria
    assert "red hair" in job.final_prompt and "green eyes" in job.final_prompt and "anime" in job.final_prompt
    assert "Pick Aria's look" in response.content.decode()


@pytest.mark.parametrize(
    ("step", "data", "message"),
    [
        (1, {"name": ""}, "Give the character a name."),
        (2, {**APPEARANCE, "hair_color": "plaid"}, "Choose one of the listed options for hair colour."),
        (2, {**APPEARANCE, "eye_color": ""}, "Choose a eye colour."),
        (3, {**IDENTITY, "content_mode": "anything"}, "Choose one of the listed options for content mode."),
    ],
)
def test_bad_answers_stay_on_their_step_with_a_clear_error_and_nothing_saved(alice_client, step, data, message):
    session = alice_client.session
    session[wizard.SESSION_KEY] = {"step": step, "name": "Aria", "appearance": APPEARANCE}
    session.save()

    response = alice_client.post(STEP, {"step": step, "action": "next", **data})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert alice_client.session[wizard.SESSION_KEY]["step"] == step
    assert not Character.objects.exists()
    assert not GenerationJob.objects.exists()


def test_a_name_already_used_is_refused_at_the_first_step(alice_client, alice):
    make_character(alice, "Aria")
    response = alice_client.post(STEP, {"step": 1, "action": "next", "name": "aria"})
    assert response.status_code == 400
    assert "You already have a character with this name." in response.content.decode()
    assert Character.objects.count() == 1


def test_picking_a_base_image_locks_it_selects_the_character_and_ends_the_wizard(alice_client, alice, model, enqueued):
    _walk_to_base(alice_client)
    job = GenerationJob.objects.get()
    asset = make_asset(alice, job=job, index=1)

    response = alice_client.post(reverse("studio:character-wizard-pick", args=[asset.pk]), **htmx())

    aria = Character.objects.get()
    assert aria.locked_reference == asset
    assert response["HX-Redirect"] == f"/?character={aria.pk}"
    assert wizard.SESSION_KEY not in alice_client.session


def test_regenerate_makes_a_new_job_for_the_same_character(alice_client, model, enqueued):
    _walk_to_base(alice_client)
    alice_client.post(reverse("studio:character-wizard-regenerate"), **htmx())
    assert Character.objects.count() == 1
    assert GenerationJob.objects.filter(kind=JobKind.BASE_IMAGE).count() == 2


def test_upload_your_own_photo_becomes_the_portrait(alice_client, model, enqueued):
    _walk_to_base(alice_client)
    from django.core.files.uploadedfile import SimpleUploadedFile

    photo = SimpleUploadedFile("me.png", png_bytes(), content_type="image/png")
    response = alice_client.post(reverse("studio:character-wizard-upload"), {"image": photo})
    aria = Character.objects.get()
    assert response.status_code == 302
    assert aria.locked_reference is not None and aria.locked_reference.source == "upload"


def test_a_bad_upload_is_refused_with_its_reason(alice_client, model, enqueued):
    _walk_to_base(alice_client)
    from django.core.files.uploadedfile import SimpleUploadedFile

    junk = SimpleUploadedFile("me.png", b"not an image", content_type="image/png")
    response = alice_client.post(reverse("studio:character-wizard-upload"), {"image": junk})
    assert response.status_code == 400
    assert Character.objects.get().locked_reference is None


def test_another_users_image_cannot_be_picked(alice_client, bob, model, enqueued):
    _walk_to_base(alice_client)
    theirs = make_asset(bob)
    response = alice_client.post(reverse("studio:character-wizard-pick", args=[theirs.pk]))
    assert response.status_code == 404
    assert Character.objects.get().locked_reference is None


def test_the_character_page_shows_and_edits_the_answers(alice_client, alice, model):
    aria = make_character(alice, "Aria", appearance=APPEARANCE, identity=IDENTITY)
    make_job(alice, model)
    page = alice_client.get(reverse("studio:character", args=[aria.pk])).content.decode()
    assert "freckles" in page and "Dating profile" in page

    response = alice_client.post(
        reverse("studio:character-edit", args=[aria.pk]),
        {"name": "Aria", **APPEARANCE, "hair_color": "silver", **IDENTITY},
    )
    assert response.status_code == 302
    aria.refresh_from_db()
    assert aria.appearance["hair_color"] == "silver"


def test_another_users_character_page_answers_404(bob_client, alice):
    aria = make_character(alice, "Aria")
    assert bob_client.get(reverse("studio:character", args=[aria.pk])).status_code == 404
    assert bob_client.post(reverse("studio:character-edit", args=[aria.pk]), {"name": "X"}).status_code == 404
    set_id = ProfileSet.objects.first().pk
    assert bob_client.post(reverse("studio:character-profile-set", args=[aria.pk, set_id])).status_code == 404


def test_a_profile_set_is_one_job_whose_images_are_its_shots(alice_client, alice, model, enqueued):
    portrait = make_asset(alice)
    aria = make_character(alice, "Aria", appearance=APPEARANCE, identity=IDENTITY, locked_reference=portrait)
    dating = ProfileSet.objects.get(name="Dating profile")

    alice_client.post(reverse("studio:character-profile-set", args=[aria.pk, dating.pk]))

    job = GenerationJob.objects.get(kind=JobKind.PROFILE_SET)
    shots = list(dating.shots.all())
    assert job.images_requested == len(shots) == 6
    assert job.references == [{"asset": str(portrait.pk)}]
    assert [s["name"] for s in job.params["shots"]] == [s.name for s in shots]
    assert "in a cosy café" in job.params["shots"][1]["prompt"]
    assert "red hair" in job.params["shots"][1]["prompt"]
    card = alice_client.get(reverse("studio:character", args=[aria.pk])).content.decode()
    assert "Dating profile</h3>" in card and "Coffee date" in card
