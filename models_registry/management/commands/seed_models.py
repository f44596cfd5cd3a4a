from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from models_registry.models import ApiModel, FallbackChain, FallbackEntry, NegativePrompt
from models_registry.seed import FALLBACK_CHAINS, MODELS, NEGATIVE_PROMPTS, fallback_chain_keys


class Command(BaseCommand):
    help = (
        "Load the registry's models and default negative prompts. Safe to re-run: rows that exist "
        "keep staff edits unless --reset is given."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--reset", action="store_true", help="Overwrite existing seeded rows with the seed values.")

    @transaction.atomic
    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        created = updated = 0
        for row in MODELS:
            fields = {"is_active": True, "modality": "image", **{k: v for k, v in row.items() if k != "key"}}
            model, was_created = ApiModel.objects.get_or_create(key=row["key"], defaults=fields)
            if was_created:
                created += 1
            elif reset:
                for name, value in fields.items():
                    setattr(model, name, value)
                model.full_clean()
                model.save()
                updated += 1

        prompts_created = 0
        for row in NEGATIVE_PROMPTS:
            lookup = {k: row[k] for k in ("model_type", "content_mode", "generation_mode")}
            existing = NegativePrompt.objects.filter(**lookup)
            if reset:
                existing.delete()
            if not existing.exists():
                NegativePrompt.objects.create(**row)
                prompts_created += 1

        chains_written = 0
        for task in FALLBACK_CHAINS:
            chain, chain_created = FallbackChain.objects.get_or_create(task=task)
            # An existing chain is the staff's: its entries are only replaced on --reset.
            if not (chain_created or reset):
                continue
            chain.entries.all().delete()
            models = {m.key: m for m in ApiModel.objects.filter(key__in=fallback_chain_keys(task))}
            present = [models[key] for key in fallback_chain_keys(task) if key in models]
            FallbackEntry.objects.bulk_create(
                FallbackEntry(chain=chain, model=model, position=position)
                for position, model in enumerate(present, start=1)
            )
            chains_written += 1

        self.stdout.write(
            f"Registry: {created} models created, {updated} reset, "
            f"{len(MODELS) - created - updated} left as staff set them; {prompts_created} negative prompts created; "
            f"{chains_written} fallback chains written."
        )
