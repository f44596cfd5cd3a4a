"""The one place that decodes untrusted image bytes: uploads, reference images and provider outputs.

Everything here follows docs/reliability.md §3.2: only PNG, JPEG and WebP are ever handed to a decoder,
the byte size is checked before Pillow sees the data, the pixel count before the pixels are decoded,
and what we store carries no metadata (EXIF holds GPS positions and camera serials; ICC profiles and text
chunks are free-form attacker-controlled bytes we have no use for).

Callers catch `InvalidImage`; its message is a sentence that can be shown to the user as it is.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO

from django.conf import settings
from PIL import ExifTags, Image, ImageFile, ImageOps

from generation.lib.sizes import megabytes, megapixels

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")

_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}

# Modes each output format keeps as they are; anything else is converted (see _normalize_mode).
_KEEP_MODES = {"PNG": {"L", "LA", "RGB", "RGBA"}, "JPEG": {"RGB"}, "WEBP": {"RGB", "RGBA"}}

_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    # compress_level 3 is several times faster than the default 6 for a few percent more bytes;
    # this runs for every generated image, so speed wins.
    "PNG": {"optimize": False, "compress_level": 3},
    "JPEG": {"quality": 92},
    # method 2 encodes about 2.5x faster than the default 4 for a ~1% larger file at the same quality.
    "WEBP": {"quality": 90, "method": 2},
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_CHUNK = 0x7FFFFFFF
_PNG_IEND = b"\0\0\0\0IEND\xaeB`\x82"

THUMBNAIL_CONTENT_TYPE = "image/jpeg"
_THUMBNAIL_QUALITY = 82


class InvalidImage(ValueError):
    """The bytes are not an image we accept. `str(exc)` is a complete sentence fit for the user."""


@dataclass(frozen=True)
class ProcessedImage:
    """An image with no metadata, plus a JPEG thumbnail.

    `extension` has no leading dot ("png", "jpg", "webp"). `width` and `height` are those of `data`,
    after EXIF orientation was applied.
    """

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_content_type: str


def sniff_content_type(data: bytes) -> str | None:
    """The content type of `data` judged by its magic bytes, or None if it is not PNG, JPEG or WebP.

    Only a cheap first look: it says nothing about whether the rest of the file decodes.
    """
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def open_image(data: bytes, *, max_pixels: int | None = None, draft_size: int | None = None) -> Image.Image:
    """Decode `data` fully and return the image, or raise `InvalidImage`.

    Guarantees on return: the format is one of ALLOWED_FORMATS, width × height <= max_pixels
    (default settings.IMAGE_MAX_PIXELS), and the pixel data was decoded completely, so a truncated
    or corrupt file never gets past this point. Only the first frame of an animated file is loaded.
    `image.format` may be "MPO" (a JPEG with extra pictures, as many phone cameras write): treat it as JPEG.
    `draft_size`: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose sides stay at or
    above it, which still reads every byte of the entropy-coded data; `image.size` is then the reduced
    size and `image.encoded_size` the file's own.
    """
    if max_pixels is None:
        max_pixels = settings.IMAGE_MAX_PIXELS
    if not data:
        raise InvalidImage("The file is empty.")
    # Pillow would refuse these too (formats=...), but not handing them to it at all is cheaper and
    # keeps every other decoder (EPS → Ghostscript above all) out of reach.
    if sniff_content_type(data) is None:
        raise InvalidImage("The file is not a PNG, JPEG or WebP image.")
    # A process-wide setting someone flipped for convenience must not let truncated files through.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")

    # catch_warnings is process-global state and not thread-safe; that is acceptable because the
    # explicit max_pixels check below (far under Pillow's own limit) is what actually guards us, and
    # Pillow raises DecompressionBombError by itself at twice its limit regardless of filters.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise InvalidImage(f"The image is too large; the limit is {megapixels(max_pixels)}.") from exc
        except Exception as exc:  # Pillow raises more than UnidentifiedImageError (ValueError, SyntaxError, ...)
            logger.info("image rejected at open: %r", exc)
            raise InvalidImage("The file is not a PNG, JPEG or WebP image.") from exc

        try:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InvalidImage("The image has no pixels.")
            if width * height > max_pixels:
                raise InvalidImage(f"The image is {width}×{height} pixels; the limit is {megapixels(max_pixels)}.")
            image.encoded_size = (width, height)
            if draft_size and image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L"):
                image.draft(image.mode, (draft_size, draft_size))
            try:
                image.load()
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                raise InvalidImage(f"The image is too large; the limit is {megapixels(max_pixels)}.") from exc
            except Exception as exc:
                logger.info("image rejected at load: %r", exc)
                raise InvalidImage("The image is damaged or incomplete and cannot be read.") from exc
        except InvalidImage:
            image.close()
            raise
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La")


def _normalize_mode(image: Image.Image, fmt: str) -> Image.Image:
    """`image` in a mode `fmt` can store and a browser shows correctly (JPEG: always RGB).

    Transparency kept in `.info` (PNG tRNS: palette, single grey level or colour) becomes a real alpha
    channel, because the caller clears `.info` and would otherwise lose it.
    """
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greyscale: a plain convert("L") clips everything above 255 to white; scale instead.
        wide = image if mode == "I" else image.convert("I")
        image = wide.point(lambda v: v * (1 / 256)).convert("L")
        return image if fmt == "PNG" else image.convert("RGB")
    if fmt != "JPEG" and (_has_alpha(image) or "transparency" in image.info):
        if fmt == "PNG" and mode in ("L", "LA", "La", "1"):
            return image if mode == "LA" else image.convert("LA")
        return image if mode == "RGBA" else image.convert("RGBA")
    if mode in _KEEP_MODES[fmt]:
        return image
    if mode == "1" and fmt == "PNG":
        return image.convert("L")
    # What is left has no alpha worth keeping (JPEG sources never have any): CMYK, P, YCbCr, L for JPEG.
    return image.convert("RGB")


def _thumbnail(image: Image.Image, size: int) -> bytes:
    if image.mode not in ("RGB", "RGBA", "L", "LA") or "transparency" in image.info:
        # Palette images would be resized with NEAREST; tRNS transparency would be lost.
        image = image.convert("RGBA" if _has_alpha(image) or "transparency" in image.info else "RGB")
    width, height = image.size
    scale = size / max(width, height)
    if scale < 1:
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap=1.0 box-reduces by the integer part of the factor first, and bilinear (still
        # antialiased in Pillow) does the rest: a third of the time of a plain bicubic resize at
        # 768x1024, with no difference visible at thumbnail size.
        image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    out = BytesIO()
    image.save(out, "JPEG", quality=_THUMBNAIL_QUALITY)
    return out.getvalue()


def _strip_png(data: bytes) -> bytes | None:
    """`data` rebuilt from its IHDR, PLTE, tRNS, IDAT and IEND chunks alone, or None to re-encode instead.

    Why not always re-encode: on a 2-core worker Pillow's PNG encoder alone takes ~80 ms at
    compress_level 3 (~30 ms even uncompressed) for 768x1024, and this runs for every generated image.
    The pixel stream is kept byte for byte (Pillow has already decoded all of it in open_image); every
    ancillary chunk (text, EXIF, ICC, gamma, time, private chunks) and anything after IEND is dropped.
    None for anything that is not a plain 8-bit still PNG with valid CRCs: 16-bit or sub-byte depths,
    APNG, unknown critical chunks, IDAT not contiguous. The caller then goes through Pillow.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view = memoryview(data)
    kept: list[memoryview] = []
    idat: list[memoryview] = []
    idat_closed = False
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            return None  # no IEND
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if length > _PNG_MAX_CHUNK or end > len(data):
            return None
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return None
        body = view[pos + 8 : end - 4]
        if kind == b"IDAT":
            if idat_closed:
                return None
            idat.append(view[pos:end])  # whole chunks, CRC included: copied once, into the output
        else:
            idat_closed = bool(idat)
            if kind == b"IHDR":
                # bytes 8 and 9: bit depth and colour type; every colour type allows depth 8
                if pos != len(_PNG_SIGNATURE) or length != 13 or body[8] != 8:
                    return None
                kept.append(view[pos:end])
            elif kind in (b"PLTE", b"tRNS"):
                if idat or not kept:
                    return None
                kept.append(view[pos:end])
            elif kind == b"IEND":
                break
            elif kind == b"acTL" or not kind[0] & 0x20:
                return None  # animated, or a critical chunk we do not know how to judge
        pos = end
    if not kept or not idat:
        return None
    return b"".join((_PNG_SIGNATURE, *kept, *idat, _PNG_IEND))


# JPEG markers kept by _strip_jpeg: the frame (baseline, extended, progressive Huffman), its tables,
# scans, restart interval and JFIF/Adobe headers (APP14 says how the colours are transformed).
_JPEG_SOF = {0xC0, 0xC1, 0xC2}
_JPEG_KEEP = _JPEG_SOF | {0xC4, 0xDB, 0xDD, 0xDA}


def _strip_jpeg(data: bytes) -> bytes | None:
    """`data` rebuilt from its frame, tables and scans alone, or None to re-encode instead.

    Why: a re-encode costs ~40 ms at 1 MP and loses quality every pass. EXIF, XMP, ICC, comments,
    every other APPn segment and anything after EOI (an MPO's further pictures) are dropped; the
    entropy-coded data is copied byte for byte (Pillow has decoded all of it). None for arithmetic
    coding, lossless or hierarchical frames, or anything not laid out as the JPEG spec says.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    view = memoryview(data)
    parts: list[memoryview | bytes] = [b"\xff\xd8"]
    pos, size, frame = 2, len(data), False
    while True:
        if pos + 2 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        if marker == 0xD9:
            break
        if pos + 4 > size:
            return None
        end = pos + 2 + int.from_bytes(view[pos + 2 : pos + 4], "big")
        if end > size:
            return None
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic-coded frames
        if marker in _JPEG_SOF:
            frame = True
        header = bytes(view[pos + 4 : pos + 9])
        if marker in _JPEG_KEEP or (marker, header) in ((0xE0, b"JFIF\0"), (0xEE, b"Adobe")):
            parts.append(view[pos:end])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return None  # a marker we do not know how to judge
        pos = end
        if marker == 0xDA:  # the scan's entropy-coded data runs to the next marker other than RSTn
            scan = pos
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return None
                following = data[pos + 1]
                if following == 0 or 0xD0 <= following <= 0xD7:
                    pos += 2
                    continue
                break
            parts.append(view[scan:pos])
    if not frame:
        return None
    parts.append(b"\xff\xd9")
    return b"".join(parts)


def _riff_chunk(kind: bytes, body: bytes | memoryview) -> bytes:
    return kind + len(body).to_bytes(4, "little") + bytes(body) + (b"\0" if len(body) % 2 else b"")


def _strip_webp(data: bytes) -> bytes | None:
    """`data` rebuilt from its bitstream chunks alone (VP8 or VP8L, plus ALPH), or None to re-encode instead.

    Why: re-encoding costs ~70 ms at 768x1024 on a 2-core worker and loses quality on every pass
    (Replicate's default output is lossy WebP). ICCP, EXIF, XMP, unknown chunks and bytes past the RIFF
    size are dropped; the VP8X header, needed only for lossy-with-alpha, is rewritten with just the alpha
    flag. None for animations and anything not laid out as the WebP container spec says.
    """
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    end = 8 + int.from_bytes(data[4:8], "little")
    if end > len(data):
        return None
    view = memoryview(data)
    chunks: dict[bytes, memoryview] = {}
    pos = 12
    while pos < end:
        if pos + 8 > end:
            return None
        kind = bytes(view[pos : pos + 4])
        size = int.from_bytes(view[pos + 4 : pos + 8], "little")
        body_end = pos + 8 + size
        if body_end > end:
            return None
        if kind in (b"ANIM", b"ANMF") or kind in chunks and kind in (b"VP8X", b"ALPH", b"VP8 ", b"VP8L"):
            return None
        chunks[kind] = view[pos + 8 : body_end]
        pos = body_end + (size % 2)
    if (b"VP8 " in chunks) == (b"VP8L" in chunks):
        return None  # exactly one bitstream
    if b"VP8L" in chunks:
        body = _riff_chunk(b"VP8L", chunks[b"VP8L"])  # lossless carries its own alpha
    elif b"ALPH" in chunks:
        vp8x = chunks.get(b"VP8X")
        if vp8x is None or len(vp8x) != 10:
            return None
        header = b"\x10\0\0\0" + bytes(vp8x[4:])  # flags: alpha only, reserved zero, then the canvas size
        body = (
            _riff_chunk(b"VP8X", header) + _riff_chunk(b"ALPH", chunks[b"ALPH"]) + _riff_chunk(b"VP8 ", chunks[b"VP8 "])
        )
    else:
        body = _riff_chunk(b"VP8 ", chunks[b"VP8 "])
    return b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body


def _reencode(source: Image.Image, fmt: str) -> tuple[bytes, Image.Image]:
    """A fresh encode of `source` with EXIF orientation applied and no metadata, and the image encoded."""
    # exif_transpose always returns a new plain Image (a copy when nothing rotates), which
    # leaves the plugin-specific state of `source` (JPEG app markers, PNG text chunks) behind.
    image = ImageOps.exif_transpose(source)
    image = _normalize_mode(image, fmt)
    # convert() and copy() carry .info over, and the PNG and JPEG writers fall back to it for
    # the ICC profile, transparency and comments; an empty dict means nothing is written but pixels.
    image.info = {}
    out = BytesIO()
    image.save(out, fmt, **_SAVE_OPTIONS[fmt])
    return out.getvalue(), image


def process_image(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    thumbnail_size: int = 384,
    reencode: bool = False,
) -> ProcessedImage:
    """Validate `data` and return a metadata-free copy in the same format, plus a JPEG thumbnail.

    Raises `InvalidImage` if `data` is over `max_bytes` (default settings.DOWNLOAD_MAX_BYTES; uploads
    pass settings.UPLOAD_MAX_BYTES), is not PNG/JPEG/WebP, is over `max_pixels` or does not decode.
    The output carries no EXIF, ICC, XMP, text chunks or comments. EXIF orientation is applied to the
    pixels, because the tag that said how to rotate them is dropped. JPEG output is always RGB.
    A plain 8-bit still PNG, a still WebP or an unrotated RGB Huffman JPEG keeps its compressed pixel
    stream, already fully decoded by Pillow here, inside a rebuilt container (see _strip_png,
    _strip_webp, _strip_jpeg); everything else is re-encoded through Pillow. The thumbnail's longest
    side is `thumbnail_size` (never upscaled) and transparency is shown on white.
    `reencode=True` (a user's upload) re-encodes every image: a kept stream is the sender's bytes, and
    a PNG's stored (uncompressed) deflate blocks or a WebP's bitstream carry any payload through it
    unchanged while the pixels still decode. Provider outputs keep the fast path.
    """
    if max_bytes is None:
        max_bytes = settings.DOWNLOAD_MAX_BYTES
    if len(data) > max_bytes:
        raise InvalidImage(f"The file is {megabytes(len(data))}; the limit is {megabytes(max_bytes)}.")

    # A JPEG whose bytes may be kept is decoded once, at a reduced scale still above the thumbnail's:
    # the pixels are only needed for the thumbnail.
    draft = thumbnail_size if not reencode and sniff_content_type(data) == "image/jpeg" else None
    source = open_image(data, max_pixels=max_pixels, draft_size=draft)
    # MPO is a JPEG with more pictures appended; saving it as JPEG keeps the first, the one shown.
    fmt = "JPEG" if source.format == "MPO" else source.format
    try:
        if fmt not in ALLOWED_FORMATS:  # formats= guarantees this; belt and braces for a Pillow change
            raise InvalidImage("The file is not a PNG, JPEG or WebP image.")
        strip = None
        if not reencode and source.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            if fmt in ("PNG", "WEBP"):
                strip = _strip_png if fmt == "PNG" else _strip_webp
            elif source.mode == "RGB":  # JPEG output is always RGB: greyscale and CMYK re-encode
                strip = _strip_jpeg
        encoded = None
        if strip is not None:
            width, height = source.encoded_size
            thumbnail = _thumbnail(source, thumbnail_size)
            # The pixels were needed for the check and the thumbnail only: free them before the
            # stripped copy exists (four stores at once each held both).
            source.close()
            encoded = strip(data)
        if encoded is None:
            if strip is not None or source.size != source.encoded_size:
                # Not strippable after all, or decoded at a reduced scale: decode again in full.
                source.close()
                source = open_image(data, max_pixels=max_pixels)
            encoded, image = _reencode(source, fmt)
            width, height = image.size
            thumbnail = _thumbnail(image, thumbnail_size)
    except InvalidImage:
        raise
    except Exception as exc:  # EXIF parsing and odd modes are Pillow code paths too; fail closed
        logger.warning("image failed to re-encode: %r", exc)
        raise InvalidImage("The image is damaged or incomplete and cannot be read.") from exc
    finally:
        source.close()

    return ProcessedImage(
        data=encoded,
        content_type=_CONTENT_TYPES[fmt],
        extension=_EXTENSIONS[fmt],
        width=width,
        height=height,
        thumbnail=thumbnail,
        thumbnail_content_type=THUMBNAIL_CONTENT_TYPE,
    )


@dataclass(frozen=True)
class TrainingImage:
    """An image re-encoded for a LoRA trainer: RGB, no metadata, PNG or JPEG (`extension` "png" | "jpg")."""

    data: bytes
    extension: str
    width: int
    height: int


def training_image(data: bytes, *, max_pixels: int | None = None) -> TrainingImage:
    """`data` decoded and encoded afresh for a training dataset (docs/providers.md §7.6, §7.7).

    Trainers read JPEG and PNG only (WebP "has issues" in ai-toolkit; HEIC fails PIL-based trainers),
    in RGB: a PNG stays a lossless PNG, anything else becomes a JPEG (quality 92, ≥ 90 as §7.6 asks).
    Transparency is flattened on white, since a trainer would drop the alpha onto black. Always a
    fresh encode, so nothing of the source's bytes or metadata reaches the trainer.
    Raises InvalidImage as open_image does.
    """
    source = open_image(data, max_pixels=max_pixels)
    fmt = "PNG" if source.format == "PNG" else "JPEG"
    try:
        image = ImageOps.exif_transpose(source)
        if _has_alpha(image) or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif image.mode != "RGB":
            image = _normalize_mode(image, "JPEG")  # 16-bit grey scaled down, then RGB
        image.info = {}
        out = BytesIO()
        image.save(out, fmt, **_SAVE_OPTIONS[fmt])
    except Exception as exc:  # as in process_image: Pillow's odd modes and EXIF paths fail closed
        logger.warning("training image failed to re-encode: %r", exc)
        raise InvalidImage("The image is damaged or incomplete and cannot be read.") from exc
    finally:
        source.close()
    return TrainingImage(data=out.getvalue(), extension=_EXTENSIONS[fmt], width=image.width, height=image.height)
