"""The character wizard (four HTMX steps: name, appearance, identity, base images) and the
character page (its answers, portrait, profile picture sets and jobs).

The wizard's answers live in the session (studio.wizard.WizardState) so a reload, Back or Next
loses nothing; the character is created when the base-image step starts. Without JavaScript every
step is a plain form post that redirects back to the wizard's page. Everything is scoped by owner.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from generation.lib.imaging import InvalidImage
from generation.selectors import job_for_user
from generation.services.character_jobs import base_images_create, profile_set_create
from generation.services.jobs import JobRequestError
from generation.sheet import SHEET_DEFAULT_IMAGES, SHEET_MAX_IMAGES, SHEET_MIN_IMAGES
from studio import wizard
from studio.forms import AppearanceForm, CharacterEditForm, IdentityForm, UploadForm, WizardNameForm
from studio.job_cards import gallery_page, job_card
from studio.models import Character
from studio.prompt_bar import CHARACTER_SESSION_KEY
from studio.selectors import (
    asset_for_user,
    character_for_user,
    character_name_taken,
    portraits_by_asset,
    profile_set_shots,
)
from studio.services import character_create, character_lock_portrait, character_update, upload_create
from studio.views import HtmxHttpRequest, _form_errors

STEP_FORMS: dict[int, type[forms.Form]] = {
    wizard.STEP_NAME: WizardNameForm,
    wizard.STEP_APPEARANCE: AppearanceForm,
    wizard.STEP_IDENTITY: IdentityForm,
}


def _load(request: HtmxHttpRequest) -> wizard.WizardState:
    state = wizard.WizardState.from_dict(request.session.get(wizard.SESSION_KEY))
    if state.character_id and not Character.objects.filter(owner=request.user, pk=state.character_id).exists():
        state = wizard.WizardState()  # its character was deleted meanwhile: start again
    return state


def _save(request: HtmxHttpRequest, state: wizard.WizardState) -> None:
    request.session[wizard.SESSION_KEY] = state.to_dict()


def _wizard_context(request: HtmxHttpRequest, state: wizard.WizardState, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"wizard": state, **extra}
    form_class = STEP_FORMS.get(state.step)
    if form_class is not None and "form" not in extra:
        context["form"] = form_class(initial=state.initial_for(state.step))
    if state.step == wizard.STEP_BASE and state.job_id:
        job = job_for_user(request.user, state.job_id)
        context["card"] = job_card(job)
    return context


def _wizard_response(request: HtmxHttpRequest, state: wizard.WizardState, status: int = 200, **extra: Any):
    context = _wizard_context(request, state, **extra)
    if request.htmx:
        # htmx swaps only 2xx answers: a step with errors is still a 200 fragment.
        return render(request, "studio/character_wizard.html#wizard", context)
    return render(request, "studio/character_wizard.html", context, status=status)


@require_GET
def wizard_page(request: HtmxHttpRequest) -> HttpResponse:
    if request.GET.get("restart"):
        # Redirected, so a reload of the wizard never starts it over.
        _save(request, wizard.WizardState())
        return redirect("studio:character-wizard")
    state = _load(request)
    _save(request, state)
    return _wizard_response(request, state)


def _start_base_images(request: HtmxHttpRequest, state: wizard.WizardState) -> list[str]:
    """Create (or, after Back, update) the character from the answers, then its base-image job."""
    try:
        if state.character_id:
            character = character_for_user(request.user, state.character_id)
            character_update(character=character, name=state.name, appearance=state.appearance, identity=state.identity)
        else:
            character = character_create(
                owner=request.user, name=state.name, appearance=state.appearance, identity=state.identity
            )
    except ValidationError as exc:
        state.step = wizard.STEP_NAME
        return exc.messages
    state.character_id = str(character.pk)
    try:
        state.job_id = str(base_images_create(user=request.user, character=character).pk)
    except JobRequestError as exc:
        state.job_id = None
        return [exc.message]
    return []


@require_POST
def wizard_step(request: HtmxHttpRequest) -> HttpResponse:
    """Next or Back from the step the form was on: Next keeps valid answers and moves on, Back keeps
    whatever is valid and goes back; bad answers stay on the step with their errors, nothing saved."""
    state = _load(request)
    try:
        step = int(request.POST.get("step", ""))
    except ValueError:
        step = state.step
    if step not in STEP_FORMS and step != wizard.STEP_BASE:
        step = state.step
    going_back = request.POST.get("action") == "back"
    form_class = STEP_FORMS.get(step)
    form = form_class(request.POST) if form_class else None
    errors: list[str] = []
    if form is not None and form.is_valid():
        if step == wizard.STEP_NAME and character_name_taken(
            request.user, form.cleaned_data["name"], except_id=state.character_id
        ):
            form.add_error("name", "You already have a character with this name.")
        else:
            state.take(step, form.cleaned_data)
    if going_back:
        state.step = max(wizard.STEP_NAME, step - 1)
        _save(request, state)
        return _step_done(request, state)
    if form is not None and form.errors:
        state.step = step
        _save(request, state)
        return _wizard_response(request, state, status=400, form=form)
    state.step = min(wizard.STEP_BASE, step + 1)
    if state.step == wizard.STEP_BASE:
        errors = _start_base_images(request, state)
    _save(request, state)
    if errors:
        return _wizard_response(request, state, status=400, errors=errors)
    return _step_done(request, state)


def _step_done(request: HtmxHttpRequest, state: wizard.WizardState) -> HttpResponse:
    if request.htmx:
        return _wizard_response(request, state)
    return redirect("studio:character-wizard")


@require_GET
def wizard_base_images(request: HtmxHttpRequest) -> HttpResponse:
    """The base-image step's three places; polled every second while the job runs."""
    state = _load(request)
    if state.step != wizard.STEP_BASE or not state.job_id:
        return redirect("studio:character-wizard")
    context = _wizard_context(request, state)
    return render(request, "studio/character_wizard.html#base-images", context)


@require_POST
def wizard_regenerate(request: HtmxHttpRequest) -> HttpResponse:
    state = _load(request)
    if state.step != wizard.STEP_BASE or not state.character_id:
        return redirect("studio:character-wizard")
    errors = _start_base_images(request, state)
    _save(request, state)
    return _wizard_response(request, state, status=400 if errors else 200, errors=errors)


def _finish(request: HtmxHttpRequest, character: Character, message: str) -> HttpResponse:
    request.session.pop(wizard.SESSION_KEY, None)
    request.session[CHARACTER_SESSION_KEY] = str(character.pk)
    messages.success(request, message)
    url = reverse("studio:home") + "?" + f"character={character.pk}"
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
def wizard_pick(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    """The picked base image becomes the character's locked portrait."""
    state = _load(request)
    asset = asset_for_user(request.user, asset_id)
    if not state.character_id:
        return redirect("studio:character-wizard")
    character = character_for_user(request.user, state.character_id)
    character_lock_portrait(character=character, asset=asset)
    return _finish(request, character, f"{character.name} is ready: their portrait is locked.")


@require_POST
def wizard_upload(request: HtmxHttpRequest) -> HttpResponse:
    """The user's own photo instead of a base image: validated, stored, locked as the portrait."""
    state = _load(request)
    if not state.character_id:
        return redirect("studio:character-wizard")
    character = character_for_user(request.user, state.character_id)
    errors = _upload_portrait(request, character)
    if not errors:
        return _finish(request, character, f"{character.name} is ready: your photo is their portrait.")
    return _wizard_response(request, state, status=400, upload_errors=errors)


def _upload_portrait(request: HtmxHttpRequest, character: Character) -> list[str]:
    """Store the posted photo and lock it as the character's portrait; the errors if it cannot be."""
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _form_errors(form)
    try:
        asset = upload_create(owner=request.user, data=form.cleaned_data["image"].read(), character=character)
    except InvalidImage as exc:
        return [str(exc)]
    except ValidationError as exc:
        return exc.messages
    character_lock_portrait(character=character, asset=asset)
    return []


# --- the character page ---------------------------------------------------------------------


def _character_context(request: HtmxHttpRequest, character: Character, **extra: Any) -> dict[str, Any]:
    answers = {"name": character.name, **character.appearance, **character.identity}
    return {
        "character": character,
        "form": extra.pop("form", None) or CharacterEditForm(initial=answers),
        "profile_sets": profile_set_shots(),
        "page": gallery_page(request.user, character=character, size=12),
        "has_character": True,
        "portraits": portraits_by_asset(request.user),
        "sheet_min": SHEET_MIN_IMAGES,
        "sheet_default": SHEET_DEFAULT_IMAGES,
        "sheet_max": SHEET_MAX_IMAGES,
        **extra,
    }


@require_GET
def character_page(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    return render(request, "studio/character.html", _character_context(request, character))


@require_POST
def character_edit(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    form = CharacterEditForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            character_update(
                character=character,
                name=data["name"],
                appearance={k: data[k] for k in wizard.APPEARANCE_KEYS if data.get(k)},
                identity={k: data[k] for k in wizard.IDENTITY_KEYS if data.get(k)},
            )
        except ValidationError as exc:
            form.add_error("name", exc.messages[0])
        else:
            messages.success(request, f"Saved {character.name}.")
            return redirect("studio:character", character.pk)
    character.refresh_from_db()
    return render(request, "studio/character.html", _character_context(request, character, form=form), status=400)


@require_POST
def character_portrait_replace(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_for_user(request.user, character_id)
    errors = _upload_portrait(request, character)
    if not errors:
        messages.success(request, f"Replaced {character.name}'s portrait.")
        return redirect("studio:character", character.pk)
    context = _character_context(request, character, upload_errors=errors)
    return render(request, "studio/character.html", context, status=400)


@require_POST
def character_profile_set(request: HtmxHttpRequest, character_id: uuid.UUID, set_id: int) -> HttpResponse:
    """Generate a profile picture set for the character: one job, one image per shot."""
    character = character_for_user(request.user, character_id)
    profile_set = next((s for s in profile_set_shots() if s.profile_set.pk == set_id), None)
    if profile_set is None:
        raise Http404("No such set.")  # an inactive or unknown set is not offered
    try:
        job = profile_set_create(
            user=request.user, character=character, shots=profile_set.shots, set_name=profile_set.profile_set.name
        )
    except JobRequestError as exc:
        messages.error(request, exc.message)
        return redirect("studio:character", character.pk)
    messages.success(request, f"Making “{profile_set.profile_set.name}” for {character.name}.")
    return redirect(reverse("studio:character", args=[character.pk]) + f"#job-{job.pk}")
