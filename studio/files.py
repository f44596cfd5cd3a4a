"""Serving stored files only to their owner."""

from __future__ import annotations

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect


def file_response(field: FieldFile, *, content_type: str, download_name: str | None = None) -> HttpResponse:
    """Stream a private file, or redirect to a fresh short-lived presigned URL on S3."""
    if not field:
        raise Http404("No such file.")
    if getattr(field.storage, "querystring_auth", False):
        return HttpResponseRedirect(field.url)
    try:
        handle = field.open("rb")
    except FileNotFoundError as exc:
        raise Http404("No such file.") from exc
    response = FileResponse(
        handle, content_type=content_type, as_attachment=bool(download_name), filename=download_name or ""
    )
    response["Cache-Control"] = "private, max-age=3600"
    return response
