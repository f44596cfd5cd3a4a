"""Replicate trainings (docs/providers.md §7.5): ostris/flux-dev-lora-trainer into a destination model.

A training is created once, like a prediction (never retried by this client: Replicate has no
idempotency key), and polled at `/v1/trainings/{id}`, which this client builds itself: the create's
`urls` have pointed at `/v1/predictions/{id}` (§7.5.4). It needs a destination model owned by the token's
account (REPLICATE_TRAINING_OWNER): created first, private, and found again when it exists. The
trainer's version is the row's pinned `version` capability, else the model's `latest_version.id` read at
submit time and kept in the handles (§7.7.5). The result's `output.weights` is a tar holding the LoRA at
WEIGHTS_MEMBER; `output.version` is the destination version that runs it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.conf import settings

from generation.providers.base import (
    ProviderError,
    ProviderResult,
    ResultStatus,
    TrainedLora,
    TrainingRequest,
)
from generation.providers.http_api import sanitize_message
from generation.providers.replicate import Replicate
from generation.providers.training import progress_from_logs, training_inputs, validate_trainer_model

if TYPE_CHECKING:
    from models_registry.models import ApiModel

# Where the LoRA sits inside output.weights (flux-fine-tuner train.py; §7.5.4).
WEIGHTS_MEMBER = "output/flux_train_replicate/lora.safetensors"
# Trainings take minutes: poll every 15 s, as for fal's trainers (§7.3).
POLL_SECONDS = 15.0
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


def destination_name(request_id: str) -> str:
    """The destination model's name for one training: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request_id.lower()).strip("-")[:60]
    return f"cs-lora-{slug or 'training'}"


class ReplicateTrainer(Replicate):
    """ostris/flux-dev-lora-trainer and its kin: submit(TrainingRequest), poll, cancel, webhooks as Replicate."""

    default_poll_interval = POLL_SECONDS

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        errors = validate_trainer_model(model)
        version = (model.capabilities or {}).get("version")
        if version and not _VERSION_ID.match(version):
            errors["capabilities"] = "A Replicate trainer's version is its 64-hex version id."
        return errors

    def is_configured(self) -> bool:
        return super().is_configured() and bool(settings.REPLICATE_TRAINING_OWNER)

    def configuration_hint(self) -> str:
        return (
            "Set REPLICATE_API_TOKEN and REPLICATE_TRAINING_OWNER (your Replicate user or organisation) to train LoRAs."
        )

    def _url(self, path: str) -> str:
        return f"{settings.REPLICATE_API_URL.rstrip('/')}{path}"

    def trainer_version(self) -> str:
        """The pinned version, else the trainer model's latest (it changes when the trainer is updated)."""
        pinned = (self.model.capabilities or {}).get("version")
        if pinned:
            return pinned
        model = self.json(self.http("GET", self._url(f"/v1/models/{self.model.key}")))
        latest = model.get("latest_version") if isinstance(model.get("latest_version"), dict) else {}
        version = str(latest.get("id") or "")
        if not _VERSION_ID.match(version):
            raise ProviderError(f"Replicate lists no version of {self.model.key} to train with.")
        return version

    def ensure_destination(self, name: str) -> str:
        """Create the private destination model (it must exist before training, §7.5.1); one that
        exists already is used as it is."""
        owner = settings.REPLICATE_TRAINING_OWNER
        body = {"owner": owner, "name": name, "visibility": "private", "hardware": "cpu"}
        try:
            self.http("POST", self._url("/v1/models"), json=body)
        except ProviderError as exc:
            if exc.status_code != 409:  # [NV] the answer for a name taken by our own earlier attempt
                raise
        return f"{owner}/{name}"

    def submit(self, request: TrainingRequest) -> ProviderResult:  # type: ignore[override]
        inputs = {"autocaption": False, **training_inputs(self.model, request)}  # our captions, not LLaVA's
        version = self.trainer_version()
        destination = self.ensure_destination(destination_name(request.request_id))
        body: dict[str, Any] = {"destination": destination, "input": inputs}
        if request.webhook_url:
            body["webhook"] = request.webhook_url
            body["webhook_events_filter"] = ["completed"]
        url = self._url(f"/v1/models/{self.model.key}/versions/{version}/trainings")
        # No Prefer: wait (§7.7.8). No answer, or a garbled one, raises saying it may have been received.
        training = self.json(self.http("POST", url, json=body))
        result = self.result_from_prediction(training)
        result.handles["version"] = version
        return result

    def adopt(self, provider_id: str, delivery: dict[str, Any]) -> ProviderResult:
        found = self.result_from_prediction({**delivery, "id": provider_id, "status": "processing"})
        return ProviderResult(status=ResultStatus.PENDING, external_id=provider_id, handles=found.handles)

    def recover(self, request: TrainingRequest) -> ProviderResult | None:  # type: ignore[override]
        return None  # a lost create is found by its webhook only (never created twice)

    def result_from_prediction(self, prediction: dict[str, Any]) -> ProviderResult:
        """A training object (create, GET or webhook body) as a ProviderResult."""
        training_id = str(prediction.get("id") or "")
        if not training_id:
            raise ProviderError("Replicate answered a training without an id.", permanent=True)
        handles = {
            "get": self._url(f"/v1/trainings/{training_id}"),
            "cancel": self._url(f"/v1/trainings/{training_id}/cancel"),
        }
        common = {"external_id": training_id, "handles": handles, "metadata": {"metrics": prediction.get("metrics")}}
        status = prediction.get("status")
        if status == "succeeded":
            output = prediction.get("output") if isinstance(prediction.get("output"), dict) else {}
            weights, version = str(output.get("weights") or ""), str(output.get("version") or "")
            if not weights and not version:
                return ProviderResult(
                    status=ResultStatus.FAILED,
                    error="Replicate finished the training without weights or a version.",
                    permanent=True,
                    **common,
                )
            # Newer private trainings may omit weights [NV]; the version still runs the LoRA.
            lora = TrainedLora(
                url=weights,
                file_name=weights.rsplit("/", 1)[-1] if weights else "",
                content_type="application/x-tar" if weights else "",
                archive_member=WEIGHTS_MEMBER if weights else "",
                provider_version=version,
            )
            return ProviderResult(status=ResultStatus.SUCCEEDED, lora=lora, progress=1.0, **common)
        if status == "failed":
            error = sanitize_message(str(prediction.get("error") or "unknown error"))
            return ProviderResult(status=ResultStatus.FAILED, error=f"Replicate: {error}", permanent=True, **common)
        if status == "canceled":
            return ProviderResult(status=ResultStatus.CANCELED, error="The training was canceled.", **common)
        if status == "aborted":  # a deadline passed before it started: terminal and unbilled (§0)
            return ProviderResult(
                status=ResultStatus.FAILED, error="Replicate aborted the training before it started.", **common
            )
        return ProviderResult(
            status=ResultStatus.PENDING,
            poll_after=self.default_poll_interval,
            progress=progress_from_logs(prediction.get("logs")),
            **common,
        )
