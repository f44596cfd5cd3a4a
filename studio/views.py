"""The studio's pages and their HTMX fragments.

Each view renders a full page (or redirects back to it) for a plain request, and for an htmx request
the named {% partialdef %} of the same template, so every control still works without JavaScript.
Everything is scoped by owner: another user's job, image, ZIP or character answers 404.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING, reswap, retarget
from django_htmx.middleware import HtmxDetails

from generation import modes
from generation.lib.imaging import InvalidImage
from generation.models import GenerationJob, JobMode
from generation.prompts import QUALITY_FAST
from generation.providers import has_batch_lane
from generation.providers.kinds import PROVIDER_KINDS
from generation.selectors import generations_paused_for, job_for_user, ready_lora
from generation.services.control import job_cancel, job_retry_failed
from generation.services.credits import credit_account
from generation.services.jobs import JobRequestError, job_create
from models_registry.models import ApiModel
from studio.files import asset_file_name, file_response, job_file_stem, job_zip_stream
from studio.forms import CharacterForm, GenerateForm, UploadForm
from studio.job_cards import card_version_now, gallery_page, job_card, stream_position
from studio.live import is_live
from studio.models import Character, WorkspaceAsset
from studio.prompt_bar import CHARACTER_SESSION_KEY, MODE_COPY, StudioState
from studio.prompt_options import batch_chips, group_by_provider, model_options, prompt_part_fields, select_model
from studio.selectors import (
    asset_for_user,
    character_for_user,
    characters_for_user,
    is_portrait,
    job_images_for_download,
    portraits_by_asset,
    reference_assets,
)
from studio.services import (
    asset_delete,
    character_create,
    character_delete,
    character_lock_portrait,
    character_rename,
    upload_create,
)

STATE_SESSION_KEY = "studio_state"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# --- access helpers -------------------------------------------------------------------------


def _get_job_for_user(request: HtmxHttpRequest, job_id: uuid.UUID) -> GenerationJob:
    return job_for_user(request.user, job_id)


def _get_asset_for_user(request: HtmxHttpRequest, asset_id: uuid.UUID) -> WorkspaceAsset:
    return asset_for_user(request.user, asset_id)


def _get_character_for_user(request: HtmxHttpRequest, character_id: uuid.UUID | str) -> Character:
    return character_for_user(request.user, character_id)


# --- session state --------------------------------------------------------------------------


def _load_state(request: HtmxHttpRequest) -> StudioState:
    return StudioState.from_dict(request.session.get(STATE_SESSION_KEY))


def _save_state(request: HtmxHttpRequest, state: StudioState) -> None:
    data = state.to_dict()
    # Assigning marks the session modified, which costs a write; only write what changed.
    if request.session.get(STATE_SESSION_KEY) != data:
        request.session[STATE_SESSION_KEY] = data


def _selected_character_id(request: HtmxHttpRequest) -> str | None:
    return request.session.get(CHARACTER_SESSION_KEY)


def _select_character(request: HtmxHttpRequest, character: Character | None) -> None:
    value = str(character.pk) if character else None
    if request.session.get(CHARACTER_SESSION_KEY) != value:
        request.session[CHARACTER_SESSION_KEY] = value


def _selected_character(request: HtmxHttpRequest, characters: list[Character]) -> Character | None:
    """?character=<id> selects (404 for one that is not the user's; "none" clears), else the session's."""
    wanted = request.GET.get("character")
    if wanted == "none":
        _select_character(request, None)
        return None
    if wanted:
        character = next((c for c in characters if str(c.pk) == wanted), None)
        if character is None:
            character = _get_character_for_user(request, wanted)  # raises 404
        _select_character(request, character)
        return character
    remembered = _selected_character_id(request)
    character = next((c for c in characters if str(c.pk) == remembered), None)
    if remembered and character is None:
        _select_character(request, None)  # deleted meanwhile
    return character


def _selected_character_row(request: HtmxHttpRequest) -> Character | None:
    character_id = _selected_character_id(request)
    return characters_for_user(request.user).filter(pk=character_id).first() if character_id else None


def _home_url(request: HtmxHttpRequest, anchor: str = "") -> str:
    url = reverse("studio:home")
    character_id = _selected_character_id(request)
    if character_id:
        url += "?" + urlencode({"character": character_id})
    return url + (f"#{anchor}" if anchor else "")


# --- context builders -----------------------------------------------------------------------


def _prompt_context(request: HtmxHttpRequest, state: StudioState) -> dict[str, Any]:
    """Everything the prompt bar's controls need; also settles the state (model, count, references)."""
    character = _selected_character_row(request)
    state.follow_portrait(character.locked_reference_id if character else None)
    ref_assets = reference_assets(request.user, state.refs)
    state.keep_only({str(a.pk) for a in ref_assets if a is not None})
    options = model_options(list(ApiModel.objects.active()), has_references=state.has_references)
    chosen = select_model(options, state.model_id)
    state.model_id = chosen.model.pk if chosen else None
    batch_available = bool(chosen and has_batch_lane(chosen.model))
    # With Batch mode on, the chips show what the job will cost in the batch.
    factor = PROVIDER_KINDS[chosen.model.provider].batch_price_factor if batch_available and state.batch else Decimal(1)
    chips = batch_chips(chosen.model if chosen else None, state.images, price_factor=factor)
    if chips:
        state.images = next(chip.count for chip in chips if chip.selected)
    both_refs = all(ref_assets)
    return {
        "batch_available": batch_available,
        "batch_on": batch_available and state.batch,
        "state": state,
        "model_groups": group_by_provider(options),
        "chosen": chosen,
        "chips": chips,
        "ref_slots": list(enumerate(ref_assets, start=1)),
        "ref2_ignored": bool(chosen and both_refs and not chosen.model.supports("i2i_multi")),
        "chosen_references": _reference_capacity(chosen.model) if chosen else 0,
        "is_copy": state.job_mode == JobMode.I2I_COPY,
        # The enhance switch follows the mode's rule (generation.modes), not a mode name.
        "enhancement_allowed": modes.rules_for(state.job_mode).allows_enhancement,
        "portrait_id": state.portrait,
        "portrait_owner": character,
        "part_fields": prompt_part_fields(state),
        "lora": ready_lora(character) if character else None,
        "lora_models": [o.model.display_name for o in options if o.enabled and o.model.takes_loras],
        "lora_on_chosen": bool(chosen and chosen.model.takes_loras),
    }


def _reference_capacity(model: ApiModel) -> int:
    if model.supports("i2i_multi"):
        return 2
    return 1 if model.supports("i2i") else 0


def _gallery_context(request: HtmxHttpRequest, **extra: Any) -> dict[str, Any]:
    """What every job card needs besides its JobCard, the same on the full page and in each fragment.

    The page, "Load more" and every card refresh all build it here: a card rendered from a context
    without it would show Lock disabled ("Select a character first") while a character is selected.
    """
    return {
        "has_character": bool(_selected_character_id(request)),
        "live": is_live(request),
        # Deleting a locked portrait asks first, naming its character.
        "portraits": portraits_by_asset(request.user),
        **extra,
    }


def _page_context(request: HtmxHttpRequest, state: StudioState, **extra: Any) -> dict[str, Any]:
    characters = list(characters_for_user(request.user))
    # Settles the session's selection first (?character=, or a character deleted meanwhile), which
    # _gallery_context then reads like every fragment does.
    selected = _selected_character(request, characters)
    page = gallery_page(request.user, after=request.GET.get("after"), character=selected)
    context = {
        **_gallery_context(request),
        "characters": characters,
        "selected_character": selected,
        "page": page,
        # Where the live stream starts: a job that ends between this render and the connection
        # still reaches the page (studio.live).
        "live_since": stream_position(timezone.now()),
        "credits": credit_account(request.user).balance,
        "generations_paused": generations_paused_for(request.user),
        "idempotency_key": uuid.uuid4(),
        "character_form": CharacterForm(),
        **_prompt_context(request, state),
    }
    context.update(extra)
    return context


def _render_page(request: HtmxHttpRequest, state: StudioState, *, status: int = 200, **extra: Any) -> HttpResponse:
    context = _page_context(request, state, **extra)
    _save_state(request, state)
    return render(request, "studio/home.html", context, status=status)


Fragments = list[tuple[str, dict[str, Any]]]


def _render_fragments(request: HtmxHttpRequest, fragments: Fragments, status: int = 200) -> HttpResponse:
    """Several named partials in one response: the swap target's first, then out-of-band ones."""
    html = "".join(render_to_string(name, context, request=request) for name, context in fragments)
    return HttpResponse(html, status=status)


def _card_context(request: HtmxHttpRequest, job: GenerationJob, **extra: Any) -> dict[str, Any]:
    return _gallery_context(request, card=job_card(job), **extra)


def _swap_into(target: str, response: HttpResponse) -> HttpResponse:
    """Where an htmx answer goes, said by the view (a gallery image's buttons all post one form)."""
    return reswap(retarget(response, target), "outerHTML")


def _controls_response(request: HtmxHttpRequest, state: StudioState, **extra: Any) -> HttpResponse:
    """After a reference or model change: the prompt bar's controls (htmx), else back to the page."""
    if request.htmx:
        context = {**_prompt_context(request, state), **extra}
        _save_state(request, state)
        # Named here, not by the caller: a gallery image's buttons post their card's form.
        return _swap_into("#prompt-controls", render(request, "studio/_prompt_bar.html#prompt-controls", context))
    if extra.get("upload_errors"):
        return _render_page(request, state, status=400, **extra)
    _save_state(request, state)
    return redirect(_home_url(request, "prompt"))


# --- the page -------------------------------------------------------------------------------


@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    return _render_page(request, _load_state(request))


@require_GET
def gallery(request: HtmxHttpRequest) -> HttpResponse:
    """The next page of job cards ("Load more"), appended in place of the button."""
    if not request.htmx:
        return redirect(reverse("studio:home") + "?" + urlencode({"after": request.GET.get("after", "")}))
    page = gallery_page(request.user, after=request.GET.get("after"), character=_selected_character_row(request))
    return render(request, "studio/_gallery.html#gallery-page", _gallery_context(request, page=page))


# --- generating -----------------------------------------------------------------------------


def _form_errors(form: forms.Form) -> list[str]:
    return [str(error) for errors in form.errors.values() for error in errors]


@require_POST
def generate(request: HtmxHttpRequest) -> HttpResponse:
    state = _load_state(request)
    state.update_from_form(request.POST)
    form = GenerateForm(request.POST)
    errors: list[str] = []
    job = None
    repeated = False
    if not form.is_valid():
        errors = _form_errors(form)
    else:
        data = form.cleaned_data
        model = ApiModel.objects.active().filter(pk=data["model"]).first()
        character = None
        if data["character"]:
            character = characters_for_user(request.user).filter(pk=data["character"]).first()
        if model is None:
            errors.append("Choose one of the available models.")
        elif data["character"] and character is None:
            errors.append("That character does not exist any more.")
        else:
            key = data["idempotency_key"]
            started = timezone.now()
            references = form.references
            lora = ready_lora(character) if data["lora"] and character is not None else None
            if lora is not None:
                # The weights carry the likeness: the portrait the bar placed itself is not sent, so
                # LoRA generation is text-to-image unless the user added a reference of their own.
                references = [r for r in references if r != str(character.locked_reference_id)]
            mode = modes.job_mode_for(has_references=bool(references), copy=data["mode"] == MODE_COPY)
            try:
                job = job_create(
                    user=request.user,
                    model=model,
                    prompt=data["prompt"],
                    images=data["images"],
                    mode=mode,
                    references=references,
                    character=character,
                    reference_strength=data["strength"] if references else None,
                    enhance=data["enhance"],
                    idempotency_key=key,
                    batch=data["batch"],
                    scene=data["scene"],
                    outfit=data["outfit"],
                    style=data["style"],
                    quality=data["quality"] or QUALITY_FAST,
                    lora=lora,
                    lora_scale=data["lora_scale"] if data["lora_scale"] is not None else 1.0,
                )
            except JobRequestError as exc:
                errors.append(exc.message)
            else:
                # A repeated idempotency key returns the first job, created before this request.
                repeated = job.created_at < started

    if errors:
        if request.htmx:
            _save_state(request, state)
            response = render(request, "studio/_prompt_bar.html#prompt-errors", {"errors": errors})
            return reswap(retarget(response, "#prompt-errors"), "outerHTML")
        return _render_page(request, state, status=400, errors=errors)

    state.after_run()
    _save_state(request, state)
    if not request.htmx:
        return redirect(_home_url(request, "gallery"))
    oob = {
        "credits": credit_account(request.user).balance,
        "idempotency_key": uuid.uuid4(),
        "oob": True,
    }
    fragments = []
    if not repeated:
        # The new card goes on top of the gallery (the form's hx-target/hx-swap).
        fragments.append(("studio/_gallery.html#job-card", _card_context(request, _get_job_for_user(request, job.pk))))
    fragments.append(("studio/_prompt_bar.html#after-generate", oob))
    response = _render_fragments(request, fragments)
    if repeated:
        # A double submit found the first job, whose card is already on the page.
        response = reswap(response, "none")
    return response


@require_GET
def prompt_options(request: HtmxHttpRequest) -> HttpResponse:
    """The model select changed: chips, prices and notes for that model, without a page reload."""
    state = _load_state(request)
    state.update_from_form(request.GET)
    return _controls_response(request, state)


# --- job cards ------------------------------------------------------------------------------


@require_GET
def job_card_view(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """A job card; polled while the job runs. A finished job answers 286 to stop polling.

    A poll that names the version it shows (?v=) gets 204, nothing to swap, while that is still
    the card's version: one small query instead of the card's three and its render.
    """
    shown = request.GET.get("v")
    if shown and request.htmx and card_version_now(request.user, job_id) == shown:
        return HttpResponse(status=204)
    job = _get_job_for_user(request, job_id)
    context = _card_context(request, job)
    fragments = [("studio/_gallery.html#job-card", context)]
    if request.htmx and not context["card"].is_active:
        # The job just ended: a refund (every image failed) changes the balance in the top bar.
        fragments.append(("studio/_prompt_bar.html#credits-oob", {"credits": credit_account(request.user).balance}))
        return _render_fragments(
            request, fragments, status=HTMX_STOP_POLLING
        )  # htmx 2 stops polling; the body is still swapped in
    return _render_fragments(request, fragments)


def _card_or_redirect(request: HtmxHttpRequest, job_id: uuid.UUID, **extra: Any) -> HttpResponse:
    if not request.htmx:
        if extra.get("card_error"):
            messages.error(request, extra["card_error"])
        return redirect(_home_url(request, f"job-{job_id}"))
    job = _get_job_for_user(request, job_id)
    fragments = [
        ("studio/_gallery.html#job-card", _card_context(request, job, **extra)),
        ("studio/_prompt_bar.html#credits-oob", {"credits": credit_account(request.user).balance}),
    ]
    return _render_fragments(request, fragments)


@require_POST
def job_retry(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _get_job_for_user(request, job_id)
    try:
        job_retry_failed(job=job)
    except JobRequestError as exc:
        return _card_or_redirect(request, job.pk, card_error=exc.message)
    return _card_or_redirect(request, job.pk)


@require_POST
def job_cancel_view(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _get_job_for_user(request, job_id)
    job_cancel(job=job)
    return _card_or_redirect(request, job.pk)


@require_GET
def job_download(request: HtmxHttpRequest, job_id: uuid.UUID) -> StreamingHttpResponse:
    """All images of a job as one ZIP, streamed while it is written."""
    job = _get_job_for_user(request, job_id)
    assets = job_images_for_download(job)
    if not assets:
        raise Http404("This job has no images to download.")
    response = StreamingHttpResponse(job_zip_stream(assets), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{job_file_stem(job)}.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


# --- images ---------------------------------------------------------------------------------


@require_GET
def asset_file(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    # Downloaded alone it has the name it has in its job's ZIP.
    name = asset_file_name(asset) if request.GET.get("download") else None
    return file_response(asset.file, content_type=asset.content_type, download_name=name)


@require_GET
def asset_thumbnail(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    return file_response(
        asset.thumbnail or asset.file, content_type="image/jpeg" if asset.thumbnail else asset.content_type
    )


@require_POST
def asset_delete_view(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    job_id = asset.job_id
    was_portrait = is_portrait(request.user, asset)
    was_reference = str(asset.pk) in _load_state(request).refs
    asset_delete(asset=asset)
    if not request.htmx:
        messages.success(request, "Image deleted.")
        return redirect(_home_url(request, f"job-{job_id}" if job_id else "gallery"))
    fragments: Fragments = []
    if job_id:
        fragments.append(("studio/_gallery.html#job-card", _card_context(request, _get_job_for_user(request, job_id))))
    if was_reference:
        state = _load_state(request)
        context = {**_prompt_context(request, state), "oob": True}
        _save_state(request, state)
        fragments.append(("studio/_prompt_bar.html#prompt-controls", context))
    if was_portrait:
        fragments.append(("studio/_sidebar.html#sidebar", {**_sidebar_context(request), "oob": True}))
    if not fragments:
        return reswap(HttpResponse(""), "none")
    if not job_id:
        # Only out-of-band fragments (the reference slots, the sidebar): htmx still swaps those.
        return reswap(_render_fragments(request, fragments), "none")
    return _swap_into(f"#job-{job_id}", _render_fragments(request, fragments))


@require_POST
def asset_lock(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    """Lock an image as the selected character's portrait."""
    asset = _get_asset_for_user(request, asset_id)
    character_id = request.POST.get("character") or _selected_character_id(request)
    if not character_id:
        message = "Select or create a character first, then lock a portrait for it."
        if request.htmx:
            context = {**_sidebar_context(request), "notice": message}
            return _swap_into("#sidebar", render(request, "studio/_sidebar.html#sidebar", context))
        messages.error(request, message)
        return redirect(_home_url(request))
    character = _get_character_for_user(request, character_id)
    character_lock_portrait(character=character, asset=asset)
    if request.htmx:
        notice = f"Locked as {character.name}'s portrait."
        context = {**_sidebar_context(request), "notice": notice}
        return _swap_into("#sidebar", render(request, "studio/_sidebar.html#sidebar", context))
    messages.success(request, f"Locked as {character.name}'s portrait.")
    return redirect(_home_url(request))


# --- reference slots ------------------------------------------------------------------------


def _slot(value: str | None) -> int | None:
    return {"1": 1, "2": 2}.get(value or "")


@require_POST
def reference_use(request: HtmxHttpRequest, asset_id: uuid.UUID) -> HttpResponse:
    """Use a gallery image as reference 1 or 2 (or the next free slot)."""
    return _use_reference(request, asset_id, _slot(request.POST.get("slot")))


def _use_reference(request: HtmxHttpRequest, asset_id: uuid.UUID, slot: int | None) -> HttpResponse:
    asset = _get_asset_for_user(request, asset_id)
    state = _load_state(request)
    state.update_from_form(request.POST)
    state.add_reference(asset.pk, slot)
    return _controls_response(request, state)


@require_POST
def asset_action(request: HtmxHttpRequest) -> HttpResponse:
    """A gallery image's button: each card's images post one form here, and the pressed button's
    name says what to do and its value with which image (use1, use2, lock or delete = the asset's
    id; use, the next free reference slot, is what a drop on the slots sends). One short button
    per action keeps a page of 200 images light; each answer says where it goes (HX-Retarget)."""
    for action in ("use", "use1", "use2", "lock", "delete"):
        if action in request.POST:
            try:
                asset_id = uuid.UUID(request.POST[action])
            except ValueError as exc:
                raise Http404("No such image.") from exc
            if action == "lock":
                return asset_lock(request, asset_id)
            if action == "delete":
                return asset_delete_view(request, asset_id)
            # "use" (an image dropped on the reference slots): the next free slot.
            return _use_reference(request, asset_id, _slot(action[3:]))
    return HttpResponse("Press one of an image's buttons.", status=400)


@require_POST
def reference_upload(request: HtmxHttpRequest) -> HttpResponse:
    """Upload an image (picker or drag-and-drop) into the next reference slot."""
    state = _load_state(request)
    state.update_from_form(request.POST)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _controls_response(request, state, upload_errors=_form_errors(form))
    upload = form.cleaned_data["image"]
    try:
        asset = upload_create(owner=request.user, data=upload.read())
    except (InvalidImage, ValidationError) as exc:
        message = str(exc) if isinstance(exc, InvalidImage) else "; ".join(exc.messages)
        return _controls_response(request, state, upload_errors=[message])
    state.add_reference(asset.pk)
    return _controls_response(request, state)


@require_POST
def reference_swap(request: HtmxHttpRequest) -> HttpResponse:
    state = _load_state(request)
    state.update_from_form(request.POST)
    state.swap_references()
    return _controls_response(request, state)


@require_POST
def reference_clear(request: HtmxHttpRequest) -> HttpResponse:
    state = _load_state(request)
    state.update_from_form(request.POST)
    state.clear_reference(_slot(request.POST.get("slot")))
    return _controls_response(request, state)


@require_POST
def reference_mode(request: HtmxHttpRequest) -> HttpResponse:
    """MODIFY <-> COPY: the switch also sets the strength and prompt enhancement (see StudioState)."""
    state = _load_state(request)
    # The posted form already shows the new mode; take everything else from it, then switch so
    # the transition's strength and enhancement apply.
    rest = request.POST.copy()
    for name in ("mode", "strength", "enhance", "enhance_present"):
        rest.pop(name, None)
    state.update_from_form(rest)
    state.set_mode(request.POST.get("mode", ""))
    return _controls_response(request, state)


# --- characters -----------------------------------------------------------------------------


def _sidebar_context(request: HtmxHttpRequest, **extra: Any) -> dict[str, Any]:
    characters = list(characters_for_user(request.user))
    selected_id = _selected_character_id(request)
    selected = next((c for c in characters if str(c.pk) == selected_id), None)
    return {"characters": characters, "selected_character": selected, "character_form": CharacterForm(), **extra}


@require_POST
def character_create_view(request: HtmxHttpRequest) -> HttpResponse:
    form = CharacterForm(request.POST)
    if form.is_valid():
        try:
            character = character_create(owner=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error("name", exc.messages[0] if exc.messages else "That name cannot be used.")
        else:
            _select_character(request, character)
            messages.success(request, f"Created {character.name}.")
            return redirect(_home_url(request))
    return _render_page(request, _load_state(request), status=400, character_form=form)


@require_POST
def character_rename_view(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = _get_character_for_user(request, character_id)
    form = CharacterForm(request.POST)
    rename_errors: list[str] = []
    if form.is_valid():
        try:
            character_rename(character=character, name=form.cleaned_data["name"])
        except ValidationError as exc:
            rename_errors = exc.messages
    else:
        rename_errors = _form_errors(form)
    if request.htmx:
        context = _sidebar_context(request, rename_errors=rename_errors, renamed_id=character.pk)
        return render(request, "studio/_sidebar.html#sidebar", context)
    if rename_errors:
        messages.error(request, " ".join(rename_errors))
    return redirect(_home_url(request))


@require_POST
def character_delete_view(request: HtmxHttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = _get_character_for_user(request, character_id)
    name = character.name
    try:
        character_delete(character=character)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(_home_url(request))
    if _selected_character_id(request) == str(character_id):
        _select_character(request, None)
    messages.success(request, f"Deleted {name}. Its images stay in the gallery.")
    return redirect(_home_url(request))
