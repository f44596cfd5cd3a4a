"""Changing the model re-renders the chips, prices and notes without a page reload; how each chip runs."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from models_registry.models import ApiModel
from studio.prompt_options import batch_plan, chip_counts
from tests.factories import offline_model
from tests.studio.helpers import htmx

pytestmark = pytest.mark.django_db

OPTIONS = reverse("studio:prompt-options")


def chips_of(client, model, images=1):
    response = client.get(OPTIONS, {"model": model.pk, "images": images, "prompt": "typed"}, **htmx())
    assert response.status_code == 200
    return response.content.decode()


def test_it_returns_only_the_controls_fragment(alice_client, model):
    html = chips_of(alice_client, model)
    assert html.lstrip().startswith('<div id="prompt-controls"')
    assert "<html" not in html and "<textarea" not in html


def test_a_native_batch_runs_in_one_request(alice_client, model):
    html = chips_of(alice_client, model)
    assert "1 request, 1 image" in html
    assert "1 request, 2 images" in html
    assert "1 request, 4 images" in html
    assert "≈ $0.04" in html


def test_a_one_image_model_makes_one_request_per_image(alice_client, db):
    single = offline_model("offline/single", max_images=1, price_per_image=Decimal("0.039"))
    html = chips_of(alice_client, single)
    assert '<span class="chip-plan">4 requests</span>' in html
    assert '<span class="chip-plan">1 request</span>' in html
    assert "≈ $0.156" in html


def test_a_smaller_native_maximum_is_chunked(alice_client, db):
    pairs = offline_model("offline/pairs", max_images=2)
    assert "2 requests, 4 images" in chips_of(alice_client, pairs)


def test_a_higher_native_maximum_is_offered_too(alice_client, db):
    seedream = offline_model("offline/ten", max_images=10, price_per_image=Decimal("0.025"))
    html = chips_of(alice_client, seedream, images=10)
    assert 'id="images-10" value="10" checked' in html
    assert "1 request, 10 images" in html
    assert "≈ $0.25" in html


def test_the_count_falls_back_to_x1_when_the_model_does_not_offer_it(alice_client, db):
    seedream = offline_model("offline/ten", max_images=10)
    other = offline_model("offline/four")
    chips_of(alice_client, seedream, images=10)
    html = alice_client.get(OPTIONS, {"model": other.pk}, **htmx()).content.decode()
    assert 'id="images-1" value="1" checked' in html


def test_the_choice_is_remembered_for_the_next_page_load(alice_client, db):
    first = offline_model("offline/a", display_name="Engine A", priority=10)
    second = offline_model("offline/b", display_name="Engine B", priority=5)
    chips_of(alice_client, second, images=2)
    html = alice_client.get(reverse("studio:home")).content.decode()
    assert f'<option value="{second.pk}" selected>' in html
    assert f'<option value="{first.pk}">' in html
    assert 'id="images-2" value="2" checked' in html
    assert "typed</textarea>" in html


def test_a_model_that_cannot_run_falls_back_to_one_that_can(alice_client, model, settings):
    settings.FAL_KEY = ""
    fal = offline_model("fal-ai/x", provider="fal", display_name="Needs key")
    html = alice_client.get(OPTIONS, {"model": fal.pk}, **htmx()).content.decode()
    assert f'<option value="{model.pk}" selected>' in html


def test_without_javascript_it_goes_back_to_the_page(alice_client, model):
    response = alice_client.get(OPTIONS, {"model": model.pk})
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("max_images", "count", "plan"),
    [
        (4, 4, "1 request, 4 images"),
        (1, 4, "4 requests"),
        (1, 1, "1 request"),
        (2, 4, "2 requests, 4 images"),
        (10, 10, "1 request, 10 images"),
    ],
)
def test_batch_plans(max_images, count, plan):
    assert batch_plan(offline_model(max_images=max_images), count) == plan


def test_chips_add_a_higher_native_maximum():
    assert chip_counts(offline_model(max_images=10)) == [1, 2, 4, 10]
    assert chip_counts(offline_model(max_images=1)) == [1, 2, 4]


def test_the_prompt_bar_leaves_lora_trainers_out(alice_client, model, db):
    ApiModel.objects.create(
        key="fal-ai/turbo-flux-trainer",
        display_name="Turbo Flux trainer",
        provider="fal",
        tasks=["lora_training"],
        input_schema={"properties": {"images_data_url": {"type": "string"}}},
    )
    page = alice_client.get(reverse("studio:home")).content.decode()
    assert model.display_name in page
    assert "Turbo Flux trainer" not in page
