"""The studio on a phone (390x844, touch) and on a laptop (1280x800): what the first screen shows.

The screenshots land in test-artifacts/ to be looked at; the assertions pin what a new user hit:
the prompt below a full-screen portrait placeholder, a model select cut off at the right edge,
and tile buttons covering the lower half of every image on touch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.factories import offline_model
from tests.studio.helpers import make_character, make_job

pytestmark = pytest.mark.e2e

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LAPTOP = {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture
def studio(transactional_db):
    """Alice with a selected character that has no portrait yet, and a finished job of four images."""
    alice = get_user_model().objects.create_user("alice", password="alice-password")
    model = offline_model(display_name="Offline preview engine")
    mira = make_character(alice, "Mira")
    job = make_job(alice, model, images=4, prompt="silver hair, red eyes, night city")
    # Mira's job: with Mira selected the gallery shows only hers.
    job.character = mira
    job.save(update_fields=["character"])
    return alice


@pytest.fixture
def open_studio(browser, live_server, studio) -> Iterator[Callable[..., object]]:
    contexts = []
    errors: list[str] = []

    def open_as(device: dict) -> object:
        context = browser.new_context(base_url=live_server.url, **device)
        contexts.append(context)
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        login(tab, "alice", "alice-password")
        tab.get_by_role("link", name="Mira").click()
        expect(tab.locator(".character.is-selected")).to_contain_text("Mira")
        return tab

    yield open_as
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def box(locator) -> dict:
    result = locator.bounding_box()
    assert result is not None, locator
    return result


def test_on_a_phone_the_prompt_is_on_the_first_screen_and_nothing_is_cut_off(open_studio, screenshot):
    tab = open_studio(PHONE)
    screenshot(tab, "phone-first-screen", full_page=False)
    screenshot(tab, "phone-full")

    prompt = box(tab.get_by_label("Prompt", exact=True))
    assert prompt["y"] >= 0 and prompt["y"] + prompt["height"] <= 844, prompt
    model = box(tab.get_by_label("Model"))
    assert model["x"] >= 0 and model["x"] + model["width"] <= 390, model
    # Nothing scrolls sideways.
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390

    # On touch the tile's buttons sit under the image, not over it.
    tile = tab.locator("figure.tile").first
    tile.scroll_into_view_if_needed()
    image, actions = box(tile.locator(":scope > a")), box(tile.locator(":scope > figcaption"))
    assert actions["y"] >= image["y"] + image["height"] - 1, (image, actions)
    expect(tile.get_by_role("button", name="Lock as portrait")).to_be_enabled()
    screenshot(tab, "phone-tiles", full_page=False)


def test_on_a_laptop_the_studio_keeps_its_two_columns_and_hover_buttons(open_studio, screenshot):
    tab = open_studio(LAPTOP)
    screenshot(tab, "laptop-first-screen", full_page=False)

    sidebar, prompt = box(tab.locator("#sidebar")), box(tab.get_by_label("Prompt", exact=True))
    assert prompt["x"] > sidebar["x"] + sidebar["width"], (sidebar, prompt)
    assert prompt["y"] + prompt["height"] <= 800
    tile = tab.locator("figure.tile").first
    expect(tile.locator(":scope > figcaption")).to_have_css("opacity", "0")  # until hovered
    tile.hover()
    expect(tile.locator(":scope > figcaption")).to_have_css("opacity", "1")
    screenshot(tab, "laptop-hover", full_page=False)
