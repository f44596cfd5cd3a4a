"""The provider kinds: one row for each provider the studio can call, and the only list of them.

A row holds what the rest of the studio needs to know about a provider, apart from its adapter's
code: its label, where its adapter class lives (imported on first use), how many calls every worker
together may make, whether it sends webhooks, and whether it runs on a staff GPU. Everything else
reads this table: the registry's provider choices (and so admin's select and filter), the adapter
lookup, the limits' defaults, the webhook URL and view, and the seed's local-GPU chain marker.
README, "Adding a provider", has the checklist.

It imports nothing from the project: the registry's models and migrations read it while apps load.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class ProviderKind:
    # Lowercase letters and digits: the registry's value, the webhook URL's segment and, upper
    # cased, the prefix of its environment overrides.
    key: str
    label: str
    # Dotted path of the adapter class, a generation.providers.base.Provider.
    adapter: str
    # Calls in flight at once across all workers; <KEY>_CONCURRENCY in the environment overrides it.
    concurrency: int
    # Calls started per second across all workers, None for no limit; <KEY>_RATE_PER_SECOND overrides it.
    rate_per_second: int | None = None
    # The provider POSTs a signed delivery to /webhooks/<key>/<request id> when a request ends; the
    # adapter's verify_webhook checks it. Without it, polling alone finds the end.
    webhooks: bool = False
    # A staff-run GPU server: the seed's "<local>" chain marker stands for its models.
    local: bool = False
    # Dotted path of the provider's batch lane (half price, results later), for the models whose
    # capabilities say batch_api; "" when it has none. generation.services.batches drives it.
    batch_adapter: str = ""
    # What a batch image costs, as a share of the registry's price per image.
    batch_price_factor: Decimal = Decimal("0.5")


PROVIDER_KINDS: dict[str, ProviderKind] = {
    kind.key: kind
    for kind in (
        ProviderKind("fal", "fal.ai", "generation.providers.fal.Fal", concurrency=8, rate_per_second=10, webhooks=True),
        ProviderKind(
            "replicate",
            "Replicate",
            "generation.providers.replicate.Replicate",
            concurrency=6,
            rate_per_second=10,
            webhooks=True,
        ),
        ProviderKind(
            "gemini",
            "Google Gemini",
            "generation.providers.gemini.Gemini",
            concurrency=4,
            rate_per_second=5,
            batch_adapter="generation.providers.gemini_batch.GeminiBatch",
        ),
        ProviderKind("comfyui", "ComfyUI", "generation.providers.comfyui.ComfyUI", concurrency=2, local=True),
        ProviderKind("local", "Local GPU worker", "generation.providers.comfyui.ComfyUI", concurrency=1, local=True),
        ProviderKind("offline", "Offline engine", "generation.providers.offline.OfflineEngine", concurrency=16),
    )
}


def provider_choices() -> list[tuple[str, str]]:
    """ApiModel.provider's choices. Django calls it on every use, so a new row needs no migration."""
    return [(kind.key, kind.label) for kind in PROVIDER_KINDS.values()]
