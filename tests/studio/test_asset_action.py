"""A gallery image's buttons (studio.views.asset_action): one form per card, the button says what."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studio.models import Character, WorkspaceAsset
from tests.studio.helpers import htmx, make_character, make_job

pytestmark = pytest.mark.django_db

ACTION = reverse("studio:asset-action")


def press(client, action: str, asset, hx: bool = True, **fields):
    value = asset.pk.hex if hasattr(asset, "pk") else asset
    return client.post(ACTION, {action: value, **fields}, **(htmx() if hx else {}))


def test_ref_1_and_ref_2_fill_those_slots_and_answer_into_the_prompt_bar(alice_client, alice, model):
    first, second = make_job(alice, model, images=2).assets.order_by("batch_index")

    response = press(alice_client, "use2", first, prompt="silver hair")
    assert response["HX-Retarget"] == "#prompt-controls" and response["HX-Reswap"] == "outerHTML"
    html = press(alice_client, "use1", second).content.decode()
    assert f'name="ref1" value="{second.pk}"' in html and f'name="ref2" value="{first.pk}"' in html


def test_a_dropped_image_takes_the_next_free_slot(alice_client, alice, model):
    (asset,) = make_job(alice, model, images=1).assets.all()
    html = press(alice_client, "use", asset).content.decode()
    assert f'name="ref1" value="{asset.pk}"' in html


def test_lock_makes_the_characters_portrait_and_answers_into_the_sidebar(alice_client, alice, model):
    mira = make_character(alice, "Mira")
    (asset,) = make_job(alice, model, images=1).assets.all()

    response = press(alice_client, "lock", asset, character=str(mira.pk))
    assert response["HX-Retarget"] == "#sidebar"
    assert "Locked as Mira" in response.content.decode()
    assert Character.objects.get(pk=mira.pk).locked_reference_id == asset.pk


def test_delete_answers_with_the_card_and_its_gap(alice_client, alice, model):
    job = make_job(alice, model, images=2)
    asset = job.assets.get(batch_index=1)

    response = press(alice_client, "delete", asset)
    assert response["HX-Retarget"] == f"#job-{job.pk}"
    assert 'aria-label="Image 2 deleted"' in response.content.decode()
    assert not WorkspaceAsset.objects.filter(pk=asset.pk).exists()


def test_without_javascript_it_redirects_back_like_the_per_image_views(alice_client, alice, model):
    job = make_job(alice, model, images=1)
    response = press(alice_client, "delete", job.assets.get(), hx=False)
    assert response.status_code == 302 and response["Location"].endswith(f"#job-{job.pk}")


@pytest.mark.parametrize("action", ["use", "use1", "use2", "lock", "delete"])
def test_another_users_image_is_a_404_and_stays(alice_client, bob, model, action):
    (theirs,) = make_job(bob, model, images=1).assets.all()
    assert press(alice_client, action, theirs).status_code == 404
    assert WorkspaceAsset.objects.filter(pk=theirs.pk).exists()


def test_a_bad_id_is_a_404_and_no_button_a_400(alice_client):
    assert press(alice_client, "delete", "not-an-id").status_code == 404
    response = alice_client.post(ACTION, {}, **htmx())
    assert response.status_code == 400 and b"Press one of an image's buttons." in response.content
    assert alice_client.get(ACTION).status_code == 405
