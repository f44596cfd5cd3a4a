"""The studio page: prompt bar, model list, batch chips, credits, characters."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from generation.models import CreditAccount
from models_registry.models import ApiModel
from tests.factories import offline_model
from tests.studio.helpers import make_asset, make_character, make_job

pytestmark = pytest.mark.django_db

HOME = reverse("studio:home")


def fal_model(key="fal-ai/flux-2/flash", **kwargs):
    defaults = {
        "display_name": "Flux-2 Flash",
        "provider": "fal",
        "tasks": ["t2i"],
        "input_schema": {"properties": {"num_images": {"type": "integer", "maximum": 4}}},
        "price_per_image": Decimal("0.0100"),
    }
    defaults.update(kwargs)
    return ApiModel.objects.create(key=key, **defaults)


def test_it_renders_the_prompt_bar_with_models_grouped_by_provider(alice_client, model, settings):
    settings.FAL_KEY = "key"
    fal_model()
    html = alice_client.get(HOME).content.decode()

    assert '<optgroup label="Offline engine">' in html
    assert '<optgroup label="fal.ai">' in html
    assert "Offline · $0.01/image · offline preview" in html
    assert "Flux-2 Flash · $0.01/image</option>" in html
    assert 'name="idempotency_key"' in html
    assert 'hx-disabled-elt="#generate-btn"' in html


def test_x1_is_the_default_chip_and_each_chip_says_how_it_runs(alice_client, model):
    html = alice_client.get(HOME).content.decode()

    assert 'id="images-1" value="1" checked' in html
    assert "1 request, 4 images" in html
    assert "≈ $0.04" in html


def chip_labels(html: str) -> list[str]:
    labels = re.findall(r'<label for="images-\d+" class="chip".*?</label>', html, flags=re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", label).split()) for label in labels]


def test_each_chip_shows_the_provider_price_and_the_credit_the_job_takes(alice_client, model):
    assert chip_labels(alice_client.get(HOME).content.decode()) == [
        "x1 1 request, 1 image ≈ $0.01 1 credit",
        "x2 1 request, 2 images ≈ $0.02 1 credit",
        "x4 1 request, 4 images ≈ $0.04 1 credit",
    ]


def test_a_model_with_no_provider_cost_is_not_called_free(alice_client, db):
    offline_model(price_per_image=Decimal("0"))
    html = alice_client.get(HOME).content.decode()

    assert "Offline · no provider cost · offline preview</option>" in html
    labels = chip_labels(html)
    assert len(labels) == 3
    assert all(label.endswith("no provider cost 1 credit") for label in labels), labels
    assert "free" not in " ".join(labels)


def test_a_model_without_its_key_is_disabled_with_the_hint(alice_client, model, settings):
    settings.FAL_KEY = ""
    flux = fal_model()
    html = alice_client.get(HOME).content.decode()

    assert f'<option value="{flux.pk}" disabled title="Set FAL_KEY to use fal.ai models.">' in html


def test_an_image_to_image_only_model_is_disabled_without_a_reference(alice_client, model, settings):
    settings.FAL_KEY = "key"
    edit = fal_model("fal-ai/flux-pro/kontext", display_name="Kontext", tasks=["i2i"])
    html = alice_client.get(HOME).content.decode()

    assert f'<option value="{edit.pk}" disabled title="Needs a reference image.">' in html


def test_inactive_models_are_not_listed(alice_client, model):
    offline_model("offline/retired", display_name="Retired engine", is_active=False)
    assert b"Retired engine" not in alice_client.get(HOME).content


def test_the_credit_balance_is_shown_and_zero_is_flagged(alice_client, alice, model):
    CreditAccount.objects.create(user=alice, balance=7)
    assert b"7 credits" in alice_client.get(HOME).content

    CreditAccount.objects.filter(user=alice).update(balance=0)
    html = alice_client.get(HOME).content.decode()
    assert 'class="credits is-empty"' in html and "0 credits" in html


def test_with_no_usable_model_it_says_so(alice_client):
    assert b"No model is available right now." in alice_client.get(HOME).content


def test_it_lists_characters_and_selects_one_from_the_querystring(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    portrait = make_asset(alice)
    mira.locked_reference = portrait
    mira.save()
    make_character(alice, "Zed")

    html = alice_client.get(HOME, {"character": str(mira.pk)}).content.decode()
    assert "Zed" in html
    assert "Mira's locked portrait" in html
    assert reverse("studio:asset-thumbnail", args=[portrait.pk]) in html
    assert f'id="selected-character" value="{mira.pk}"' in html

    # The choice is remembered in the session.
    html = alice_client.get(HOME).content.decode()
    assert f'id="selected-character" value="{mira.pk}"' in html
    html = alice_client.get(HOME, {"character": "none"}).content.decode()
    assert 'id="selected-character" value=""' in html


def test_another_users_character_is_a_404(alice_client, bob, model):
    theirs = make_character(bob, "Bob's")
    assert alice_client.get(HOME, {"character": str(theirs.pk)}).status_code == 404
    assert alice_client.get(HOME, {"character": "not-a-uuid"}).status_code == 404


def test_the_page_refreshes_itself_without_javascript_while_a_job_runs(alice_client, alice, model):
    assert b'http-equiv="refresh"' not in alice_client.get(HOME).content
    make_job(alice, model, status="running", pending=(0, 1, 2, 3))
    assert b'<noscript><meta http-equiv="refresh"' in alice_client.get(HOME).content


def test_it_rejects_post(alice_client):
    assert alice_client.post(HOME).status_code == 405
