"""SDXL pipelines with random weights, built offline: the tests' tiny one and the benchmark's
full-size one (SDXL base's architecture, so a GPU's timings are real ones without the weights).

docs/providers.md section 5.2: diffusers' own fast tests build the tiny configs below but load the
tokenizer from a hub; here a tokenizer of a few letters is written to disk instead, so nothing is
downloaded. `save(pipe, folder)` gives a folder LOCAL_SDXL_MODEL can name.
"""

from __future__ import annotations

import json
import os
import string
import tempfile

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "!"


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over the lowercase letters: enough for any prompt, no download."""
    tokens = [BOS, EOS, PAD, *string.ascii_lowercase, *(f"{c}</w>" for c in string.ascii_lowercase)]
    folder = tempfile.mkdtemp(prefix="tiny-clip-")
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w") as fh:
        json.dump({token: i for i, token in enumerate(tokens)}, fh)
    with open(merges_file, "w") as fh:
        fh.write("#version: 0.2\n")
    return CLIPTokenizer(
        vocab_file, merges_file, bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=PAD, model_max_length=77
    )


def _text_config(**sizes) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=2, **sizes
    )


def _assemble(unet, vae, text_1: CLIPTextConfig, text_2: CLIPTextConfig) -> StableDiffusionXLPipeline:
    torch.manual_seed(0)
    encoder_1 = CLIPTextModel(text_1)
    torch.manual_seed(0)
    encoder_2 = CLIPTextModelWithProjection(text_2)
    tokenizer = tiny_tokenizer()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoder_1,
        text_encoder_2=encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_sdxl() -> StableDiffusionXLPipeline:
    """diffusers' test configuration: 64x64 images by default, ~0.3 s to build."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=128,
    )
    sizes = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 5,
        "vocab_size": 1000,
        "projection_dim": 32,
    }
    return _assemble(unet, vae, _text_config(**sizes), _text_config(**sizes))


def full_size_sdxl() -> StableDiffusionXLPipeline:
    """SDXL base 1.0's architecture (2.6 B UNet parameters) with random weights: the benchmark's
    pipeline on a GPU, where timings do not depend on the weights' values."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
    )
    text_1 = _text_config(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        vocab_size=49408,
        projection_dim=768,
    )
    text_2 = _text_config(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        vocab_size=49408,
        projection_dim=1280,
    )
    return _assemble(unet, vae, text_1, text_2)


def save(pipe: StableDiffusionXLPipeline, folder: str) -> str:
    """Write `pipe` as a diffusers folder (what LOCAL_SDXL_MODEL may name) and return its path."""
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
