"""A character's own jobs: the wizard's base images and profile picture sets.

Both are ordinary jobs (job_create: one credit, the pipeline, the gallery) of their own kind, on
the fastest usable model (routing.fastest_model), with prompts from generation.prompts.PromptBuilder.
"""

from __future__ import annotations

from generation.models import GenerationJob, JobKind, JobMode
from generation.prompts import Shot
from generation.services import routing
from generation.services.jobs import JobRequestError, job_create
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
