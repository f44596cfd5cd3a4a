"""The one small interface every provider adapter implements, and the types it speaks.

An adapter turns a GenerationRequest into provider calls and the provider's answers into a
ProviderResult. It never touches the database, storage or Celery: the pipeline owns state,
retries and storage, so an adapter can be tested with `responses` alone.

Lifecycle, driven by generation.services.runs:
    submit(request)           -> ProviderResult: finished (sync providers) or PENDING with
                                 external_id/handles to poll (queue providers)
    poll(request, id, handles)-> ProviderResult: PENDING again, or finished
    cancel(id, handles)       -> best effort; never raises for an already finished request
    verify_webhook(headers, body) -> the delivery id of a signed webhook (providers whose kinds.py
                                 row says webhooks=True), read with webhook_provider_ids
Errors are ProviderError: permanent (invalid input, safety block, bad key) is never retried;
otherwise the pipeline retries with backoff, honouring retry_after.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from models_registry.models import ApiModel


class ProviderError(Exception):
    """A failed provider call. `permanent` errors are never retried and never fall back."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        details: str = "",
        status_code: int | None = None,
        may_have_been_received: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.details = details
        self.status_code = status_code
        # The call may have reached the provider (a read timeout, a dropped connection, a
        # garbled answer to a POST): for a queue API a second submit could start, and bill, a
        # second generation.
        self.may_have_been_received = may_have_been_received

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Reference:
    """A reference image for image-to-image: its bytes, and a URL when one can be given out."""

    data: bytes
    content_type: str
    # A short-lived URL a hosted provider may fetch (S3 presigned); None on local disk, where
    # adapters send a data: URI instead.
    url: str | None = None
    # Storage path, used to drop duplicate references before sending.
    key: str = ""

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def url_or_data_uri(self) -> str:
        return self.url or self.data_uri()


@dataclass(frozen=True)
class LoraWeight:
    """A trained LoRA applied to a generation: its weights' URL, how strongly, and the trigger text
    that calls it up (written into the prompt; docs/providers.md §7.4)."""

    path: str
    scale: float = 1.0
    trigger_word: str = ""


@dataclass
class GenerationRequest:
    """What one provider call must produce: `num_images` images of one prompt."""

    prompt: str
    num_images: int = 1
    negative_prompt: str = ""
    seed: int | None = None
    references: list[Reference] = field(default_factory=list)
    # Image-to-image: how far the output may move from the reference, 0..1 (1 ignores it); the
    # opposite of the studio's reference strength (generation.modes.denoise_for). None for text-to-image.
    denoise: float | None = None
    # Model-specific extras (image_size, guidance, ...), passed through where the schema has them.
    params: dict[str, Any] = field(default_factory=dict)
    # The job's batch indexes this call fills, in order; images come back in the same order.
    batch_indexes: list[int] = field(default_factory=list)
    # Our ProviderRequest id: correlates webhooks, and seeds offline rendering.
    request_id: str = ""
    webhook_url: str | None = None
    # LoRAs to apply, for models whose schema takes a `loras` list (fal-ai/flux-lora).
    loras: list[LoraWeight] = field(default_factory=list)


@dataclass
class TrainingRequest:
    """What one LoRA training must do: learn `trigger_word` from the dataset ZIP at `dataset_url`.

    The ZIP is flat, images plus same-stem .txt captions (generation.lib.dataset), with the trigger
    already written into the captions the way the trainer reads them (TrainerSpec.caption_trigger).
    """

    dataset_url: str
    trigger_word: str
    steps: int | None = None
    # Trainer-specific extras (learning_rate, create_masks, ...), passed where the schema has them.
    params: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    webhook_url: str | None = None


class ResultStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass
class GeneratedImage:
    """One output image: inline bytes, or a URL the pipeline downloads at once."""

    data: bytes | None = None
    url: str | None = None
    content_type: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    # Set when the provider returned this position but it is unusable (e.g. flagged by the safety
    # checker): that slot fails permanently, the others are kept.
    error: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedLora:
    """A training's output: the LoRA weights (fal's diffusers_lora_file) and its config file, as
    provider URLs the pipeline copies into our storage at once (the CDN deletes them), or the
    weights inline (`data`, the offline engine)."""

    url: str = ""
    data: bytes | None = None
    file_name: str = ""
    content_type: str = ""
    file_size: int | None = None
    config_url: str = ""
    # Where the weights sit when `url` is an archive (Replicate's trained_model.tar), else "".
    archive_member: str = ""
    # The provider's own handle on the trained model (Replicate's destination version), else "".
    provider_version: str = ""


@dataclass
class ProviderResult:
    status: ResultStatus
    images: list[GeneratedImage] = field(default_factory=list)
    external_id: str = ""
    # Provider-given URLs to poll, fetch and cancel with (fal status/response/cancel_url,
    # Replicate urls.get/cancel). Adapters never rebuild them.
    handles: dict[str, Any] = field(default_factory=dict)
    # Seconds until the next poll is worth doing, when PENDING and the provider says (a
    # Retry-After, an engine that knows); None lets generation/poll_schedule.py decide.
    poll_after: float | None = None
    error: str = ""
    permanent: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    # A training's share done, 0..1, when PENDING and the provider said (its progress logs).
    progress: float | None = None
    # A training's result, when SUCCEEDED.
    lora: TrainedLora | None = None


class Provider:
    """Base class: one subclass per provider module, named after the vendor."""

    name: ClassVar[str] = ""
    # Whether a PENDING submit can be resumed by polling (queue APIs). Sync providers are
    # simply called again after a crash.
    asynchronous: ClassVar[bool] = False
    # Adapters whose outputs arrive as URLs that the pipeline must download (provider CDNs).
    default_poll_interval: ClassVar[float] = 1.0

    def __init__(self, model: ApiModel) -> None:
        self.model = model

    # --- configuration ------------------------------------------------------------------
    def is_configured(self) -> bool:
        """Whether the keys/URLs this provider needs are set. Unconfigured models are disabled."""
        return True

    def configuration_hint(self) -> str:
        """What to set to enable this provider, shown in the studio when it is not configured."""
        return ""

    def health_check(self) -> bool:
        """A cheap probe that the provider answers; cached by the router."""
        return self.is_configured()

    def fetch_trusted_hosts(self) -> tuple[str, ...]:
        """Hosts that generation.lib.http.fetch may reach on a private address for this provider's output
        URLs; none by default. Trust is per provider: one provider's trusted server is a stranger to
        another's output URLs."""
        return ()

    # --- registry validation ------------------------------------------------------------
    # The most images one request can return, whatever a registry row says (the offline engine
    # renders 4, Gemini answers one). None: the model's own input schema says (fal, Replicate).
    max_images_limit: ClassVar[int | None] = None

    @classmethod
    def images_per_request_limit(cls, model: ApiModel) -> int | None:
        """The most images one request to `model` can return: the adapter's own limit, else the
        maximum of the count field the model's input schema declares (num_images, or Replicate's
        num_outputs); None when neither says."""
        if cls.max_images_limit is not None:
            return cls.max_images_limit
        from models_registry.capabilities import schema_properties

        properties = schema_properties(model.input_schema)
        for count_field in ("num_images", "num_outputs"):
            spec = properties.get(count_field)
            maximum = spec.get("maximum") if isinstance(spec, dict) else None
            if isinstance(maximum, int) and not isinstance(maximum, bool) and maximum >= 1:
                return maximum
        return None

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        """Errors, by ApiModel field name, in a registry row this adapter could not run.

        ApiModel.clean() calls it, so admin shows them as form errors and saves nothing. An
        adapter that overrides it adds its own errors to super()'s.
        """
        errors: dict[str, str] = {}
        limit = cls.images_per_request_limit(model)
        if limit is not None and model.max_images > limit:
            # A higher max_images would offer a batch chip whose every image fails at the provider.
            overridden = (model.capabilities or {}).get("max_images") == model.max_images
            source = 'The "max_images" capability' if overridden else 'The num_images "maximum"'
            errors["capabilities" if overridden else "input_schema"] = (
                f"{source} is {model.max_images}, but {model.get_provider_display()} makes at most "
                f"{limit} image{'s' if limit != 1 else ''} a request."
            )
        return errors

    # --- the lifecycle ------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> ProviderResult:
        raise NotImplementedError

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        raise ProviderError(f"{self.name} does not poll", permanent=True)

    def wait_for_end(self, handles: dict[str, Any], *, timeout: float) -> bool:
        """Block until the provider itself says the request left its pending states, for at most
        `timeout` seconds; True when it did. Adapters of APIs that push status changes (fal's status
        stream) override it; the others cannot tell, and the pipeline polls again after a short gap."""
        return False

    def recover(self, request: GenerationRequest) -> ProviderResult | None:
        """Find a submitted request whose answer (and so its id) was lost, without sending it again.

        A queue API may have accepted it and started billing; returns the request's state as
        `poll` would, or None when the adapter cannot find it (the pipeline then fails it clearly).
        """
        return None

    def adopt(self, provider_id: str, delivery: dict[str, Any]) -> ProviderResult:
        """A request known only from a verified webhook delivery (its submit answer was lost):
        the provider's id and the handles to poll it with, as PENDING."""
        return ProviderResult(status=ResultStatus.PENDING, external_id=provider_id)

    def cancel(self, external_id: str, handles: dict[str, Any]) -> None:
        """Ask the provider to stop; providers without a cancel API do nothing."""

    # --- webhooks: kinds whose row in kinds.py says webhooks=True -------------------------------
    # Per provider, not per model: generation.services.webhooks calls them on the adapter class.
    @classmethod
    def webhooks_verifiable(cls) -> bool:
        """Whether a delivery could be verified now (e.g. its signing secret is set). When not,
        requests are given no webhook URL and polling alone finds their end."""
        return True

    @classmethod
    def verify_webhook(cls, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        """Check a delivery's signature over the raw `body`, and its timestamp; return its delivery id
        (the same for the provider's retries of it, so a replay is told apart). Raises
        generation.providers.webhook_signing.WebhookRejected, whose status is the HTTP answer."""
        raise NotImplementedError(f"{cls.__name__} takes no webhooks")

    @classmethod
    def webhook_provider_ids(cls, headers: Mapping[str, str], payload: dict[str, Any]) -> list[str]:
        """The provider's request ids a delivery names, from signed parts only; the first is the one a
        request whose submit answer was lost adopts (see adopt). Read before the signature is checked,
        to refuse a delivery for another request without the cost of checking it."""
        return []
