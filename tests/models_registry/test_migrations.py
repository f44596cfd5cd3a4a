"""Data migrations on registry rows that staff already edited."""

from __future__ import annotations

import importlib

from django.apps import apps

from tests.factories import offline_model

denoise_field = importlib.import_module("models_registry.migrations.0003_capability_denoise_field")


def test_the_strength_field_capability_becomes_denoise_field(db):
    model = offline_model(capabilities={"seed": True, "strength_field": "prompt_strength"})
    denoise_field.forwards(apps, None)
    model.refresh_from_db()
    assert model.capabilities == {"seed": True, "denoise_field": "prompt_strength"}
    denoise_field.backwards(apps, None)
    model.refresh_from_db()
    assert model.capabilities == {"seed": True, "strength_field": "prompt_strength"}
