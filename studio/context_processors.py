"""What every full page's top bar needs: the batch queue's badge and the toasts of batches that ended.

Both are callables, so a template that never shows them (an htmx fragment) runs no query.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def batch_notifications(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from generation.selectors import batches_unseen_count
    from generation.services.batches import batches_take_notifications

    return {
        "batch_badge": lambda: batches_unseen_count(user),
        # Each ended batch is toasted once: on the first full page after it ended.
        "batch_toasts": lambda: batches_take_notifications(user),
    }
