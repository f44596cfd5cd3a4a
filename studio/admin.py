from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from studio.models import Character, ProfileSet, ProfileShot, PromptPreset, WorkspaceAsset


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


@admin.register(PromptPreset)
class PromptPresetAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "text", "position", "is_active"]
    list_editable = ["position", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "text"]


class ProfileShotFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        kept = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("name")
        ]
        low, high = ProfileSet.MIN_SHOTS, ProfileSet.MAX_SHOTS
        if not low <= len(kept) <= high:
            raise ValidationError(f"A set has {low} to {high} shots; this one has {len(kept)}.", code="shot_count")


class ProfileShotInline(admin.TabularInline):
    model = ProfileShot
    formset = ProfileShotFormSet
    extra = 0
    fields = ["position", "name", "framing", "scene", "outfit", "expression"]


@admin.register(ProfileSet)
class ProfileSetAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "position", "is_active"]
    list_editable = ["position", "is_active"]
    inlines = [ProfileShotInline]
