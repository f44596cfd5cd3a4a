"""A job card: progress while running (polled), then the outcome; 286 stops the polling."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from generation.models import JobStatus
from generation.services.finish import job_finish_if_done, slot_fail
from studio.job_cards import card_version
from tests.studio.helpers import htmx, make_job

pytestmark = pytest.mark.django_db


def card(client, job, hx=True):
    return client.get(reverse("studio:job-card", args=[job.pk]), **(htmx() if hx else {}))


def test_a_running_job_shows_progress_and_keeps_polling(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(2, 3))
    response = card(alice_client, job)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Generating 2/4..." in html
    assert 'role="progressbar"' in html and 'data-step="10"' in html  # 2 of 4: 10 × 5%
    # Served on WSGI (the test client), a page has no live stream: its running cards poll quickly,
    # naming the version they show.
    version = card_version(job.status, job.updated_at, False)
    assert f'hx-get="/jobs/{job.pk}/card?v={quote(version)}" hx-trigger="every 100ms" hx-swap="outerHTML"' in html
    assert "sse-swap" not in html
    assert html.count('class="tile placeholder"') == 2
    assert "Cancel" in html


def test_a_finished_job_answers_286_without_a_trigger(alice_client, alice, model):
    job = make_job(alice, model)
    response = card(alice_client, job)

    assert response.status_code == 286
    html = response.content.decode()
    assert "hx-trigger" not in html
    assert "Generated 4 of 4 images." in html and "outcome-success" in html
    assert html.count('class="tile"') == 4
    assert f"/jobs/{job.pk}/download" in html
    assert 'id="credits"' in html and 'hx-swap-oob="true"' in html  # a refund shows at once


def test_a_partial_job_is_orange_with_each_error_and_retry(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.PARTIAL, failed=(2,), error="Safety filter blocked it.")
    html = card(alice_client, job).content.decode()

    assert "outcome-partial" in html
    assert "Generated 3 of 4 images. 1 failed." in html
    assert "<strong>Image 3:</strong> Safety filter blocked it." in html
    assert "Retry failed" in html


def test_a_failed_job_is_red_with_the_reason(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.FAILED, failed=(0, 1), images=2, error="Invalid API key.")
    html = card(alice_client, job).content.decode()

    assert "outcome-failed" in html
    assert "All 2 images failed." in html
    assert "Invalid API key." in html
    assert "Retry failed" in html


def test_a_job_whose_failures_are_all_permanent_does_not_offer_retry(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, images=3, pending=(1, 2))
    blocked, transient = job.slots.get(index=1), job.slots.get(index=2)
    slot_fail(blocked.pk, job.pk, "Safety filter blocked it.", permanent=True)
    slot_fail(transient.pk, job.pk, "The provider kept failing: 503.")
    job_finish_if_done(job.pk)

    # One failure may go away on a retry: offered.
    assert "Retry failed" in card(alice_client, job).content.decode()

    # Every failure would repeat (the prompt is refused): not offered, and the reason is still shown.
    job.slots.filter(pk=transient.pk).update(status="succeeded")
    html = card(alice_client, job).content.decode()
    assert "Safety filter blocked it." in html
    assert "Retry failed" not in html


def test_a_job_failed_as_a_whole_shows_its_own_reason(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.FAILED, images=1, pending=(0,))
    job.errors = [{"index": 0, "error": "The job ran past its deadline.", "details": ""}]
    job.save()
    assert "The job ran past its deadline." in card(alice_client, job).content.decode()


def test_a_canceled_job_says_what_it_kept(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.CANCELED, images=2, pending=(1,))
    job.slots.filter(index=1).update(status="canceled")
    html = card(alice_client, job).content.decode()
    assert "Canceled. Generated 1 of 2 images." in html


def test_without_htmx_it_still_renders(alice_client, alice, model):
    assert card(alice_client, make_job(alice, model), hx=False).status_code == 200


def test_another_users_job_is_a_404(alice_client, bob, model):
    job = make_job(bob, model)
    assert card(alice_client, job).status_code == 404


def asgi_card(user, job) -> tuple[int, str]:
    """The card as a page served on ASGI (the Procfile's web) gets it."""

    async def get():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(reverse("studio:job-card", args=[job.pk]), headers={"HX-Request": "true"})
        return response.status_code, response.content.decode()

    return async_to_sync(get)()


@pytest.mark.django_db(transaction=True)
def test_on_asgi_with_redis_a_running_card_swaps_on_its_event_and_polls_as_a_backstop(alice, model, settings):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(2, 3))
    status, html = asgi_card(alice, job)
    assert status == 200
    assert f'sse-swap="job-{job.pk}"' in html and 'hx-trigger="every 5s"' in html

    settings.REDIS_URL = ""  # make run: nothing is published, so the card polls quickly instead
    status, html = asgi_card(alice, job)
    assert 'hx-trigger="every 100ms"' in html and "sse-swap" not in html


def test_a_poll_that_shows_the_current_version_gets_204_and_a_changed_one_the_card(alice_client, alice, model):
    job = make_job(alice, model, status=JobStatus.RUNNING, pending=(2, 3))
    url = reverse("studio:job-card", args=[job.pk])
    shown = card_version(job.status, job.updated_at, False)

    unchanged = alice_client.get(url, {"v": shown}, **htmx())
    assert unchanged.status_code == 204 and unchanged.content == b""

    slot_fail(job.slots.get(index=2).pk, job.pk, "Safety filter blocked it.")
    changed = alice_client.get(url, {"v": shown}, **htmx())
    assert changed.status_code == 200
    assert "Generating 3/4..." in changed.content.decode()


def test_a_version_poll_of_another_users_job_is_404(alice_client, bob, model):
    job = make_job(bob, model, status=JobStatus.RUNNING, pending=(2, 3))
    response = alice_client.get(reverse("studio:job-card", args=[job.pk]), {"v": "x"}, **htmx())
    assert response.status_code == 404


def test_a_card_shows_the_thumbnails_of_the_references_it_was_sent(alice_client, alice, model):
    job = make_job(alice, model)
    reference = job.assets.first()
    job.references = [{"asset": str(reference.pk), "slot": 1}]
    job.save(update_fields=["references"])

    html = card(alice_client, job).content.decode()

    thumbnail = reverse("studio:asset-thumbnail", args=[reference.pk])
    assert f'<img class="job-ref" src="{thumbnail}" alt="Reference 1"' in html
