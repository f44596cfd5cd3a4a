"""Throttling: per-user limits on costly actions, and django-axes' hooks for the login lockout.

`rate_limit` counts a user's actions per minute in the shared cache
(generation.limits.count_in_window, atomic on Redis), so every web process sees the same count.
The window is fixed (the clock's minute), so a burst across a minute boundary can reach twice the
limit; a limit here stops floods, it does not meter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from generation.limits import count_in_window

WINDOW_SECONDS = 60


def rate_limit(*, user, action: str, error: Callable[..., Exception] = ValidationError) -> None:
    """Count one `action` ("job", "upload") by `user`; raise `error(message, code="rate_limited")` when
    this one is over settings.USER_RATE_LIMITS[action] for the current minute.

    `error` is the caller's own validation error type, so its callers show the message like any other
    bad input; the message is a sentence fit for the user. A refused action counts too.
    """
    limit = settings.USER_RATE_LIMITS.get(action, 0)
    if not limit:
        return
    now = time.time()
    if count_in_window(f"throttle:{action}:{user.pk}", WINDOW_SECONDS, now) > limit:
        wait = max(1, math.ceil((int(now // WINDOW_SECONDS) + 1) * WINDOW_SECONDS - now))
        raise error(
            f"Too many {action}s: at most {limit} a minute. Try again in {wait} second{'s' if wait != 1 else ''}.",
            code="rate_limited",
        )


# --- The login lockout (django-axes, see settings.AXES_*) -----------------------------------


def client_ip(request: HttpRequest) -> str:
    """The address a request came from (settings.AXES_CLIENT_IP_CALLABLE).

    With settings.TRUSTED_PROXY_COUNT proxies of ours in front, each appending the address it saw
    to X-Forwarded-For, the client's is that many entries from the right: whatever a client writes
    there itself stands further left and is never believed.
    """
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "")


def lockout_message() -> str:
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    return (
        f"Too many failed log-in attempts. Logging in is locked for {minutes} minute{'s' if minutes != 1 else ''} "
        "after the last attempt; try again then."
    )


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The response to a login refused during a lockout (settings.AXES_LOCKOUT_CALLABLE).

    The login page the view already rendered (the studio's or the admin's), again, with the lockout
    message as the form's only error ("wrong password" would mislead: no password was checked) and
    status 429. Anything that is not a rendered login form gets the message as plain text.
    """
    message = lockout_message()
    status = settings.AXES_HTTP_RESPONSE_CODE
    context = getattr(original_response, "context_data", None) or {}
    form = context.get("form")
    if original_response is None or form is None or not form.is_bound:
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    form.errors.clear()
    form.add_error(None, ValidationError(message, code="locked_out"))
    context["lockout_message"] = message
    # Re-rendered in place, so the view's headers (never_cache above all) stay as they were.
    original_response.content = original_response.rendered_content
    original_response.status_code = status
    return original_response
