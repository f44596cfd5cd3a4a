"""What the prompt bar offers: the models that can run now, grouped by provider, and the batch chips.

Each choice carries how it runs and what it costs. The counts a model allows are a rule of job
creation, read from where job_create checks them (ApiModel.allowed_counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from generation.providers import get_provider
from generation.services.routing import paused_providers
from models_registry.models import STANDARD_COUNTS, ApiModel
from studio.models import PresetKind, PromptPreset
from studio.prompt_bar import StudioState
from studio.wording import money, plural

# What one job costs the user, whatever its image count (generation.services.credits.credits_charge).
CREDITS_PER_JOB = 1
NO_PROVIDER_COST = "no provider cost"


@dataclass
class ModelOption:
    model: ApiModel
    enabled: bool
    reason: str = ""
    selected: bool = False

    @property
    def price(self) -> str:
        """What the provider charges: "$0.04/image", or that it charges nothing (the job still takes a credit)."""
        if not self.model.price_per_image:
            return NO_PROVIDER_COST
        return f"{money(self.model.price_per_image)}/image"


@dataclass
class ModelGroup:
    label: str
    options: list[ModelOption]


def model_options(models: list[ApiModel], *, has_references: bool) -> list[ModelOption]:
    """Every active model with whether it can run now: keys set, not paused by staff, and the task
    the bar asks for."""
    options = []
    paused = paused_providers()
    for model in models:
        if model.is_trainer:
            continue  # a LoRA trainer makes no images: it is chosen where a character's LoRA is trained
        provider = get_provider(model)
        if not provider.is_configured():
            options.append(ModelOption(model, False, provider.configuration_hint() or "Not set up on this server."))
        elif model.provider in paused:
            options.append(ModelOption(model, False, paused_reason(paused[model.provider])))
        elif has_references and not model.supports("i2i"):
            options.append(ModelOption(model, False, "Text only: clear the references to use it."))
        elif not has_references and not model.supports("t2i"):
            options.append(ModelOption(model, False, "Needs a reference image."))
        else:
            options.append(ModelOption(model, True))
    return options


def paused_reason(reason: str) -> str:
    return f"Paused by staff: {reason}" if reason else "Paused by staff."


def select_model(options: list[ModelOption], wanted_id: int | None) -> ModelOption | None:
    """Mark the wanted model selected if it can run, else the first that can (None if none can)."""
    chosen = next((o for o in options if o.enabled and o.model.pk == wanted_id), None)
    chosen = chosen or next((o for o in options if o.enabled), None)
    for option in options:
        option.selected = option is chosen
    return chosen


def group_by_provider(options: list[ModelOption]) -> list[ModelGroup]:
    """<optgroup>s in the order of each provider's first (highest-priority) model."""
    groups: dict[str, ModelGroup] = {}
    for option in options:
        key = option.model.provider
        if key not in groups:
            groups[key] = ModelGroup(label=option.model.get_provider_display(), options=[])
        groups[key].options.append(option)
    return list(groups.values())


def batch_plan(model: ApiModel, count: int) -> str:
    """How `count` images run on `model`: natively in one request, in chunks, or one request each."""
    if model.max_images == 1:
        return plural(count, "request")
    requests = len(model.request_chunks(range(count)))
    return f"{plural(requests, 'request')}, {plural(count, 'image')}"


@dataclass(frozen=True)
class BatchChip:
    """One x1/x2/x4 choice: how it runs, what the provider charges for it, and the credit it takes.

    Both prices are shown: a model with no provider cost is not free to the user, since every
    job takes a credit.
    """

    count: int
    plan: str
    provider_cost: Decimal
    selected: bool
    credits: int = CREDITS_PER_JOB

    @property
    def label(self) -> str:
        return f"x{self.count}"

    @property
    def cost(self) -> str:
        return f"≈ {money(self.provider_cost)}" if self.provider_cost else NO_PROVIDER_COST

    @property
    def credits_label(self) -> str:
        return plural(self.credits, "credit")


def chip_counts(model: ApiModel) -> list[int]:
    """x1, x2, x4 everywhere, and the model's own maximum where it is higher (Seedream: x10)."""
    allowed = model.allowed_counts
    counts = [c for c in STANDARD_COUNTS if c in allowed]
    if model.max_images > max(STANDARD_COUNTS) and model.max_images in allowed:
        counts.append(model.max_images)
    return counts


def batch_chips(model: ApiModel | None, selected: int, *, price_factor: Decimal = Decimal(1)) -> list[BatchChip]:
    """The x1/x2/x4 chips; `price_factor` prices them for Batch Mode (the kind's batch_price_factor)."""
    if model is None:
        return []
    counts = chip_counts(model)
    if selected not in counts:
        selected = counts[0]
    price = model.price_per_image * price_factor
    return [
        BatchChip(count=c, plan=batch_plan(model, c), provider_cost=price * c, selected=c == selected) for c in counts
    ]


def prompt_part_fields(state: StudioState) -> list[tuple[str, str, list[PromptPreset], str]]:
    """The scene, outfit and style pickers: (name, label, the active presets staff edit in admin,
    the value the prompt bar holds). One query."""
    by_kind: dict[str, list[PromptPreset]] = {kind: [] for kind in PresetKind.values}
    for preset in PromptPreset.objects.filter(is_active=True):
        by_kind[preset.kind].append(preset)
    return [(kind, label, by_kind[kind], getattr(state, kind)) for kind, label in PresetKind.choices]
