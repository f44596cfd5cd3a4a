"""The provider kinds table: a new provider is one adapter class and one row, and the registry's
admin, routing, the limits and the webhook URL all take it from there."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from generation import enqueue, limits
from generation.models import ProviderRequest, RequestStatus
from generation.providers import adapter_class
from generation.providers.base import GeneratedImage, Provider, ProviderResult, ResultStatus
from generation.providers.kinds import PROVIDER_KINDS, ProviderKind, provider_choices
from generation.providers.webhook_signing import standard_webhooks_verify
from generation.services import routing, runs
from generation.services.jobs import job_create
from generation.services.webhooks import webhook_url_for
from models_registry.models import ApiModel, FallbackChain, FallbackEntry
from tests.factories import offline_model, png_bytes
from tests.generation.providers import replicate_sign
from tests.models_registry.test_admin import form_data

SECRET = "whsec_" + "ZmFrZS1wcm92aWRlci1zaWduaW5nLWtleQ=="  # base64 of "fake-provider-signing-key"


class FakeProvider(Provider):
    """A whole provider: answers at once, and signs its webhooks with Standard Webhooks."""

    name = "fake"
    verified: list[str] = []

    def submit(self, request):
        images = [GeneratedImage(data=png_bytes()) for _ in range(request.num_images)]
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)

    @classmethod
    def verify_webhook(cls, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        delivery_id = standard_webhooks_verify(headers, body, secret=SECRET, now=now)
        cls.verified.append(delivery_id)
        return delivery_id

    @classmethod
    def webhook_provider_ids(cls, headers: Mapping[str, str], payload: dict[str, Any]) -> list[str]:
        return [str(payload["task"])] if payload.get("task") else []


FAKE = ProviderKind(
    "fake",
    "Fake provider",
    f"{__name__}.FakeProvider",
    concurrency=3,
    rate_per_second=7,
    webhooks=True,
)


@pytest.fixture
def fake_kind(monkeypatch):
    monkeypatch.setitem(PROVIDER_KINDS, FAKE.key, FAKE)
    monkeypatch.setattr(FakeProvider, "verified", [])
    keys = ["provider-health:fake", "provider-health:offline"]
    cache.delete_many(keys)
    yield FAKE
    cache.delete_many(keys)


def fake_model(**fields) -> ApiModel:
    defaults = {"display_name": "Fake", "provider": FAKE.key, "tasks": ["t2i"], "price_per_image": Decimal("0.01")}
    model, _ = ApiModel.objects.update_or_create(key="fake/model", defaults={**defaults, **fields})
    return model


def test_the_choices_are_the_table():
    assert provider_choices() == [(kind.key, kind.label) for kind in PROVIDER_KINDS.values()]
    assert ApiModel._meta.get_field("provider").choices == provider_choices()


@pytest.mark.parametrize("kind", list(PROVIDER_KINDS.values()), ids=lambda kind: kind.key)
def test_every_row_names_an_adapter_that_serves_it(kind):
    adapter = adapter_class(kind.key)
    assert issubclass(adapter, Provider)
    assert kind.concurrency >= 1
    assert re.fullmatch(r"[a-z][a-z0-9]*", kind.key)
    assert len(kind.key) <= ApiModel._meta.get_field("provider").max_length
    # A row that takes webhooks has an adapter that can check them.
    overrides = adapter.verify_webhook.__func__ is not Provider.verify_webhook.__func__
    assert overrides == kind.webhooks
    assert (adapter.webhook_provider_ids.__func__ is not Provider.webhook_provider_ids.__func__) == kind.webhooks


@pytest.mark.django_db
class TestAddingAProvider:
    def test_staff_can_choose_it_in_the_admin(self, fake_kind, staff_client):
        add = reverse("admin:models_registry_apimodel_add")
        form = staff_client.get(add).context["adminform"].form
        assert ("fake", "Fake provider") in list(form.fields["provider"].choices)

        data = form_data(key="fake/new-model", display_name="New fake model", provider="fake", input_schema="{}")
        assert staff_client.post(add, data).status_code == 302
        model = ApiModel.objects.get(key="fake/new-model")
        assert model.get_provider_display() == "Fake provider"

        changelist = staff_client.get(reverse("admin:models_registry_apimodel_changelist"))
        assert "?provider__exact=fake" in changelist.content.decode()  # the provider filter offers it

    def test_without_its_row_the_admin_refuses_it(self, staff_client):
        form = staff_client.get(reverse("admin:models_registry_apimodel_add")).context["adminform"].form
        assert "fake" not in dict(form.fields["provider"].choices)

    def test_routing_moves_a_job_to_it_along_a_chain(self, fake_kind, alice, enqueued):
        offline, fake = offline_model(), fake_model()
        chain, _ = FallbackChain.objects.get_or_create(task="t2i")
        chain.entries.all().delete()
        FallbackEntry.objects.create(chain=chain, model=offline, position=1)
        FallbackEntry.objects.create(chain=chain, model=fake, position=2)
        job = job_create(user=alice, model=offline, prompt="x", images=1)

        assert routing.provider_status("fake") == routing.HEALTHY
        assert routing.next_model(job=job, failed_model=offline) == fake

    def test_the_limits_default_to_its_row(self, fake_kind, settings):
        assert (limits.concurrency_for("fake"), limits.rate_per_second("fake")) == (3, 7)
        # The environment (FAKE_CONCURRENCY, FAKE_RATE_PER_SECOND) overrides the row.
        settings.PROVIDER_CONCURRENCY = {"fake": 1}
        settings.PROVIDER_RATE_PER_SECOND = {"fake": 0}
        assert (limits.concurrency_for("fake"), limits.rate_per_second("fake")) == (1, 0)

    def test_a_signed_delivery_at_its_webhook_url_reaches_its_verify_method(
        self, fake_kind, alice, settings, enqueued, django_capture_on_commit_callbacks
    ):
        settings.PUBLIC_BASE_URL = "https://studio.example"
        request = self.submitted(alice)
        url = webhook_url_for(request)
        assert url == f"https://studio.example/webhooks/fake/{request.pk}"
        body = json.dumps({"task": request.external_id, "state": "done"}).encode()

        with django_capture_on_commit_callbacks(execute=True):
            forged = self.post(url, body, replicate_sign(body))  # signed with another secret
            delivered = self.post(url, body, replicate_sign(body, secret=SECRET))

        assert forged.status_code == 401
        assert delivered.status_code == 200 and delivered.json() == {"status": "accepted"}
        assert len(FakeProvider.verified) == 1
        enqueued.assert_called_once_with(enqueue.WEBHOOK, str(request.pk))

    def test_a_row_without_webhooks_has_no_webhook_url(self, fake_kind, monkeypatch, alice, settings, enqueued):
        monkeypatch.setitem(PROVIDER_KINDS, FAKE.key, dataclasses.replace(FAKE, webhooks=False))
        settings.PUBLIC_BASE_URL = "https://studio.example"
        request = self.submitted(alice)
        assert webhook_url_for(request) is None
        body = json.dumps({"task": request.external_id}).encode()
        url = reverse("generation:webhook", args=["fake", request.pk])
        assert self.post(url, body, replicate_sign(body, secret=SECRET)).status_code == 404
        assert FakeProvider.verified == []

    @staticmethod
    def submitted(user) -> ProviderRequest:
        job = job_create(user=user, model=fake_model(), prompt="x", images=1)
        (request_id,) = runs.job_dispatch(job.pk)
        ProviderRequest.objects.filter(pk=request_id).update(status=RequestStatus.SUBMITTED, external_id="task-1")
        return ProviderRequest.objects.get(pk=request_id)

    @staticmethod
    def post(url: str, body: bytes, headers: dict):
        return Client(enforce_csrf_checks=True).post(url, data=body, content_type="application/json", headers=headers)
