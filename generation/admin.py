from __future__ import annotations

from django.contrib import admin

from generation.models import (
    Batch,
    CreditAccount,
    CreditLedger,
    GenerationJob,
    ImageSlot,
    LoraTraining,
    ProviderRequest,
)
from generation.selectors import month_start, spend_by_user, spend_for
from studio.admin import ReadOnlyAdmin


class ImageSlotInline(admin.TabularInline):
    model = ImageSlot
    extra = 0
    can_delete = False
    fields = ["index", "status", "error", "attempts", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(GenerationJob)
class GenerationJobAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "owner",
        "model",
        "mode",
        "images_requested",
        "status",
        "succeeded_count",
        "failed_count",
        "provider",
        "cost",
        "batch",
        "created_at",
    ]
    list_filter = ["status", "mode", "kind", "provider"]
    search_fields = ["id", "owner__username", "prompt"]
    list_select_related = ["owner", "model", "batch"]
    inlines = [ImageSlotInline]
    # Above the list: this month's spend of every user, and what Batch Mode saved.
    change_list_template = "admin/generation/generationjob/change_list.html"

    def changelist_view(self, request, extra_context=None):
        since = month_start()
        extra = {"spend": spend_for(since=since), "spend_since": since, "spend_users": spend_by_user(since=since)}
        return super().changelist_view(request, extra_context={**(extra_context or {}), **extra})


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "model", "state", "request_count", "succeeded_count", "failed_count", "created_at"]
    list_filter = ["state"]
    search_fields = ["id", "name", "owner__username"]
    list_select_related = ["owner", "model"]


@admin.register(LoraTraining)
class LoraTrainingAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "character", "model", "status", "progress", "credits_charged", "created_at"]
    list_filter = ["status", "provider"]
    search_fields = ["id", "external_id", "owner__username", "trigger_word"]
    list_select_related = ["owner", "character", "model"]


@admin.register(ProviderRequest)
class ProviderRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "job", "provider", "status", "external_id", "attempts", "polls", "updated_at"]
    list_filter = ["provider", "status"]
    search_fields = ["external_id", "job__id"]


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    # Staff top up balances here; every change should also be a ledger row, so edits go through
    # the grant action in the pipeline issue's services rather than this form's balance field.
    list_display = ["user", "balance", "updated_at"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "balance", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(CreditLedger)
class CreditLedgerAdmin(ReadOnlyAdmin):
    list_display = ["account", "kind", "amount", "job", "note", "created_at"]
    list_filter = ["kind"]
