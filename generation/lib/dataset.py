"""A LoRA training dataset as the one ZIP layout every trainer of docs/providers.md §7 accepts (§7.6):
flat, `01.jpg` + `01.txt`, `02.png` + `02.txt`, ..., lowercase extensions, no folders, no `__MACOSX/`
or `._*` entries, images freshly encoded as JPEG or PNG, UTF-8 captions that carry the trigger word the
way the chosen trainer reads it, and a small `manifest.json`.

The manifest is JSON, not a README.txt: a stray .txt is what trainers take for a caption.
Streamed: the archive is produced while it is written (generation.lib.zipstream), so a download
starts at once and an upload can read it chunk by chunk.
"""

from __future__ import annotations

import enum
import json
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from generation.lib.imaging import training_image
from generation.lib.zipstream import ZipSink

TRIGGER_PLACEHOLDER = "[trigger]"
MANIFEST_NAME = "manifest.json"
# A trigger is one short token that will not collide with real words (mira_k7, TOK, ohwx; §7.6).
TRIGGER_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,31}$")


class CaptionTrigger(enum.StrEnum):
    """How a trainer wants the trigger word in the captions (docs/providers.md §7.3, §7.6)."""

    # The trigger word itself in every caption: fal fast-training applies its trigger_word only when
    # there are no captions, and flux-2-trainer has no trigger field at all.
    LITERAL = "literal"
    # "[trigger]", which the trainer replaces with its own trigger field (fal portrait and turbo
    # trainers' trigger_phrase, ai-toolkit on Replicate).
    PLACEHOLDER = "placeholder"


class DatasetError(ValueError):
    """The dataset cannot be built; `str(exc)` is a sentence fit for the user."""


@dataclass(frozen=True)
class DatasetImage:
    """One training image: its bytes (PNG, JPEG or WebP), its caption, and what it shows (the shot's
    name, for the manifest)."""

    data: bytes
    caption: str
    label: str = ""


def check_trigger_word(trigger_word: str) -> str:
    """The trigger word, or DatasetError: one token of 2-32 letters, digits and underscores, starting with a letter."""
    if not TRIGGER_WORD.match(trigger_word or ""):
        raise DatasetError(
            "A trigger word is one token of 2 to 32 letters, digits or underscores, "
            "starting with a letter (e.g. mira_k7)."
        )
    return trigger_word


def caption_with_trigger(caption: str, trigger_word: str, style: CaptionTrigger) -> str:
    """`caption` on one line, holding the trigger once as `style` wants it: the literal word, or the
    "[trigger]" placeholder the trainer substitutes. Where the caption already names it (either way)
    it stays in place; otherwise it leads the caption, as the §7.6 examples write it."""
    text = " ".join(caption.split())
    literal = re.compile(rf"(?<![\w\[]){re.escape(trigger_word)}(?![\w\]])")
    if style is CaptionTrigger.LITERAL:
        token, text = trigger_word, text.replace(TRIGGER_PLACEHOLDER, trigger_word)
        present = bool(literal.search(text))
    else:
        token, text = TRIGGER_PLACEHOLDER, literal.sub(TRIGGER_PLACEHOLDER, text)
        present = TRIGGER_PLACEHOLDER in text
    if present:
        return text
    return f"{token}, {text}" if text else token


def _entry(name: str, compress_type: int, date_time: tuple[int, ...]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)  # type: ignore[arg-type]
    info.compress_type = compress_type
    info.external_attr = 0o644 << 16  # a plain file, readable: no odd modes for the trainer's unzip
    return info


def dataset_zip_stream(
    images: Sequence[DatasetImage],
    *,
    trigger_word: str,
    caption_trigger: CaptionTrigger,
    trainer: str = "",
    max_pixels: int | None = None,
) -> Iterator[bytes]:
    """The bytes of the dataset ZIP of `images`, in order, produced as it is written.

    Raises DatasetError at once (before any byte, so a download is refused cleanly) for no images or
    a bad trigger word; generation.lib.imaging.InvalidImage, naming the image's position, while
    streaming if an image does not decode (the dataset page decodes them when they are added).
    """
    check_trigger_word(trigger_word)
    if not images:
        raise DatasetError("The dataset has no images.")
    return _stream(images, trigger_word, caption_trigger, trainer, max_pixels)


def _stream(
    images: Sequence[DatasetImage],
    trigger_word: str,
    caption_trigger: CaptionTrigger,
    trainer: str,
    max_pixels: int | None,
) -> Iterator[bytes]:
    width = max(2, len(str(len(images))))
    date_time = time.localtime()[:6]
    manifest: dict[str, Any] = {
        "format": "flat images with same-stem .txt captions",
        "trigger_word": trigger_word,
        "caption_trigger": str(caption_trigger),
        "trainer": trainer,
        "images": [],
    }
    sink = ZipSink()
    with zipfile.ZipFile(sink, mode="w") as archive:  # type: ignore[arg-type]
        for number, item in enumerate(images, start=1):
            stem = f"{number:0{width}d}"
            try:
                encoded = training_image(item.data, max_pixels=max_pixels)
            except ValueError as exc:
                raise type(exc)(f"Image {number}: {exc}") from exc
            caption = caption_with_trigger(item.caption, trigger_word, caption_trigger)
            image_name, caption_name = f"{stem}.{encoded.extension}", f"{stem}.txt"
            # Images are compressed already: STORED. Captions are text: DEFLATED.
            archive.writestr(_entry(image_name, zipfile.ZIP_STORED, date_time), encoded.data)
            yield from sink.drain()
            archive.writestr(_entry(caption_name, zipfile.ZIP_DEFLATED, date_time), caption.encode("utf-8"))
            manifest["images"].append(
                {
                    "image": image_name,
                    "caption_file": caption_name,
                    "caption": caption,
                    "label": item.label,
                    "width": encoded.width,
                    "height": encoded.height,
                }
            )
        body = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
        archive.writestr(_entry(MANIFEST_NAME, zipfile.ZIP_DEFLATED, date_time), body)
    yield from sink.drain()


def dataset_zip_bytes(images: Sequence[DatasetImage], **options: Any) -> bytes:
    """The whole dataset ZIP at once (dataset_zip_stream's options), e.g. to upload it to a trainer."""
    return b"".join(dataset_zip_stream(images, **options))
