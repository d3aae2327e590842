"""
Convert a checkpoint of the authors' IVT code (ivt_spec.md section 2) into a Hugging Face model folder.

    python -m modeling_ivt.convert_original_checkpoint --checkpoint best.pth --output ivt-cuhk [--num-heads 12]
"""

import logging
import re
from pathlib import Path

import torch

from .cli import CommandParser, user_errors
from .configuration_ivt import IVTConfig
from .conversion_utils import load_state_dict_file, save_model_folder
from .defaults import create_processor
from .hub_utils import converted_model_card, push_folder_to_hub
from .modeling_ivt import IVTModel

logger = logging.getLogger(__name__)

ORIGINAL_PREFIX = "encoder_vl."
ORIGINAL_IMAGE_SIZE = (384, 128)

# original name (after `encoder_vl.`) -> IVTModel name; `{i}` is the block index
KEY_MAP = {
    "cls_token": "image_embeddings.cls_token",
    "pos_embed": "image_embeddings.position_embedding",
    "type_embed": "image_embeddings.type_embedding",
    "patch_embed.proj.weight": "image_embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "image_embeddings.patch_embedding.bias",
    "embeddings.word_embeddings.weight": "text_embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "text_embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "text_embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "text_embeddings.layer_norm.weight",
    "embeddings.LayerNorm.bias": "text_embeddings.layer_norm.bias",
    "norm.weight": "final_layer_norm.weight",
    "norm.bias": "final_layer_norm.bias",
}
BLOCK_MAP = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.out_proj",
    "mlp_vis.fc1": "image_mlp.fc1",
    "mlp_vis.fc2": "image_mlp.fc2",
    "mlp_txt.fc1": "text_mlp.fc1",
    "mlp_txt.fc2": "text_mlp.fc2",
}
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")


def rename_original_key(name: str) -> str | None:
    """IVTModel name of an encoder tensor of the original checkpoint, or None when it is not part of the model."""
    if not name.startswith(ORIGINAL_PREFIX):
        return None
    name = name[len(ORIGINAL_PREFIX) :]
    if name in KEY_MAP:
        return KEY_MAP[name]
    match = BLOCK_KEY.match(name)
    if match and match.group(2) in BLOCK_MAP:
        index, module, kind = match.groups()
        return f"encoder.layers.{index}.{BLOCK_MAP[module]}.{kind}"
    return None


def _require(state_dict: dict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"the checkpoint has no '{key}': is this an IVT checkpoint of the authors' code?")
    return state_dict[key]


def infer_config(state_dict: dict[str, torch.Tensor], num_heads: int | None = None) -> IVTConfig:
    """Read depth, width, MLP size, vocabulary, text positions, patch size and stride off the tensors."""
    hidden_size = _require(state_dict, ORIGINAL_PREFIX + "cls_token").shape[-1]
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"encoder_vl\.blocks\.(\d+)\.", key))}
    if not blocks:
        raise KeyError("the checkpoint has no encoder_vl.blocks.*: is this an IVT checkpoint of the authors' code?")
    patch_weight = _require(state_dict, ORIGINAL_PREFIX + "patch_embed.proj.weight")
    patch_size = patch_weight.shape[-1]
    num_tokens = _require(state_dict, ORIGINAL_PREFIX + "pos_embed").shape[1]
    height, width = ORIGINAL_IMAGE_SIZE
    strides = [
        s for s in range(1, patch_size + 1) if ((height - patch_size) // s + 1) * ((width - patch_size) // s + 1) + 1 == num_tokens
    ]
    if not strides:
        raise ValueError(
            f"pos_embed has {num_tokens} tokens, which matches no patch stride for {height} x {width} images "
            f"with {patch_size}-pixel patches"
        )
    num_heads = num_heads or max(hidden_size // 64, 1)
    return IVTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=max(blocks) + 1,
        num_attention_heads=num_heads,
        intermediate_size=_require(state_dict, ORIGINAL_PREFIX + "blocks.0.mlp_vis.fc1.weight").shape[0],
        image_size=ORIGINAL_IMAGE_SIZE,
        patch_size=patch_size,
        patch_stride=strides[-1],
        num_channels=patch_weight.shape[1],
        vocab_size=_require(state_dict, ORIGINAL_PREFIX + "embeddings.word_embeddings.weight").shape[0],
        max_position_embeddings=_require(state_dict, ORIGINAL_PREFIX + "embeddings.position_embeddings.weight").shape[0],
        type_vocab_size=_require(state_dict, ORIGINAL_PREFIX + "embeddings.token_type_embeddings.weight").shape[0],
    )


def convert_original_state_dict(
    state_dict: dict[str, torch.Tensor], num_heads: int | None = None
) -> tuple[IVTModel, list[str]]:
    """
    Build an `IVTModel` from the authors' state dict. Returns the model and the original keys that were ignored
    (classifier, bottleneck, temperature, ...). Raises with the full list on any missing or mis-shaped encoder tensor.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    config = infer_config(state_dict, num_heads)
    model = IVTModel(config)
    expected = model.state_dict()

    converted, ignored = {}, []
    for key, value in state_dict.items():
        new_key = rename_original_key(key)
        if new_key is None:
            ignored.append(key)
        else:
            converted[new_key] = value

    problems = [f"missing {key} {tuple(expected[key].shape)}" for key in expected if key not in converted]
    problems += [
        f"{key}: checkpoint shape {tuple(value.shape)}, model expects {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems += [f"unexpected encoder tensor {key}" for key in converted if key not in expected]
    if problems:
        raise ValueError("cannot convert the checkpoint:\n  " + "\n  ".join(problems))

    model.load_state_dict(converted, strict=True)
    model.eval()
    return model, sorted(ignored)


def convert_original_checkpoint(
    checkpoint, output_dir, num_heads: int | None = None, overwrite: bool = False, push_to_hub: str | None = None
):
    """
    Convert `checkpoint` (a `.pth` of the authors' code) into a model folder loadable with `AutoModel`, with a model
    card; with `push_to_hub` also publish the folder to that repository.
    """
    state_dict = load_state_dict_file(checkpoint)
    model, ignored = convert_original_state_dict(state_dict, num_heads)
    processor = create_processor(image_size=tuple(model.config.image_size))
    card = converted_model_card(model.config, str(checkpoint), push_to_hub or str(output_dir), ignored)
    save_model_folder(model, processor, output_dir, overwrite=overwrite, card=card)
    if push_to_hub:
        push_folder_to_hub(output_dir, push_to_hub, f"IVT converted from {Path(checkpoint).name}")
    return model, ignored


def main(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the authors' .pth checkpoint")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the converted model to")
    parser.add_argument(
        "--num-heads", type=int, default=None, help="attention heads (not recoverable from the tensors; default width / 64)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also publish the folder to this Hub repository")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors():
        model, ignored = convert_original_checkpoint(
            args.checkpoint, args.output, args.num_heads, args.overwrite, args.push_to_hub
        )
    config = model.config
    print(
        f"converted: {config.num_hidden_layers} layers, width {config.hidden_size}, {config.num_attention_heads} heads, "
        f"stride {config.patch_stride}, vocabulary {config.vocab_size}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters -> {args.output}"
    )
    print(f"ignored {len(ignored)} keys that are not part of the encoder: {', '.join(ignored) or '-'}")


if __name__ == "__main__":
    main()
