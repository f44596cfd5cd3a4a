"""The studio in a real browser: generate a batch, recover from a partial failure, COPY a gallery image,
upload references, and find nothing of another user's."""

from __future__ import annotations

import base64
import io
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import expect

from generation.models import GenerationJob, JobMode, JobStatus
from generation.services.jobs import job_create
from models_registry.models import ApiModel
from studio.models import AssetSource, Character, WorkspaceAsset
from tests.e2e.conftest import fails_at, final_prompt, htmx_idle, login, prompt_where
from tests.factories import offline_model, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


@pytest.fixture
def users(transactional_db):
    User = get_user_model()
    return (
        User.objects.create_user("alice", password="alice-password"),
        User.objects.create_user("bob", password="bob-password"),
    )


@pytest.fixture
def models(transactional_db):
    """The offline engine, plus a hosted model with no key, which the list shows disabled."""
    ApiModel.objects.create(
        key="fal-ai/flux-2",
        display_name="Flux-2",
        provider="fal",
        tasks=["t2i"],
        price_per_image=Decimal("0.025"),
        priority=50,
    )
    return offline_model(display_name="Offline engine")


def card(page, n: int = 0):
    return page.locator("article.job-card").nth(n)


def generate(page, prompt: str, count: int = 1) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.locator(f"label[for=images-{count}]").click()
    page.get_by_role("button", name="Generate").click()


def wait_until_done(page, n: int = 0):
    expect(card(page, n)).to_have_attribute("data-status", "succeeded", timeout=20_000)
    return card(page, n)


def image_of(asset: WorkspaceAsset) -> Image.Image:
    with asset.file.open("rb") as fh:
        return Image.open(io.BytesIO(fh.read())).convert("RGB")


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255."""
    assert a.size == b.size
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_a_batch_of_four_shows_progress_then_four_images_in_one_card(page, users, models, screenshot):
    prompt = prompt_where(lambda p: not any(fails_at(final_prompt(p), i) for i in range(4)), stem="silver hair")
    login(page, "alice", "alice-password")
    screenshot(page, "01-empty-studio")

    model_select = page.get_by_label("Model")
    expect(model_select.locator("option", has_text="Flux-2")).to_be_disabled()
    with page.expect_response("**/prompt/options?*"):
        model_select.select_option(str(models.pk))
    expect(page.locator("label[for=images-4]")).to_contain_text("1 request, 4 images")
    expect(page.locator("label[for=images-1]")).to_contain_text("≈ $0.01")

    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.locator("label[for=images-4]").click()
    # A double click must not make two jobs (the button is disabled while the post is in flight).
    page.get_by_role("button", name="Generate").dblclick()

    expect(card(page).locator(".progress")).to_be_visible()
    expect(card(page).locator(".progress-label")).to_contain_text("Generating")
    expect(card(page).locator(".tile.placeholder")).to_have_count(4)
    screenshot(page, "02-generating")

    done = wait_until_done(page)
    expect(done.locator(".outcome-success")).to_have_text("Generated 4 of 4 images.")
    expect(done.locator(".tile img")).to_have_count(4)
    expect(done.locator(".progress")).to_have_count(0)
    expect(page.locator("article.job-card")).to_have_count(1)
    expect(page.locator("#credits")).to_have_text("99 credits")
    screenshot(page, "03-four-images")

    job = GenerationJob.objects.get()
    assert job.images_requested == 4
    assert list(job.assets.values_list("batch_index", flat=True)) == [0, 1, 2, 3]
    # Polling stopped: the finished card carries no trigger any more.
    assert done.get_attribute("hx-trigger") is None

    done.locator(".tile").first.hover()
    screenshot(page, "03b-tile-actions", full_page=False)
    page.set_viewport_size({"width": 400, "height": 860})
    screenshot(page, "03c-phone")


def test_without_javascript_the_plain_form_generates_and_the_gallery_lists(
    browser, live_server, e2e_worker, users, models, screenshot
):
    prompt = prompt_where(lambda p: not any(fails_at(final_prompt(p), i) for i in range(2)), stem="no script")
    context = browser.new_context(
        java_script_enabled=False, base_url=live_server.url, viewport={"width": 1360, "height": 900}
    )
    page = context.new_page()
    try:
        login(page, "alice", "alice-password")
        page.get_by_label("Prompt", exact=True).fill(prompt)
        page.locator("label[for=images-2]").click()
        page.get_by_role("button", name="Generate").click()
        page.wait_for_url(lambda url: url.endswith("#gallery"))
        expect(page.locator("article.job-card")).to_have_count(1)
        for _ in range(40):  # the page refreshes itself (noscript meta refresh); a reload is the same
            if page.locator("article.job-card").get_attribute("data-status") == "succeeded":
                break
            page.wait_for_timeout(250)
            page.reload()
        expect(card(page).locator(".outcome-success")).to_have_text("Generated 2 of 2 images.")
        expect(card(page).locator(".tile img")).to_have_count(2)
        # The prompt bar still shows what was asked.
        expect(page.get_by_label("Prompt", exact=True)).to_have_value(prompt)
        expect(page.locator("#images-2")).to_be_checked()
        screenshot(page, "11-no-javascript")
    finally:
        context.close()


def test_a_partial_failure_is_orange_and_retry_fills_the_slot(page, users, models, screenshot):
    def one_fails_then_recovers(p: str) -> bool:
        final = final_prompt(p)
        failing = [i for i in range(4) if fails_at(final, i)]
        return len(failing) == 1 and not fails_at(final, failing[0], attempt=2)

    prompt = prompt_where(one_fails_then_recovers, stem="red hair knight")
    failed_index = next(i for i in range(4) if fails_at(final_prompt(prompt), i))
    login(page, "alice", "alice-password")

    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.locator("label[for=images-4]").click()
    page.get_by_label("Prompt", exact=True).press("Control+Enter")  # the keyboard shortcut submits
    expect(card(page)).to_have_attribute("data-status", "partial", timeout=20_000)
    outcome = card(page).locator(".outcome-partial")
    expect(outcome).to_contain_text("Generated 3 of 4 images. 1 failed.")
    expect(outcome).to_contain_text(f"Image {failed_index + 1}: The offline engine's simulated provider failed")
    expect(card(page).locator(".tile.failed")).to_have_count(1)
    expect(card(page).locator(".tile img")).to_have_count(3)
    screenshot(page, "04-partial-failure")

    card(page).get_by_role("button", name="Retry failed").click()
    done = wait_until_done(page)
    expect(done.locator(".outcome-success")).to_have_text("Generated 4 of 4 images.")
    expect(done.locator(".tile img")).to_have_count(4)
    expect(done.locator(".tile").nth(failed_index).locator("img")).to_be_visible()
    screenshot(page, "05-retried")
    assert GenerationJob.objects.get().status == JobStatus.SUCCEEDED


def test_copy_of_a_gallery_image_is_a_near_copy_and_modify_changes_it(page, users, models, screenshot):
    source_prompt = prompt_where(lambda p: not fails_at(final_prompt(p), 0), stem="green eyes forest")
    # COPY sends the user's words as they are; MODIFY adds the enhancement.
    copy_prompt = prompt_where(lambda p: not fails_at(final_prompt(p, JobMode.I2I_COPY, False), 0), stem="same pose")
    modify_prompt = prompt_where(lambda p: not fails_at(final_prompt(p, JobMode.I2I_MODIFY), 0), stem="blue hair beach")
    login(page, "alice", "alice-password")

    generate(page, source_prompt, 1)
    source_card = wait_until_done(page)
    source_card.locator(".tile").hover()
    source_card.get_by_role("button", name="Use as ref 1").click()

    controls = page.locator("#prompt-controls")
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(1)
    expect(controls.get_by_label("Modify")).to_be_checked()
    expect(controls.locator("#strength-value")).to_have_text("0.50")
    expect(controls.get_by_label("Enhance prompt")).to_be_checked()

    controls.locator("label[for=mode-copy]").click()
    expect(controls.locator("#strength-value")).to_have_text("0.95")
    expect(controls.get_by_label("Enhance prompt")).to_be_disabled()
    expect(controls.get_by_label("Enhance prompt")).not_to_be_checked()
    screenshot(page, "06-copy-mode", full_page=False)

    generate(page, copy_prompt, 1)
    expect(page.locator("article.job-card")).to_have_count(2)
    wait_until_done(page)

    controls.locator("label[for=mode-modify]").click()
    expect(controls.locator("#strength-value")).to_have_text("0.50")
    expect(controls.get_by_label("Enhance prompt")).to_be_checked()
    generate(page, modify_prompt, 1)
    expect(page.locator("article.job-card")).to_have_count(3)
    wait_until_done(page)
    screenshot(page, "07-copy-and-modify")

    source_job, copy_job, modify_job = GenerationJob.objects.order_by("created_at")
    assert (copy_job.mode, modify_job.mode) == (JobMode.I2I_COPY, JobMode.I2I_MODIFY)
    source = image_of(source_job.assets.get())
    copied = mean_abs_difference(image_of(copy_job.assets.get()), source)
    modified = mean_abs_difference(image_of(modify_job.assets.get()), source)
    assert copied < 6, copied
    assert modified > 4 * copied, (copied, modified)


def test_references_come_from_uploads_and_drops_and_bad_files_are_refused(page, users, models, screenshot):
    login(page, "alice", "alice-password")
    controls = page.locator("#prompt-controls")

    page.locator("#ref-file").set_input_files(
        {"name": "me.png", "mimeType": "image/png", "buffer": png_bytes(size=(200, 250), color=(30, 120, 200))}
    )
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(1)
    htmx_idle(page)

    # Drag and drop a file from the desktop onto the reference area.
    data = base64.b64encode(png_bytes(size=(160, 200), color=(220, 180, 40))).decode()
    page.evaluate(
        """(data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            const zone = document.querySelector("[data-dropzone]");
            zone.dispatchEvent(new DragEvent("dragover", {bubbles: true, cancelable: true, dataTransfer: transfer}));
            zone.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }""",
        data,
    )
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(2)
    expect(controls.get_by_role("button", name="Swap references")).to_be_enabled()
    first, second = WorkspaceAsset.objects.filter(source=AssetSource.UPLOAD).order_by("created_at")
    expect(controls.locator('input[name="ref1"]')).to_have_value(str(first.pk))

    controls.get_by_role("button", name="Swap references").click()
    expect(controls.locator('input[name="ref1"]')).to_have_value(str(second.pk))
    htmx_idle(page)

    page.locator("#ref-file").set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"not a picture"}
    )
    expect(controls.locator("#upload-errors")).to_have_text("The file is not a PNG, JPEG or WebP image.")
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(2)
    screenshot(page, "08-references", full_page=False)

    controls.get_by_role("button", name="Clear ref 2").click()
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(1)
    controls.get_by_role("button", name="Clear both").click()
    expect(controls.locator(".ref-slot.is-filled")).to_have_count(0)
    expect(controls.locator(".i2i")).to_have_count(0)

    # A gallery image dragged onto the reference area fills the next slot.
    generate(page, prompt_where(lambda p: not fails_at(final_prompt(p), 0), stem="drag me"), 1)
    done = wait_until_done(page)
    htmx_idle(page)
    # The tile and the reference area both on screen, as when a person drags one to the other:
    # Playwright would otherwise scroll between them mid-drag, and Chromium drops such a drag.
    page.set_viewport_size({"width": 1360, "height": 1400})
    done.locator(".tile").drag_to(controls.locator("[data-dropzone]"))
    expect(controls.locator('input[name="ref1"]')).to_have_value(str(done_asset_of(done)))


def test_cancel_wins_over_the_card_refreshes_around_it(page, users, models, screenshot):
    """A Cancel on its way while the card keeps refreshing: no refresh may bring "Running" back over it."""
    alice, _ = users
    # The offline engine slowed down: the job runs long enough for any number of card refreshes.
    job = job_create(user=alice, model=models, prompt="slow portrait", images=2, params={"simulate": {"latency": 60}})
    login(page, "alice", "alice-password")
    running = page.locator(f"#job-{job.pk}")
    expect(running.locator(".progress")).to_be_visible()
    htmx_idle(page)

    # A slow network: the cancel's post takes a while to reach the server...
    held: list[object] = []
    page.route(f"**/jobs/{job.pk}/cancel", lambda route: held.append(route))
    running.get_by_role("button", name="Cancel").click()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the cancel was never posted"
    # ...while the card's once-a-second refresh would go on, each answered "Running".
    page.wait_for_timeout(2500)
    # From here on no refresh may answer: only the cancel's own answer can show the outcome.
    page.route(f"**/jobs/{job.pk}/card", lambda route: route.abort())
    held[0].continue_()

    expect(running).to_have_attribute("data-status", "canceled", timeout=5_000)
    expect(running.locator(".progress")).to_have_count(0)
    expect(running.locator(".outcome-canceled")).to_contain_text("Canceled.")
    screenshot(page, "12-canceled-while-refreshing", full_page=False)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED


def test_characters_and_a_locked_portrait(page, users, models, screenshot):
    prompt = prompt_where(lambda p: not fails_at(final_prompt(p), 0), stem="amber eyes")
    login(page, "alice", "alice-password")

    page.get_by_label("New character").fill("Mira")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".character.is-selected")).to_contain_text("Mira")
    expect(page.locator(".portrait-empty")).to_be_visible()

    generate(page, prompt, 1)
    done = wait_until_done(page)
    done.locator(".tile").hover()
    done.get_by_role("button", name="Lock as portrait").click()
    expect(page.locator("#sidebar img.portrait")).to_be_visible()
    expect(page.locator("#sidebar .notice")).to_contain_text("Locked as Mira's portrait.")
    screenshot(page, "09-locked-portrait", full_page=False)
    assert Character.objects.get().locked_reference == done_asset(prompt)


def done_asset_of(job_card) -> str:
    job_id = job_card.get_attribute("id").removeprefix("job-")
    return str(WorkspaceAsset.objects.get(job_id=job_id).pk)


def done_asset(prompt: str) -> WorkspaceAsset:
    return GenerationJob.objects.get(prompt=prompt).assets.get()


def test_another_users_urls_are_404_in_the_browser(page, users, models, screenshot):
    alice, _ = users
    prompt = prompt_where(lambda p: not fails_at(final_prompt(p), 0), stem="private")
    login(page, "alice", "alice-password")
    generate(page, prompt, 1)
    wait_until_done(page)
    job = GenerationJob.objects.get(owner=alice)
    asset = job.assets.get()
    character = Character.objects.create(owner=alice, name="Alice's secret")
    page.context.clear_cookies()

    login(page, "bob", "bob-password")
    expect(page.locator("article.job-card")).to_have_count(0)
    for url in (
        f"/assets/{asset.pk}/file",
        f"/assets/{asset.pk}/file?download=1",
        f"/assets/{asset.pk}/thumbnail",
        f"/jobs/{job.pk}/card",
        f"/jobs/{job.pk}/download",
        f"/?character={character.pk}",
    ):
        response = page.goto(url)
        assert response.status == 404, url
    screenshot(page, "10-not-found", full_page=False)
    for url in (f"/jobs/{job.pk}/retry", f"/jobs/{job.pk}/cancel", f"/assets/{asset.pk}/delete"):
        response = page.request.post(url, headers={"X-CSRFToken": csrf_token(page)})
        assert response.status == 404, url
    assert WorkspaceAsset.objects.filter(pk=asset.pk).exists()


def csrf_token(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
