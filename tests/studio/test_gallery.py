"""The gallery: job cards newest first, 50 a page with "Load more", a fixed number of queries."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from generation.models import GenerationJob
from generation.selectors import jobs_for_user
from studio.models import WorkspaceAsset
from tests.studio.helpers import htmx, make_character, make_job

pytestmark = pytest.mark.django_db

HOME = reverse("studio:home")
GALLERY = reverse("studio:gallery")


def card_ids(html: str) -> list[str]:
    return re.findall(r'<article id="job-([0-9a-f-]+)"', html)


def count_queries(client, url, **kwargs) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(queries)


def test_a_gallery_page_costs_the_same_queries_for_3_jobs_as_for_30(
    alice_client, alice, model, django_assert_num_queries
):
    for _ in range(3):
        make_job(alice, model, images=4)
    alice_client.get(HOME)  # opens the credit account and the session once
    few_page = count_queries(alice_client, HOME)
    few_fragment = count_queries(alice_client, GALLERY, **htmx())

    for index in range(27):
        make_job(
            alice,
            model,
            images=4,
            failed=(1,) if index % 3 == 0 else (),
            status="partial" if index % 3 == 0 else "succeeded",
        )
    assert len(card_ids(alice_client.get(HOME).content.decode())) == 30

    with django_assert_num_queries(few_page):
        alice_client.get(HOME)
    with django_assert_num_queries(few_fragment):
        alice_client.get(GALLERY, **htmx())


def test_jobs_are_newest_first_with_images_in_batch_order(alice_client, alice, model):
    older = make_job(alice, model, prompt="older")
    newer = make_job(alice, model, prompt="newer")
    html = alice_client.get(HOME).content.decode()

    assert card_ids(html) == [str(newer.pk), str(older.pk)]
    card = html[html.index(f'id="job-{newer.pk}"') :]
    positions = [card.index(f'alt="Image {i + 1}"') for i in range(4)]
    assert positions == sorted(positions)


def test_fifty_jobs_a_page_and_load_more_appends_the_rest(alice_client, alice, model):
    jobs = [make_job(alice, model, images=1, with_files=False, prompt=f"job {i}") for i in range(55)]
    html = alice_client.get(HOME).content.decode()

    first_page = card_ids(html)
    assert len(first_page) == 50
    assert first_page[0] == str(jobs[-1].pk)
    more = re.search(r'hx-get="(/gallery\?after=[^"]+)"', html).group(1)
    assert 'hx-target="#load-more" hx-swap="outerHTML"' in html

    fragment = alice_client.get(more, **htmx()).content.decode()
    assert "<html" not in fragment
    assert card_ids(fragment) == [str(j.pk) for j in reversed(jobs[:5])]
    assert 'id="load-more"' not in fragment


def test_load_more_without_javascript_shows_the_older_page(alice_client, alice, model):
    for i in range(51):
        make_job(alice, model, images=1, with_files=False, prompt=f"job {i}")
    html = alice_client.get(HOME).content.decode()
    plain_link = re.search(r'href="(/\?after=[^"#]+)#gallery"', html).group(1)

    older = alice_client.get(plain_link).content.decode()
    assert len(card_ids(older)) == 1
    assert "Newest jobs" in older

    response = alice_client.get(GALLERY, {"after": "x"})
    assert response.status_code == 302


def test_a_job_created_meanwhile_does_not_repeat_a_card_on_the_next_page(alice_client, alice, model):
    for i in range(51):
        make_job(alice, model, images=1, with_files=False, prompt=f"job {i}")
    html = alice_client.get(HOME).content.decode()
    more = re.search(r'hx-get="(/gallery\?after=[^"]+)"', html).group(1)
    make_job(alice, model, images=1, with_files=False, prompt="brand new")

    fragment = alice_client.get(more, **htmx()).content.decode()
    assert set(card_ids(fragment)).isdisjoint(card_ids(html))
    assert len(card_ids(fragment)) == 1


def test_another_users_jobs_are_never_listed(alice_client, bob, model):
    make_job(bob, model, prompt="bob's secret portrait")
    html = alice_client.get(HOME).content.decode()
    assert "bob&#x27;s secret portrait" not in html and "secret portrait" not in html
    assert "No images yet" in html


def test_a_bad_cursor_shows_the_first_page(alice_client, alice, model):
    job = make_job(alice, model, images=1, with_files=False)
    assert card_ids(alice_client.get(GALLERY, {"after": "garbage"}, **htmx()).content.decode()) == [str(job.pk)]


def test_a_full_page_of_images_stays_light_with_every_button_and_its_size(alice_client, alice, model):
    for _ in range(10):
        make_job(alice, model, images=4)
    html = alice_client.get(reverse("studio:home")).content.decode()
    assets = list(WorkspaceAsset.objects.filter(owner=alice))

    for asset in assets:
        assert f'<img src="/assets/{asset.pk}/thumbnail"' in html
        assert f'width="{asset.width}" height="{asset.height}" loading="lazy"' in html
        for action in ("use1", "use2", "lock", "delete"):
            assert f'name="{action}" value="{asset.pk.hex}"' in html
    cards = html[html.index('id="gallery-jobs"') :]
    # Cards and images without the page around them: about 1.1 KB an image, buttons and all.
    assert len(cards.encode()) / len(assets) < 1300


def test_a_running_cards_images_load_at_once_the_others_lazily(alice_client, alice, model):
    from generation.models import JobStatus

    done = make_job(alice, model, images=1)
    running = make_job(alice, model, images=2, pending=(1,), status=JobStatus.RUNNING)
    html = alice_client.get(reverse("studio:home")).content.decode()
    [done_asset] = WorkspaceAsset.objects.filter(job=done)
    [running_asset] = WorkspaceAsset.objects.filter(job=running)
    # The image being waited for is fetched as soon as it arrives, not after a visibility check.
    assert re.search(rf'<img src="/assets/{running_asset.pk}/thumbnail"[^>]* loading="eager"', html)
    assert re.search(rf'<img src="/assets/{done_asset.pk}/thumbnail"[^>]* loading="lazy"', html)


def test_deleting_a_locked_portrait_asks_first_naming_its_character(alice_client, alice, model):
    job = make_job(alice, model, images=2)
    portrait = job.assets.get(batch_index=0)
    make_character(alice, "Aria", locked_reference=portrait)
    html = alice_client.get(reverse("studio:home"), {"character": "none"}).content.decode()
    assert (
        'aria-label="Delete image 1" data-confirm="Delete image 1? It is Aria\'s locked portrait: Aria will have none.'
        in html
    )
    # Any other image asks the gallery's own question (data-question on #gallery-jobs).
    assert 'aria-label="Delete image 2" data-confirm>' in html


def test_selecting_a_character_filters_the_gallery_and_all_shows_everything(alice_client, alice, model):
    aria = make_character(alice, "Aria")
    hers = make_job(alice, model, images=1, prompt="aria on a beach")
    GenerationJob.objects.filter(pk=hers.pk).update(character=aria)
    make_job(alice, model, images=1, prompt="nobody in particular")

    selected = alice_client.get(reverse("studio:home"), {"character": str(aria.pk)}).content.decode()
    assert "aria on a beach" in selected and "nobody in particular" not in selected
    more = alice_client.get(reverse("studio:gallery"), **htmx()).content.decode()
    assert "nobody in particular" not in more
    everything = alice_client.get(reverse("studio:home"), {"character": "none"}).content.decode()
    assert "aria on a beach" in everything and "nobody in particular" in everything


def test_a_card_loads_only_the_slots_that_did_not_succeed_and_still_shows_every_place(alice_client, alice, model):
    job = make_job(alice, model, images=4, failed=(1,), status="partial")
    WorkspaceAsset.objects.filter(job=job, batch_index=3).delete()

    loaded = jobs_for_user(alice).get(pk=job.pk)
    assert [slot.index for slot in loaded.unsucceeded_slots] == [1]
    html = alice_client.get(HOME).content.decode()
    card = html[html.index(f'id="job-{job.pk}"') :]
    assert card.count('class="tile"') == 2
    assert 'aria-label="Image 2 failed"' in card
    assert 'aria-label="Image 4 deleted"' in card
    assert "Generated 3 of 4 images. 1 failed." in card
