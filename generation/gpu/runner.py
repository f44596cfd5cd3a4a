"""torch and diffusers: the one SDXL pipeline a GPU worker holds, and one batched call on it.

Only the GPU worker imports this module (generation.gpu.batches loads it when the worker starts);
the web and the ordinary workers never import torch. Facts it relies on are in docs/providers.md
section 5: one generator per image makes image k of a batch equal a single run with its seed,
img2img runs int(steps * strength) steps, and `from_pipe` shares the txt2img modules.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, StableDiffusionXLPipeline
from PIL import Image

from generation.gpu.params import IMG2IMG, CallSettings

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class ImageJob:
    """One image of a call: its own prompt, negative prompt, seed and reference."""

    prompt: str
    negative_prompt: str
    seed: int
    reference: bytes | None = None


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(source: str, *, device: str | None = None, config: str = "") -> StableDiffusionXLPipeline:
    """The txt2img pipeline from a diffusers folder or a single checkpoint file, fp16 on CUDA and
    fp32 on the CPU (fp16 convolutions are slow or missing there). Never reaches a hub: a single
    file takes its components' configs from `config`, a diffusers folder of SDXL (weights not needed)."""
    device = device or pick_device()
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if os.path.isdir(source):
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype, local_files_only=True)
    elif os.path.isfile(source) and source.endswith(SINGLE_FILE_SUFFIXES):
        pipe = StableDiffusionXLPipeline.from_single_file(
            source, config=config or None, dtype=dtype, local_files_only=True
        )
    else:
        raise FileNotFoundError(f"LOCAL_SDXL_MODEL {source!r} is neither a diffusers folder nor a .safetensors file")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class SdxlRunner:
    """The loaded pipeline: txt2img and img2img over the same modules."""

    def __init__(self, txt2img: StableDiffusionXLPipeline, *, source: str = "") -> None:
        self.txt2img = txt2img
        self.img2img = AutoPipelineForImage2Image.from_pipe(txt2img)
        self.img2img.set_progress_bar_config(disable=True)
        self.source = source
        self.device = str(txt2img.device)
        # Every UNet down block but the last halves the latent; diffusers checks sizes against 8.
        downsamples = 2 ** (len(txt2img.unet.config.block_out_channels) - 1)
        self.size_multiple = max(8, int(txt2img.vae_scale_factor) * downsamples)

    @classmethod
    def load(cls, source: str, *, device: str | None = None, config: str = "") -> SdxlRunner:
        return cls(load_pipeline(source, device=device, config=config), source=source)

    def describe(self) -> dict:
        return {"model": os.path.basename(self.source.rstrip("/")) or "pipeline", "device": self.device}

    def generate(self, settings: CallSettings, images: Sequence[ImageJob]) -> list[Image.Image]:
        """One pipeline call for `images`, which share `settings`; outputs in the same order."""
        generators = [torch.Generator("cpu").manual_seed(int(image.seed)) for image in images]
        common = {
            "prompt": [image.prompt for image in images],
            "negative_prompt": [image.negative_prompt for image in images],
            "num_inference_steps": settings.steps,
            "guidance_scale": settings.guidance,
            "generator": generators,
            "output_type": "pil",
        }
        with torch.inference_mode():
            if settings.kind == IMG2IMG:
                references = [reference_image(image.reference, settings) for image in images]
                result = self.img2img(image=references, strength=settings.strength, **common)
            else:
                result = self.txt2img(height=settings.height, width=settings.width, **common)
        return list(result.images)

    def generate_splitting(self, settings: CallSettings, images: Sequence[ImageJob]) -> list[Image.Image]:
        """generate(), halving the batch and trying again when the GPU runs out of memory, down to
        one image; every image still comes back, in order."""
        try:
            return self.generate(settings, images)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(images) <= 1:
                raise
            logger.warning(
                "out of GPU memory with %d images at %dx%d: halving", len(images), settings.width, settings.height
            )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(images) // 2
        return self.generate_splitting(settings, images[:half]) + self.generate_splitting(settings, images[half:])


def reference_image(data: bytes | None, settings: CallSettings) -> Image.Image:
    """The reference, as RGB at the requested size (img2img's output takes the input's size)."""
    if data is None:
        raise ValueError("img2img without a reference")
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    if image.size != (settings.width, settings.height):
        image = image.resize((settings.width, settings.height), Image.Resampling.LANCZOS)
    return image
