from __future__ import annotations

from django.contrib import admin

from generation.models import CreditAccount, CreditLedger, GenerationJob, ImageSlot, ProviderRequest
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
        "created_at",
    ]
    list_filter = ["status", "mode", "kind", "provider"]
    search_fields = ["id", "owner__username", "prompt"]
    list_select_related = ["owner", "model"]
    inlines = [ImageSlotInline]


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
