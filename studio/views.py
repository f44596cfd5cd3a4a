from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from models_registry.models import ApiModel
from studio.files import file_response
from studio.models import WorkspaceAsset


def home(request: HttpRequest) -> HttpResponse:
    models = ApiModel.objects.active()
    return render(request, "studio/home.html", {"models": models})


def _get_asset_for_user(request: HttpRequest, asset_id: uuid.UUID) -> WorkspaceAsset:
    return get_object_or_404(WorkspaceAsset, pk=asset_id, owner=request.user)


@require_GET
def asset_file(request: HttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    name = None
    if request.GET.get("download"):
        name = f"{asset.job_id or 'upload'}-{asset.batch_index}.{asset.file.name.rsplit('.', 1)[-1]}"
    return file_response(asset.file, content_type=asset.content_type, download_name=name)


@require_GET
def asset_thumbnail(request: HttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    return file_response(asset.thumbnail or asset.file, content_type="image/jpeg" if asset.thumbnail else asset.content_type)
