"""Existing registry rows' "strength_field" capability becomes "denoise_field".

The field it names (SDXL's prompt_strength) takes the denoise, the opposite of the studio's
reference strength; the new key says what it carries (generation.providers.inputs.model_inputs).
"""

from __future__ import annotations

from django.db import migrations

OLD, NEW = "strength_field", "denoise_field"


def _rename(apps, old: str, new: str) -> None:  # noqa: ANN001
    ApiModel = apps.get_model("models_registry", "ApiModel")
    for model in ApiModel.objects.filter(capabilities__has_key=old):
        capabilities = dict(model.capabilities)
        value = capabilities.pop(old)
        capabilities.setdefault(new, value)
        model.capabilities = capabilities
        model.save(update_fields=["capabilities"])


def forwards(apps, schema_editor) -> None:  # noqa: ANN001
    _rename(apps, OLD, NEW)


def backwards(apps, schema_editor) -> None:  # noqa: ANN001
    _rename(apps, NEW, OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0002_fallbackchain_fallbackentry"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
