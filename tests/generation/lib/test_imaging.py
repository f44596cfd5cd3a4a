"""generation.lib.imaging: only PNG/JPEG/WebP get decoded, bombs and damaged files are refused, no metadata out."""

from __future__ import annotations

import struct
import warnings
import zlib
from io import BytesIO

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from generation.lib.imaging import (
    ALLOWED_FORMATS,
    InvalidImage,
    ProcessedImage,
    open_image,
    process_image,
    sniff_content_type,
)

ORIENTATION = 0x0112
MAKE = 0x010F


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def gradient(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A picture with some content, so encoders do real work and pixels can be compared."""
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([((x * 255) // width, (y * 255) // height, 128) for y in range(height) for x in range(width)])
    return image.convert(mode)


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert int.from_bytes(data[4:8], "little") + 8 == len(data)
    kinds, pos = [], 12
    while pos < len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        kinds.append(data[pos : pos + 4])
        pos += 8 + size + size % 2
    return kinds


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose IHDR declares width x height RGB pixels: what a decompression bomb looks like
    to the header check. The IDAT holds a little real data, so only the header tells it apart."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    )


PAYLOAD = b"<script>alert(document.domain)</script>"


def png_with_stored_payload(payload: bytes = PAYLOAD) -> bytes:
    """A valid greyscale PNG carrying `payload` verbatim twice, as a polyglot would: in a private chunk,
    and as its first row of pixels inside an IDAT of stored (level 0, uncompressed) deflate blocks."""
    width, height = len(payload), 16
    rows = [payload] + [bytes((x * 7 + y * 13) % 256 for x in range(width)) for y in range(1, height)]
    raw = b"".join(b"\0" + row for row in rows)  # filter type 0: each row's bytes as they are
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"prVt", payload)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


def exif_with(**tags: int | str) -> Image.Exif:
    exif = Image.Exif()
    for key, value in tags.items():
        exif[{"orientation": ORIENTATION, "make": MAKE}[key]] = value
    return exif


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.IMAGE_MAX_PIXELS = 4096 * 4096
    settings.DOWNLOAD_MAX_BYTES = 25 * 1024 * 1024


class TestProcessImage:
    def test_it_keeps_a_png_a_png_and_drops_every_metadata_chunk(self):
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "secret prompt")
        info.add_itxt("parameters", "seed 42", zip=True)
        source = encode(
            gradient(),
            "PNG",
            pnginfo=info,
            exif=exif_with(make="Spy Camera"),
            icc_profile=b"not really a profile",
            dpi=(300, 300),
        )
        source += b"<script>trailing data</script>"
        assert {b"tEXt", b"iTXt", b"eXIf", b"iCCP", b"pHYs"} <= set(png_chunks(source.split(b"<script>")[0]))

        result = process_image(source)

        assert isinstance(result, ProcessedImage)
        assert (result.content_type, result.extension) == ("image/png", "png")
        assert (result.width, result.height) == (64, 48)
        assert png_chunks(result.data) == [b"IHDR", b"IDAT", b"IEND"]
        assert b"secret prompt" not in result.data and b"Spy Camera" not in result.data
        assert b"<script>" not in result.data
        output = reopen(result.data)
        assert output.format == "PNG" and output.size == (64, 48)
        assert output.tobytes() == gradient().tobytes()

    def test_it_strips_exif_from_a_jpeg(self):
        source = encode(gradient(), "JPEG", exif=exif_with(make="Spy Camera"), comment=b"hello", quality=95)
        assert reopen(source).getexif().get(MAKE) == "Spy Camera"

        result = process_image(source)

        assert (result.content_type, result.extension) == ("image/jpeg", "jpg")
        assert (result.width, result.height) == (64, 48)
        output = reopen(result.data)
        assert output.format == "JPEG" and output.mode == "RGB"
        assert dict(output.getexif()) == {}
        assert "exif" not in output.info and "comment" not in output.info
        assert b"Exif" not in result.data and b"Spy Camera" not in result.data

    @pytest.mark.parametrize("progressive", [False, True])
    def test_a_jpeg_keeps_its_compressed_pixels_and_loses_its_metadata_without_a_reencode(self, progressive):
        source = encode(
            gradient((800, 600)),
            "JPEG",
            exif=exif_with(make="Spy Camera"),
            icc_profile=b"i" * 64,
            comment=b"hello",
            quality=90,
            progressive=progressive,
        )

        result = process_image(source)

        assert b"Spy Camera" not in result.data and b"iiii" not in result.data and b"hello" not in result.data
        # Not re-encoded: the very same pixels decode from it, and it is no bigger than the source.
        assert reopen(result.data).tobytes() == reopen(source).tobytes()
        assert len(result.data) < len(source)
        assert (result.width, result.height) == (800, 600)
        thumbnail = reopen(result.thumbnail)
        assert thumbnail.size == (384, 288)

    def test_a_rotated_jpeg_is_still_decoded_in_full_and_turned(self):
        source = encode(gradient((80, 40)), "JPEG", exif=exif_with(orientation=6))

        result = process_image(source)

        assert (result.width, result.height) == (40, 80)
        assert reopen(result.data).size == (40, 80)

    def test_it_strips_metadata_from_a_webp(self):
        image = gradient(mode="RGBA")
        image.putalpha(128)
        source = encode(image, "WEBP", exif=exif_with(make="Spy Camera"), icc_profile=b"x" * 64)
        assert "exif" in reopen(source).info

        result = process_image(source)

        assert (result.content_type, result.extension) == ("image/webp", "webp")
        assert (result.width, result.height) == (64, 48)
        output = reopen(result.data)
        assert output.format == "WEBP" and output.mode == "RGBA"
        assert "exif" not in output.info and "icc_profile" not in output.info
        assert b"Spy Camera" not in result.data
        assert webp_chunks(result.data) == [b"VP8X", b"ALPH", b"VP8 "]
        # The compressed stream is kept, not re-encoded: same pixels, no second generation loss.
        assert output.tobytes() == reopen(source).tobytes()

    @pytest.mark.parametrize(
        ("options", "chunks"),
        [({"lossless": True}, [b"VP8L"]), ({"quality": 80}, [b"VP8 "])],
        ids=["lossless", "lossy-opaque"],
    )
    def test_it_rebuilds_a_webp_as_a_simple_file_without_metadata(self, options, chunks):
        source = encode(gradient(), "WEBP", exif=exif_with(make="Spy Camera"), xmp=b"<x:xmpmeta/>", **options)
        assert b"EXIF" in source and b"XMP " in source
        source += b"trailing bytes past the RIFF size"

        result = process_image(source)

        assert webp_chunks(result.data) == chunks
        assert b"Spy Camera" not in result.data and b"xmpmeta" not in result.data
        assert reopen(result.data).tobytes() == reopen(source).tobytes()

    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
    def test_it_applies_exif_orientation_to_the_pixels(self, fmt):
        # Orientation 6: the camera was turned; viewers rotate 90° clockwise for display.
        source = encode(gradient((60, 40)), fmt, exif=exif_with(orientation=6))

        result = process_image(source)

        assert (result.width, result.height) == (40, 60)
        output = reopen(result.data)
        assert output.size == (40, 60)
        assert output.getexif().get(ORIENTATION) is None

    def test_it_turns_a_cmyk_or_greyscale_jpeg_into_rgb(self):
        for mode in ("CMYK", "L"):
            result = process_image(encode(gradient(mode=mode), "JPEG"))
            assert reopen(result.data).mode == "RGB", mode

    def test_it_keeps_palette_transparency_and_shows_it_on_white_in_the_thumbnail(self):
        image = Image.new("P", (40, 40), 0)
        image.putpalette([255, 0, 0] + [0, 0, 255] * 255)
        image.paste(1, (20, 0, 40, 40))
        source = encode(image, "PNG", transparency=0)  # palette entry 0 (red) is fully transparent

        result = process_image(source)

        output = reopen(result.data).convert("RGBA")
        assert output.getpixel((5, 5))[3] == 0
        assert output.getpixel((30, 5)) == (0, 0, 255, 255)
        thumbnail = reopen(result.thumbnail)
        assert thumbnail.mode == "RGB"
        red, green, blue = thumbnail.getpixel((5, 20))
        assert min(red, green, blue) > 240, "transparent area must be white, not red or black"

    def test_it_scales_16_bit_greyscale_instead_of_clipping_it(self):
        source = encode(Image.new("I;16", (32, 32), 0x8000), "PNG")

        result = process_image(source)

        output = reopen(result.data)
        assert output.mode == "L"
        assert output.getpixel((0, 0)) == 0x80  # clipping would give 255

    def test_it_keeps_alpha_of_an_rgba_png_and_composites_the_thumbnail_on_white(self):
        image = gradient((100, 50), mode="RGBA")
        image.paste((0, 0, 0, 0), (0, 0, 50, 50))
        result = process_image(encode(image, "PNG"))

        assert reopen(result.data).getpixel((10, 10)) == (0, 0, 0, 0)
        assert reopen(result.thumbnail).getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=3)

    def test_it_keeps_only_the_first_picture_of_an_mpo_or_an_animation(self):
        red, blue = Image.new("RGB", (32, 24), "red"), Image.new("RGB", (32, 24), "blue")
        mpo = encode(red, "MPO", save_all=True, append_images=[blue])
        apng = encode(red, "PNG", save_all=True, append_images=[blue])
        animated_webp = encode(red, "WEBP", save_all=True, append_images=[blue], lossless=True)
        assert b"acTL" in apng and b"ANMF" in animated_webp

        mpo_result, apng_result = process_image(mpo), process_image(apng)
        webp_result = process_image(animated_webp)

        assert mpo_result.content_type == "image/jpeg"
        assert getattr(reopen(mpo_result.data), "n_frames", 1) == 1
        assert b"\xff\xe2" not in mpo_result.data  # no APP2 (the MP index)
        assert apng_result.content_type == "image/png"
        assert b"acTL" not in apng_result.data
        assert reopen(apng_result.data).getpixel((0, 0)) == (255, 0, 0)
        assert webp_result.content_type == "image/webp"
        assert b"ANMF" not in webp_result.data and b"ANIM" not in webp_result.data
        assert reopen(webp_result.data).getpixel((0, 0))[:3] == pytest.approx((255, 0, 0), abs=4)  # lossy re-encode

    def test_it_makes_a_jpeg_thumbnail_whose_longest_side_is_384(self):
        result = process_image(encode(gradient((768, 1024)), "PNG"))

        assert result.thumbnail_content_type == "image/jpeg"
        thumbnail = reopen(result.thumbnail)
        assert thumbnail.format == "JPEG" and thumbnail.mode == "RGB"
        assert thumbnail.size == (288, 384)

    def test_it_never_upscales_a_small_image_for_the_thumbnail(self):
        result = process_image(encode(gradient((100, 60)), "WEBP"), thumbnail_size=384)

        assert reopen(result.thumbnail).size == (100, 60)

    def test_it_refuses_bytes_over_max_bytes_before_pillow_sees_them(self, monkeypatch):
        def no_decoding(*args, **kwargs):
            raise AssertionError("Pillow must not be called for an oversized file")

        monkeypatch.setattr(Image, "open", no_decoding)
        data = b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)

        with pytest.raises(InvalidImage, match=r"^The file is 2 MB; the limit is 1 MB\.$"):
            process_image(data, max_bytes=1024 * 1024)

    def test_reencode_drops_a_payload_in_stored_png_data_and_keeps_the_pixels(self):
        source = png_with_stored_payload()
        assert source.count(PAYLOAD) == 2

        fast = process_image(source)  # provider outputs: the pixel stream is kept byte for byte
        result = process_image(source, reencode=True)  # uploads

        assert PAYLOAD in fast.data
        assert PAYLOAD not in result.data and PAYLOAD not in result.thumbnail
        assert result.content_type == "image/png"
        assert reopen(result.data).tobytes() == reopen(source).tobytes()

    def test_reencode_never_keeps_a_webp_bitstream(self):
        source = encode(gradient(), "WEBP", lossless=True)
        body = source[12:]  # everything after the RIFF header: the bitstream chunk

        assert process_image(source).data[12:] == body  # the fast path keeps it
        result = process_image(source, reencode=True)
        assert result.data[12:] != body and result.content_type == "image/webp"
        assert reopen(result.data).size == gradient().size

    def test_it_uses_download_max_bytes_by_default(self, settings):
        settings.DOWNLOAD_MAX_BYTES = 100
        with pytest.raises(InvalidImage, match="the limit is"):
            process_image(encode(gradient(), "PNG"))


class TestRejections:
    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"just some text, certainly not a picture\n", id="text"),
            pytest.param(encode(gradient(), "GIF"), id="gif"),
            pytest.param(encode(gradient(), "BMP"), id="bmp"),
            pytest.param(encode(gradient(), "TIFF"), id="tiff"),
            pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", id="eps"),
            pytest.param(b"\xc5\xd0\xd3\xc6" + b"\0" * 60, id="eps-binary-header"),
            pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        ],
    )
    def test_it_refuses_anything_but_png_jpeg_and_webp(self, data):
        with pytest.raises(InvalidImage, match=r"^The file is not a PNG, JPEG or WebP image\.$"):
            process_image(data)

    def test_it_never_hands_an_eps_file_to_pillow(self, monkeypatch):
        # EPS means Ghostscript: the point is that no decoder is even asked, not only that it fails.
        calls = []
        monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append(a))
        with pytest.raises(InvalidImage):
            open_image(b"%!PS-Adobe-3.0 EPSF-3.0\n")
        assert calls == []

    def test_it_refuses_png_magic_followed_by_garbage(self):
        with pytest.raises(InvalidImage, match="not a PNG, JPEG or WebP"):
            process_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
    def test_it_refuses_a_truncated_file(self, fmt):
        data = encode(gradient((256, 256)), fmt)

        with pytest.raises(InvalidImage, match=r"damaged or incomplete|not a PNG, JPEG or WebP"):
            process_image(data[: len(data) // 2])

    def test_a_reduced_decode_of_a_truncated_jpeg_is_refused_too(self):
        data = encode(gradient((1600, 1200)), "JPEG")  # decoded at 1/4 scale for its thumbnail

        with pytest.raises(InvalidImage, match="damaged or incomplete"):
            process_image(data[: len(data) * 3 // 4])

    def test_it_refuses_a_declared_50000x50000_png_from_its_header_alone(self):
        data = png_claiming(50_000, 50_000)
        assert len(data) < 1000

        with pytest.raises(InvalidImage, match=r"too large; the limit is 16\.8 megapixels"):
            process_image(data)

    def test_it_turns_pillows_bomb_warning_into_a_refusal_without_changing_global_filters(self, settings):
        # 100 megapixels: over Pillow's warning threshold (89.5 MP), under its hard error (179 MP).
        settings.IMAGE_MAX_PIXELS = 200_000_000
        filters_before = list(warnings.filters)

        with pytest.raises(InvalidImage, match="too large"):
            process_image(png_claiming(10_000, 10_000))

        assert warnings.filters == filters_before

    def test_it_refuses_dimensions_over_image_max_pixels_before_decoding(self):
        # 5000x5000 is under Pillow's own limits; only ours stops it. The IDAT is too short to decode,
        # so getting this message (and not "damaged") proves load() never ran.
        with pytest.raises(InvalidImage, match=r"^The image is 5000×5000 pixels; the limit is 16\.8 megapixels\.$"):
            process_image(png_claiming(5000, 5000))

    def test_it_refuses_a_real_highly_compressed_large_png(self):
        data = encode(Image.new("L", (6000, 6000)), "PNG", compress_level=9)
        assert len(data) < 100_000  # 36 megapixels in a file smaller than most photos

        with pytest.raises(InvalidImage, match=r"^The image is 6000×6000 pixels"):
            process_image(data)

    def test_it_honours_an_explicit_max_pixels(self):
        with pytest.raises(InvalidImage, match=r"^The image is 100×100 pixels; the limit is 0\.0 megapixels\.$"):
            open_image(encode(gradient((100, 100)), "PNG"), max_pixels=5000)
        assert open_image(encode(gradient((50, 100)), "PNG"), max_pixels=5000).size == (50, 100)

    def test_it_refuses_empty_data(self):
        with pytest.raises(InvalidImage, match="empty"):
            process_image(b"")

    def test_it_refuses_to_run_with_truncated_images_allowed(self, monkeypatch):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with pytest.raises(RuntimeError):
            open_image(encode(gradient(), "PNG"))

    def test_invalid_image_is_a_value_error_for_form_code(self):
        assert issubclass(InvalidImage, ValueError)


class TestOpenImage:
    @pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
    def test_it_returns_a_fully_loaded_image(self, fmt):
        image = open_image(encode(gradient(), fmt))

        assert image.format == fmt
        assert image.size == (64, 48)
        assert image.getpixel((0, 0)) is not None


class TestSniffContentType:
    def test_it_reads_magic_bytes_not_names(self):
        assert sniff_content_type(encode(gradient(), "PNG")) == "image/png"
        assert sniff_content_type(encode(gradient(), "JPEG")) == "image/jpeg"
        assert sniff_content_type(encode(gradient(), "WEBP")) == "image/webp"
        assert sniff_content_type(encode(gradient(), "GIF")) is None
        assert sniff_content_type(b"RIFF\0\0\0\0WAVE") is None
        assert sniff_content_type(b"") is None
