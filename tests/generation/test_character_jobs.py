"""character_sheet_create: one job of 7-16 shots, i2i from the locked portrait on the i2i_multi chain."""

from __future__ import annotations

from unittest import mock

import pytest

from generation.models import GenerationJob, ImageSlot, JobKind, JobMode, JobStatus
from generation.services import routing, runs
from generation.services.character_jobs import character_sheet_create
from generation.services.control import job_retry_failed
from generation.services.finish import job_finish_if_done, slot_fail, slot_succeed
from generation.services.jobs import JobRequestError
from models_registry.models import FallbackChain, FallbackEntry, Task
from tests.factories import offline_model
from tests.studio.helpers import make_asset, make_character

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_enqueue():
    with mock.patch("generation.enqueue.send") as send:
        yield send


@pytest.fixture
def aria(alice):
    portrait = make_asset(alice)
    return make_character(alice, "Aria", locked_reference=portrait, appearance={"gender": "woman", "hair_color": "red"})


def test_a_sheet_is_one_job_of_twelve_named_shots_from_the_portrait(alice, aria):
    model = offline_model()
    job = character_sheet_create(user=alice, character=aria)

    assert job.kind == JobKind.CHARACTER_SHEET and job.mode == JobMode.I2I_MODIFY
    assert job.model == model  # no provider configured: the offline engine
    assert job.images_requested == 12 and ImageSlot.objects.filter(job=job).count() == 12
    assert job.references == [{"asset": str(aria.locked_reference_id)}]
    assert job.credits_charged == 1
    shots, captions = job.params["shots"], job.params["captions"]
    assert len(shots) == len(captions) == 12
    assert shots[0]["name"] == "Front view · neutral expression · close-up"
    assert "red hair" in shots[0]["prompt"] and "plain light grey background" in shots[0]["prompt"]
    assert captions[0].startswith("front view, neutral expression, close-up")
    assert job.params["set_name"] == "Character sheet"


def test_each_shot_is_its_own_request_with_its_own_prompt(alice, aria):
    offline_model()
    job = character_sheet_create(user=alice, character=aria, images=7)
    requests = runs.job_dispatch(job.pk)
    assert len(requests) == 7
    built = [runs.build_request(job.requests.get(pk=r), job) for r in requests]
    assert len({b.prompt for b in built}) == 7
    assert all(len(b.references) == 1 for b in built)


def test_sixteen_images_are_allowed_and_seventeen_refused(alice, aria):
    offline_model()
    assert character_sheet_create(user=alice, character=aria, images=16).images_requested == 16
    with pytest.raises(JobRequestError, match="7 to 16"):
        character_sheet_create(user=alice, character=aria, images=17)


def test_no_portrait_no_sheet(alice):
    offline_model()
    with pytest.raises(JobRequestError, match="Lock a portrait"):
        character_sheet_create(user=alice, character=make_character(alice, "Nobody"))
    assert not GenerationJob.objects.exists()


def test_the_sheet_runs_on_the_multi_reference_chain_and_falls_back_along_it(alice, aria):
    first = offline_model("offline/edit-a")
    second = offline_model("offline/edit-b")
    offline_model("offline/plain-i2i", tasks=["t2i", "i2i"])  # not in the chain: never picked
    chain = FallbackChain.objects.create(task=Task.I2I_MULTI)
    FallbackEntry.objects.create(chain=chain, model=first, position=0)
    FallbackEntry.objects.create(chain=chain, model=second, position=1)

    job = character_sheet_create(user=alice, character=aria)

    assert job.model == first
    assert routing.job_task(job) == Task.I2I_MULTI
    assert routing.next_model(job=job, failed_model=first) == second


def test_retry_failed_reruns_only_the_failed_shots_with_their_own_prompts(alice, aria):
    offline_model()
    job = character_sheet_create(user=alice, character=aria, images=8)
    runs.job_dispatch(job.pk)
    slots = {s.index: s for s in job.slots.all()}
    for index in range(8):
        if index in (2, 5):
            slot_fail(slots[index].pk, job.pk, "The provider refused this image.")
        else:
            slot_succeed(slots[index].pk, job.pk)
    job_finish_if_done(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL

    assert job_retry_failed(job=job) == 2
    again = runs.job_dispatch(job.pk)

    retried = [job.requests.get(pk=r) for r in again]
    assert sorted(r.slot_indexes for r in retried) == [[2], [5]]
    prompts = {r.slot_indexes[0]: runs.build_request(r, job).prompt for r in retried}
    assert prompts == {i: job.params["shots"][i]["prompt"] for i in (2, 5)}
