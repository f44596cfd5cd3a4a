from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from studio import health, live, views, views_batches, views_characters, views_lora, views_ops
from studio.metrics import metrics_view

studio_job_patterns = [
    path("jobs/events", live.job_events, name="job-events"),
    path("jobs/<uuid:job_id>/card", views.job_card_view, name="job-card"),
    path("jobs/<uuid:job_id>/retry", views.job_retry, name="job-retry"),
    path("jobs/<uuid:job_id>/cancel", views.job_cancel_view, name="job-cancel"),
    path("jobs/<uuid:job_id>/download", views.job_download, name="job-download"),
]

studio_asset_patterns = [
    path("assets/action", views.asset_action, name="asset-action"),
    path("assets/<uuid:asset_id>/file", views.asset_file, name="asset-file"),
    path("assets/<uuid:asset_id>/thumbnail", views.asset_thumbnail, name="asset-thumbnail"),
    path("assets/<uuid:asset_id>/delete", views.asset_delete_view, name="asset-delete"),
    path("assets/<uuid:asset_id>/lock", views.asset_lock, name="asset-lock"),
]

studio_reference_patterns = [
    path("references/use/<uuid:asset_id>", views.reference_use, name="reference-use"),
    path("references/upload", views.reference_upload, name="reference-upload"),
    path("references/swap", views.reference_swap, name="reference-swap"),
    path("references/clear", views.reference_clear, name="reference-clear"),
    path("references/mode", views.reference_mode, name="reference-mode"),
]

studio_character_patterns = [
    path("characters/new", views.character_create_view, name="character-create"),
    path("characters/<uuid:character_id>/rename", views.character_rename_view, name="character-rename"),
    path("characters/<uuid:character_id>/delete", views.character_delete_view, name="character-delete"),
    path("characters/<uuid:character_id>", views_characters.character_page, name="character"),
    path("characters/<uuid:character_id>/edit", views_characters.character_edit, name="character-edit"),
    path(
        "characters/<uuid:character_id>/portrait",
        views_characters.character_portrait_replace,
        name="character-portrait-replace",
    ),
    path(
        "characters/<uuid:character_id>/sets/<int:set_id>",
        views_characters.character_profile_set,
        name="character-profile-set",
    ),
    *[
        path(f"characters/<uuid:character_id>/{route}", view, name=name)
        for route, view, name in (
            ("sheet", views_lora.character_sheet, "character-sheet"),
            ("dataset", views_lora.dataset_page, "character-dataset"),
            ("dataset/trigger", views_lora.dataset_trigger, "character-dataset-trigger"),
            ("dataset/items/<int:item_id>", views_lora.dataset_item, "character-dataset-item"),
            ("dataset/add", views_lora.dataset_add, "character-dataset-add"),
            ("dataset.zip", views_lora.dataset_download, "character-dataset-zip"),
            ("trainings", views_lora.training_start, "character-training-start"),
            ("trainings/<uuid:training_id>", views_lora.training_status, "character-training"),
            ("trainings/<uuid:training_id>/cancel", views_lora.training_cancel_view, "character-training-cancel"),
            ("trainings/<uuid:training_id>/lora.safetensors", views_lora.lora_file, "character-lora-file"),
        )
    ],
    path("characters/wizard", views_characters.wizard_page, name="character-wizard"),
    path("characters/wizard/step", views_characters.wizard_step, name="character-wizard-step"),
    path("characters/wizard/base", views_characters.wizard_base_images, name="character-wizard-base"),
    path("characters/wizard/regenerate", views_characters.wizard_regenerate, name="character-wizard-regenerate"),
    path("characters/wizard/pick/<uuid:asset_id>", views_characters.wizard_pick, name="character-wizard-pick"),
    path("characters/wizard/upload", views_characters.wizard_upload, name="character-wizard-upload"),
]

# Staff only (studio/views_ops.py): everyone else gets 404.
studio_ops_patterns = [
    path("ops/", views_ops.ops_page, name="ops"),
    path("ops/pause", views_ops.ops_pause, name="ops-pause"),
    path("ops/resume", views_ops.ops_resume, name="ops-resume"),
    path("ops/jobs/<uuid:job_id>/redrive", views_ops.ops_redrive, name="ops-redrive"),
]

# Batch Mode (studio/views_batches.py): the queue and what every job cost.
studio_batch_patterns = [
    path("batches/", views_batches.batches_page, name="batches"),
    path("batches/<uuid:batch_id>/submit", views_batches.batch_submit_view, name="batch-submit"),
    path("batches/<uuid:batch_id>/cancel", views_batches.batch_cancel_view, name="batch-cancel"),
    path("batches/jobs/<uuid:job_id>/remove", views_batches.batch_job_remove, name="batch-job-remove"),
    path("spend/", views_batches.spend_page, name="spend"),
]

studio_patterns = [
    path("", views.home, name="home"),
    path("gallery", views.gallery, name="gallery"),
    path("generate", views.generate, name="generate"),
    path("prompt/options", views.prompt_options, name="prompt-options"),
    *studio_job_patterns,
    *studio_asset_patterns,
    *studio_reference_patterns,
    *studio_character_patterns,
    *studio_ops_patterns,
    *studio_batch_patterns,
]

urlpatterns = [
    # Probes: no login, no database for /healthz (studio/health.py).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("generation.urls")),
    path("", include((studio_patterns, "studio"))),
]
