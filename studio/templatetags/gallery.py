"""A job card's image places, rendered in Python: `{% tiles card has_character portraits %}`.

A gallery page shows 200 of them, and the template engine spent most of the page's render time on
their dozen variables each; here every value is a number, an id, a URL built from a pattern
(studio.job_cards.TileUrls) or an escaped name, so plain string formatting is both quick and safe. The markup is the
one the gallery's buttons and tests rely on (templates/studio/_gallery.html describes the form the
buttons post).
"""

from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from generation.models import SlotStatus
from studio.job_cards import Cell, JobCard

register = template.Library()

_IMAGE = (
    '<figure class="tile"><a href="{file}" target="_blank">'
    '<img src="{thumbnail}" alt="Image {n}" width="{width}" height="{height}" loading="{loading}"></a>'
    '<div><a href="{file}?download=1" aria-label="Download image {n}">↓</a>'
    '<button name="delete" value="{hex}" aria-label="Delete image {n}" data-confirm{confirm}>×</button></div>{shot}'
    '<figcaption><button name="use1" value="{hex}" aria-label="Use as ref 1">Ref 1</button>'
    '<button name="use2" value="{hex}" aria-label="Use as ref 2">Ref 2</button>'
    '<button name="lock" value="{hex}" aria-label="Lock as portrait"{lock}>Lock</button></figcaption></figure>'
)
_LOCK_DISABLED = ' title="Select a character first" disabled'
# Deleting a character's locked portrait names what it takes away; other images ask the gallery's question.
_PORTRAIT_CONFIRM = (
    '="Delete image {n}? It is {name}\'s locked portrait: {name} will have none. This cannot be undone."'
)
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


def _tile(cell: Cell, lock: str, portraits: dict[str, str], loading: str) -> str:
    asset, urls = cell.asset, cell.urls
    if asset is not None and urls is not None:
        portrait = portraits.get(str(asset.pk))
        # Character and shot names are the only text here that people wrote: escaped.
        confirm = _PORTRAIT_CONFIRM.format(n=int(cell.number), name=escape(portrait)) if portrait else ""
        shot = f'<span class="tile-shot">{escape(cell.shot)}</span>' if cell.shot else ""
        return _IMAGE.format(
            n=int(cell.number),
            file=urls.file,
            thumbnail=urls.thumbnail,
            hex=urls.hex,
            width=int(asset.width),
            height=int(asset.height),
            lock=lock,
            confirm=confirm,
            shot=shot,
            loading=loading,
        )
    if cell.is_waiting:
        return _WAITING.format(n=int(cell.number))
    if cell.status == SlotStatus.FAILED:
        return _FAILED.format(n=int(cell.number))
    if cell.status == SlotStatus.CANCELED:
        return _CANCELED.format(n=int(cell.number))
    return _DELETED.format(n=int(cell.number))


@register.simple_tag
def tiles(card: JobCard, has_character: bool, portraits: dict[str, str] | None = None) -> SafeString:
    """`portraits`: which character each locked portrait belongs to (studio.selectors.portraits_by_asset)."""
    lock = "" if has_character else _LOCK_DISABLED
    # A running card's images are the ones being waited for, each arriving on its own (studio.live):
    # fetched at once, not after the lazy loader's visibility check; the gallery's others stay lazy.
    loading = "eager" if card.is_active else "lazy"
    cells = (_tile(cell, lock, portraits or {}, loading) for cell in card.cells)
    return mark_safe("\n".join(cells))  # noqa: S308 - ids, numbers, URLs and escaped names only
