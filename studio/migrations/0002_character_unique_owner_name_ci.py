from __future__ import annotations

import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def rename_duplicates(apps, schema_editor) -> None:  # noqa: ANN001
    """Give every existing same-name character of one owner but the oldest a numbered name, so the
    constraint below can be created over rows made before it existed ("Mira", "mira" -> "mira (2)")."""
    Character = apps.get_model("studio", "Character")
    taken: dict[tuple[int, str], int] = {}
    used = {(owner_id, name.lower()) for owner_id, name in Character.objects.values_list("owner_id", "name")}
    for character in Character.objects.order_by("owner_id", "created_at", "id"):
        key = (character.owner_id, character.name.lower())
        taken[key] = taken.get(key, 0) + 1
        if taken[key] == 1:
            continue
        number = taken[key]
        while True:
            suffix = f" ({number})"
            name = character.name[: 100 - len(suffix)] + suffix
            if (character.owner_id, name.lower()) not in used:
                break
            number += 1
        used.add((character.owner_id, name.lower()))
        Character.objects.filter(pk=character.pk).update(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="character",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"),
                models.F("owner"),
                name="character_unique_owner_name_ci",
                violation_error_message="You already have a character with this name.",
            ),
        ),
    ]
