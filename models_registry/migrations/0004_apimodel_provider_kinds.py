"""ApiModel.provider's choices come from the provider kinds table (generation/providers/kinds.py).

A callable: Django reads it on every use, so a new kind needs no further migration. The column is
unchanged; choices live in Python only.
"""

from __future__ import annotations

from django.db import migrations, models

import generation.providers.kinds


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0003_capability_denoise_field"),
    ]

    operations = [
        migrations.AlterField(
            model_name="apimodel",
            name="provider",
            field=models.CharField(choices=generation.providers.kinds.provider_choices, max_length=20),
        ),
    ]
