"""LoRA trainings: price, start (credits charged), submit the dataset, poll, copy the LoRA into our
storage, fail with a refund, cancel, and the sweeper's share.

Like runs.py for images: state lives in the LoraTraining row, every step is claimed with a
conditional UPDATE and keyed on its id (tasks take ids; generation/enqueue.py schedules), and a
submit whose answer was lost is never sent again: the trainer may have accepted and billed it.
Trainings run minutes, so polls follow the trainer's own pace (15 s on fal), every countdown
capped below the broker's visibility timeout (settings.PIPELINE_MAX_COUNTDOWN), with due_at in
the row for the sweeper.
"""

from __future__ import annotations

import logging
import math
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from generation import enqueue
from generation.lib import http as http_lib
from generation.lib.dataset import DatasetError, check_trigger_word, dataset_zip_bytes
from generation.lib.imaging import InvalidImage
from generation.models import (
    ACTIVE_TRAINING_STATUSES,
    CreditAccount,
    CreditLedger,
    LedgerKind,
    LoraTraining,
    TrainingStatus,
)
from generation.providers import get_trainer
from generation.providers.base import ProviderError, ProviderResult, ResultStatus, TrainingRequest
from generation.providers.fal_training import FalStorage
from generation.providers.training import TrainerSpec
from generation.services.credits import credit_account
from generation.services.runs import Next
from generation.services.webhooks import training_webhook_url_for
from models_registry.models import ApiModel, Task
from studio.dataset import dataset_images, trigger_word_of
from studio.models import Character

logger = logging.getLogger(__name__)

DONE = Next()
# A trainer whose answer carries no pace is looked at this often (§7.3: every 10-15 s).
TRAINING_POLL_SECONDS = 15.0
# A training not finished after this fails (with its refund): §7.3 advises a deadline of at least 60 min.
TRAINING_DEADLINE_SECONDS = 3 * 3600
# A submit is retried this many times when the trainer surely did not receive it (a refusal to connect, a 5xx).
MAX_SUBMIT_ATTEMPTS = 3
# A trained LoRA file can be large (fal FLUX.1 rank 16: ~90 MB).
LORA_MAX_BYTES = 1024 * 1024 * 1024
LOST_SUBMIT_ERROR = (
    "The connection to the trainer broke while the training was sent; it was not sent again, to avoid "
    "paying twice. Your credits were refunded."
)
NO_DATASET_URL_ERROR = (
    "The dataset cannot reach {trainer}: it needs a URL the trainer can fetch. Set FAL_KEY (fal storage) "
    "or keep media on S3 (AWS_STORAGE_BUCKET_NAME) so it gets a presigned link."
)


class TrainingError(Exception):
    """A training the studio will not start; the message is for the user as is."""


@dataclass(frozen=True)
class TrainingQuote:
    model: ApiModel
    steps: int | None
    cost: Decimal
    credits: int
    min_images: int


def trainers() -> list[ApiModel]:
    """The active trainer rows whose provider is set up, best first (priority)."""
    # Filtered in Python: JSON containment is not a lookup SQLite (make run) has.
    rows = [m for m in ApiModel.objects.active().order_by("-priority", "key") if m.is_trainer]
    usable = []
    for model in rows:
        try:
            if get_trainer(model).is_configured():
                usable.append(model)
        except LookupError:
            continue
    return usable


def training_credits(cost: Decimal) -> int:
    """Credits for a training of `cost` USD: one per started dollar, at least one (a studio job's price)."""
    return max(1, math.ceil(cost))


def training_quote(model: ApiModel, steps: int | None = None) -> TrainingQuote:
    """What a training on `model` costs; TrainingError for steps out of the trainer's range."""
    spec = TrainerSpec.of(model)
    try:
        chosen = spec.steps_for(steps)
    except ProviderError as exc:
        raise TrainingError(exc.message) from exc
    cost = spec.price(chosen)
    return TrainingQuote(
        model=model, steps=chosen, cost=cost, credits=training_credits(cost), min_images=spec.min_images
    )


def training_create(*, user, character: Character, model: ApiModel, steps: int | None = None) -> LoraTraining:
    """Start a training of the character's included dataset images on `model`, charging its credits.

    Raises TrainingError (nothing saved, nothing charged) for another user's character, a model that
    is no trainer or is not set up, a bad trigger word, no included image, a training already
    running for the character, or too few credits.
    """
    if character.owner_id != user.pk:
        raise TrainingError("That character does not exist.")
    if not model.is_active or not model.supports(Task.LORA_TRAINING):
        raise TrainingError(f"{model.display_name} does not train LoRAs.")
    trainer = get_trainer(model)
    if not trainer.is_configured():
        raise TrainingError(
            f"{model.display_name} is not set up on this server. {trainer.configuration_hint()}".strip()
        )
    trigger_word = trigger_word_of(character)
    try:
        check_trigger_word(trigger_word)
    except DatasetError as exc:
        raise TrainingError(str(exc)) from exc
    images = character.dataset_items.filter(included=True).count()
    if not images:
        raise TrainingError("Include at least one image in the dataset first.")
    quote = training_quote(model, steps)
    account = credit_account(user)
    with transaction.atomic():
        if LoraTraining.objects.filter(character=character, status__in=ACTIVE_TRAINING_STATUSES).exists():
            raise TrainingError(f"{character.name} is already training: wait for it or cancel it.")
        training = LoraTraining.objects.create(
            owner=user,
            character=character,
            model=model,
            provider=model.provider,
            trigger_word=trigger_word,
            steps=quote.steps,
            images=images,
            cost=quote.cost,
            credits_charged=quote.credits,
            due_at=timezone.now(),
        )
        debited = CreditAccount.objects.filter(pk=account.pk, balance__gte=quote.credits).update(
            balance=F("balance") - quote.credits
        )
        if not debited:
            transaction.set_rollback(True)
            raise TrainingError(f"This training takes {quote.credits} credits; you have {account.balance}.")
        CreditLedger.objects.create(
            account=account, training=training, kind=LedgerKind.CHARGE, amount=-quote.credits, note="LoRA training"
        )
        enqueue.training_submit(training.pk)
    return training


def _refund(training: LoraTraining, note: str) -> bool:
    """Give back a training's credits once; later calls do nothing."""
    charge = CreditLedger.objects.filter(training=training, kind=LedgerKind.CHARGE).first()
    if charge is None:
        return False
    try:
        with transaction.atomic():
            CreditLedger.objects.create(
                account_id=charge.account_id,
                training=training,
                kind=LedgerKind.REFUND,
                amount=-charge.amount,
                note=note,
            )
            CreditAccount.objects.filter(pk=charge.account_id).update(balance=F("balance") - charge.amount)
    except IntegrityError:
        return False
    return True


def _fail(training_id: uuid.UUID, error: str) -> bool:
    """An active training fails (once) and its credits come back."""
    now = timezone.now()
    failed = LoraTraining.objects.filter(pk=training_id, status__in=ACTIVE_TRAINING_STATUSES).update(
        status=TrainingStatus.FAILED, error=error[:300], finished_at=now, updated_at=now, due_at=None
    )
    if failed:
        _refund(LoraTraining.objects.get(pk=training_id), "training failed")
    return bool(failed)


def _schedule(training_id: uuid.UUID, action: str, seconds: float) -> Next:
    wait = max(0.0, float(seconds))
    LoraTraining.objects.filter(pk=training_id).update(due_at=timezone.now() + timedelta(seconds=wait))
    return Next(action, round(min(wait, settings.PIPELINE_MAX_COUNTDOWN), 3))


def _request(training: LoraTraining) -> TrainingRequest:
    return TrainingRequest(
        dataset_url=training.dataset_url,
        trigger_word=training.trigger_word,
        steps=training.steps,
        request_id=str(training.pk),
        webhook_url=training_webhook_url_for(training),
    )


# --- the dataset's URL ------------------------------------------------------------------------


def _dataset_name(training: LoraTraining) -> str:
    return f"datasets/{training.owner_id}/{training.pk}/dataset.zip"


def training_files(training: LoraTraining) -> list[str]:
    """What a training keeps in our storage: its LoRA file, and the dataset ZIP a trainer fetched
    from it (dataset_url_for; absent where fal storage took it)."""
    return [name for name in (training.lora_file.name, _dataset_name(training)) if name]


def dataset_url_for(training: LoraTraining, data: bytes) -> str:
    """A URL the trainer can GET without headers (docs/providers.md §7.2): fal storage's two-step
    upload for fal, else a presigned S3 link valid 24 h; the offline trainer reads nothing, so our
    own storage's name does. TrainingError with the way out when there is none."""
    name = _dataset_name(training)
    if training.provider == "fal":
        storage_client = FalStorage()
        if storage_client.is_configured():
            return storage_client.upload(data, file_name=f"{training.pk}.zip", size=len(data))
    stored = training.lora_file.storage  # the default storage, where media live
    saved = stored.save(name, ContentFile(data))
    if getattr(stored, "querystring_auth", False):
        return stored.url(saved, expire=24 * 3600)
    if training.provider == "offline":
        return saved
    stored.delete(saved)
    raise TrainingError(NO_DATASET_URL_ERROR.format(trainer=training.model.display_name))


# --- submit and poll ----------------------------------------------------------------------------


def training_submit(training_id: uuid.UUID | str) -> Next:
    """Build the ZIP, give it a URL and send the training, once. A lost answer is never sent again."""
    training = LoraTraining.objects.select_related("model", "character").filter(pk=training_id).first()
    if training is None or training.status != TrainingStatus.QUEUED:
        return DONE
    due = training.due_at
    if due is not None and due > timezone.now() + timedelta(seconds=1):
        return Next("submit", round(min((due - timezone.now()).total_seconds(), settings.PIPELINE_MAX_COUNTDOWN), 3))
    try:
        images = dataset_images(training.character)
        spec = TrainerSpec.of(training.model)
        data = dataset_zip_bytes(
            images, trigger_word=training.trigger_word, caption_trigger=spec.caption_trigger, trainer=training.model.key
        )
        if not training.dataset_url:
            url = dataset_url_for(training, data)
            LoraTraining.objects.filter(pk=training.pk).update(dataset_url=url)
            training.dataset_url = url
    except (DatasetError, InvalidImage, TrainingError) as exc:
        _fail(training.pk, str(exc))
        return DONE
    except ProviderError as exc:  # the upload: nothing billed, so a retry is safe
        return _submit_error(training, exc, sent=False)
    now = timezone.now()
    claimed = LoraTraining.objects.filter(pk=training.pk, status=TrainingStatus.QUEUED).update(
        status=TrainingStatus.SUBMITTING, sent_at=now, attempts=F("attempts") + 1, due_at=None, updated_at=now
    )
    if not claimed:
        return DONE
    try:
        result = get_trainer(training.model).submit(_request(training))
    except ProviderError as exc:
        return _submit_error(training, exc, sent=True)
    if result.external_id:
        LoraTraining.objects.filter(pk=training.pk).update(
            external_id=result.external_id, handles=result.handles, started_at=timezone.now()
        )
    return _progress(training.pk, result)


def _submit_error(training: LoraTraining, exc: ProviderError, *, sent: bool) -> Next:
    if sent and exc.may_have_been_received:
        # The trainer may run (and bill) it: leave it SUBMITTING with no id. Its webhook adopts it
        # (webhooks.training_webhook_receive); else the sweeper fails it with a refund after
        # LOST_SUBMIT_WEBHOOK_WAIT_SECONDS rather than send it twice.
        logger.warning("training %s: submit answer lost: %s", training.pk, exc)
        return DONE
    training.refresh_from_db()
    if exc.permanent or training.attempts >= MAX_SUBMIT_ATTEMPTS:
        _fail(training.pk, exc.message)
        return DONE
    reopened = LoraTraining.objects.filter(
        pk=training.pk, status__in=[TrainingStatus.SUBMITTING, TrainingStatus.QUEUED]
    ).update(status=TrainingStatus.QUEUED, error=exc.message[:300])
    return _schedule(training.pk, "submit", exc.retry_after or 5.0 * max(1, training.attempts)) if reopened else DONE


def training_poll(training_id: uuid.UUID | str, *, now_anyway: bool = False) -> Next:
    """Ask the trainer how the training is doing and act on it. `now_anyway` (a webhook said it
    ended) looks even before the next poll is due."""
    training = LoraTraining.objects.select_related("model").filter(pk=training_id).first()
    if training is None or training.status not in ACTIVE_TRAINING_STATUSES or not training.external_id:
        return DONE
    due = training.due_at
    if not now_anyway and due is not None and due > timezone.now() + timedelta(seconds=1):
        left = (due - timezone.now()).total_seconds()
        return Next("poll", round(min(left, settings.PIPELINE_MAX_COUNTDOWN), 3))
    LoraTraining.objects.filter(pk=training.pk).update(polls=F("polls") + 1)
    try:
        result = get_trainer(training.model).poll(_request(training), training.external_id, training.handles)
    except ProviderError as exc:
        if exc.permanent:
            _fail(training.pk, exc.message)
            return DONE
        return _schedule(training.pk, "poll", exc.retry_after or TRAINING_POLL_SECONDS)
    return _progress(training.pk, result)


def _progress(training_id: uuid.UUID, result: ProviderResult) -> Next:
    now = timezone.now()
    if result.status == ResultStatus.PENDING:
        fields = {"status": TrainingStatus.RUNNING, "updated_at": now}
        if result.progress is not None:
            fields["progress"] = max(0.0, min(1.0, result.progress))
        if result.handles:
            fields["handles"] = result.handles
        moved = LoraTraining.objects.filter(
            pk=training_id, status__in=[TrainingStatus.SUBMITTING, TrainingStatus.RUNNING]
        ).update(**fields)
        if not moved:
            return DONE
        wait = result.poll_after if result.poll_after is not None else TRAINING_POLL_SECONDS
        return _schedule(training_id, "poll", wait)
    if result.status == ResultStatus.SUCCEEDED and result.lora is not None:
        _store_lora(training_id, result)
        return DONE
    if result.status == ResultStatus.CANCELED:
        _fail(training_id, "The trainer canceled the training.")
        return DONE
    _fail(training_id, result.error or "The trainer failed without saying why.")
    return DONE


def _store_lora(training_id: uuid.UUID, result: ProviderResult) -> None:
    """Copy the LoRA file into our storage at once (the trainer's CDN deletes it), then mark it ready."""
    training = LoraTraining.objects.select_related("model").get(pk=training_id)
    if training.status not in ACTIVE_TRAINING_STATUSES:
        return
    lora = result.lora
    name = lora.file_name or "pytorch_lora_weights.safetensors"
    if not name.endswith(".safetensors"):
        name = "pytorch_lora_weights.safetensors"
    try:
        if lora.data is not None:
            training.lora_file.save(name, ContentFile(lora.data), save=False)
        else:
            trusted = get_trainer(training.model).fetch_trusted_hosts()
            with tempfile.TemporaryFile() as fh:
                http_lib.fetch(lora.url, max_bytes=LORA_MAX_BYTES, trusted=trusted, into=fh, total_timeout=600.0)
                fh.seek(0)
                if lora.archive_member:
                    training.lora_file.save(name, ContentFile(lora_from_archive(fh, lora.archive_member)), save=False)
                else:
                    training.lora_file.save(name, File(fh), save=False)
    except (http_lib.DownloadError, http_lib.UnsafeURLError, TrainingError) as exc:
        _fail(training_id, f"The LoRA file could not be copied from the trainer: {exc}")
        return
    now = timezone.now()
    config = {
        "lora_url": lora.url,
        "config_url": lora.config_url,
        "file_name": lora.file_name,
        "file_size": lora.file_size,
        "provider_version": lora.provider_version,
    }
    stored = LoraTraining.objects.filter(pk=training_id, status__in=ACTIVE_TRAINING_STATUSES).update(
        status=TrainingStatus.SUCCEEDED,
        lora_file=training.lora_file.name,
        config=config,
        progress=1.0,
        finished_at=now,
        updated_at=now,
        due_at=None,
        error="",
    )
    if not stored:  # canceled meanwhile: the copy is nobody's
        training.lora_file.delete(save=False)


def lora_from_archive(fh, member: str) -> bytes:
    """The weights inside a trainer's archive (Replicate's trained_model.tar holds
    output/flux_train_replicate/lora.safetensors, docs/providers.md §7.5.4); TrainingError if absent."""
    try:
        with tarfile.open(fileobj=fh) as tar:
            entry = tar.getmember(member)
            extracted = tar.extractfile(entry) if entry.isfile() else None
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except (tarfile.TarError, KeyError) as exc:
        raise TrainingError(f"the trainer's archive holds no {member}.") from exc


# --- cancel, sweep, use ---------------------------------------------------------------------------


def training_cancel(*, training: LoraTraining) -> bool:
    """Stop an active training: canceled now, credits refunded, the trainer told after the commit."""
    now = timezone.now()
    with transaction.atomic():
        canceled = LoraTraining.objects.filter(pk=training.pk, status__in=ACTIVE_TRAINING_STATUSES).update(
            status=TrainingStatus.CANCELED,
            cancel_requested=True,
            finished_at=now,
            updated_at=now,
            due_at=None,
            error="Canceled.",
        )
        if canceled:
            _refund(training, "training canceled")
            enqueue.training_cancel(training.pk)
    return bool(canceled)


def training_provider_cancel(training_id: uuid.UUID | str) -> None:
    training = LoraTraining.objects.select_related("model").filter(pk=training_id).first()
    if training is None or not training.external_id:
        return
    try:
        get_trainer(training.model).cancel(training.external_id, training.handles)
    except ProviderError as exc:
        logger.info("training %s: the trainer's cancel failed: %s", training.pk, exc)


@dataclass
class TrainingSweep:
    submit: list[str]
    poll: list[str]
    failed: list[str]


def trainings_sweep(now=None) -> TrainingSweep:
    """Re-drive overdue steps (a lost message, a dead worker); fail, with a refund, a submit whose
    answer was lost (never sent again) and a training past TRAINING_DEADLINE_SECONDS."""
    now = now or timezone.now()
    overdue = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    plan = TrainingSweep(submit=[], poll=[], failed=[])
    active = LoraTraining.objects.filter(status__in=ACTIVE_TRAINING_STATUSES)
    for training in active.filter(created_at__lt=now - timedelta(seconds=TRAINING_DEADLINE_SECONDS)):
        if _fail(training.pk, f"The trainer did not finish within {TRAINING_DEADLINE_SECONDS // 3600} hours."):
            plan.failed.append(str(training.pk))
    lost = active.filter(
        status=TrainingStatus.SUBMITTING,
        external_id="",
        # As long as a lost image submit waits for its webhook (which names the trainer's id) to come.
        sent_at__lt=now - timedelta(seconds=settings.LOST_SUBMIT_WEBHOOK_WAIT_SECONDS),
    )
    for training in lost:
        if _fail(training.pk, LOST_SUBMIT_ERROR):
            plan.failed.append(str(training.pk))
    for training in active.filter(due_at__lt=overdue):
        if training.status == TrainingStatus.QUEUED:
            plan.submit.append(str(training.pk))
        elif training.external_id:
            plan.poll.append(str(training.pk))
    LoraTraining.objects.filter(pk__in=plan.submit + plan.poll).update(due_at=now)
    return plan
