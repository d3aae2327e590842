"""Pieces shared by the checkpoint converters: safe loading of foreign weights, grid resizing, atomic saving."""

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from .safe_io import atomic_output

logger = logging.getLogger(__name__)

WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """
    Read a state dict from a `.safetensors` file, a pickled checkpoint (loaded with `weights_only=True`, never executing
    code) or a Hugging Face model folder. A `{'state_dict': ...}` or `{'model': ...}` wrapper is unwrapped and a
    DistributedDataParallel `module.` prefix removed.
    """
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILE_NAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no {' or '.join(WEIGHT_FILE_NAMES)} in this folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        state_dict = load_file(str(path))
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint of tensors ({error})") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected a dict of tensors (optionally under 'state_dict'), got {type(state_dict)}")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def resize_position_grid(embedding: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """
    Resize a `(1, 1 + rows * columns, D)` token embedding whose first token is [CLS] from one patch grid to another by
    bilinear interpolation (align_corners=False), keeping the [CLS] entry as it is.
    """
    expected = 1 + old_grid[0] * old_grid[1]
    if embedding.shape[1] != expected:
        raise ValueError(f"embedding has {embedding.shape[1]} tokens, expected {expected} for grid {old_grid}")
    if tuple(old_grid) == tuple(new_grid):
        return embedding.clone()
    cls_entry, grid = embedding[:, :1], embedding[:, 1:]
    hidden = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], hidden).permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], hidden).to(embedding.dtype)
    return torch.cat([cls_entry, grid], dim=1)


def check_vocabulary(config, tokenizer, where: str) -> None:
    """
    Refuse a model whose word embedding has fewer rows than its tokenizer has tokens: the missing ids would make every
    caption that contains them fail in the embedding lookup (an `IndexError` at query time).
    """
    text_config = getattr(config, "text_config", None) or config
    model_vocabulary = getattr(text_config, "vocab_size", None)
    if model_vocabulary is not None and len(tokenizer) > model_vocabulary:
        raise ValueError(
            f"{where}: the model's vocabulary has {model_vocabulary} entries but its tokenizer has {len(tokenizer)}: "
            "token ids beyond the model's would crash every query using them; pair the weights with the tokenizer "
            "they were trained with (--tokenizer)"
        )


def save_model_folder(model, processor, output_dir, overwrite: bool = False, card=None) -> Path:
    """
    Write model (safetensors + config + code), processor and optionally a model card (README.md) to `output_dir`
    through a temporary sibling folder that is renamed into place, so a failure never leaves a half-written folder
    and an existing one is kept unless `overwrite` is set.
    """
    check_vocabulary(model.config, processor.tokenizer, str(output_dir))
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists and is not empty; pass overwrite=True (--overwrite)")
    with atomic_output(output_dir, directory=True) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if card is not None:
            card.save(staging / "README.md")
    logger.info("saved %s", output_dir)
    return output_dir
