"""
Assemble a new IVT from a pretrained ViT (image side, shared attention and norms) and a pretrained BERT (text
embeddings and text feed-forward networks), as ivt_spec.md section 5 describes, and report what was loaded.

    python -m modeling_ivt.convert_vit_bert --vit vit.safetensors --bert bert-folder --output ivt-init [--patch-stride 12]

The ViT may be in timm layout (`blocks.0.attn.qkv.weight`, ...) or Hugging Face `ViTModel` layout
(`encoder.layer.0.attention.attention.query.weight`, ...); the BERT is a Hugging Face `BertModel` folder or file.
"""

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .configuration_ivt import IVTConfig
from .conversion_utils import load_state_dict_file, resize_position_grid, save_model_folder
from .defaults import create_processor
from .modeling_ivt import IVTModel

logger = logging.getLogger(__name__)

TIMM_BLOCK_MAP = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.out_proj",
    "mlp.fc1": "image_mlp.fc1",
    "mlp.fc2": "image_mlp.fc2",
}
HF_VIT_BLOCK_MAP = {
    "layernorm_before": "layer_norm1",
    "layernorm_after": "layer_norm2",
    "attention.output.dense": "self_attn.out_proj",
    "intermediate.dense": "image_mlp.fc1",
    "output.dense": "image_mlp.fc2",
}
BERT_BLOCK_MAP = {"intermediate.dense": "text_mlp.fc1", "output.dense": "text_mlp.fc2"}
BERT_EMBEDDING_MAP = {
    "embeddings.word_embeddings.weight": "text_embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "text_embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "text_embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "text_embeddings.layer_norm.weight",
    "embeddings.LayerNorm.bias": "text_embeddings.layer_norm.bias",
}


@dataclass
class InitializationReport:
    """What an initialisation copied into the IVT, what it left at random init, and what it did not use."""

    loaded: dict[str, str] = field(default_factory=dict)
    not_loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors; {len(self.not_loaded)} left randomly initialised"]
        lines += [f"  not loaded: {key}" for key in self.not_loaded]
        lines += [f"  unused from the source checkpoints: {key}" for key in self.unused]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _square_grid(num_patches: int) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"ViT position embedding has {num_patches} patches, not a square grid")
    return side, side


def _timm_vit_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """ViT tensors in IVT names (timm layout); position embedding not yet resized."""
    renamed = {
        "cls_token": "image_embeddings.cls_token",
        "pos_embed": "image_embeddings.position_embedding",
        "patch_embed.proj.weight": "image_embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "image_embeddings.patch_embedding.bias",
        "norm.weight": "final_layer_norm.weight",
        "norm.bias": "final_layer_norm.bias",
    }
    tensors = {}
    for key, value in state_dict.items():
        if key in renamed:
            tensors[renamed[key]] = value
        elif match := re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", key):
            index, module, kind = match.groups()
            if module in TIMM_BLOCK_MAP:
                tensors[f"encoder.layers.{index}.{TIMM_BLOCK_MAP[module]}.{kind}"] = value
    return tensors


HF_VIT_IN_MEMORY_NAMES = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def _hub_vit_name(key: str) -> str:
    """transformers 5 names ViT modules differently in memory than in its saved files; use the file names."""
    match = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if not match:
        return key
    index, module, kind = match.groups()
    return f"encoder.layer.{index}.{HF_VIT_IN_MEMORY_NAMES.get(module, module)}.{kind}"


def _hf_vit_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """ViT tensors in IVT names (Hugging Face layout: split q/k/v are concatenated into one qkv projection)."""
    state_dict = {_hub_vit_name(key.removeprefix("vit.")): value for key, value in state_dict.items()}
    renamed = {
        "embeddings.cls_token": "image_embeddings.cls_token",
        "embeddings.position_embeddings": "image_embeddings.position_embedding",
        "embeddings.patch_embeddings.projection.weight": "image_embeddings.patch_embedding.weight",
        "embeddings.patch_embeddings.projection.bias": "image_embeddings.patch_embedding.bias",
        "layernorm.weight": "final_layer_norm.weight",
        "layernorm.bias": "final_layer_norm.bias",
    }
    tensors = {renamed[key]: value for key, value in state_dict.items() if key in renamed}
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"encoder\.layer\.(\d+)\.", key))}
    for index in sorted(layers):
        prefix = f"encoder.layer.{index}."
        for source, target in HF_VIT_BLOCK_MAP.items():
            for kind in ("weight", "bias"):
                if prefix + f"{source}.{kind}" in state_dict:
                    tensors[f"encoder.layers.{index}.{target}.{kind}"] = state_dict[prefix + f"{source}.{kind}"]
        for kind in ("weight", "bias"):
            parts = [prefix + f"attention.attention.{name}.{kind}" for name in ("query", "key", "value")]
            if all(part in state_dict for part in parts):
                tensors[f"encoder.layers.{index}.self_attn.qkv.{kind}"] = torch.cat([state_dict[p] for p in parts])
    return tensors


def vit_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """Rename a ViT state dict (timm or Hugging Face layout, told apart by its keys) to IVT names."""
    if "cls_token" in state_dict or "pos_embed" in state_dict:
        return _timm_vit_tensors(state_dict)
    if any(key.removeprefix("vit.").startswith("embeddings.patch_embeddings") for key in state_dict):
        return _hf_vit_tensors(state_dict)
    raise ValueError("the ViT checkpoint is neither in timm layout (cls_token, blocks.*) nor in ViTModel layout")


def bert_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """Rename the BERT embeddings and per-layer feed-forward weights to IVT names; BERT's attention is not used."""
    state_dict = {key.removeprefix("bert."): value for key, value in state_dict.items()}
    tensors = {BERT_EMBEDDING_MAP[key]: value for key, value in state_dict.items() if key in BERT_EMBEDDING_MAP}
    for key, value in state_dict.items():
        if match := re.match(r"encoder\.layer\.(\d+)\.(intermediate\.dense|output\.dense)\.(weight|bias)$", key):
            index, module, kind = match.groups()
            tensors[f"encoder.layers.{index}.{BERT_BLOCK_MAP[module]}.{kind}"] = value
    return tensors


def initialize_from_vit_and_bert(
    config: IVTConfig, vit_state_dict: dict | None = None, bert_state_dict: dict | None = None
) -> tuple[IVTModel, InitializationReport]:
    """
    A new `IVTModel(config)` with every tensor the ViT and BERT checkpoints provide copied in; the ViT position
    embedding is resized from its square grid to the model's stride grid. Either side may be omitted. A tensor whose
    shape does not fit is an error, never skipped silently.
    """
    model = IVTModel(config)
    expected = model.state_dict()
    report = InitializationReport()
    sources = {}
    if vit_state_dict is not None:
        for key, value in vit_tensors(vit_state_dict).items():
            sources[key] = (value, "vit")
        position = sources.get("image_embeddings.position_embedding")
        if position is not None:
            old_grid = _square_grid(position[0].shape[1] - 1)
            resized = resize_position_grid(position[0], old_grid, config.patch_grid)
            sources["image_embeddings.position_embedding"] = (resized, "vit")
            report.notes.append(f"ViT position embedding resized from grid {old_grid} to {tuple(config.patch_grid)}")
    if bert_state_dict is not None:
        for key, value in bert_tensors(bert_state_dict).items():
            sources[key] = (value, "bert")

    problems = [
        f"{key} from {origin}: shape {tuple(value.shape)}, the IVT config needs {tuple(expected[key].shape)}"
        for key, (value, origin) in sources.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if problems:
        raise ValueError("the pretrained weights do not fit the IVT config:\n  " + "\n  ".join(problems))

    model.load_state_dict({key: value for key, (value, _) in sources.items() if key in expected}, strict=False)
    report.loaded = {key: origin for key, (_, origin) in sources.items() if key in expected}
    report.unused = sorted(key for key in sources if key not in expected)
    report.not_loaded = sorted(key for key in expected if key not in sources)
    logger.info("initialised IVT from pretrained weights: %s", report.summary())
    return model, report


def _read_source(path, kind: str) -> tuple[dict, dict]:
    """State dict and (for a folder) its config.json."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    try:
        return load_state_dict_file(path), config
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"--{kind}: {error}") from error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit", type=Path, help="ViT weights: a file or a Hugging Face folder (timm or ViTModel layout)")
    parser.add_argument("--bert", type=Path, help="BERT weights: a BertModel folder or file")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the new IVT to")
    parser.add_argument("--num-layers", type=int, help="depth (default: the ViT's, else the BERT's)")
    parser.add_argument("--num-heads", type=int, help="attention heads (default: the ViT config's, else width / 64)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(384, 128), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--patch-stride", type=int, default=12, help="12 for CUHK-PEDES and ICFG-PEDES, 16 for RSTPReid")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the BERT folder if it has one)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    if args.vit is None and args.bert is None:
        parser.error("give --vit, --bert or both")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    vit_state, vit_config = _read_source(args.vit, "vit") if args.vit else (None, {})
    bert_state, bert_config = _read_source(args.bert, "bert") if args.bert else (None, {})
    if vit_state is not None:
        tensors = vit_tensors(vit_state)
        hidden_size = tensors["image_embeddings.cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layers."))
        intermediate = tensors["encoder.layers.0.image_mlp.fc1.weight"].shape[0]
        patch_size = tensors["image_embeddings.patch_embedding.weight"].shape[-1]
    else:
        hidden_size, depth = bert_config["hidden_size"], bert_config["num_hidden_layers"]
        intermediate, patch_size = bert_config["intermediate_size"], 16
    bert_vocab = bert_tensors(bert_state or {}).get("text_embeddings.word_embeddings.weight")
    config = IVTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=args.num_layers or depth,
        num_attention_heads=args.num_heads or vit_config.get("num_attention_heads") or max(hidden_size // 64, 1),
        intermediate_size=intermediate,
        image_size=tuple(args.image_size),
        patch_size=patch_size,
        patch_stride=args.patch_stride,
        vocab_size=bert_vocab.shape[0] if bert_vocab is not None else 30522,
        max_position_embeddings=bert_config.get("max_position_embeddings", 512),
    )
    model, report = initialize_from_vit_and_bert(config, vit_state, bert_state)
    tokenizer_dir = args.tokenizer or (args.bert if args.bert and (args.bert / "tokenizer_config.json").is_file() else None)
    processor = create_processor(image_size=tuple(args.image_size), tokenizer_dir=tokenizer_dir)
    save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(report.summary())
    print(f"saved a {config.num_hidden_layers}-layer, {config.hidden_size}-wide IVT to {args.output}")


if __name__ == "__main__":
    main()
