from __future__ import annotations

from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("api/jobs/<uuid:job_id>", views.job_detail_api, name="api-job-detail"),
    path("webhooks/fal/<uuid:request_id>", views.fal_webhook, name="webhook-fal"),
    path("webhooks/replicate/<uuid:request_id>", views.replicate_webhook, name="webhook-replicate"),
]
