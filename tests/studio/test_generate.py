"""Generate: the prompt form creates one job (plain post or htmx), and says clearly why when it cannot."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from generation.models import CreditAccount, GenerationJob, JobMode
from models_registry.models import ApiModel
from tests.factories import offline_model
from tests.studio.helpers import htmx, make_asset, make_character

pytestmark = pytest.mark.django_db

GENERATE = reverse("studio:generate")


def post(client, api_model, *, hx=True, **fields):
    data = {
        "prompt": "silver hair, red eyes",
        "model": api_model.pk,
        "images": 1,
        "enhance": "on",
        "enhance_present": "1",
    }
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    return client.post(GENERATE, data, **(htmx() if hx else {}))


def test_it_creates_a_job_and_returns_its_card_for_the_top_of_the_gallery(alice_client, alice, model):
    response = post(alice_client, model, images=4)

    job = GenerationJob.objects.get(owner=alice)
    assert (job.images_requested, job.mode, job.prompt) == (4, JobMode.T2I, "silver hair, red eyes")
    html = response.content.decode()
    assert html.lstrip().startswith(f'<article id="job-{job.pk}"')
    assert "Generating 0/4..." in html
    assert 'hx-trigger="every 100ms"' in html
    # Out of band: the balance, a fresh idempotency key and cleared errors.
    assert 'id="credits" class="credits" hx-swap-oob="true"' in html and "99 credits" in html
    assert re.search(r'id="idempotency-key" value="[0-9a-f-]{36}" hx-swap-oob="true"', html)
    assert 'id="prompt-errors" class="form-errors is-empty" role="alert" hx-swap-oob="true"' in html


def test_without_javascript_it_redirects_to_the_gallery(alice_client, alice, model):
    response = post(alice_client, model, hx=False)
    assert response.status_code == 302
    assert response["Location"].endswith("#gallery")
    assert GenerationJob.objects.filter(owner=alice).count() == 1
    # The bar still shows what was asked.
    assert b"silver hair, red eyes</textarea>" in alice_client.get(reverse("studio:home")).content


def test_a_double_submit_makes_one_job(alice_client, alice, model):
    key = str(uuid.uuid4())
    post(alice_client, model, idempotency_key=key)
    second = post(alice_client, model, idempotency_key=key)

    assert GenerationJob.objects.filter(owner=alice).count() == 1
    assert second["HX-Reswap"] == "none"
    assert CreditAccount.objects.get(user=alice).balance == 99


def test_out_of_credits_is_a_clear_message_and_no_job(alice_client, alice, model):
    CreditAccount.objects.create(user=alice, balance=0)
    response = post(alice_client, model)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#prompt-errors"
    assert b"You are out of credits" in response.content
    assert not GenerationJob.objects.exists()


def test_errors_without_javascript_rerender_the_page_with_the_values_kept(alice_client, alice, model):
    CreditAccount.objects.create(user=alice, balance=0)
    response = post(alice_client, model, hx=False, prompt="keep these words", images=4)

    assert response.status_code == 400
    html = response.content.decode()
    assert "You are out of credits" in html
    assert "keep these words</textarea>" in html
    assert 'id="images-4" value="4" checked' in html


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ""}, "Write a prompt first."),
        ({"images": 3}, "can make 1, 2, 4 images per job, not 3."),
        ({"model": 999999}, "Choose one of the available models."),
        ({"model": None}, "Choose a model."),
        ({"images": "lots"}, "Choose a count."),
    ],
)
def test_bad_input_is_shown_inline(alice_client, model, fields, message):
    response = post(alice_client, model, **fields)
    assert message in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_a_model_without_its_key_is_refused_with_the_hint(alice_client, settings):
    settings.FAL_KEY = ""
    flux = ApiModel.objects.create(
        key="fal-ai/flux-2", display_name="Flux-2", provider="fal", tasks=["t2i"], price_per_image=Decimal("0.025")
    )
    response = post(alice_client, flux)
    assert "Flux-2 is not set up on this server. Set FAL_KEY" in response.content.decode()


def test_modify_sends_the_reference_at_half_strength(alice_client, alice, model):
    ref = make_asset(alice)
    post(alice_client, model, ref1=str(ref.pk), mode="modify", strength="0.5")

    job = GenerationJob.objects.get()
    assert job.mode == JobMode.I2I_MODIFY
    assert job.references == [{"asset": str(ref.pk)}]
    assert job.params["reference_strength"] == 0.5 and job.params["enhance"] is True


def test_copy_sends_the_reference_at_095_without_enhancement(alice_client, alice, model):
    ref = make_asset(alice)
    # A COPY form posts no "enhance" (the box is disabled) and may have no prompt at all.
    post(alice_client, model, ref1=str(ref.pk), mode="copy", strength="0.95", enhance=None, prompt="")

    job = GenerationJob.objects.get()
    assert job.mode == JobMode.I2I_COPY
    assert job.params["reference_strength"] == 0.95 and job.params["enhance"] is False
    assert job.params["denoise"] <= 0.05


def test_ref2_reaches_only_models_that_take_several_references(alice_client, alice, model):
    one_ref = offline_model("offline/one-ref", tasks=["t2i", "i2i"])
    ref1, ref2 = make_asset(alice), make_asset(alice, color=(0, 200, 0))

    post(alice_client, model, ref1=str(ref1.pk), ref2=str(ref2.pk))
    post(alice_client, one_ref, ref1=str(ref1.pk), ref2=str(ref2.pk))

    multi, single = GenerationJob.objects.order_by("created_at")
    assert multi.references == [{"asset": str(ref1.pk)}, {"asset": str(ref2.pk)}]
    assert single.references == [{"asset": str(ref1.pk)}]


def test_another_users_reference_or_character_is_refused(alice_client, bob, model):
    theirs = make_asset(bob)
    response = post(alice_client, model, ref1=str(theirs.pk))
    assert "That reference image does not exist." in response.content.decode()

    character = make_character(bob, "Bob's hero")
    response = post(alice_client, model, character=str(character.pk))
    assert "That character does not exist any more." in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_the_selected_character_is_used(alice_client, alice, model):
    mira = make_character(alice, "Mira", appearance={"hair_color": "silver"})
    post(alice_client, model, character=str(mira.pk))
    job = GenerationJob.objects.get()
    assert job.character == mira
    assert job.final_prompt.startswith("silver hair, ")


def test_it_rejects_get(alice_client):
    assert alice_client.get(GENERATE).status_code == 405


def test_with_a_portrait_locked_every_generation_uses_it_as_ref1(alice_client, alice, model):
    portrait = make_asset(alice)
    aria = make_character(alice, "Aria", locked_reference=portrait, appearance={"hair_color": "red"})
    html = alice_client.get(reverse("studio:home"), {"character": str(aria.pk)}).content.decode()
    assert "Aria's portrait" in html
    assert f'name="ref1" value="{portrait.pk}"' in html

    post(alice_client, model, character=str(aria.pk), ref1=str(portrait.pk), scene="on a beach")

    job = GenerationJob.objects.get()
    assert job.references == [{"asset": str(portrait.pk)}]
    assert job.mode == JobMode.I2I_MODIFY
    assert job.final_prompt.startswith("red hair, silver hair, red eyes, on a beach")


def test_the_portrait_removed_from_ref1_stays_out_for_one_run_only(alice_client, alice, model):
    portrait = make_asset(alice)
    aria = make_character(alice, "Aria", locked_reference=portrait)
    alice_client.get(reverse("studio:home"), {"character": str(aria.pk)})

    cleared = alice_client.post(reverse("studio:reference-clear"), {"slot": "1"}, **htmx()).content.decode()
    assert "Aria's portrait" not in cleared
    post(alice_client, model, character=str(aria.pk))  # this run: text-to-image with the description
    assert GenerationJob.objects.get().mode == JobMode.T2I

    again = alice_client.get(reverse("studio:home")).content.decode()
    assert "Aria's portrait" in again
