"""What every response needs and no view should have to remember: headers, and streams fit for ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.cache import patch_cache_control

# The studio uses none of these; a page that is ever injected into cannot either.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
    )
)


def security_headers(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """A Permissions-Policy on every response, and `Cache-Control: private` on a logged-in user's.

    A logged-in page shows one user's prompts and images: no shared cache (a proxy, a CDN) may keep
    it. htmx partials also get `no-store`: a fragment must never come back from the browser's cache
    as a whole page when the user navigates to its URL.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if getattr(request, "htmx", False):
                patch_cache_control(response, private=True, no_store=True)
            else:
                patch_cache_control(response, private=True)
        return response

    return middleware


def async_streams(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Under ASGI, a streamed response (an image, a job's ZIP, a LoRA file) is read a chunk at a time.

    Django's ASGI handler reads a synchronous stream whole into memory, in a thread, before sending
    a byte (with a warning): a LoRA file or a ZIP of large images would sit in the server's memory.
    Here each chunk is read in a thread as the client takes it. WSGI (`make run`) streams as it is.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if isinstance(request, ASGIRequest) and isinstance(response, StreamingHttpResponse) and not response.is_async:
            response.streaming_content = _read_in_thread(response.streaming_content)
        return response

    return middleware


async def _read_in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # The file or the ZIP's generator is closed by response.close(), as on WSGI, even when the
    # client leaves halfway.
    take = sync_to_async(next)
    while (chunk := await take(chunks, None)) is not None:
        yield chunk
