from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models


class JobKind(models.TextChoices):
    STUDIO = "studio", "Studio"
    BASE_IMAGE = "base_image", "Base image"
    CHARACTER_SHEET = "character_sheet", "Character sheet"
    PROFILE_SET = "profile_set", "Profile set"


class JobMode(models.TextChoices):
    T2I = "t2i", "Text to image"
    I2I_MODIFY = "i2i_modify", "Image to image (modify)"
    I2I_COPY = "i2i_copy", "Image to image (copy)"
    I2V = "i2v", "Image to video"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partially succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL_JOB_STATUSES = (JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELED)


class GenerationJob(models.Model):
    """One press of Generate: n images of one prompt on one model, charged one credit."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_jobs")
    character = models.ForeignKey(
        "studio.Character", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    model = models.ForeignKey("models_registry.ApiModel", on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=20, choices=JobKind.choices, default=JobKind.STUDIO)
    mode = models.CharField(max_length=20, choices=JobMode.choices, default=JobMode.T2I)
    prompt = models.TextField(blank=True)
    final_prompt = models.TextField(blank=True)
    negative_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    # Reference images as a list of {"asset": "<uuid>"} in slot order (ref1, ref2).
    references = models.JSONField(default=list, blank=True)
    images_requested = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    succeeded_count = models.PositiveSmallIntegerField(default=0)
    failed_count = models.PositiveSmallIntegerField(default=0)
    # [{"index": int, "error": str, "details": str}], as in the product's batch response.
    errors = models.JSONField(default=list, blank=True)
    provider = models.CharField(max_length=20, blank=True, help_text="The provider that served the job.")
    fallback_attempted = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    credits_charged = models.PositiveSmallIntegerField(default=0)
    idempotency_key = models.UUIDField(null=True, blank=True)
    # Batch Mode (generation.services.batches): the provider batch that runs this job's images at
    # the batch price; once that batch has ended the job is an ordinary one (Retry failed runs
    # its failed images through the normal lane).
    batch = models.ForeignKey("generation.Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    dispatch_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The gallery: one user's jobs, newest first.
            models.Index(fields=["owner", "-created_at"], name="job_owner_newest"),
            # The stale-job sweeper: active jobs by age.
            models.Index(fields=["status", "updated_at"], name="job_status_updated"),
        ]
        constraints = [
            # A double-clicked Generate posts the same key twice; the second post finds the first job.
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                name="job_unique_owner_idempotency_key",
                condition=models.Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES

    @property
    def done_count(self) -> int:
        return self.succeeded_count + self.failed_count


class SlotStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


FINAL_SLOT_STATUSES = (SlotStatus.SUCCEEDED, SlotStatus.FAILED, SlotStatus.CANCELED)


class ImageSlot(models.Model):
    """One requested image of a job (batch_index 0..n-1): the unit of progress, failure and retry."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=SlotStatus.choices, default=SlotStatus.PENDING)
    request = models.ForeignKey(
        "generation.ProviderRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="slots"
    )
    error = models.CharField(max_length=300, blank=True)
    details = models.TextField(blank=True)
    # The failure would repeat on a retry (a safety block, input the model refuses): the card
    # does not offer "Retry failed" for it.
    failed_permanently = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The key of this image's request inside its job's provider batch: a result line names it, so
    # it lands in exactly this slot.
    batch_key = models.CharField(max_length=80, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="slot_unique_job_index")]

    def __str__(self) -> str:
        return f"slot {self.index} of {self.job_id} ({self.status})"


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUBMITTED = "submitted", "Submitted"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class ProviderRequest(models.Model):
    """One call to a provider, covering one or more slots (a native multi-image chunk)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="requests")
    model = models.ForeignKey("models_registry.ApiModel", on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=20)
    slot_indexes = models.JSONField(default=list)
    status = models.CharField(max_length=20, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    # Saved before waiting on the provider so a re-run resumes polling instead of paying twice.
    external_id = models.CharField(max_length=200, blank=True)
    # Provider-given URLs (fal status/response/cancel, Replicate get/cancel); never rebuilt by us.
    handles = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    # When the submit was last sent: a submit with no external_id and no live worker behind it
    # (limits.submit_in_flight) lost its answer, and the sweeper recovers it by this age.
    sent_at = models.DateTimeField(null=True, blank=True)
    # When the next step (submit or poll) is due. The sweeper re-drives a step this far overdue:
    # its message was lost or its worker died. Also holds a provider's long Retry-After, which
    # no countdown may (it must stay below the broker's visibility timeout).
    due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="request_status_due"),
            models.Index(fields=["provider", "external_id"], name="request_provider_external"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} request {self.external_id or self.id} ({self.status})"


class CreditAccount(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_account")
    balance = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(balance__gte=0), name="credit_balance_not_negative")]

    def __str__(self) -> str:
        return f"{self.user} has {self.balance} credits"


class LedgerKind(models.TextChoices):
    GRANT = "grant", "Grant"
    CHARGE = "charge", "Charge"
    REFUND = "refund", "Refund"


class CreditLedger(models.Model):
    """Every change of a balance; (job, kind) is unique, so a job is charged and refunded at most once."""

    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    job = models.ForeignKey(GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger")
    training = models.ForeignKey(
        "generation.LoraTraining", null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger"
    )
    kind = models.CharField(max_length=10, choices=LedgerKind.choices)
    amount = models.IntegerField(help_text="Signed: negative for a charge.")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "kind"], name="ledger_unique_job_kind", condition=models.Q(job__isnull=False)
            ),
            # A training is charged and refunded at most once, like a job.
            models.UniqueConstraint(
                fields=["training", "kind"],
                name="ledger_unique_training_kind",
                condition=models.Q(training__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d}"


class BatchState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTING = "submitting", "Sending"
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partly succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


# Sent and not yet ended: the poller (and nothing else) moves these on.
SENT_BATCH_STATES = (BatchState.SUBMITTING, BatchState.PENDING, BatchState.RUNNING)
OPEN_BATCH_STATES = (BatchState.DRAFT, *SENT_BATCH_STATES)
FINAL_BATCH_STATES = (
    BatchState.SUCCEEDED,
    BatchState.PARTIAL,
    BatchState.FAILED,
    BatchState.CANCELLED,
    BatchState.EXPIRED,
)


class BatchInput(models.TextChoices):
    INLINE = "inline", "Inline"
    FILE = "file", "JSONL file"


class Batch(models.Model):
    """One provider batch (Gemini's batches/{id}) of one user's jobs on one model, or the draft
    that collects them before it is sent. State lives here; the poller reads it from the database."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    model = models.ForeignKey("models_registry.ApiModel", on_delete=models.PROTECT, related_name="batches")
    state = models.CharField(max_length=20, choices=BatchState.choices, default=BatchState.DRAFT)
    # What the provider's list shows: how a create whose answer was lost is found again.
    display_name = models.CharField(max_length=100, blank=True)
    # The provider's resource name (batches/...), known once the create answered or was found.
    name = models.CharField(max_length=200, blank=True)
    provider_state = models.CharField(max_length=40, blank=True)
    input_mode = models.CharField(max_length=10, choices=BatchInput.choices, blank=True)
    input_file = models.CharField(max_length=200, blank=True)
    output_file = models.CharField(max_length=200, blank=True)
    request_count = models.PositiveIntegerField(default=0)
    succeeded_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    # Set before the create is sent (the intent): a batch SUBMITTING with this set and no name
    # may exist at the provider, and is looked up by display_name before anything is sent again.
    create_sent_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    polls = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The toast on the next page (notified_at) and the badge on the queue link (seen_at) end here.
    notified_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The poller: sent batches by when they are next due.
            models.Index(fields=["state", "next_poll_at"], name="batch_state_next_poll"),
        ]
        constraints = [
            # Jobs added to a model's batch all go to one draft.
            models.UniqueConstraint(
                fields=["owner", "model"], name="batch_one_draft_per_owner_model", condition=models.Q(state="draft")
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.name or self.id} ({self.state})"

    def save(self, *args, **kwargs) -> None:
        if not self.display_name:
            self.display_name = f"character-studio-{self.id}"
        super().save(*args, **kwargs)

    @property
    def is_draft(self) -> bool:
        return self.state == BatchState.DRAFT

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_BATCH_STATES


class TrainingStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    # The submit is being sent (sent_at set): without an external_id afterwards its answer was lost,
    # and it is never sent again (generation.services.trainings.trainings_sweep).
    SUBMITTING = "submitting", "Sending"
    RUNNING = "running", "Training"
    SUCCEEDED = "succeeded", "Ready"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_TRAINING_STATUSES = (TrainingStatus.QUEUED, TrainingStatus.SUBMITTING, TrainingStatus.RUNNING)


def lora_upload_to(training: LoraTraining, filename: str) -> str:
    return f"loras/{training.owner_id}/{training.id}/{filename}"


class LoraTraining(models.Model):
    """One LoRA training of a character's dataset on a trainer (a registry row with the lora_training
    task), and its result: the LoRA file copied into our storage the moment the trainer finished."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lora_trainings")
    character = models.ForeignKey("studio.Character", on_delete=models.CASCADE, related_name="trainings")
    model = models.ForeignKey("models_registry.ApiModel", on_delete=models.PROTECT, related_name="trainings")
    provider = models.CharField(max_length=20)
    trigger_word = models.CharField(max_length=32)
    steps = models.PositiveIntegerField(null=True, blank=True)
    images = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=20, choices=TrainingStatus.choices, default=TrainingStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    cost = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    credits_charged = models.PositiveSmallIntegerField(default=0)
    # Where the trainer fetched the dataset ZIP (fal storage's file_url, a presigned S3 URL).
    dataset_url = models.CharField(max_length=2000, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    handles = models.JSONField(default=dict, blank=True)
    # The trainer's own answer: the LoRA's and config's provider URLs, file name and size.
    config = models.JSONField(default=dict, blank=True)
    lora_file = models.FileField(upload_to=lora_upload_to, max_length=300, blank=True)
    error = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When the next step is due; the sweeper re-drives a step this far overdue (runs' ProviderRequest does the same).
    due_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "due_at"], name="training_status_due")]

    def __str__(self) -> str:
        return f"training {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_TRAINING_STATUSES

    @property
    def is_ready(self) -> bool:
        return self.status == TrainingStatus.SUCCEEDED and bool(self.lora_file)

    @property
    def percent(self) -> int:
        return round(100 * max(0.0, min(1.0, self.progress)))
