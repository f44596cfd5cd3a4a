"""Which character an image is the locked portrait of, for the job card's delete confirmation."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def portrait_of(portraits: dict | None, asset_id: object) -> str:
    """The name of the character whose portrait `asset_id` is, from studio.selectors.portraits_by_asset."""
    return (portraits or {}).get(str(asset_id), "")
