from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from generation.selectors import job_for_user, job_payload


@require_GET
def job_detail_api(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    return JsonResponse(job_payload(job_for_user(request.user, job_id)))
