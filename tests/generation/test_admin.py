"""Staff's totals in admin: every user's spend this month above the job list."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from generation.models import GenerationJob, JobStatus
from studio.models import AssetSource, WorkspaceAsset
from tests.factories import offline_model

pytestmark = pytest.mark.django_db


def test_the_job_list_shows_every_users_spend_and_the_batch_saving(staff_client, alice, bob):
    model = offline_model(price_per_image=Decimal("0.0400"))
    for user, batch in ((alice, True), (bob, False)):
        job = GenerationJob.objects.create(
            owner=user, model=model, status=JobStatus.SUCCEEDED, cost=Decimal("0.02") if batch else Decimal("0.04")
        )
        WorkspaceAsset.objects.create(
            owner=user,
            job=job,
            source=AssetSource.GENERATED,
            file=f"x/{user.pk}.png",
            metadata={"model": model.key, "provider": "offline", "batch": batch},
        )
    page = staff_client.get(reverse("admin:generation_generationjob_changelist")).content.decode()
    assert "<strong>$0.06</strong> on 2 images" in page
    assert "Batch mode saved <strong>$0.02</strong> on 1 image" in page
    assert page.index(bob.username) < page.index(alice.username, page.index("spend-totals"))  # highest first


def test_batches_are_listed_for_staff(staff_client):
    assert staff_client.get(reverse("admin:generation_batch_changelist")).status_code == 200
