"""A job card's image places, rendered in Python: `{% tiles card has_character %}`.

A gallery page shows 200 of them, and the template engine spent most of the page's render time on
their dozen variables each; here every value is a number, an id or a URL built from a pattern
(studio.job_cards.TileUrls), so plain string formatting is both quick and safe. The markup is the
one the gallery's buttons and tests rely on (templates/studio/_gallery.html describes the form the
buttons post).
"""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from generation.models import SlotStatus
from studio.job_cards import Cell, JobCard

register = template.Library()

_IMAGE = (
    '<figure class="tile" data-index="{index}"><a class="tile-image" href="{file}" target="_blank">'
    '<img src="{thumbnail}" alt="Image {n}" width="{width}" height="{height}" loading="lazy"></a>'
    '<div class="tile-corner"><a href="{file}?download=1" aria-label="Download image {n}">↓</a>'
    '<button name="delete" value="{hex}" aria-label="Delete image {n}" data-confirm>×</button></div>'
    '<figcaption class="tile-actions"><button name="use1" value="{hex}" aria-label="Use as ref 1">Ref 1</button>'
    '<button name="use2" value="{hex}" aria-label="Use as ref 2">Ref 2</button>'
    '<button name="lock" value="{hex}" aria-label="Lock as portrait"{lock}>Lock</button></figcaption></figure>'
)
_LOCK_DISABLED = ' title="Select a character first" disabled'
_WAITING = (
    '<div class="tile placeholder" role="img" aria-label="Image {n} is being generated">'
    '<span class="shimmer"></span><span class="tile-note">{n}</span></div>'
)
_FAILED = (
    '<div class="tile failed" role="img" aria-label="Image {n} failed"><span class="tile-icon" aria-hidden="true">!'
    '</span><span class="tile-note">Image {n} failed</span></div>'
)
_CANCELED = (
    '<div class="tile canceled" role="img" aria-label="Image {n} canceled">'
    '<span class="tile-note">Canceled</span></div>'
)
_DELETED = (
    '<div class="tile deleted" role="img" aria-label="Image {n} deleted"><span class="tile-note">Deleted</span></div>'
)


def _tile(cell: Cell, lock: str) -> str:
    asset, urls = cell.asset, cell.urls
    if asset is not None and urls is not None:
        return _IMAGE.format(
            index=int(cell.index),
            n=int(cell.number),
            file=urls.file,
            thumbnail=urls.thumbnail,
            hex=urls.hex,
            width=int(asset.width),
            height=int(asset.height),
            lock=lock,
        )
    if cell.is_waiting:
        return _WAITING.format(n=int(cell.number))
    if cell.status == SlotStatus.FAILED:
        return _FAILED.format(n=int(cell.number))
    if cell.status == SlotStatus.CANCELED:
        return _CANCELED.format(n=int(cell.number))
    return _DELETED.format(n=int(cell.number))


@register.simple_tag
def tiles(card: JobCard, has_character: bool) -> SafeString:
    lock = "" if has_character else _LOCK_DISABLED
    return mark_safe("\n".join(_tile(cell, lock) for cell in card.cells))  # noqa: S308 - ids, numbers and URLs only
