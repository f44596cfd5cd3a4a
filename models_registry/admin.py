from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from models_registry.models import ApiModel, FallbackChain, FallbackEntry, NegativePrompt, ProviderPause, Task


def _provider_health(kind: str) -> str:
    # Imported here: the registry app must load without the pipeline's modules.
    from generation.services.routing import provider_status

    return provider_status(kind)


class TaskFilter(admin.SimpleListFilter):
    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Task.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiModel]) -> QuerySet[ApiModel]:
        task = self.value()
        if not task:
            return queryset
        # tasks is a JSON list and SQLite has no JSON containment; the registry is small.
        return queryset.filter(pk__in=[m.pk for m in queryset if task in (m.tasks or [])])


@admin.register(ApiModel)
class ApiModelAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "key",
        "provider",
        "task_list",
        "max_images",
        "image_field",
        "price_per_image",
        "priority",
        "is_active",
        "provider_health",
    ]
    list_filter = ["provider", TaskFilter, "is_active", "modality"]
    search_fields = ["key", "display_name"]
    readonly_fields = ["max_images", "image_field", "batches_natively", "provider_health", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["key", "display_name", "provider", "modality", "tasks", "is_active", "priority"]}),
        ("Inputs and capabilities", {"fields": ["input_schema", "capabilities", "price_per_image"]}),
        (
            "Derived",
            {
                "fields": [
                    "max_images",
                    "image_field",
                    "batches_natively",
                    "provider_health",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]

    @admin.display(description="tasks")
    def task_list(self, obj: ApiModel) -> str:
        return ", ".join(obj.tasks or [])

    @admin.display(description="max images")
    def max_images(self, obj: ApiModel) -> int:
        return obj.max_images

    @admin.display(description="image field")
    def image_field(self, obj: ApiModel) -> str:
        return obj.image_field

    @admin.display(description="batches natively", boolean=True)
    def batches_natively(self, obj: ApiModel) -> bool:
        return obj.batches_natively

    @admin.display(description="provider health")
    def provider_health(self, obj: ApiModel) -> str:
        # Cached per provider for a few seconds, so a long list probes each provider at most once.
        return _provider_health(obj.provider) if obj.provider else "-"


class FallbackEntryInline(admin.TabularInline):
    model = FallbackEntry
    fields = ["position", "model", "provider", "provider_health"]
    readonly_fields = ["provider", "provider_health"]
    ordering = ["position", "id"]
    autocomplete_fields = ["model"]
    extra = 1

    @admin.display(description="provider")
    def provider(self, obj: FallbackEntry) -> str:
        return obj.model.get_provider_display() if obj.model_id else "-"

    @admin.display(description="provider health")
    def provider_health(self, obj: FallbackEntry) -> str:
        return _provider_health(obj.model.provider) if obj.model_id else "-"


@admin.register(FallbackChain)
class FallbackChainAdmin(admin.ModelAdmin):
    list_display = ["task", "order", "updated_at"]
    inlines = [FallbackEntryInline]

    @admin.display(description="models, first tried first")
    def order(self, obj: FallbackChain) -> str:
        return " → ".join(model.display_name for model in obj.ordered_models()) or "-"


@admin.register(NegativePrompt)
class NegativePromptAdmin(admin.ModelAdmin):
    list_display = ["model_type", "content_mode", "generation_mode", "short_text", "priority", "is_active"]
    list_filter = ["model_type", "content_mode", "generation_mode", "is_active"]
    search_fields = ["text"]

    @admin.display(description="text")
    def short_text(self, obj: NegativePrompt) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:77] + "..."


@admin.register(ProviderPause)
class ProviderPauseAdmin(admin.ModelAdmin):
    # The studio's operations page (/ops/) pauses and resumes too; both clear routing's cached read.
    list_display = ["kind", "reason", "paused_at", "paused_by"]
    readonly_fields = ["paused_at", "paused_by"]

    def save_model(self, request: HttpRequest, obj: ProviderPause, form: object, change: bool) -> None:
        from generation.services.routing import provider_pauses_changed

        if not change:
            obj.paused_by = request.user
        super().save_model(request, obj, form, change)
        provider_pauses_changed()

    def delete_model(self, request: HttpRequest, obj: ProviderPause) -> None:
        from generation.services.routing import provider_pauses_changed

        super().delete_model(request, obj)
        provider_pauses_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProviderPause]) -> None:
        from generation.services.routing import provider_pauses_changed

        super().delete_queryset(request, queryset)
        provider_pauses_changed()
