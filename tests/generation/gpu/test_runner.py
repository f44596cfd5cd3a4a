"""The diffusers runner on the tiny random SDXL pipeline (CPU, no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from generation.gpu.params import IMG2IMG, TXT2IMG, CallSettings
from generation.gpu.runner import ImageJob, SdxlRunner, load_pipeline
from tests.factories import png_bytes

T2I = CallSettings(model="local/sdxl", kind=TXT2IMG, width=64, height=64, steps=2, guidance=7.5)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_it_loads_a_folder_in_fp32_on_the_cpu_and_shares_modules_with_img2img(tiny_runner, tiny_model_dir):
    assert tiny_runner.device == "cpu" and tiny_runner.txt2img.unet.dtype == torch.float32
    assert tiny_runner.img2img.unet is tiny_runner.txt2img.unet  # from_pipe: no second copy
    assert tiny_runner.size_multiple == 8
    with pytest.raises(FileNotFoundError, match="neither a diffusers folder"):
        load_pipeline(tiny_model_dir + "/missing")


def test_txt2img_makes_one_image_per_entry_at_the_size_asked(tiny_runner):
    images = tiny_runner.generate(
        CallSettings(model="m", kind=TXT2IMG, width=64, height=96, steps=2, guidance=7.5),
        [ImageJob("a cat", "blurry", 1), ImageJob("a dog", "", 2), ImageJob("a cow", "", 3)],
    )
    assert [image.size for image in images] == [(64, 96)] * 3


def test_image_k_of_a_batch_equals_a_single_run_with_its_seed(tiny_runner):
    batch = tiny_runner.generate(T2I, [ImageJob("a cat", "", 11), ImageJob("a dog", "", 12), ImageJob("a cow", "", 13)])
    alone = tiny_runner.generate(T2I, [ImageJob("a dog", "", 12)])[0]
    assert np.abs(pixels(batch[1]) - pixels(alone)).max() <= 1  # 8-bit rounding of the same floats
    other = tiny_runner.generate(T2I, [ImageJob("a dog", "", 99)])[0]
    assert np.abs(pixels(other) - pixels(alone)).max() > 10


def test_img2img_resizes_each_reference_to_the_size_asked(tiny_runner):
    settings = CallSettings(model="m", kind=IMG2IMG, width=64, height=80, steps=4, guidance=7.5, strength=0.5)
    references = [png_bytes((120, 90), (200, 40, 40)), png_bytes((30, 30), (40, 40, 200))]
    images = tiny_runner.generate(settings, [ImageJob("a", "", 1, references[0]), ImageJob("b", "", 2, references[1])])
    assert [image.size for image in images] == [(64, 80), (64, 80)]


def test_out_of_memory_halves_the_batch_and_keeps_every_image(tiny_runner, monkeypatch):
    calls: list[int] = []
    real = SdxlRunner.generate

    def generate(self, settings, images):
        calls.append(len(images))
        if len(images) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, settings, images)

    monkeypatch.setattr(SdxlRunner, "generate", generate)
    jobs = [ImageJob(f"p{i}", "", i) for i in range(4)]
    images = tiny_runner.generate_splitting(T2I, jobs)
    assert calls == [4, 2, 1, 1, 2, 1, 1] and len(images) == 4
    single = real(tiny_runner, T2I, [jobs[2]])[0]
    assert np.abs(pixels(images[2]) - pixels(single)).max() <= 1  # still in its own place


def test_other_errors_are_not_split(tiny_runner, monkeypatch):
    def generate(self, settings, images):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(SdxlRunner, "generate", generate)
    with pytest.raises(RuntimeError, match="shapes"):
        tiny_runner.generate_splitting(T2I, [ImageJob("a", "", 1), ImageJob("b", "", 2)])
