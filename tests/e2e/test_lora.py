"""The LoRA loop in the browser, with no key: a character with a locked portrait, a character sheet of
12 with its progress, the dataset page (one image excluded, one caption edited), the ZIP downloaded,
an offline training with progress, and a x4 generation "with Aria's LoRA". On a laptop and on a
390x844 phone; screenshots in test-artifacts/."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from generation.models import GenerationJob, JobKind, JobMode, LoraTraining, TrainingStatus
from studio.dataset import default_trigger_word
from studio.models import Character, DatasetItem
from tests.e2e.conftest import htmx_idle, login, worker_on_own_queue
from tests.e2e.test_characters import DEVICES
from tests.factories import png_bytes
from tests.studio.helpers import make_character

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    # 0.3 s a request, so the sheet's progress shows; the offline training takes 10 of those (3 s).
    env = {"OFFLINE_FAILURE_RATE": "0", "OFFLINE_LATENCY_SECONDS": "0.3"}
    with worker_on_own_queue("e2e-lora", django_db_blocker, concurrency=4, env=env) as process:
        yield process


@pytest.fixture
def aria(transactional_db) -> Character:
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from studio.models import AssetSource, WorkspaceAsset

    call_command("seed_models", verbosity=0)
    user = get_user_model().objects.create_user("alice", password="alice-password")
    data = png_bytes((512, 640), (190, 120, 90))
    portrait = WorkspaceAsset(owner=user, source=AssetSource.UPLOAD, width=512, height=640, bytes=len(data))
    portrait.file.save("portrait.png", ContentFile(data), save=False)
    portrait.thumbnail.save("portrait.jpg", ContentFile(data), save=False)
    portrait.save()
    return make_character(
        user,
        "Aria",
        locked_reference=portrait,
        appearance={"gender": "woman", "hair_color": "red", "eye_color": "green"},
    )


@pytest.fixture(params=list(DEVICES))
def device(request, browser, live_server, e2e_worker, aria) -> Iterator[tuple[str, object]]:
    context = browser.new_context(base_url=live_server.url, accept_downloads=True, **DEVICES[request.param])
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield request.param, tab
    context.close()
    assert not errors, errors


def test_a_sheet_becomes_a_lora_that_generates(device, screenshot, aria):
    name, tab = device
    width = DEVICES[name]["viewport"]["width"]
    login(tab, "alice", "alice-password")

    # 1. The sheet, from the character page: 12 images with their progress.
    tab.goto(f"/characters/{aria.pk}")
    expect(tab.get_by_label("Character sheet")).to_have_value("12")
    tab.get_by_role("button", name="Make sheet").click()
    sheet = GenerationJob.objects.get(kind=JobKind.CHARACTER_SHEET)
    card = tab.locator(f"#job-{sheet.pk}")
    expect(card.locator(".progress-label")).to_contain_text("/12")
    screenshot(tab, f"lora-{name}-1-sheet-progress")
    expect(card).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(card.locator(".tile-shot")).to_have_count(12)
    expect(card.locator(".tile-shot").first).to_have_text("Front view · neutral expression · close-up")
    screenshot(tab, f"lora-{name}-2-sheet-done")

    # 2. The dataset page: twelve captioned images; exclude one, edit a caption.
    tab.get_by_role("link", name="Dataset and training →").click()
    items = tab.locator(".dataset-item")
    expect(items).to_have_count(12)
    trigger = tab.get_by_role("textbox", name="Trigger word").input_value()
    assert trigger == default_trigger_word(aria)
    expect(items.first.locator("textarea")).to_have_value(
        f"{trigger} woman, front view, neutral expression, close-up, plain light grey background, soft studio lighting"
    )
    first, second = DatasetItem.objects.filter(character=aria)[:2]
    tab.locator(f"#item-{first.pk}").get_by_role("button", name="Exclude").click()
    expect(tab.locator(f"#item-{first.pk}")).to_have_class("dataset-item is-excluded")
    htmx_idle(tab)
    caption = tab.locator(f"#item-{second.pk} textarea")
    caption.fill(f"{trigger} woman, three-quarter view, smiling, red scarf")
    tab.locator(f"#item-{second.pk}").get_by_role("button", name="Save caption").click()
    htmx_idle(tab)
    second.refresh_from_db()
    assert second.caption == f"{trigger} woman, three-quarter view, smiling, red scarf"
    tab.reload()
    expect(tab.get_by_role("heading", name="Images · 11 included of 12")).to_be_visible()
    screenshot(tab, f"lora-{name}-3-dataset")
    assert tab.evaluate("document.documentElement.scrollWidth") <= width

    # 3. The ZIP: flat, the excluded image left out, the edited caption in.
    with tab.expect_download() as download:
        tab.get_by_role("link", name="Download ZIP").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    names = archive.namelist()
    assert len(names) == 23 and names[-1] == "manifest.json"
    assert archive.read("01.txt").decode() == f"{trigger} woman, three-quarter view, smiling, red scarf"

    # 4. Train (offline), the price confirmed, with progress.
    expect(tab.get_by_text("1 credit,")).to_be_visible()
    tab.get_by_label("I accept the price of 1 credit").check()
    tab.get_by_role("button", name="Train Aria's LoRA").click()
    training = LoraTraining.objects.get()
    panel = tab.locator(f"#training-{training.pk}")
    expect(panel.get_by_role("progressbar")).to_be_visible()
    screenshot(tab, f"lora-{name}-4-training")
    expect(panel).to_contain_text("Ready", timeout=60_000)
    training.refresh_from_db()
    assert training.status == TrainingStatus.SUCCEEDED and training.images == 11
    screenshot(tab, f"lora-{name}-5-trained")

    # 5. Generate x4 with the LoRA: text to image, no reference, the card says so.
    panel.get_by_role("link", name="Generate with Aria's LoRA").click()
    expect(tab.get_by_label("With Aria's LoRA")).to_be_checked()
    tab.get_by_label("Prompt", exact=True).fill("on a beach at sunset")
    tab.locator("label[for=images-4]").click()
    screenshot(tab, f"lora-{name}-6-prompt-bar", full_page=False)
    tab.get_by_role("button", name="Generate").click()
    expect(tab.locator(".badge-lora").first).to_have_text("with Aria's LoRA")
    job = GenerationJob.objects.get(kind=JobKind.STUDIO)
    expect(tab.locator(f"#job-{job.pk}")).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert job.mode == JobMode.T2I and job.references == [] and job.images_requested == 4
    assert job.params["lora"]["training"] == str(training.pk)
    screenshot(tab, f"lora-{name}-7-generated")
    assert tab.evaluate("document.documentElement.scrollWidth") <= width
