from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from studio.models import Character, WorkspaceAsset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may look at user data to help them, never edit it behind the pipeline's back."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Character)
class CharacterAdmin(ReadOnlyAdmin):
    list_display = ["name", "owner", "created_at"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]


@admin.register(WorkspaceAsset)
class WorkspaceAssetAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "job", "batch_index", "kind", "width", "height", "bytes", "created_at"]
    list_filter = ["kind", "source"]
    search_fields = ["id", "owner__username"]
    list_select_related = ["owner", "job"]
