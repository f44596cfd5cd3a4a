"""Reads for the studio pages: characters, the gallery as job cards, the model list and batch chips.

Every read is scoped by owner; the gallery costs a fixed number of queries whatever the number of
jobs and images on the page (it builds on generation.selectors.jobs_for_user).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.timesince import timesince

from generation.models import GenerationJob, JobStatus, SlotStatus
from generation.providers import get_provider
from generation.selectors import jobs_for_user, waiting_on_a_worker
from generation.services.jobs import allowed_counts
from models_registry.models import ApiModel, Provider
from studio.models import AssetKind, Character, WorkspaceAsset

GALLERY_PAGE_SIZE = 50
STANDARD_CHIPS = (1, 2, 4)
# What one job costs the user, whatever its image count (generation.services.credits.credits_charge).
CREDITS_PER_JOB = 1
NO_PROVIDER_COST = "no provider cost"

# --- Characters and assets ------------------------------------------------------------------


def characters_for_user(user) -> QuerySet[Character]:  # noqa: ANN001
    return Character.objects.filter(owner=user).select_related("locked_reference")


def character_for_user(user, character_id: uuid.UUID | str) -> Character:  # noqa: ANN001
    """The user's character or 404: another user's character does not exist for them."""
    try:
        uuid.UUID(str(character_id))
    except ValueError as exc:
        raise Http404("No such character.") from exc
    return get_object_or_404(characters_for_user(user), pk=character_id)


def asset_for_user(user, asset_id: uuid.UUID | str) -> WorkspaceAsset:  # noqa: ANN001
    return get_object_or_404(WorkspaceAsset, pk=asset_id, owner=user)


def reference_assets(user, ids: list[str | None]) -> list[WorkspaceAsset | None]:  # noqa: ANN001
    """The reference slots' assets in slot order; a slot whose image is gone (or not the user's) is None."""
    wanted = [i for i in ids if i]
    if not wanted:
        return [None for _ in ids]
    found = {str(a.id): a for a in WorkspaceAsset.objects.filter(owner=user, id__in=wanted, kind=AssetKind.IMAGE)}
    return [found.get(i) if i else None for i in ids]


# --- Gallery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One image place of a job card, in batch_index order."""

    index: int
    status: str
    asset: WorkspaceAsset | None = None
    error: str = ""
    # The failure would repeat on a retry (see ImageSlot.failed_permanently).
    permanent: bool = False

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def is_waiting(self) -> bool:
        return self.asset is None and self.status in (SlotStatus.PENDING, SlotStatus.RUNNING)


@dataclass
class JobCard:
    job: GenerationJob
    cells: list[Cell]
    done: int
    succeeded: int
    failed: int
    outcome: str  # "active" | "success" | "partial" | "failed" | "canceled"
    message: str
    errors: list[Cell] = field(default_factory=list)
    age: str = ""
    # Active, but waiting because no worker runs (generation.selectors.waiting_on_a_worker).
    paused: bool = False

    @property
    def total(self) -> int:
        return len(self.cells)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0

    @property
    def is_active(self) -> bool:
        return self.outcome == "active"

    @property
    def can_retry(self) -> bool:
        """Offer "Retry failed" only where a retry can change something: not all failures permanent."""
        retryable = any(not cell.permanent for cell in self.errors)
        return self.job.status in (JobStatus.PARTIAL, JobStatus.FAILED) and retryable

    @property
    def images(self) -> list[WorkspaceAsset]:
        return [c.asset for c in self.cells if c.asset is not None]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _age(created_at: datetime, now: datetime) -> str:
    if now - created_at < timedelta(minutes=1):
        return "just now"
    # timesince gives "3 hours, 2 minutes"; the first unit is enough on a card.
    return timesince(created_at, now).split(",")[0] + " ago"


def job_card(job: GenerationJob, *, now: datetime | None = None) -> JobCard:
    """A job as the gallery shows it; reads only prefetched slots and assets (no queries)."""
    slots = {s.index: s for s in job.slots.all()}
    assets = {a.batch_index: a for a in job.assets.all()}
    cells = []
    for index in range(job.images_requested):
        slot = slots.get(index)
        status = slot.status if slot is not None else SlotStatus.PENDING
        cells.append(
            Cell(
                index=index,
                status=status,
                asset=assets.get(index),
                error=slot.error if slot else "",
                permanent=slot.failed_permanently if slot else False,
            )
        )
    succeeded = sum(1 for c in cells if c.status == SlotStatus.SUCCEEDED)
    errors = [c for c in cells if c.status == SlotStatus.FAILED]
    done = sum(1 for c in cells if c.status in (SlotStatus.SUCCEEDED, SlotStatus.FAILED, SlotStatus.CANCELED))
    total = len(cells)

    paused = waiting_on_a_worker(job)
    if paused:
        outcome, message = "active", "Generations are paused: no worker is running. This job starts when one does."
    elif job.is_active:
        outcome, message = "active", f"Generating {done}/{total}..."
    elif job.status == JobStatus.CANCELED:
        outcome, message = "canceled", f"Canceled. Generated {succeeded} of {_plural(total, 'image')}."
    elif job.status == JobStatus.FAILED or (succeeded == 0 and errors):
        outcome = "failed"
        message = "Generation failed." if total == 1 else f"All {total} images failed."
    elif errors:
        outcome = "partial"
        message = f"Generated {succeeded} of {_plural(total, 'image')}. {len(errors)} failed."
    else:
        outcome, message = "success", f"Generated {succeeded} of {_plural(total, 'image')}."
    if not errors and outcome == "failed":
        # A job failed as a whole (deadline, dispatch) carries its reason in job.errors.
        errors = [
            Cell(index=int(e.get("index", 0)), status=SlotStatus.FAILED, error=str(e.get("error", "")))
            for e in (job.errors or [])
            if isinstance(e, dict)
        ]
    return JobCard(
        job=job,
        cells=cells,
        done=done,
        succeeded=succeeded,
        failed=len(errors),
        outcome=outcome,
        message=message,
        errors=errors,
        age=_age(job.created_at, now or timezone.now()),
        paused=paused,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gallery_cursor(job: GenerationJob) -> str:
    """Where the next page starts: after this job in (created_at, id) order. Exact to the microsecond."""
    micros = (job.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{job.pk.hex}"


def _parse_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        micros, _, job_id = cursor.partition("_")
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(job_id)
    except (ValueError, OverflowError):
        return None


@dataclass
class GalleryPage:
    cards: list[JobCard]
    next_cursor: str | None
    is_first: bool

    @property
    def has_active(self) -> bool:
        return any(card.is_active for card in self.cards)


def gallery_page(user, *, after: str | None = None, size: int = GALLERY_PAGE_SIZE) -> GalleryPage:  # noqa: ANN001
    """One page of the user's jobs, newest first, as cards: three queries for any page.

    Pages are keyed on the last job shown (not an offset), so jobs created meanwhile never push a
    card onto the next page twice.
    """
    jobs = jobs_for_user(user).order_by("-created_at", "-id")
    position = _parse_cursor(after)
    if position is not None:
        created_at, job_id = position
        jobs = jobs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id))
    page = list(jobs[: size + 1])
    has_more = len(page) > size
    page = page[:size]
    now = timezone.now()
    return GalleryPage(
        cards=[job_card(job, now=now) for job in page],
        next_cursor=gallery_cursor(page[-1]) if has_more else None,
        is_first=position is None,
    )


# --- Models and batch chips -----------------------------------------------------------------


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
    """Every active model with whether it can run now: keys set, and the task the bar asks for."""
    options = []
    for model in models:
        provider = get_provider(model)
        if not provider.is_configured():
            options.append(ModelOption(model, False, provider.configuration_hint() or "Not set up on this server."))
        elif has_references and not model.supports("i2i"):
            options.append(ModelOption(model, False, "Text only: clear the references to use it."))
        elif not has_references and not model.supports("t2i"):
            options.append(ModelOption(model, False, "Needs a reference image."))
        else:
            options.append(ModelOption(model, True))
    return options


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
            label = Provider(key).label if key in Provider.values else key
            groups[key] = ModelGroup(label=label, options=[])
        groups[key].options.append(option)
    return list(groups.values())


def money(amount: Decimal) -> str:
    """$0.04, $0.004, $0.134, $0.00: at least two decimals, no trailing zeros beyond them."""
    text = f"{amount.normalize():f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"${whole}.{fraction}"


def batch_plan(model: ApiModel, count: int) -> str:
    """How `count` images run on `model`: natively in one request, in chunks, or one request each."""
    per_request = max(1, model.max_images)
    if per_request == 1:
        return _plural(count, "request")
    requests = math.ceil(count / per_request)
    return f"{_plural(requests, 'request')}, {_plural(count, 'image')}"


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
        return _plural(self.credits, "credit")


def chip_counts(model: ApiModel) -> list[int]:
    """x1, x2, x4 everywhere, and the model's own maximum where it is higher (Seedream: x10)."""
    allowed = allowed_counts(model)
    counts = [c for c in STANDARD_CHIPS if c in allowed]
    if model.max_images > max(STANDARD_CHIPS) and model.max_images in allowed:
        counts.append(model.max_images)
    return counts


def batch_chips(model: ApiModel | None, selected: int) -> list[BatchChip]:
    if model is None:
        return []
    counts = chip_counts(model)
    if selected not in counts:
        selected = counts[0]
    return [
        BatchChip(count=c, plan=batch_plan(model, c), provider_cost=model.price_per_image * c, selected=c == selected)
        for c in counts
    ]
