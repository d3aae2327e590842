"""Initialise an IRRA-family model from a CLIP checkpoint in transformers' `CLIPModel` layout.

This is how IRRA starts: OpenAI CLIP (`openai/clip-vit-base-patch16` holds the same weights in safetensors) with its
square image position grid resized bilinearly (align_corners=False, class token kept) to the grid of the pedestrian
input (14 x 14 -> 24 x 8 at 384 x 128, stride 16). The sizes of the new model come from the CLIP config; only the
input size and the patch stride are the user's. `logit_scale` is not used: the retrieval score has no scale.
"""

from __future__ import annotations

import math

import torch
from transformers import CLIPConfig

from .configuration_irra import IRRAConfig
from .conversion_utils import load_state_dict_file, resize_position_grid
from .convert_vit_bert import InitializationReport
from .modeling_irra import IRRAModel

POSITION_EMBEDDING = "vision_model.embeddings.position_embedding.weight"
RENAMED_PREFIXES = {"vision_model.pre_layrnorm.": "vision_model.pre_layernorm."}


def irra_config_from_clip(clip_config: CLIPConfig, image_size=(384, 128), patch_stride: int = 16) -> IRRAConfig:
    """An IRRAConfig with CLIP's tower sizes, at `image_size` (height, width) and `patch_stride`."""
    text, vision = clip_config.text_config, clip_config.vision_config
    shared = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "layer_norm_eps")
    return IRRAConfig(
        text_config={
            **{name: getattr(text, name) for name in shared},
            "vocab_size": text.vocab_size,
            "max_position_embeddings": text.max_position_embeddings,
        },
        vision_config={
            **{name: getattr(vision, name) for name in shared},
            "patch_size": vision.patch_size,
            "image_size": list(image_size),
            "patch_stride": patch_stride,
        },
        projection_dim=clip_config.projection_dim,
    )


def _square_grid(num_patches: int) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"CLIP's position embedding has {num_patches} patch positions, not a square grid")
    return side, side


def irra_from_clip(clip_state_dict: dict[str, torch.Tensor], config: IRRAConfig) -> tuple[IRRAModel, InitializationReport]:
    """
    An IRRAModel of `config` with every tensor of the CLIP state dict it has a place for (the position grid resized),
    and a report of what was loaded, what stayed at its random init, and what CLIP had that the model does not use.
    A tensor whose shape does not fit the config is an error naming it.
    """
    model = IRRAModel(config)
    target = model.state_dict()
    report = InitializationReport()
    tensors = {}
    for key, value in clip_state_dict.items():
        name = key
        for old, new in RENAMED_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        if name not in target:
            report.unused.append(key)
            continue
        if name == POSITION_EMBEDDING and value.shape != target[name].shape:
            old_grid = _square_grid(value.shape[0] - 1)
            value = resize_position_grid(value[None], old_grid, config.vision_config.patch_grid)[0]
            report.notes.append(
                f"image position grid resized from {old_grid[0]} x {old_grid[1]} to "
                f"{config.vision_config.patch_grid[0]} x {config.vision_config.patch_grid[1]} (bilinear, class token kept)"
            )
        if value.shape != target[name].shape:
            raise ValueError(
                f"CLIP tensor {key} has shape {tuple(value.shape)}, the model expects {tuple(target[name].shape)}"
            )
        tensors[name] = value.to(target[name].dtype)
        report.loaded[name] = key
    model.load_state_dict(tensors, strict=False)
    persistent = {name for name, _ in model.named_parameters()}
    report.not_loaded = sorted(persistent - set(tensors))
    report.unused = sorted(key for key in report.unused if not key.endswith("position_ids"))
    return model, report


def irra_from_clip_folder(folder, image_size=(384, 128), patch_stride: int = 16) -> tuple[IRRAModel, InitializationReport]:
    """`irra_from_clip` for a saved `CLIPModel` folder (config.json + model.safetensors, e.g. a download of
    openai/clip-vit-base-patch16)."""
    clip_config = CLIPConfig.from_pretrained(folder)
    config = irra_config_from_clip(clip_config, image_size, patch_stride)
    return irra_from_clip(load_state_dict_file(folder), config)
