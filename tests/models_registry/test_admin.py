"""The registry rules, exercised through Django admin's own add and change forms."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from models_registry.models import ApiModel

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:models_registry_apimodel_add")


def form_data(**overrides) -> dict:
    data = {
        "key": "fal-ai/new-model",
        "display_name": "New model",
        "provider": "fal",
        "modality": "image",
        "tasks": json.dumps(["t2i"]),
        "is_active": "on",
        "priority": "0",
        "input_schema": json.dumps({"properties": {"num_images": {"type": "integer", "maximum": 4}}}),
        "capabilities": json.dumps({}),
        "price_per_image": "0.0100",
    }
    data.update(overrides)
    return data


def field_errors(response, field: str) -> list[str]:
    form = response.context["adminform"].form
    return [str(e) for e in form.errors.get(field, [])]


def test_staff_add_a_valid_model(staff_client):
    response = staff_client.post(ADD_URL, form_data())
    assert response.status_code == 302
    model = ApiModel.objects.get(key="fal-ai/new-model")
    assert model.max_images == 4


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_schema", "{not json", "Enter a valid JSON."),
        ("capabilities", "[1, 2", "Enter a valid JSON."),
        ("input_schema", json.dumps({"properties": {"num_images": {"maximum": 0}}}), "positive integer"),
        ("input_schema", json.dumps({"properties": {"num_images": {"maximum": "4"}}}), "positive integer"),
        ("capabilities", json.dumps({"max_imagez": 2}), 'Unknown capability "max_imagez"'),
        ("capabilities", json.dumps({"max_images": -2}), "positive integer"),
        ("tasks", json.dumps(["t2i", "upscale"]), "Unknown task"),
    ],
)
def test_invalid_registry_json_is_a_form_error_and_saves_nothing(staff_client, field, value, message):
    response = staff_client.post(ADD_URL, form_data(**{field: value}))
    assert response.status_code == 200
    assert any(message in error for error in field_errors(response, field)), field_errors(response, field)
    assert not ApiModel.objects.filter(key="fal-ai/new-model").exists()


def test_an_invalid_change_leaves_the_row_as_it_was(staff_client):
    model = ApiModel.objects.create(
        key="fal-ai/kept",
        display_name="Kept",
        provider="fal",
        tasks=["t2i"],
        input_schema={"properties": {"num_images": {"maximum": 4}}},
    )
    url = reverse("admin:models_registry_apimodel_change", args=[model.pk])
    response = staff_client.post(
        url,
        form_data(
            key="fal-ai/kept",
            display_name="Renamed",
            input_schema=json.dumps({"properties": {"num_images": {"maximum": -1}}}),
        ),
    )
    assert response.status_code == 200
    model.refresh_from_db()
    assert model.display_name == "Kept"
    assert model.max_images == 4


def test_the_list_shows_derived_columns_filters_and_search(staff_client):
    ApiModel.objects.create(
        key="fal-ai/edit-model",
        display_name="Edit model",
        provider="fal",
        tasks=["i2i", "i2i_multi"],
        input_schema={"properties": {"num_images": {"maximum": 4}, "image_urls": {"type": "array"}}},
    )
    ApiModel.objects.create(key="gemini-x", display_name="Gemini X", provider="gemini", tasks=["t2i"])
    url = reverse("admin:models_registry_apimodel_changelist")

    response = staff_client.get(url)
    content = response.content.decode()
    assert "image_urls" in content and "i2i, i2i_multi" in content

    by_task = staff_client.get(url, {"task": "i2i"}).content.decode()
    assert "fal-ai/edit-model" in by_task and "gemini-x" not in by_task

    by_provider = staff_client.get(url, {"provider__exact": "gemini"}).content.decode()
    assert "gemini-x" in by_provider and "fal-ai/edit-model" not in by_provider

    searched = staff_client.get(url, {"q": "edit-model"}).content.decode()
    assert "fal-ai/edit-model" in searched and "gemini-x" not in searched


def test_jobs_and_assets_are_read_only_in_admin(staff_client):
    assert staff_client.get(reverse("admin:generation_generationjob_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:generation_generationjob_add")).status_code == 403
    assert staff_client.get(reverse("admin:studio_workspaceasset_add")).status_code == 403


def test_non_staff_cannot_reach_the_registry(alice_client):
    response = alice_client.get(reverse("admin:models_registry_apimodel_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def change_form(model: ApiModel, **overrides) -> dict:
    """The change form as admin shows it for `model`, with `overrides` typed in."""
    shown = {
        "key": model.key,
        "display_name": model.display_name,
        "provider": model.provider,
        "tasks": json.dumps(model.tasks),
        "input_schema": json.dumps(model.input_schema),
        "capabilities": json.dumps(model.capabilities),
    }
    return form_data(**{**shown, **overrides})


@pytest.mark.parametrize(
    ("provider", "input_schema", "capabilities", "field", "message"),
    [
        # The offline engine renders 4 images a request, whatever the row says.
        ("offline", {"properties": {"num_images": {"maximum": 4}}}, {"max_images": 99}, "capabilities", "at most 4"),
        ("offline", {"properties": {"num_images": {"maximum": 8}}}, {}, "input_schema", "at most 4"),
        # Gemini answers one image per request.
        ("gemini", {"properties": {"prompt": {}}}, {"max_images": 2}, "capabilities", "at most 1 image a"),
        # fal and Replicate: the model's own schema is the provider's limit.
        ("fal", {"properties": {"num_images": {"maximum": 4}}}, {"max_images": 6}, "capabilities", "at most 4"),
        ("replicate", {"properties": {"num_outputs": {"maximum": 4}}}, {"max_images": 5}, "capabilities", "at most 4"),
    ],
)
def test_a_max_images_above_the_providers_limit_is_a_form_error_and_changes_nothing(
    staff_client, provider, input_schema, capabilities, field, message
):
    model = ApiModel.objects.create(
        key=f"{provider}/kept", display_name="Kept", provider=provider, tasks=["t2i"], input_schema=input_schema
    )
    url = reverse("admin:models_registry_apimodel_change", args=[model.pk])

    response = staff_client.post(
        url, change_form(model, input_schema=json.dumps(input_schema), capabilities=json.dumps(capabilities))
    )

    assert response.status_code == 200
    assert any(message in error for error in field_errors(response, field)), field_errors(response, field)
    model.refresh_from_db()
    assert model.capabilities == {}


@pytest.mark.parametrize(
    ("provider", "input_schema", "capabilities"),
    [
        ("offline", {"properties": {"num_images": {"maximum": 4}}}, {"max_images": 4}),
        ("offline", {"properties": {"num_images": {"maximum": 4}}}, {"max_images": 1}),  # fan out instead
        ("gemini", {"properties": {"prompt": {}}}, {"max_images": 1}),
        ("fal", {"properties": {"num_images": {"maximum": 4}}}, {"max_images": 2}),
        ("replicate", {"properties": {"num_outputs": {"maximum": 4}}}, {"max_images": 4}),
    ],
)
def test_a_max_images_within_the_providers_limit_is_saved(staff_client, provider, input_schema, capabilities):
    model = ApiModel.objects.create(
        key=f"{provider}/kept", display_name="Kept", provider=provider, tasks=["t2i"], input_schema=input_schema
    )
    url = reverse("admin:models_registry_apimodel_change", args=[model.pk])

    response = staff_client.post(url, change_form(model, capabilities=json.dumps(capabilities)))

    assert response.status_code == 302, field_errors(response, "capabilities")
    model.refresh_from_db()
    assert model.max_images == capabilities["max_images"]
