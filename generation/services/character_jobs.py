"""A character's own jobs: the wizard's base images, profile picture sets and character sheets.

Both are ordinary jobs (job_create: one credit, the pipeline, the gallery) of their own kind, on
the fastest usable model (routing.fastest_model), with prompts from generation.prompts.PromptBuilder.
"""

from __future__ import annotations

from generation.models import GenerationJob, JobKind, JobMode
from generation.prompts import Shot
from generation.services import routing
from generation.services.jobs import JobRequestError, job_create
from generation.sheet import SHEET_DEFAULT_IMAGES, SHEET_TITLE, sheet_plan
from models_registry.models import Task
from studio.models import Character

BASE_IMAGE_COUNT = 3
# The direction of a base image: a clear, front-facing portrait to lock the character's look on.
BASE_IMAGE_DIRECTION = "head and shoulders portrait, looking at the camera, plain studio backdrop"


def base_images_create(*, user, character: Character) -> GenerationJob:
    """Three portraits of the character from its wizard answers alone, as one job of one request
    where the model batches natively. Raises JobRequestError like job_create."""
    model = routing.fastest_model(Task.T2I, images=BASE_IMAGE_COUNT)
    if model is None:
        raise JobRequestError("No text-to-image model is available right now.", code="no_model")
    return job_create(
        user=user,
        model=model,
        prompt=BASE_IMAGE_DIRECTION,
        images=BASE_IMAGE_COUNT,
        mode=JobMode.T2I,
        character=character,
        kind=JobKind.BASE_IMAGE,
    )


def profile_set_create(
    *, user, character: Character, shots: list[Shot], set_name: str = "", prompt: str = ""
) -> GenerationJob:
    """One job whose images are the set's shots, each with its own prompt, all from the character's
    locked portrait when it has one (image-to-image), else from its description alone."""
    if not shots:
        raise JobRequestError("This set has no shots.", code="empty_set")
    reference = character.locked_reference_id
    task = Task.I2I if reference else Task.T2I
    # One request per shot (each has its own prompt): the model's batch size does not matter.
    model = routing.fastest_model(task, images=1)
    if model is None:
        raise JobRequestError("No model is available for this set right now.", code="no_model")
    return job_create(
        user=user,
        model=model,
        prompt=prompt,
        mode=JobMode.I2I_MODIFY if reference else JobMode.T2I,
        references=[reference] if reference else [],
        character=character,
        kind=JobKind.PROFILE_SET,
        shots=shots,
        # The card's title (the job has no words of the user's own).
        params={"set_name": set_name} if set_name else None,
    )


def character_sheet_create(*, user, character: Character, images: int = SHEET_DEFAULT_IMAGES) -> GenerationJob:
    """A character sheet (generation.sheet): `images` shots of the character, all edits of its locked
    portrait on the best usable multi-reference edit model (the i2i_multi chain, whose fallback the
    job keeps: routing.job_task), the offline engine when none is configured. Each image carries its
    shot name, and the job's params its training caption (what varies), for the dataset page."""
    reference = character.locked_reference_id
    if not reference:
        raise JobRequestError(
            "Lock a portrait for this character first: the sheet is made from it.", code="no_portrait"
        )
    try:
        plan = sheet_plan(images)
    except ValueError as exc:
        raise JobRequestError(str(exc), code="bad_count", field="images") from exc
    model = routing.fastest_model(Task.I2I_MULTI, images=1) or routing.fastest_model(Task.I2I, images=1)
    if model is None:
        raise JobRequestError("No image-to-image model is available for the sheet right now.", code="no_model")
    return job_create(
        user=user,
        model=model,
        prompt="",
        mode=JobMode.I2I_MODIFY,
        references=[reference],
        character=character,
        kind=JobKind.CHARACTER_SHEET,
        shots=[shot.shot() for shot in plan],
        params={"set_name": SHEET_TITLE, "captions": [shot.varies for shot in plan]},
    )
