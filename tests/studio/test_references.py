"""The two reference slots: fill from the gallery or by upload, swap, clear, MODIFY/COPY."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from studio.models import AssetSource, WorkspaceAsset
from tests.factories import offline_model, png_bytes
from tests.studio.helpers import htmx, make_asset

pytestmark = pytest.mark.django_db


def refs_in(html: str) -> list[str | None]:
    import re

    found = dict(re.findall(r'name="ref([12])" value="([0-9a-f-]+)"', html))
    return [found.get("1"), found.get("2")]


def use(client, asset, slot=None, **extra):
    data = {"slot": slot} if slot else {}
    data.update(extra)
    return client.post(reverse("studio:reference-use", args=[asset.pk]), data, **htmx()).content.decode()


def state(client) -> dict:
    return client.session["studio_state"]


def test_the_first_image_fills_ref1_the_second_ref2_and_a_third_replaces_ref2(alice_client, alice, model):
    a, b, c = (make_asset(alice) for _ in range(3))

    assert refs_in(use(alice_client, a)) == [str(a.pk), None]
    assert refs_in(use(alice_client, b)) == [str(a.pk), str(b.pk)]
    html = use(alice_client, c)
    assert refs_in(html) == [str(a.pk), str(c.pk)]
    assert html.lstrip().startswith('<div id="prompt-controls"')


def test_use_as_ref_2_and_ref_1_explicitly(alice_client, alice, model):
    a, b = make_asset(alice), make_asset(alice)
    assert refs_in(use(alice_client, a, slot="2")) == [None, str(a.pk)]
    assert refs_in(use(alice_client, b, slot="1")) == [str(b.pk), str(a.pk)]
    # Moving ref2's image up to ref1 does not leave it in both slots.
    assert refs_in(use(alice_client, a, slot="1")) == [str(a.pk), None]


def test_swap_and_clear(alice_client, alice, model):
    a, b = make_asset(alice), make_asset(alice)
    use(alice_client, a)
    use(alice_client, b)

    html = alice_client.post(reverse("studio:reference-swap"), **htmx()).content.decode()
    assert refs_in(html) == [str(b.pk), str(a.pk)]
    html = alice_client.post(reverse("studio:reference-clear"), {"slot": "1"}, **htmx()).content.decode()
    assert refs_in(html) == [None, str(a.pk)]
    html = alice_client.post(reverse("studio:reference-clear"), **htmx()).content.decode()
    assert refs_in(html) == [None, None]
    assert 'class="i2i"' not in html


def test_a_reference_shows_modify_at_half_strength_and_copy_switches_strength_and_enhancement(
    alice_client, alice, model
):
    html = use(alice_client, make_asset(alice))
    assert 'id="mode-modify" name="mode" value="modify" checked' in html
    assert 'value="0.50"' in html
    assert '<input type="checkbox" name="enhance" checked>' in html

    html = alice_client.post(
        reverse("studio:reference-mode"),
        {"mode": "copy", "strength": "0.5", "enhance": "on", "enhance_present": "1"},
        **htmx(),
    ).content.decode()
    assert 'id="mode-copy" name="mode" value="copy" checked' in html
    assert 'value="0.95"' in html
    assert '<input type="checkbox" name="enhance" disabled>' in html
    assert (state(alice_client)["strength"], state(alice_client)["enhance"]) == (0.95, False)

    html = alice_client.post(
        reverse("studio:reference-mode"), {"mode": "modify", "strength": "0.95", "enhance_present": "1"}, **htmx()
    ).content.decode()
    assert 'value="0.50"' in html
    assert '<input type="checkbox" name="enhance" checked>' in html


def test_a_new_reference_goes_back_to_modify(alice_client, alice, model):
    use(alice_client, make_asset(alice))
    alice_client.post(reverse("studio:reference-mode"), {"mode": "copy"}, **htmx())
    html = use(alice_client, make_asset(alice))
    assert 'value="modify" checked' in html and 'value="0.50"' in html


def test_models_without_image_to_image_are_disabled_while_a_reference_is_set(alice_client, alice, model):
    text_only = offline_model("offline/text", display_name="Text only", tasks=["t2i"])
    html = use(alice_client, make_asset(alice))
    assert f'<option value="{text_only.pk}" disabled title="Text only: clear the references to use it.">' in html


def test_the_bar_says_when_ref2_is_not_sent(alice_client, alice, db):
    one_ref = offline_model("offline/one", display_name="One ref", tasks=["t2i", "i2i"])
    use(alice_client, make_asset(alice), model=one_ref.pk)
    html = use(alice_client, make_asset(alice), model=one_ref.pk)
    assert "One ref takes one reference image: only Ref 1 is sent." in html


def test_upload_fills_the_next_slot_with_a_clean_copy(alice_client, alice, model):
    upload = SimpleUploadedFile("me.png", png_bytes(size=(120, 150)), content_type="image/png")
    html = alice_client.post(reverse("studio:reference-upload"), {"image": upload}, **htmx()).content.decode()

    asset = WorkspaceAsset.objects.get(owner=alice)
    assert asset.source == AssetSource.UPLOAD and asset.job is None
    assert (asset.width, asset.height) == (120, 150)
    assert asset.thumbnail
    assert refs_in(html) == [str(asset.pk), None]


def test_upload_accepts_jpeg(alice_client, alice, model):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(buffer, "JPEG")
    upload = SimpleUploadedFile("me.jpg", buffer.getvalue(), content_type="image/jpeg")
    alice_client.post(reverse("studio:reference-upload"), {"image": upload}, **htmx())
    assert WorkspaceAsset.objects.get(owner=alice).content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("data", "setting", "message"),
    [
        (b"not an image at all", {}, "The file is not a PNG, JPEG or WebP image."),
        (png_bytes(size=(64, 64)), {"UPLOAD_MAX_BYTES": 100}, "The file is too large"),
        (png_bytes(size=(64, 64)), {"IMAGE_MAX_PIXELS": 1000}, "the limit is 0.0 megapixels"),
        (png_bytes()[:60], {}, "damaged"),
    ],
)
def test_a_bad_upload_is_refused_with_a_clear_message(alice_client, model, settings, data, setting, message):
    for name, value in setting.items():
        setattr(settings, name, value)
    upload = SimpleUploadedFile("x.png", data, content_type="image/png")
    response = alice_client.post(reverse("studio:reference-upload"), {"image": upload}, **htmx())

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="upload-errors"' in html
    assert message in html or message.lower() in html.lower()
    assert not WorkspaceAsset.objects.exists()


def test_a_bad_upload_without_javascript_rerenders_the_page(alice_client, model):
    upload = SimpleUploadedFile("x.png", b"nope", content_type="image/png")
    response = alice_client.post(reverse("studio:reference-upload"), {"image": upload})
    assert response.status_code == 400
    assert b"The file is not a PNG, JPEG or WebP image." in response.content


def test_an_upload_with_no_file_says_so(alice_client, model):
    html = alice_client.post(reverse("studio:reference-upload"), {}, **htmx()).content.decode()
    assert "Choose an image to upload." in html


def test_without_javascript_the_actions_redirect_back_to_the_bar(alice_client, alice, model):
    asset = make_asset(alice)
    response = alice_client.post(reverse("studio:reference-use", args=[asset.pk]), {"slot": "1"})
    assert response.status_code == 302 and response["Location"].endswith("#prompt")
    assert refs_in(alice_client.get(reverse("studio:home")).content.decode()) == [str(asset.pk), None]


def test_the_typed_prompt_survives_a_reference_action(alice_client, alice, model):
    use(alice_client, make_asset(alice), prompt="half typed words")
    assert "half typed words</textarea>" in alice_client.get(reverse("studio:home")).content.decode()


def test_another_users_image_cannot_be_a_reference(alice_client, bob, model):
    theirs = make_asset(bob)
    response = alice_client.post(reverse("studio:reference-use", args=[theirs.pk]), **htmx())
    assert response.status_code == 404


@pytest.mark.parametrize(
    "name", ["studio:reference-swap", "studio:reference-clear", "studio:reference-mode", "studio:reference-upload"]
)
def test_they_reject_get(alice_client, name):
    assert alice_client.get(reverse(name)).status_code == 405
