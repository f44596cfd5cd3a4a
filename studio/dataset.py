"""A character's LoRA training dataset: its trigger word, the sheet's images and the ones the user adds
from the gallery, each included or not with an editable caption, the warnings a trainer would give,
and the images as generation.lib.dataset builds the ZIP from them.

The sheet's images join the dataset the first time the page looks (dataset_sync), captioned with the
trigger word and what the shot varies (generation.sheet); a caption keeps the trigger word as written,
and renaming the trigger word rewrites it in every caption.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from generation.lib.dataset import DatasetError, DatasetImage, check_trigger_word
from generation.models import JobKind
from generation.sheet import sheet_caption
from studio.models import AssetKind, Character, DatasetItem, WorkspaceAsset

# §7.6: trainers never upscale, and buckets go up to 1024; a smaller short side trains blurry.
MIN_SHORT_SIDE = 1024
CAPTION_MAX = 500


def subject_word(character: Character) -> str:
    """The class word a caption puts after the trigger ("woman"), from the wizard's gender answer."""
    gender = str((character.appearance or {}).get("gender") or "").strip().lower()
    return {"female": "woman", "woman": "woman", "male": "man", "man": "man"}.get(gender, "person")


def default_trigger_word(character: Character) -> str:
    """A token from the name that no real word is (§7.6: "mira_k7"): its letters, an underscore, and
    two characters of the character's id, so Aria and another Aria differ. Always valid."""
    ascii_name = unicodedata.normalize("NFKD", character.name).encode("ascii", "ignore").decode()
    letters = re.sub(r"[^a-z0-9]", "", ascii_name.lower())[:20]
    if not letters or not letters[0].isalpha():
        letters = f"char{letters}"[:20]
    return f"{letters}_{character.pk.hex[:2]}"


def trigger_word_of(character: Character) -> str:
    return character.trigger_word or default_trigger_word(character)


def character_set_trigger_word(*, character: Character, trigger_word: str) -> Character:
    """Set the character's trigger word and rewrite the old one in its captions.

    Raises ValidationError for a malformed word or one another of the owner's characters uses."""
    word = (trigger_word or "").strip()
    try:
        check_trigger_word(word)
    except DatasetError as exc:
        raise ValidationError(str(exc), code="invalid") from exc
    taken = (
        Character.objects.filter(owner_id=character.owner_id, trigger_word__iexact=word)
        .exclude(pk=character.pk)
        .exists()
    )
    if taken:
        raise ValidationError("Another of your characters already uses this trigger word.", code="unique")
    old = trigger_word_of(character)
    try:
        with transaction.atomic():
            character.trigger_word = word
            character.save(update_fields=["trigger_word", "updated_at"])
            if old != word:
                pattern = re.compile(rf"(?<![\w]){re.escape(old)}(?![\w])")
                for item in DatasetItem.objects.select_for_update().filter(character=character):
                    caption = pattern.sub(word, item.caption)
                    if caption != item.caption:
                        DatasetItem.objects.filter(pk=item.pk).update(caption=caption)
    except IntegrityError as exc:  # the same word set on another character meanwhile
        raise ValidationError("Another of your characters already uses this trigger word.", code="unique") from exc
    return character


def dataset_sync(character: Character) -> None:
    """Add the images of the character's sheets that the dataset has not seen yet, captioned."""
    known = set(DatasetItem.objects.filter(character=character).values_list("asset_id", flat=True))
    assets = (
        WorkspaceAsset.objects.filter(
            owner_id=character.owner_id, job__character=character, job__kind=JobKind.CHARACTER_SHEET
        )
        .exclude(id__in=known)
        .select_related("job")
        .order_by("job__created_at", "batch_index")
    )
    trigger, subject = trigger_word_of(character), subject_word(character)
    new = []
    for asset in assets:
        captions = (asset.job.params or {}).get("captions") or []
        varies = str(captions[asset.batch_index]) if asset.batch_index < len(captions) else ""
        caption = sheet_caption(varies, trigger_word=trigger, subject=subject)
        new.append(DatasetItem(character=character, asset=asset, caption=caption[:CAPTION_MAX]))
    DatasetItem.objects.bulk_create(new, ignore_conflicts=True)


def dataset_add_asset(*, character: Character, asset: WorkspaceAsset) -> DatasetItem:
    """Add one of the owner's images to the dataset, captioned with the trigger word and its prompt."""
    if asset.owner_id != character.owner_id or asset.kind != AssetKind.IMAGE:
        raise ValidationError("That image does not exist.", code="not_found")
    prompt = (asset.job.prompt if asset.job_id else "") or ""
    caption = sheet_caption(
        prompt.strip()[:300], trigger_word=trigger_word_of(character), subject=subject_word(character)
    )
    item, _ = DatasetItem.objects.get_or_create(character=character, asset=asset, defaults={"caption": caption})
    return item


def dataset_item_update(*, item: DatasetItem, included: bool | None = None, caption: str | None = None) -> DatasetItem:
    """Include or exclude an image, or change its caption (one line, at most CAPTION_MAX characters)."""
    fields = []
    if included is not None:
        item.included = included
        fields.append("included")
    if caption is not None:
        text = " ".join(caption.split())
        if not text:
            raise ValidationError("A caption cannot be empty: write what the image shows.", code="blank")
        if len(text) > CAPTION_MAX:
            raise ValidationError(f"A caption has at most {CAPTION_MAX} characters.", code="max_length")
        item.caption = text
        fields.append("caption")
    if fields:
        item.save(update_fields=fields)
    return item


@dataclass(frozen=True)
class DatasetRow:
    item: DatasetItem
    small: bool  # short side below MIN_SHORT_SIDE


@dataclass(frozen=True)
class DatasetState:
    rows: list[DatasetRow]
    included: int
    warnings: list[str]


def dataset_state(character: Character, *, min_images: int) -> DatasetState:
    """The dataset page's rows and what a trainer advised `min_images` would warn about."""
    items = DatasetItem.objects.filter(character=character).select_related("asset")
    rows = [DatasetRow(item=i, small=min(i.asset.width, i.asset.height) < MIN_SHORT_SIDE) for i in items]
    included = sum(1 for r in rows if r.item.included)
    warnings = []
    if included < min_images:
        warnings.append(
            f"{included} image{'s' if included != 1 else ''} included: this trainer advises at least {min_images}."
        )
    small = sum(1 for r in rows if r.item.included and r.small)
    if small:
        warnings.append(
            f"{small} included image{'s are' if small != 1 else ' is'} under {MIN_SHORT_SIDE} px on the short side: "
            "trainers never upscale, so the LoRA learns them blurry."
        )
    return DatasetState(rows=rows, included=included, warnings=warnings)


def dataset_images(character: Character) -> list[DatasetImage]:
    """The included images, in order, as generation.lib.dataset takes them (bytes read from storage)."""
    images = []
    for item in DatasetItem.objects.filter(character=character, included=True).select_related("asset"):
        with item.asset.file.open("rb") as fh:
            images.append(DatasetImage(data=fh.read(), caption=item.caption, label=_label(item)))
    return images


def _label(item: DatasetItem) -> str:
    job = item.asset.job
    shots = (job.params or {}).get("shots") or [] if job is not None else []
    if item.asset.batch_index < len(shots):
        return str(shots[item.asset.batch_index].get("name", ""))
    return "added from the gallery"


def gallery_candidates(character: Character, *, limit: int = 24) -> list[WorkspaceAsset]:
    """The owner's newest images that are not in the dataset yet, to add from the gallery."""
    return list(
        WorkspaceAsset.objects.filter(owner_id=character.owner_id, kind=AssetKind.IMAGE)
        .exclude(dataset_items__character=character)
        .order_by("-created_at")[:limit]
    )
