from __future__ import annotations

from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("api/jobs/<uuid:job_id>", views.job_detail_api, name="api-job-detail"),
    path("webhooks/<slug:provider>/<uuid:request_id>", views.provider_webhook, name="webhook"),
    path("webhooks/<slug:provider>/trainings/<uuid:training_id>", views.training_webhook, name="training-webhook"),
]
