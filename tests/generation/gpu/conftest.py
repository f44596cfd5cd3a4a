from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random SDXL pipeline (docs/providers.md section 5.2), saved as the diffusers folder
    LOCAL_SDXL_MODEL names: built offline, no hub."""
    from generation.gpu import random_pipeline

    return random_pipeline.save(random_pipeline.tiny_sdxl(), str(tmp_path_factory.mktemp("tiny-sdxl")))


@pytest.fixture(scope="session")
def tiny_runner(tiny_model_dir):
    from generation.gpu.runner import SdxlRunner

    return SdxlRunner.load(tiny_model_dir)


@pytest.fixture
def gpu_runner(tiny_runner):
    """generation.gpu.batches runs on the tiny pipeline."""
    from generation.gpu import batches

    batches.use_runner(tiny_runner)
    yield tiny_runner
    batches.use_runner(None)
