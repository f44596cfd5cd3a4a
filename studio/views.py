from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from models_registry.models import ApiModel


def home(request: HttpRequest) -> HttpResponse:
    models = ApiModel.objects.active()
    return render(request, "studio/home.html", {"models": models})
