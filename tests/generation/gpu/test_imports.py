"""The web and the ordinary workers never import torch: only the GPU worker loads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import sys, django
django.setup()
import studio.urls, studio.celery, generation.tasks, generation.services.runs, generation.gpu.params
import generation.providers.local_sdxl, studio.views_ops
from generation.providers import get_provider
loaded = sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules)
print(",".join(loaded) or "none")
"""


def test_the_web_and_ordinary_workers_import_no_torch():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_a_file_that_is_no_checkpoint_is_refused_clearly(tmp_path):
    from generation.gpu.runner import load_pipeline

    weird = tmp_path / "model.bin"
    weird.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="neither a diffusers folder nor a .safetensors file"):
        load_pipeline(str(weird))
