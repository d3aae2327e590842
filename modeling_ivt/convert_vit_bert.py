"""
Assemble a new IVT from a pretrained ViT (image side, shared attention and norms) and a pretrained BERT (text
embeddings and text feed-forward networks), as the released IVT is initialised, and report what was loaded. Every
tensor of that initialisation must be in the checkpoints given: a missing one is an error naming it.

    python -m modeling_ivt.convert_vit_bert --vit vit.safetensors --bert bert-folder --output ivt-init [--patch-stride 12]

The ViT may be in timm layout (`blocks.0.attn.qkv.weight`, ...) or Hugging Face `ViTModel` layout
(`encoder.layer.0.attention.attention.query.weight`, ...). The BERT may be a `BertModel` (bare names), a
`BertForMaskedLM` or `BertForPreTraining` (`bert.` prefix) checkpoint, with LayerNorm parameters named `weight` / `bias`
or, as in the original release and the Hub's bert-base-uncased files, `gamma` / `beta`; safetensors or a pickled
`.bin` (read with `weights_only=True`).
"""

import json
import logging
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cli import CommandParser, user_errors
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
TIMM_EMBEDDING_MAP = {
    "cls_token": "image_embeddings.cls_token",
    "pos_embed": "image_embeddings.position_embedding",
    "patch_embed.proj.weight": "image_embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "image_embeddings.patch_embedding.bias",
    "norm.weight": "final_layer_norm.weight",
    "norm.bias": "final_layer_norm.bias",
}
HF_VIT_BLOCK_MAP = {
    "layernorm_before": "layer_norm1",
    "layernorm_after": "layer_norm2",
    "attention.output.dense": "self_attn.out_proj",
    "intermediate.dense": "image_mlp.fc1",
    "output.dense": "image_mlp.fc2",
}
HF_VIT_EMBEDDING_MAP = {
    "embeddings.cls_token": "image_embeddings.cls_token",
    "embeddings.position_embeddings": "image_embeddings.position_embedding",
    "embeddings.patch_embeddings.projection.weight": "image_embeddings.patch_embedding.weight",
    "embeddings.patch_embeddings.projection.bias": "image_embeddings.patch_embedding.bias",
    "layernorm.weight": "final_layer_norm.weight",
    "layernorm.bias": "final_layer_norm.bias",
}
HF_VIT_IN_MEMORY_NAMES = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
BERT_BLOCK_MAP = {"intermediate.dense": "text_mlp.fc1", "output.dense": "text_mlp.fc2"}
BERT_EMBEDDING_MAP = {
    "embeddings.word_embeddings.weight": "text_embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "text_embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "text_embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "text_embeddings.layer_norm.weight",
    "embeddings.LayerNorm.bias": "text_embeddings.layer_norm.bias",
}
KINDS = ("weight", "bias")
LAYER_INDEX = re.compile(r"(?:vit\.|bert\.)?(?:encoder\.layer|blocks|layers)\.(\d+)\.")


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


def _layer_count(state_dict: dict) -> int:
    """The depth of a BERT or ViT state dict (`[bert.|vit.]encoder.layer.N.`, timm `blocks.N.`); 0 if it has none."""
    indices = [int(m.group(1)) for key in state_dict if (m := LAYER_INDEX.match(key))]
    return max(indices) + 1 if indices else 0


def take_tensors(state_dict: dict, mapping: dict[str, str], source: str) -> dict[str, torch.Tensor]:
    """
    `{target: state_dict[name]}` for every `target: name` of `mapping`. A name the checkpoint lacks is an error that
    names every missing tensor: an initialisation never silently leaves a tensor it should copy at random init.
    """
    missing = [name for name in mapping.values() if name not in state_dict]
    if missing:
        naming = ""
        if source == "BERT":
            naming = " (BERT names without the bert. prefix, LayerNorm gamma/beta read as weight/bias)"
        raise ValueError(
            f"the {source} checkpoint ({_layer_count(state_dict)} layers) lacks {len(missing)} tensor(s) that the "
            f"initialisation copies{naming}: " + ", ".join(missing)
        )
    return {target: state_dict[name] for target, name in mapping.items()}


def _hub_vit_name(key: str) -> str:
    """transformers 5 names ViT modules differently in memory than in its saved files; use the file names."""
    match = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if not match:
        return key
    index, module, kind = match.groups()
    return f"encoder.layer.{index}.{HF_VIT_IN_MEMORY_NAMES.get(module, module)}.{kind}"


def vit_tensors(state_dict: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """
    The image side of the released initialisation in IVT names: patch embedding, [CLS], position embedding (not yet
    resized), attention, norm1, norm2, the MLP of layers `0..num_layers-1` (as the image MLP) and the final norm.
    The ViT may be in timm layout (`blocks.0.attn.qkv.weight`) or `ViTModel` / `ViTForImageClassification` layout
    (`[vit.]encoder.layer.0.attention.attention.query.weight`; q, k and v are concatenated into one qkv projection).
    """
    if "cls_token" in state_dict or "pos_embed" in state_dict:
        mapping = {target: name for name, target in TIMM_EMBEDDING_MAP.items()}
        for index, (source, target), kind in itertools.product(range(num_layers), TIMM_BLOCK_MAP.items(), KINDS):
            mapping[f"encoder.layers.{index}.{target}.{kind}"] = f"blocks.{index}.{source}.{kind}"
        return take_tensors(state_dict, mapping, "ViT")
    state_dict = {_hub_vit_name(key.removeprefix("vit.")): value for key, value in state_dict.items()}
    if not any(key.startswith("embeddings.patch_embeddings") for key in state_dict):
        raise ValueError("the ViT checkpoint is neither in timm layout (cls_token, blocks.*) nor in ViTModel layout")
    mapping = {target: name for name, target in HF_VIT_EMBEDDING_MAP.items()}
    qkv_parts = {}
    for index, kind in itertools.product(range(num_layers), KINDS):
        prefix = f"encoder.layer.{index}."
        for source, target in HF_VIT_BLOCK_MAP.items():
            mapping[f"encoder.layers.{index}.{target}.{kind}"] = prefix + f"{source}.{kind}"
        for name in ("query", "key", "value"):
            qkv_parts[f"encoder.layers.{index}.self_attn.{name}.{kind}"] = prefix + f"attention.attention.{name}.{kind}"
    tensors = take_tensors(state_dict, {**mapping, **qkv_parts}, "ViT")
    for index, kind in itertools.product(range(num_layers), KINDS):
        parts = [tensors.pop(f"encoder.layers.{index}.self_attn.{name}.{kind}") for name in ("query", "key", "value")]
        tensors[f"encoder.layers.{index}.self_attn.qkv.{kind}"] = torch.cat(parts)
    return tensors


def canonical_bert_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    """
    A BERT state dict in one naming, whatever layout it was published in: without the `bert.` prefix of
    `BertForMaskedLM` / `BertForPreTraining` checkpoints (their `cls.*` heads keep their names), and with LayerNorm
    parameters named `weight` / `bias`, not `gamma` / `beta` (the names of the original release, which the Hub's
    bert-base-uncased files still use and transformers renames on load).
    """
    canonical = {}
    for key, value in state_dict.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key.removeprefix("bert."))
        canonical[re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)] = value
    return canonical


def bert_tensors(state_dict: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """
    The text side of the released initialisation in IVT names: BERT's embeddings (word, position, token type, LayerNorm)
    and, for layers `0..num_layers-1`, `intermediate.dense` -> text MLP fc1 and `output.dense` -> text MLP fc2.
    BERT's attention and per-layer LayerNorms are not used (text runs through the shared ViT attention and norms).
    """
    state_dict = canonical_bert_state_dict(state_dict)
    mapping = {target: name for name, target in BERT_EMBEDDING_MAP.items()}
    for index, (source, target), kind in itertools.product(range(num_layers), BERT_BLOCK_MAP.items(), KINDS):
        mapping[f"encoder.layers.{index}.{target}.{kind}"] = f"encoder.layer.{index}.{source}.{kind}"
    return take_tensors(state_dict, mapping, "BERT")


def shared_tensors_from_post_norm_bert(state_dict: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """
    A post-LayerNorm BERT's attention and LayerNorms in IVT's pre-LayerNorm shared encoder (an option beyond the
    released initialisation, for a model without a ViT): q/k/v are fused into qkv; the LayerNorm that BERT applies
    after the attention residual becomes the norm before the feed-forward network (`layer_norm2`), the one after the
    feed-forward residual becomes the next layer's `layer_norm1` (and, after the last layer, the final norm). Layer
    0's `layer_norm1` keeps its identity init: the embeddings are already normed. The function differs from BERT's
    (the residual stream is no longer normalised); it is a starting point.
    """
    state_dict = canonical_bert_state_dict(state_dict)
    mapping = {}
    for index, kind in itertools.product(range(num_layers), KINDS):
        source, target = f"encoder.layer.{index}.", f"encoder.layers.{index}."
        for name in ("query", "key", "value"):
            mapping[target + f"self_attn.{name}.{kind}"] = source + f"attention.self.{name}.{kind}"
        mapping[target + f"self_attn.out_proj.{kind}"] = source + f"attention.output.dense.{kind}"
        mapping[target + f"layer_norm2.{kind}"] = source + f"attention.output.LayerNorm.{kind}"
        next_norm = f"encoder.layers.{index + 1}.layer_norm1" if index + 1 < num_layers else "final_layer_norm"
        mapping[f"{next_norm}.{kind}"] = source + f"output.LayerNorm.{kind}"
    tensors = take_tensors(state_dict, mapping, "BERT")
    for index, kind in itertools.product(range(num_layers), KINDS):
        parts = [tensors.pop(f"encoder.layers.{index}.self_attn.{name}.{kind}") for name in ("query", "key", "value")]
        tensors[f"encoder.layers.{index}.self_attn.qkv.{kind}"] = torch.cat(parts)
    return tensors


def initialize_from_vit_and_bert(
    config: IVTConfig,
    vit_state_dict: dict | None = None,
    bert_state_dict: dict | None = None,
    shared_from_bert: bool = False,
) -> tuple[IVTModel, InitializationReport]:
    """
    A new `IVTModel(config)` with every tensor of the released initialisation copied in from the ViT and BERT
    checkpoints; the ViT position embedding is resized from its square grid to the model's stride grid. Either side
    may be omitted (it then stays at random init). With `shared_from_bert` and no ViT, the shared attention and
    LayerNorms come from the BERT too (`shared_tensors_from_post_norm_bert`). A tensor the given checkpoint lacks, or
    whose shape does not fit, is an error naming it, never skipped. Layers of a deeper checkpoint beyond the model's
    depth are noted as unused.
    """
    if shared_from_bert and (bert_state_dict is None or vit_state_dict is not None):
        raise ValueError("shared_from_bert copies the shared attention and LayerNorms from a BERT given without a ViT")
    model = IVTModel(config)
    expected = model.state_dict()
    depth = config.num_hidden_layers
    report = InitializationReport()
    sources = {}
    for name, state_dict, take in (("vit", vit_state_dict, vit_tensors), ("bert", bert_state_dict, bert_tensors)):
        if state_dict is None:
            continue
        sources.update({key: (value, name) for key, value in take(state_dict, depth).items()})
        available = _layer_count(state_dict)
        if available > depth:
            report.unused.append(f"{name} layers {depth}..{available - 1} (deeper than the IVT's {depth})")
    if shared_from_bert:
        shared = shared_tensors_from_post_norm_bert(bert_state_dict, depth)
        sources.update({key: (value, "bert") for key, value in shared.items()})
        report.notes.append(f"{len(shared)} shared attention and LayerNorm tensors from the post-LayerNorm BERT")
    position = sources.get("image_embeddings.position_embedding")
    if position is not None:
        old_grid = _square_grid(position[0].shape[1] - 1)
        resized = resize_position_grid(position[0], old_grid, config.patch_grid)
        sources["image_embeddings.position_embedding"] = (resized, "vit")
        report.notes.append(f"ViT position embedding resized from grid {old_grid} to {tuple(config.patch_grid)}")

    problems = [
        f"{key} from {origin}: shape {tuple(value.shape)}, the IVT config needs {tuple(expected[key].shape)}"
        for key, (value, origin) in sources.items()
        if value.shape != expected[key].shape
    ]
    if problems:
        raise ValueError("the pretrained weights do not fit the IVT config:\n  " + "\n  ".join(problems))

    model.load_state_dict({key: value for key, (value, _) in sources.items()}, strict=False)
    report.loaded = {key: origin for key, (_, origin) in sources.items()}
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
    parser = CommandParser(description=__doc__)
    parser.add_argument("--vit", type=Path, help="ViT weights: a file or a Hugging Face folder (timm or ViTModel layout)")
    parser.add_argument(
        "--bert", type=Path, help="BERT weights: a BertModel / BertForMaskedLM / BertForPreTraining folder or file"
    )
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

    try:
        vit_state, vit_config = _read_source(args.vit, "vit") if args.vit else (None, {})
        bert_state, bert_config = _read_source(args.bert, "bert") if args.bert else (None, {})
        if vit_state is not None:
            depth = _layer_count(vit_state)
            tensors = vit_tensors(vit_state, depth)
            hidden_size = tensors["image_embeddings.cls_token"].shape[-1]
            intermediate = tensors["encoder.layers.0.image_mlp.fc1.weight"].shape[0]
            patch_size = tensors["image_embeddings.patch_embedding.weight"].shape[-1]
        else:
            hidden_size, depth = bert_config["hidden_size"], bert_config["num_hidden_layers"]
            intermediate, patch_size = bert_config["intermediate_size"], 16
        bert_vocab = canonical_bert_state_dict(bert_state or {}).get("embeddings.word_embeddings.weight")
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
    except ValueError as error:
        raise SystemExit(f"convert_vit_bert: {error}") from error
    tokenizer_dir = args.tokenizer or (args.bert if args.bert and (args.bert / "tokenizer_config.json").is_file() else None)
    processor = create_processor(image_size=tuple(args.image_size), tokenizer_dir=tokenizer_dir)
    with user_errors():
        save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(report.summary())
    print(f"saved a {config.num_hidden_layers}-layer, {config.hidden_size}-wide IVT to {args.output}")


if __name__ == "__main__":
    main()
