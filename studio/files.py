"""Files going out, only to their owner: one stored file, or a job's images as a ZIP streamed while it is written.

Both download under the names asset_file_name() gives, so an image has the same name alone and in its ZIP.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.utils.text import slugify

from generation.lib.zipstream import ZipSink
from generation.models import GenerationJob
from studio.models import WorkspaceAsset

FILE_CHUNK_BYTES = 128 * 1024


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
    # Read in chunks of this size (FileResponse's default is 4 KB): under ASGI each chunk is one hop
    # to a thread (studio.middleware.async_streams), a thousand for a 4 MB image at the default.
    response.block_size = FILE_CHUNK_BYTES
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- Download names -------------------------------------------------------------------------


def job_file_stem(job: GenerationJob) -> str:
    """What a job's downloads are named after: its character (else its prompt) and its short id."""
    subject = job.character.name if job.character_id else job.prompt
    # ASCII, at most 40 characters, cut at a word: a prompt can be 2,000 characters of anything.
    slug = slugify(subject)
    if len(slug) > 40:
        slug = slug[:40].rsplit("-", 1)[0]
    return f"{slug or 'portrait'}-{job.pk.hex[:8]}"


def asset_file_name(asset: WorkspaceAsset) -> str:
    """The one name an image downloads under, alone or in its job's ZIP: "mira-1a2b3c4d-02.png".

    Numbered by batch index, so the ZIP lists the images in the gallery's order.
    """
    extension = asset.file.name.rsplit(".", 1)[-1] if "." in asset.file.name else "png"
    if asset.job_id is None:
        return f"upload-{asset.pk.hex[:8]}.{extension}"
    return f"{job_file_stem(asset.job)}-{asset.batch_index + 1:02d}.{extension}"


# --- ZIP of a job's images ------------------------------------------------------------------


def job_zip_stream(assets: Iterable[WorkspaceAsset], *, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """The bytes of a ZIP of `assets`, produced as it is written (images are already compressed, so STORED).

    Entries are named by asset_file_name(): load the assets with their job and its character.
    """
    sink = ZipSink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for asset in assets:
            info = zipfile.ZipInfo(asset_file_name(asset), date_time=asset.created_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            with asset.file.open("rb") as source, archive.open(info, mode="w") as target:
                while chunk := source.read(chunk_size):
                    target.write(chunk)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()
