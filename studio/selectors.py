"""Reads for the studio pages: characters, assets, reference slots, the gallery's jobs and a job's download.

Every read is scoped by owner; the gallery costs a fixed number of queries whatever the number of
jobs and images on the page (it builds on generation.selectors.jobs_for_user). What the pages show
of them is built in studio.job_cards and studio.prompt_options.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from generation.models import GenerationJob
from generation.prompts import Shot
from generation.selectors import jobs_for_user
from studio.models import AssetKind, Character, ProfileSet, WorkspaceAsset

# --- Characters and assets ------------------------------------------------------------------


def characters_for_user(user) -> QuerySet[Character]:
    return Character.objects.filter(owner=user).select_related("locked_reference")


def character_for_user(user, character_id: uuid.UUID | str) -> Character:
    """The user's character or 404: another user's character does not exist for them."""
    try:
        uuid.UUID(str(character_id))
    except ValueError as exc:
        raise Http404("No such character.") from exc
    return get_object_or_404(characters_for_user(user), pk=character_id)


def asset_for_user(user, asset_id: uuid.UUID | str) -> WorkspaceAsset:
    return get_object_or_404(WorkspaceAsset, pk=asset_id, owner=user)


def reference_assets(user, ids: list[str | None]) -> list[WorkspaceAsset | None]:
    """The reference slots' assets in slot order; a slot whose image is gone (or not the user's) is None."""
    wanted = [i for i in ids if i]
    if not wanted:
        return [None for _ in ids]
    found = {str(a.id): a for a in WorkspaceAsset.objects.filter(owner=user, id__in=wanted, kind=AssetKind.IMAGE)}
    return [found.get(i) if i else None for i in ids]


# --- Gallery --------------------------------------------------------------------------------


def gallery_jobs(
    user, *, after: tuple[datetime, uuid.UUID] | None = None, character: Character | None = None
) -> QuerySet[GenerationJob]:
    """The user's jobs newest first, from just after a (created_at, id) position; three queries for any slice.

    Pages are keyed on the last job shown (not an offset), so jobs created meanwhile never push a
    card onto the next page twice.
    """
    jobs = jobs_for_user(user).order_by("-created_at", "-id")
    if character is not None:
        jobs = jobs.filter(character=character)
    if after is not None:
        created_at, job_id = after
        jobs = jobs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id))
    return jobs


def job_progress_for_user(user, job_id: uuid.UUID) -> tuple[str, datetime, datetime]:
    """(status, updated_at, created_at) of the user's job, or 404: what a polling card compares."""
    row = GenerationJob.objects.filter(owner=user, pk=job_id).values_list("status", "updated_at", "created_at").first()
    if row is None:
        raise Http404("No such job.")
    return row


def job_images_for_download(job: GenerationJob) -> list[WorkspaceAsset]:
    """The images of a job already scoped to its owner (job_for_user), with what asset_file_name() reads: one query."""
    return list(job.assets.select_related("job__character"))


def is_portrait(user, asset: WorkspaceAsset) -> bool:
    """Whether one of the user's characters has `asset` locked as its portrait."""
    return Character.objects.filter(owner=user, locked_reference=asset).exists()


def character_name_taken(user, name: str, *, except_id: str | None = None) -> bool:
    """Whether the user already has a character of this name, whatever its case."""
    taken = Character.objects.filter(owner=user, name__iexact=name.strip())
    if except_id:
        taken = taken.exclude(pk=except_id)
    return taken.exists()


@dataclass(frozen=True)
class ProfileSetShots:
    profile_set: ProfileSet
    shots: list[Shot]


def profile_set_shots() -> list[ProfileSetShots]:
    """The active profile picture sets with their shots as the prompt builder takes them: two queries."""
    sets = ProfileSet.objects.filter(is_active=True).prefetch_related("shots")
    return [
        ProfileSetShots(
            profile_set=s,
            shots=[
                Shot(
                    name=shot.name,
                    direction=", ".join(p for p in (shot.framing, shot.expression) if p),
                    scene=shot.scene,
                    outfit=shot.outfit,
                )
                for shot in s.shots.all()
            ],
        )
        for s in sets
    ]


def portraits_by_asset(user) -> dict[str, str]:
    """The user's locked portraits: asset id -> the character's name (one query)."""
    rows = Character.objects.filter(owner=user, locked_reference__isnull=False).values_list(
        "locked_reference_id", "name"
    )
    return {str(asset_id): name for asset_id, name in rows}
