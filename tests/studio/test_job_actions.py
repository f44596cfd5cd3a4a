"""Retry failed and Cancel: POST only, owner only; the card comes back re-rendered."""

from __future__ import annotations

import pytest
from django.urls import reverse

from generation.models import GenerationJob, JobStatus, SlotStatus
from tests.studio.helpers import htmx, make_job

pytestmark = pytest.mark.django_db


def test_retry_reopens_only_the_failed_images_and_the_card_polls_again(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.PARTIAL, failed=(1, 3))
    response = alice_client.post(reverse("studio:job-retry", args=[job.pk]), **htmx())

    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    assert sorted(job.slots.filter(status=SlotStatus.PENDING).values_list("index", flat=True)) == [1, 3]
    html = response.content.decode()
    assert 'hx-trigger="every 100ms"' in html
    assert "Generating 2/4..." in html


def test_retry_of_a_job_without_failures_says_why(alice_client, alice, model):
    job = make_job(alice, model)
    html = alice_client.post(reverse("studio:job-retry", args=[job.pk]), **htmx()).content.decode()
    assert "Only a job with failed images can be retried." in html


def test_retry_without_javascript_redirects_to_the_card(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.FAILED, failed=(0,), images=1)
    response = alice_client.post(reverse("studio:job-retry", args=[job.pk]))
    assert response.status_code == 302
    assert response["Location"].endswith(f"#job-{job.pk}")


def test_cancel_stops_a_running_job_and_keeps_what_arrived(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(2, 3))
    response = alice_client.post(reverse("studio:job-cancel", args=[job.pk]), **htmx())

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    html = response.content.decode()
    assert "Canceled. Generated 2 of 4 images." in html
    assert "hx-trigger" not in html


@pytest.mark.parametrize("name", ["studio:job-retry", "studio:job-cancel"])
def test_they_reject_get(alice_client, alice, model, name):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(0,))
    assert alice_client.get(reverse(name, args=[job.pk])).status_code == 405


@pytest.mark.parametrize("name", ["studio:job-retry", "studio:job-cancel"])
def test_another_users_job_is_a_404(alice_client, bob, model, name):
    job = make_job(bob, model, status=JobStatus.PARTIAL, failed=(0,))
    assert alice_client.post(reverse(name, args=[job.pk]), **htmx()).status_code == 404
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.PARTIAL
