"""The gallery as job cards: one card per job, its image places in batch order, and pages of cards.

Presentation only: the reads are studio.selectors.gallery_jobs (a fixed number of queries for any
page), and a card reads only what that prefetched.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from generation.models import GenerationJob, JobStatus, SlotStatus
from generation.selectors import waiting_on_a_worker
from studio.models import Character, WorkspaceAsset
from studio.selectors import gallery_jobs, job_progress_for_user
from studio.wording import ago, plural

GALLERY_PAGE_SIZE = 50


_PLACEHOLDER = uuid.UUID(int=0)


@functools.cache
def _url_pattern(name: str) -> str:
    """A URL with "{}" where the asset id goes: reversed once, not once per tile."""
    return reverse(name, args=[_PLACEHOLDER]).replace(str(_PLACEHOLDER), "{}")


class TileUrls:
    """A gallery image's id and URLs, built from patterns: a page of 200 images would otherwise
    reverse a URL for every link (2,639 {% url %} lookups, about half the page's render time)."""

    __slots__ = ("id",)

    def __init__(self, asset_id: uuid.UUID | str) -> None:
        self.id = str(asset_id)

    @property
    def hex(self) -> str:
        """The id as the image's buttons send it (studio.views.asset_action): four bytes shorter."""
        return self.id.replace("-", "")

    @property
    def file(self) -> str:
        return _url_pattern("studio:asset-file").format(self.id)

    @property
    def thumbnail(self) -> str:
        return _url_pattern("studio:asset-thumbnail").format(self.id)


class CardUrls:
    """A job card's own links, built from patterns like its tiles': reversing them for each of a
    page's 50 cards cost a tenth of its render."""

    __slots__ = ("id",)

    def __init__(self, job_id: uuid.UUID) -> None:
        self.id = str(job_id)

    @property
    def refresh(self) -> str:
        return _url_pattern("studio:job-card").format(self.id)

    @property
    def cancel(self) -> str:
        return _url_pattern("studio:job-cancel").format(self.id)

    @property
    def retry(self) -> str:
        return _url_pattern("studio:job-retry").format(self.id)

    @property
    def download(self) -> str:
        return _url_pattern("studio:job-download").format(self.id)

    @property
    def image_actions(self) -> str:
        """Where the card's image buttons post (studio.views.asset_action): the same for every card."""
        return _fixed_url("studio:asset-action")


@functools.cache
def _fixed_url(name: str) -> str:
    return reverse(name)


@dataclass(frozen=True)
class Cell:
    """One image place of a job card, in batch_index order."""

    index: int
    status: str
    asset: WorkspaceAsset | None = None
    error: str = ""
    # The failure would repeat on a retry (see ImageSlot.failed_permanently).
    permanent: bool = False
    # A profile set's shot name for this image ("Coffee date"); empty for other jobs.
    shot: str = ""

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def urls(self) -> TileUrls | None:
        return TileUrls(self.asset.pk) if self.asset is not None else None

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
    # The reference images sent, in slot order (asset ids), and the reference strength used.
    references: list[str] = field(default_factory=list)
    strength: float | None = None

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
    def version(self) -> str:
        """Changes whenever the card would look different (card_version)."""
        return card_version(self.job.status, self.job.updated_at, self.paused)

    @property
    def urls(self) -> CardUrls:
        return CardUrls(self.job.pk)

    @property
    def reference_thumbnails(self) -> list[str]:
        return [TileUrls(ref).thumbnail for ref in self.references]

    @property
    def can_retry(self) -> bool:
        """Offer "Retry failed" only where a retry can change something: not all failures permanent."""
        retryable = any(not cell.permanent for cell in self.errors)
        return self.job.status in (JobStatus.PARTIAL, JobStatus.FAILED) and retryable

    @property
    def images(self) -> list[WorkspaceAsset]:
        return [c.asset for c in self.cells if c.asset is not None]


def card_version(status: str, updated_at: datetime, paused: bool) -> str:
    """What a card shows changes only with these: every slot outcome moves the job's updated_at
    (generation.services.finish), and "paused" follows the workers, not the job."""
    return f"{status}.{updated_at.timestamp():.6f}.{int(paused)}"


def card_version_now(user, job_id: uuid.UUID) -> str:
    """The version of the user's job card as the database has it now (404 for another's job)."""
    status, updated_at, created_at = job_progress_for_user(user, job_id)
    paused = waiting_on_a_worker(GenerationJob(status=status, created_at=created_at))
    return card_version(status, updated_at, paused)


def job_card(job: GenerationJob, *, now: datetime | None = None) -> JobCard:
    """A job as the gallery shows it; reads only prefetched slots and assets (no queries)."""
    # Succeeded slots are not loaded (generation.selectors.jobs_for_user): a missing one succeeded.
    slots = {s.index: s for s in job.unsucceeded_slots}
    assets = {a.batch_index: a for a in job.asset_list}
    shots = [str(shot.get("name", "")) for shot in (job.params or {}).get("shots") or []]
    cells = []
    for index in range(job.images_requested):
        slot = slots.get(index)
        status = slot.status if slot is not None else SlotStatus.SUCCEEDED
        cells.append(
            Cell(
                index=index,
                status=status,
                asset=assets.get(index),
                error=slot.error if slot else "",
                permanent=slot.failed_permanently if slot else False,
                shot=shots[index] if index < len(shots) else "",
            )
        )
    # The job's stored counters (generation.services.finish) say how many images arrived; the
    # cells show which, and the failed ones carry their errors.
    succeeded = job.succeeded_count
    errors = [c for c in cells if c.status == SlotStatus.FAILED]
    done = job.done_count + sum(1 for c in cells if c.status == SlotStatus.CANCELED)
    total = len(cells)

    paused = waiting_on_a_worker(job)
    if paused:
        outcome, message = "active", "Generations are paused: no worker is running. This job starts when one does."
    elif job.is_active and job.batch_id:
        outcome = "active"
        if job.status == JobStatus.QUEUED:
            message = "Waiting in your batch queue: sent with the batch."
        else:
            message = f"Sent in a batch: images arrive within 24 hours ({done}/{total})."
    elif job.is_active:
        outcome, message = "active", f"Generating {done}/{total}..."
    elif job.status == JobStatus.CANCELED:
        outcome, message = "canceled", f"Canceled. Generated {succeeded} of {plural(total, 'image')}."
    elif job.status == JobStatus.FAILED or (succeeded == 0 and errors):
        outcome = "failed"
        message = "Generation failed." if total == 1 else f"All {total} images failed."
    elif errors:
        outcome = "partial"
        message = f"Generated {succeeded} of {plural(total, 'image')}. {len(errors)} failed."
    else:
        outcome, message = "success", f"Generated {succeeded} of {plural(total, 'image')}."
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
        age=ago(job.created_at, now or timezone.now()),
        paused=paused,
        references=[str(r.get("asset")) for r in job.references or [] if isinstance(r, dict) and r.get("asset")],
        strength=(job.params or {}).get("reference_strength"),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gallery_cursor(job: GenerationJob) -> str:
    """Where the next page starts: after this job in (created_at, id) order. Exact to the microsecond."""
    return f"{stream_position(job.created_at)}_{job.pk.hex}"


def stream_position(moment: datetime) -> str:
    """A live stream's event id, and the page's `since` (studio.live): microseconds since the epoch."""
    return str((moment - _EPOCH) // timedelta(microseconds=1))


def parse_stream_position(value: str | None) -> datetime | None:
    try:
        return _EPOCH + timedelta(microseconds=int(value or ""))
    except (ValueError, OverflowError):
        return None


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


def gallery_page(
    user, *, after: str | None = None, size: int = GALLERY_PAGE_SIZE, character: Character | None = None
) -> GalleryPage:
    """One page of the user's jobs (only `character`'s when given), newest first, as cards: three
    queries for any page (gallery_jobs)."""
    position = _parse_cursor(after)
    page = list(gallery_jobs(user, after=position, character=character)[: size + 1])
    has_more = len(page) > size
    page = page[:size]
    now = timezone.now()
    return GalleryPage(
        cards=[job_card(job, now=now) for job in page],
        next_cursor=gallery_cursor(page[-1]) if has_more else None,
        is_first=position is None,
    )
