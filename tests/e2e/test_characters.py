"""A character end to end in the browser: the wizard, three base images, the pick, directed
generations that start from the locked portrait, a profile picture set, and the gallery that
follows the selected character. On a laptop and on a 390x844 phone; screenshots in test-artifacts/.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from generation.models import GenerationJob, JobKind, JobMode
from studio.models import Character
from tests.e2e.conftest import htmx_idle, login, worker_on_own_queue
from tests.factories import offline_model
from tests.studio.helpers import make_job

pytestmark = pytest.mark.e2e

DEVICES = {
    "desktop": {"viewport": {"width": 1360, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    """This walk checks what each image shows: no simulated failures here."""
    env = {"OFFLINE_FAILURE_RATE": "0", "OFFLINE_LATENCY_SECONDS": "0.5"}
    with worker_on_own_queue("e2e-characters", django_db_blocker, concurrency=4, env=env) as process:
        yield process


@pytest.fixture
def alice(transactional_db):
    from django.core.management import call_command

    call_command("seed_models", verbosity=0)
    # A transactional test flushed what the data migration seeded before it: seed the sets again.
    seeding = importlib.import_module("studio.migrations.0004_seed_presets_and_profile_sets")
    seeding.seed(django_apps, None)
    user = get_user_model().objects.create_user("alice", password="alice-password")
    # A job of no character: the gallery shows it under "No character" only.
    make_job(user, offline_model(), images=1, prompt="a job of no character")
    return user


@pytest.fixture(params=list(DEVICES))
def device(request, browser, live_server, e2e_worker, alice) -> Iterator[tuple[str, object]]:
    context = browser.new_context(base_url=live_server.url, **DEVICES[request.param])
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield request.param, tab
    context.close()
    assert not errors, errors


def wait_for_card(tab, job: GenerationJob) -> None:
    expect(tab.locator(f"#job-{job.pk}")).to_have_attribute("data-status", "succeeded", timeout=30_000)


def test_a_character_from_the_wizard_to_a_profile_set(device, screenshot, alice):
    name, tab = device
    login(tab, "alice", "alice-password")
    tab.get_by_role("link", name="Create with the wizard").click()

    # 1. Name (an empty name is refused on the spot).
    tab.get_by_role("button", name="Next").click()
    expect(tab.get_by_role("alert").first).to_contain_text("Give the character a name.")
    tab.get_by_label("Name").fill("Aria")
    screenshot(tab, f"characters-{name}-1-name")
    tab.get_by_role("button", name="Next").click()
    htmx_idle(tab)

    # 2. Appearance; a reload keeps the step and Back keeps the answers.
    expect(tab.get_by_role("heading", name="What does Aria look like?")).to_be_visible()
    tab.get_by_label("Gender presentation").select_option("woman")
    tab.get_by_label("Age range").select_option(label="18-25")
    tab.get_by_label("Hair colour").select_option("red")
    tab.get_by_label("Hair style").select_option(label="Long, wavy")
    tab.get_by_label("Eye colour").select_option("green")
    tab.get_by_label("Distinguishing features").fill("freckles")
    screenshot(tab, f"characters-{name}-2-appearance")
    tab.get_by_role("button", name="Next").click()
    htmx_idle(tab)
    tab.reload()
    expect(tab.get_by_role("heading", name="Who is Aria?")).to_be_visible()
    tab.get_by_role("button", name="Back").click()
    htmx_idle(tab)
    expect(tab.get_by_label("Hair colour")).to_have_value("red")
    tab.get_by_role("button", name="Next").click()
    htmx_idle(tab)

    # 3. Identity, then 4. three base images in one job.
    tab.get_by_label("Personality").fill("curious, bold")
    tab.get_by_label("Default style").select_option("photorealistic")
    screenshot(tab, f"characters-{name}-3-identity")
    tab.get_by_role("button", name="Make base images").click()
    picks = tab.get_by_role("button", name="Pick image")
    expect(picks).to_have_count(3, timeout=30_000)
    expect(tab.get_by_role("button", name="Regenerate")).to_be_enabled()  # once the job has ended
    base = GenerationJob.objects.get(kind=JobKind.BASE_IMAGE)
    assert base.images_requested == 3 and base.requests.count() == 1
    screenshot(tab, f"characters-{name}-4-base-images")
    tab.get_by_role("button", name="Pick image 2").click()

    # Directing: the portrait is reference 1, labelled with the character's name.
    tab.wait_for_url(lambda url: "character=" in url)
    aria = Character.objects.get(name="Aria")
    assert aria.locked_reference.job_id == base.pk and aria.locked_reference.batch_index == 1
    expect(tab.locator(".ref-label").first).to_have_text("Aria's portrait")
    tab.get_by_label("Prompt", exact=True).fill("smiling")
    tab.get_by_label("Scene").fill("on a beach at sunset, warm golden light")
    tab.locator("label[for=images-4]").click()
    screenshot(tab, f"characters-{name}-5-directing", full_page=False)
    tab.get_by_role("button", name="Generate").click()
    expect(tab.locator(".job-card")).to_have_count(2)  # the base images and this one: Aria's only
    directed = GenerationJob.objects.get(kind=JobKind.STUDIO, character=aria)
    wait_for_card(tab, directed)
    assert directed.mode == JobMode.I2I_MODIFY
    assert directed.references == [{"asset": str(aria.locked_reference_id)}]
    card = tab.locator(f"#job-{directed.pk}")
    expect(card.locator(".job-ref")).to_have_count(1)
    card.get_by_text("Prompt sent").click()
    expect(card.locator(".prompt-sent-text").first).to_contain_text("red hair")
    expect(card.locator(".prompt-sent-text").first).to_contain_text("on a beach at sunset")
    screenshot(tab, f"characters-{name}-6-directed")

    # A profile set from the character page.
    tab.locator(".portrait-name").get_by_role("link", name="Aria").click()
    tab.wait_for_url(f"**/characters/{aria.pk}")
    expect(tab.get_by_role("heading", name="Aria", exact=True)).to_be_visible()
    screenshot(tab, f"characters-{name}-7-character-page")
    tab.get_by_role("button", name="Generate Dating profile").click()
    profile = GenerationJob.objects.get(kind=JobKind.PROFILE_SET)
    tab.reload()
    wait_for_card(tab, profile)
    expect(tab.locator(f"#job-{profile.pk} .tile-shot")).to_have_count(6)
    expect(tab.locator(f"#job-{profile.pk} .tile-shot").nth(1)).to_have_text("Coffee date")
    screenshot(tab, f"characters-{name}-7-profile-set")

    # The gallery follows the character; "No character" shows everything.
    tab.goto("/")
    expect(tab.locator(".job-card")).to_have_count(3)
    expect(tab.get_by_text("a job of no character")).to_have_count(0)
    tab.get_by_role("link", name="No character").click()
    expect(tab.locator(".job-card")).to_have_count(4)
    assert tab.evaluate("document.documentElement.scrollWidth") <= DEVICES[name]["viewport"]["width"]
