"""The training dataset ZIP: the flat layout every trainer of docs/providers.md §7.6 accepts."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO

import pytest
from PIL import Image

from generation.lib.dataset import (
    MANIFEST_NAME,
    CaptionTrigger,
    DatasetError,
    DatasetImage,
    caption_with_trigger,
    check_trigger_word,
    dataset_zip_bytes,
    dataset_zip_stream,
)
from generation.lib.imaging import InvalidImage


def encoded(fmt: str, *, size=(40, 30), mode="RGB", color=(200, 40, 40), **options) -> bytes:
    out = BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (*color, 0)).save(out, fmt, **options)
    return out.getvalue()


def jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0110] = "Secret Camera"  # Model
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    out = BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(out, "JPEG", exif=exif, comment=b"private note")
    return out.getvalue()


SHEET = [
    DatasetImage(encoded("PNG"), "front view, neutral, close-up", "front"),
    DatasetImage(jpeg_with_exif(), "mira_k7 woman, three-quarter left, smiling", "three-quarter left"),
    DatasetImage(encoded("WEBP"), "[trigger] woman, profile, laughing", "profile"),
]


def build(images=SHEET, style=CaptionTrigger.LITERAL, **options) -> zipfile.ZipFile:
    data = dataset_zip_bytes(images, trigger_word="mira_k7", caption_trigger=style, trainer="fal-ai/x", **options)
    return zipfile.ZipFile(BytesIO(data))


class TestLayout:
    def test_it_is_flat_images_with_same_stem_captions_and_a_manifest(self):
        archive = build()
        assert archive.namelist() == ["01.png", "01.txt", "02.jpg", "02.txt", "03.jpg", "03.txt", MANIFEST_NAME]
        assert archive.testzip() is None

    def test_it_has_no_junk_entries(self):
        for name in build().namelist():
            assert "/" not in name and "\\" not in name
            assert not name.startswith((".", "_")) and "__MACOSX" not in name
            assert name == name.lower()

    def test_a_long_dataset_is_numbered_to_sort_in_order(self):
        images = [DatasetImage(encoded("PNG"), f"shot {n}") for n in range(120)]
        names = build(images).namelist()
        assert names[:2] == ["001.png", "001.txt"] and names[-2] == "120.txt"

    def test_images_are_stored_and_text_is_deflated(self):
        archive = build()
        kinds = {info.filename: info.compress_type for info in archive.infolist()}
        assert kinds["01.png"] == kinds["02.jpg"] == zipfile.ZIP_STORED
        assert kinds["01.txt"] == kinds[MANIFEST_NAME] == zipfile.ZIP_DEFLATED


class TestImages:
    def test_every_image_is_re_encoded_without_metadata(self):
        archive = build()
        for index, name in enumerate(["01.png", "02.jpg", "03.jpg"]):
            data = archive.read(name)
            assert data != SHEET[index].data
            image = Image.open(BytesIO(data))
            assert image.format == ("PNG" if name.endswith("png") else "JPEG")
            assert image.mode == "RGB"
            assert not image.getexif() and "comment" not in image.info and "icc_profile" not in image.info
        assert b"Secret Camera" not in archive.read("02.jpg")

    def test_the_exif_orientation_is_applied_to_the_pixels(self):
        image = Image.open(BytesIO(build().read("02.jpg")))
        assert image.size == (30, 40)

    def test_webp_becomes_jpeg_and_transparency_is_flattened_on_white(self):
        transparent = DatasetImage(encoded("PNG", mode="RGBA"), "clear")
        image = Image.open(BytesIO(build([transparent]).read("01.png")))
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)

    def test_an_unreadable_image_names_its_position(self):
        images = [SHEET[0], DatasetImage(b"GIF89a not accepted", "x")]
        with pytest.raises(InvalidImage, match="Image 2: The file is not a PNG, JPEG or WebP image."):
            build(images)


class TestCaptions:
    def test_literal_captions_hold_the_trigger_word_once(self):
        archive = build(style=CaptionTrigger.LITERAL)
        assert archive.read("01.txt").decode() == "mira_k7, front view, neutral, close-up"
        assert archive.read("02.txt").decode() == "mira_k7 woman, three-quarter left, smiling"
        assert archive.read("03.txt").decode() == "mira_k7 woman, profile, laughing"

    def test_placeholder_captions_hold_the_trigger_placeholder(self):
        archive = build(style=CaptionTrigger.PLACEHOLDER)
        assert archive.read("01.txt").decode() == "[trigger], front view, neutral, close-up"
        assert archive.read("02.txt").decode() == "[trigger] woman, three-quarter left, smiling"
        assert archive.read("03.txt").decode() == "[trigger] woman, profile, laughing"

    @pytest.mark.parametrize(
        ("caption", "style", "expected"),
        [
            ("", CaptionTrigger.LITERAL, "mira_k7"),
            ("  two\nlines\tand  spaces ", CaptionTrigger.LITERAL, "mira_k7, two lines and spaces"),
            ("a mira_k7s lookalike", CaptionTrigger.LITERAL, "mira_k7, a mira_k7s lookalike"),
            ("portrait of mira_k7, smiling", CaptionTrigger.LITERAL, "portrait of mira_k7, smiling"),
            ("", CaptionTrigger.PLACEHOLDER, "[trigger]"),
        ],
    )
    def test_caption_with_trigger(self, caption, style, expected):
        assert caption_with_trigger(caption, "mira_k7", style) == expected

    def test_captions_are_utf8(self):
        archive = build([DatasetImage(encoded("PNG"), "Zoë, café lighting")])
        assert archive.read("01.txt").decode("utf-8") == "mira_k7, Zoë, café lighting"


class TestManifest:
    def test_it_lists_each_pair_with_its_label_and_size(self):
        manifest = json.loads(build().read(MANIFEST_NAME))
        assert manifest["trigger_word"] == "mira_k7"
        assert manifest["caption_trigger"] == "literal"
        assert manifest["trainer"] == "fal-ai/x"
        first = manifest["images"][0]
        assert first == {
            "image": "01.png",
            "caption_file": "01.txt",
            "caption": "mira_k7, front view, neutral, close-up",
            "label": "front",
            "width": 40,
            "height": 30,
        }
        assert [i["label"] for i in manifest["images"]] == ["front", "three-quarter left", "profile"]


class TestStreaming:
    def test_it_streams_in_several_chunks_that_make_one_valid_zip(self):
        images = [DatasetImage(encoded("PNG", size=(200, 200), color=(n, 0, 0)), f"shot {n}") for n in range(5)]
        chunks = list(dataset_zip_stream(images, trigger_word="mira_k7", caption_trigger=CaptionTrigger.LITERAL))
        assert len(chunks) >= 5
        assert zipfile.ZipFile(BytesIO(b"".join(chunks))).testzip() is None

    def test_bad_input_is_refused_before_the_first_byte(self):
        with pytest.raises(DatasetError, match="no images"):
            dataset_zip_stream([], trigger_word="mira_k7", caption_trigger=CaptionTrigger.LITERAL)
        with pytest.raises(DatasetError, match="trigger word"):
            dataset_zip_stream(SHEET, trigger_word="two words", caption_trigger=CaptionTrigger.LITERAL)


class TestTriggerWord:
    @pytest.mark.parametrize("word", ["mira_k7", "TOK", "ohwx", "a1"])
    def test_short_tokens_pass(self, word):
        assert check_trigger_word(word) == word

    @pytest.mark.parametrize("word", ["", "x", "7mira", "mira k7", "mira-k7", "[trigger]", "é_word", "a" * 33])
    def test_anything_else_is_refused(self, word):
        with pytest.raises(DatasetError):
            check_trigger_word(word)
