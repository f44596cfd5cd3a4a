"""A character's LoRA loop: its character sheet, its dataset page (trigger word, include/exclude,
captions, images added from the gallery, the ZIP), its trainings (price, start, progress, cancel)
and the trained LoRA file. Everything is scoped by owner: another user's character, dataset item,
training or file answers 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from generation.lib.dataset import DatasetError, dataset_zip_stream
from generation.models import LoraTraining
from generation.providers.training import TrainerSpec
from generation.selectors import ready_lora
from generation.services.character_jobs import character_sheet_create
from generation.services.jobs import JobRequestError
from generation.services.trainings import (
    TrainingError,
    trainers,
    training_cancel,
    training_create,
    training_quote,
)
from generation.sheet import SHEET_DEFAULT_IMAGES
from studio.dataset import (
    character_set_trigger_word,
    dataset_add_asset,
    dataset_images,
    dataset_item_update,
    dataset_state,
    dataset_sync,
    gallery_candidates,
    trigger_word_of,
)
from studio.files import file_response
from studio.models import Character, DatasetItem
from studio.selectors import asset_for_user, character_for_user
from studio.views import HtmxHttpRequest


def _training_for_user(request: HtmxHttpRequest, character: Character, training_id: uuid.UUID) -> LoraTraining:
    return get_object_or_404(
        LoraTraining.objects.select_related("model"), pk=training_id, owner=request.user, character=character
    )


def _dataset_url(character: Character) -> str:
    return reverse("studio:character-dataset", args=[character.pk])


# --- the sheet ------------------------------------------------------------------------------


@require_POST
def character_sheet(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """Start a character sheet of 7-16 images from the locked portrait; its card shows the progress."""
    character = character_for_user(request.user, character_id)
    try:
        count = int(request.POST.get("images") or SHEET_DEFAULT_IMAGES)
    except ValueError:
        count = 0
    try:
        job = character_sheet_create(user=request.user, character=character, images=count)
    except JobRequestError as exc:
        messages.error(request, exc.message)
        return redirect("studio:character", character.pk)
    messages.success(request, f"Making a character sheet of {count} images for {character.name}.")
    return redirect(reverse("studio:character", args=[character.pk]) + f"#job-{job.pk}")


# --- the dataset page -----------------------------------------------------------------------


def _trainer_choice(request: HtmxHttpRequest) -> tuple[list, Any]:
    available = trainers()
    wanted = request.POST.get("trainer") or request.GET.get("trainer")
    chosen = next((m for m in available if str(m.pk) == str(wanted)), available[0] if available else None)
    return available, chosen


def _dataset_context(request: HtmxHttpRequest, character: Character, **extra: Any) -> dict[str, Any]:
    available, trainer = _trainer_choice(request)
    quote = None
    if trainer is not None:
        try:
            quote = training_quote(trainer)
        except TrainingError:
            quote = None
    min_images = TrainerSpec.of(trainer).min_images if trainer is not None else 10
    trainings = list(LoraTraining.objects.filter(character=character).select_related("model")[:5])
    return {
        "character": character,
        "trigger_word": trigger_word_of(character),
        "dataset": dataset_state(character, min_images=min_images),
        "candidates": gallery_candidates(character),
        "trainers": available,
        "trainer": trainer,
        "quote": quote,
        "trainings": trainings,
        "lora": ready_lora(character),
        "has_character": True,
        **extra,
    }


@require_GET
def dataset_page(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    dataset_sync(character)
    return render(request, "studio/dataset.html", _dataset_context(request, character))


@require_POST
def dataset_trigger(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    try:
        character_set_trigger_word(character=character, trigger_word=request.POST.get("trigger_word", ""))
    except ValidationError as exc:
        character.refresh_from_db()
        context = _dataset_context(request, character, trigger_errors=exc.messages)
        return render(request, "studio/dataset.html", context, status=400)
    messages.success(request, f"{character.name}'s trigger word is {character.trigger_word}.")
    return redirect(_dataset_url(character))


@require_POST
def dataset_item(request: HtmxHttpRequest, character_id: uuid.UUID, item_id: int) -> HttpResponse:
    """Include, exclude or re-caption one image; htmx gets the row back, a form post the page."""
    character = character_for_user(request.user, character_id)
    item = get_object_or_404(DatasetItem.objects.select_related("asset"), pk=item_id, character=character)
    included = None
    if "included" in request.POST:
        included = request.POST["included"] == "1"
    caption = request.POST.get("caption") if "caption" in request.POST else None
    errors: list[str] = []
    try:
        dataset_item_update(item=item, included=included, caption=caption)
    except ValidationError as exc:
        errors = exc.messages
        item.refresh_from_db()
    if request.htmx:
        state = dataset_state(character, min_images=1)
        row = next(r for r in state.rows if r.item.pk == item.pk)
        return render(
            request,
            "studio/dataset.html#dataset-row",
            {"row": row, "character": character, "item_errors": errors},
        )
    if errors:
        return render(
            request, "studio/dataset.html", _dataset_context(request, character, row_errors=errors), status=400
        )
    return redirect(_dataset_url(character) + f"#item-{item.pk}")


@require_POST
def dataset_add(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    try:
        asset = asset_for_user(request.user, uuid.UUID(request.POST.get("asset", "")))
    except ValueError as exc:
        raise Http404("No such image.") from exc
    try:
        dataset_add_asset(character=character, asset=asset)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    return redirect(_dataset_url(character))


@require_GET
def dataset_download(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """The included images and their captions as the flat training ZIP, streamed."""
    character = character_for_user(request.user, character_id)
    _, trainer = _trainer_choice(request)
    spec = TrainerSpec.of(trainer) if trainer is not None else None
    try:
        stream = dataset_zip_stream(
            dataset_images(character),
            trigger_word=trigger_word_of(character),
            caption_trigger=spec.caption_trigger if spec else "literal",
            trainer=trainer.key if trainer else "",
        )
    except DatasetError as exc:
        messages.error(request, str(exc))
        return redirect(_dataset_url(character))
    response = StreamingHttpResponse(stream, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{trigger_word_of(character)}-dataset.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


# --- trainings ------------------------------------------------------------------------------


@require_POST
def training_start(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """Start a training once the user confirmed its price (the form's `confirm`)."""
    character = character_for_user(request.user, character_id)
    _, trainer = _trainer_choice(request)
    if trainer is None:
        messages.error(request, "No LoRA trainer is set up on this server.")
        return redirect(_dataset_url(character))
    if request.POST.get("confirm") != "1":
        messages.error(request, "Confirm the price to start the training.")
        return redirect(_dataset_url(character))
    try:
        # The price the user accepted must be the one charged: another trainer, or a price staff
        # changed meanwhile, asks again.
        if request.POST.get("credits") != str(training_quote(trainer).credits):
            raise TrainingError("The price has changed: check it and confirm again.")
        training = training_create(user=request.user, character=character, model=trainer)
    except TrainingError as exc:
        messages.error(request, str(exc))
        return redirect(_dataset_url(character))
    messages.success(request, f"Training {character.name}'s LoRA on {trainer.display_name}.")
    return redirect(_dataset_url(character) + f"#training-{training.pk}")


@require_GET
def training_status(request: HtmxHttpRequest, character_id: uuid.UUID, training_id: uuid.UUID) -> HttpResponse:
    """One training's panel; polled while it runs, 286 (stop polling) once it ended."""
    character = character_for_user(request.user, character_id)
    training = _training_for_user(request, character, training_id)
    response = render(request, "studio/dataset.html#training", {"training": training, "character": character})
    if not training.is_active:
        response.status_code = HTMX_STOP_POLLING
    return response


@require_POST
def training_cancel_view(request: HtmxHttpRequest, character_id: uuid.UUID, training_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    training = _training_for_user(request, character, training_id)
    if training_cancel(training=training):
        messages.success(request, "Training canceled; its credits were refunded.")
    return redirect(_dataset_url(character))


@require_GET
def lora_file(request: HtmxHttpRequest, character_id: uuid.UUID, training_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    training = _training_for_user(request, character, training_id)
    if not training.is_ready:
        raise Http404("This LoRA is not ready.")
    return file_response(
        training.lora_file,
        content_type="application/octet-stream",
        download_name=f"{training.trigger_word}.safetensors",
    )
