"""Builders for studio view tests: jobs in any state, with real stored images, and no worker."""

from __future__ import annotations

from django.core.files.base import ContentFile

from generation.models import GenerationJob, ImageSlot, JobMode, JobStatus, LoraTraining, SlotStatus, TrainingStatus
from studio.models import AssetSource, Character, WorkspaceAsset
from tests.factories import png_bytes


def make_asset(owner, *, job=None, index=0, color=(200, 40, 40), source=AssetSource.GENERATED) -> WorkspaceAsset:
    data = png_bytes(color=color)
    asset = WorkspaceAsset(owner=owner, job=job, batch_index=index, source=source, width=64, height=80, bytes=len(data))
    asset.file.save(f"{index}.png", ContentFile(data), save=False)
    asset.thumbnail.save(f"{index}.jpg", ContentFile(data), save=False)
    asset.save()
    return asset


def make_job(
    owner,
    model,
    *,
    images: int = 4,
    status: str = JobStatus.SUCCEEDED,
    failed: tuple[int, ...] = (),
    pending: tuple[int, ...] = (),
    prompt: str = "silver hair portrait",
    with_files: bool = True,
    error: str = "The provider refused this image.",
) -> GenerationJob:
    """A job with one slot per image: succeeded (with an asset) unless listed in failed/pending."""
    job = GenerationJob.objects.create(
        owner=owner, model=model, prompt=prompt, mode=JobMode.T2I, images_requested=images, status=status
    )
    for index in range(images):
        if index in failed:
            ImageSlot.objects.create(job=job, index=index, status=SlotStatus.FAILED, error=error)
        elif index in pending:
            ImageSlot.objects.create(job=job, index=index, status=SlotStatus.RUNNING)
        else:
            ImageSlot.objects.create(job=job, index=index, status=SlotStatus.SUCCEEDED)
            if with_files:
                make_asset(owner, job=job, index=index, color=(40 * index % 255, 90, 160))
    succeeded = images - len(failed) - len(pending)
    GenerationJob.objects.filter(pk=job.pk).update(succeeded_count=succeeded, failed_count=len(failed))
    job.refresh_from_db()
    return job


def make_ready_training(owner, character, *, trainer=None, **fields) -> LoraTraining:
    """A finished training of `character` whose LoRA file is in storage."""
    from tests.factories import offline_model

    training = LoraTraining.objects.create(
        owner=owner,
        character=character,
        model=trainer or offline_model("offline/lora-trainer", tasks=["lora_training"]),
        provider="offline",
        trigger_word="aria_k7",
        status=TrainingStatus.SUCCEEDED,
        **fields,
    )
    training.lora_file.save("pytorch_lora_weights.safetensors", ContentFile(b"weights"))
    return training


def make_character(owner, name: str = "Mira", **kwargs) -> Character:
    return Character.objects.create(owner=owner, name=name, **kwargs)


def htmx(**headers) -> dict[str, str]:
    """Headers of an htmx request, as the test client takes them."""
    return {"HTTP_HX_REQUEST": "true", **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
