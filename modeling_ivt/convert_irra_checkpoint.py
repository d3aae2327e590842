"""
Convert a checkpoint of IRRA's code (or of a fork that keeps IRRA's inference model) into a Hugging Face model folder.

    python -m modeling_ivt.convert_irra_checkpoint --checkpoint best.pth --output irra-cuhk-pedes \\
        [--source URL] [--license mit] [--dtype float16]

Every size (widths, depths, embedding, vocabulary, context length, patch stride) is read off the tensors. The
training-only modules (identity classifier, cross-modal transformer, masked-language head) are listed and left out.
"""

import logging
import re
import sys
from collections import Counter
from pathlib import Path

import torch

from .cli import CommandParser
from .configuration_irra import DEFAULT_IMAGE_SIZE, IRRAConfig
from .conversion_utils import load_state_dict_file, save_model_folder
from .defaults import create_irra_processor
from .hub_utils import irra_model_card, push_folder_to_hub
from .modeling_irra import IRRAModel

logger = logging.getLogger(__name__)

IRRA_PREFIX = "base_model."
# Modules of IRRA's training objectives: present in its checkpoints, not part of the dual encoder.
TRAINING_ONLY_PREFIXES = ("classifier.", "cross_attn.", "cross_modal_transformer.", "ln_pre_t.", "ln_pre_i.", "ln_post.", "mlm_head.")
# IRRA's heads: one per 64 channels in both towers.
HEAD_WIDTH = 64
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# IRRA name (after `base_model.`) -> IRRAModel name, for the tensors that are not per block
KEY_MAP = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layernorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layernorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
# IRRA stores the projections as [in, out] matrices applied as `x @ proj`; nn.Linear keeps their transpose.
PROJECTION_MAP = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
BLOCK_MAP = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
BLOCK_KEY = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def rename_irra_key(name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """The IRRAModel tensors made from one of IRRA's inference tensors (`name` after `base_model.`)."""
    if name in KEY_MAP:
        return {KEY_MAP[name]: value}
    if name in PROJECTION_MAP:
        return {PROJECTION_MAP[name]: value.t().contiguous()}
    visual, index, rest = BLOCK_KEY.match(name).groups()
    prefix = f"{'vision_model' if visual else 'text_model'}.encoder.layers.{index}."
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.removeprefix("attn.in_proj_")
        query, key, values = value.chunk(3, dim=0)
        return {
            f"{prefix}self_attn.q_proj.{kind}": query.contiguous(),
            f"{prefix}self_attn.k_proj.{kind}": key.contiguous(),
            f"{prefix}self_attn.v_proj.{kind}": values.contiguous(),
        }
    module, _, kind = rest.rpartition(".")
    return {f"{prefix}{BLOCK_MAP[module]}.{kind}": value}


def _require(state_dict: dict, name: str) -> torch.Tensor:
    if IRRA_PREFIX + name not in state_dict:
        raise KeyError(
            f"the checkpoint has no '{IRRA_PREFIX}{name}': is this a checkpoint of IRRA's code (or a fork that keeps "
            "its model)?"
        )
    return state_dict[IRRA_PREFIX + name]


def _depth(state_dict: dict, tower_prefix: str) -> int:
    pattern = re.compile(re.escape(IRRA_PREFIX + tower_prefix) + r"transformer\.resblocks\.(\d+)\.")
    blocks = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    if not blocks:
        raise KeyError(f"the checkpoint has no {IRRA_PREFIX}{tower_prefix}transformer.resblocks.*")
    return max(blocks) + 1


def _heads(tower: str, width: int) -> int:
    if width < HEAD_WIDTH or width % HEAD_WIDTH:
        raise ValueError(f"{tower} width {width} is not a multiple of {HEAD_WIDTH}: IRRA uses one head per 64 channels")
    return width // HEAD_WIDTH


def infer_irra_config(state_dict: dict[str, torch.Tensor]) -> IRRAConfig:
    """Read every size, and the patch stride (from the number of image positions at 384 x 128), off the tensors."""
    patch_weight = _require(state_dict, "visual.conv1.weight")
    vision_width, num_channels, patch_size = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[-1]
    num_positions = _require(state_dict, "visual.positional_embedding").shape[0]
    height, width = DEFAULT_IMAGE_SIZE
    strides = [
        s
        for s in range(1, patch_size + 1)
        if ((height - patch_size) // s + 1) * ((width - patch_size) // s + 1) + 1 == num_positions
    ]
    if not strides:
        raise ValueError(
            f"{IRRA_PREFIX}visual.positional_embedding has {num_positions} positions, which matches no patch stride "
            f"for {height} x {width} images with {patch_size}-pixel patches"
        )
    vocab_size, text_width = _require(state_dict, "token_embedding.weight").shape
    return IRRAConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=_require(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0],
            num_hidden_layers=_depth(state_dict, "visual."),
            num_attention_heads=_heads("image tower", vision_width),
            num_channels=num_channels,
            image_size=DEFAULT_IMAGE_SIZE,
            patch_size=patch_size,
            patch_stride=strides[-1],
        ),
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_width,
            intermediate_size=_require(state_dict, "transformer.resblocks.0.mlp.c_fc.weight").shape[0],
            num_hidden_layers=_depth(state_dict, ""),
            num_attention_heads=_heads("text tower", text_width),
            max_position_embeddings=_require(state_dict, "positional_embedding").shape[0],
        ),
        projection_dim=_require(state_dict, "visual.proj").shape[-1],
    )


def irra_tensor_shapes(config: IRRAConfig) -> dict[str, tuple[int, ...]]:
    """The inference tensors of IRRA's checkpoints (after `base_model.`) for `config`, with their shapes."""
    vision, text, embed = config.vision_config, config.text_config, config.projection_dim
    width, patch = vision.hidden_size, vision.patch_size
    shapes = {
        "visual.conv1.weight": (width, vision.num_channels, patch, patch),
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (vision.num_positions, width),
        "visual.proj": (width, embed),
        "token_embedding.weight": (text.vocab_size, text.hidden_size),
        "positional_embedding": (text.max_position_embeddings, text.hidden_size),
        "text_projection": (text.hidden_size, embed),
    }
    for name, size in (("visual.ln_pre", width), ("visual.ln_post", width), ("ln_final", text.hidden_size)):
        shapes.update({f"{name}.weight": (size,), f"{name}.bias": (size,)})
    for tower, tower_config in (("visual.transformer", vision), ("transformer", text)):
        w, f = tower_config.hidden_size, tower_config.intermediate_size
        for i in range(tower_config.num_hidden_layers):
            block = f"{tower}.resblocks.{i}."
            shapes.update({
                block + "attn.in_proj_weight": (3 * w, w),
                block + "attn.in_proj_bias": (3 * w,),
                block + "attn.out_proj.weight": (w, w),
                block + "attn.out_proj.bias": (w,),
                block + "mlp.c_fc.weight": (f, w),
                block + "mlp.c_fc.bias": (f,),
                block + "mlp.c_proj.weight": (w, f),
                block + "mlp.c_proj.bias": (w,),
            })
            for norm in ("ln_1", "ln_2"):
                shapes.update({block + f"{norm}.weight": (w,), block + f"{norm}.bias": (w,)})
    return shapes


def convert_irra_state_dict(
    state_dict: dict[str, torch.Tensor], allow_unknown_modules: bool = False
) -> tuple[IRRAModel, list[str]]:
    """
    Build an `IRRAModel` (fp32) from IRRA's state dict (a `module.` prefix is removed). Returns the model and the keys
    left out. Raises, naming IRRA's tensors, on a missing or mis-shaped inference tensor, and on modules outside
    IRRA's layout (a fork that adds inference modules is a different model) unless `allow_unknown_modules`.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    config = infer_irra_config(state_dict)
    shapes = {IRRA_PREFIX + name: shape for name, shape in irra_tensor_shapes(config).items()}

    problems = [f"missing {key} {shape}" for key, shape in shapes.items() if key not in state_dict]
    problems += [
        f"{key} has shape {tuple(state_dict[key].shape)}, expected {shape}"
        for key, shape in shapes.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(f"cannot convert the checkpoint: {shown}")

    ignored = sorted(key for key in state_dict if key not in shapes and key.startswith(TRAINING_ONLY_PREFIXES))
    unknown = sorted(key for key in state_dict if key not in shapes and not key.startswith(TRAINING_ONLY_PREFIXES))
    if unknown and not allow_unknown_modules:
        raise ValueError(
            f"{len(unknown)} tensors are outside IRRA's layout ({', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''}): a fork with extra inference modules is a different model; "
            "pass allow_unknown_modules=True (--allow-unknown-modules) to convert IRRA's part anyway"
        )

    converted = {}
    for key in shapes:
        converted.update(rename_irra_key(key.removeprefix(IRRA_PREFIX), state_dict[key].float()))
    model = IRRAModel(config)
    model.load_state_dict(converted, strict=True)
    model.eval()
    return model, sorted(ignored + unknown)


def convert_irra_checkpoint(
    checkpoint,
    output_dir,
    dtype: str = "float32",
    source: str | None = None,
    license: str = "other",
    allow_unknown_modules: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
):
    """
    Convert `checkpoint` (IRRA's `{"model": state_dict, ...}` `.pth`) into a folder loadable with `AutoModel`
    (weights in `dtype`, config, code, processor, model card naming `source` and `license`); with `push_to_hub` also
    publish it to that repository.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    state_dict = load_state_dict_file(checkpoint)
    model, ignored = convert_irra_state_dict(state_dict, allow_unknown_modules)
    model.to(DTYPES[dtype])
    processor = create_irra_processor(model.config)
    card = irra_model_card(model.config, Path(checkpoint).name, push_to_hub or str(output_dir), ignored, source, license)
    save_model_folder(model, processor, output_dir, overwrite=overwrite, card=card)
    if push_to_hub:
        push_folder_to_hub(output_dir, push_to_hub, f"IRRA-family model converted from {Path(checkpoint).name}")
    return model, ignored


def main(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, type=Path, help="IRRA's .pth checkpoint (e.g. best.pth)")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the converted model to")
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="float32", help="weight dtype of the folder (IRRA saves fp16)"
    )
    parser.add_argument("--source", help="where the checkpoint was obtained (a URL), for the model card")
    parser.add_argument("--license", default="other", help="licence of the released weights, for the model card")
    parser.add_argument(
        "--allow-unknown-modules", action="store_true", help="convert IRRA's part of a checkpoint with extra modules"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also publish the folder to this Hub repository")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model, ignored = convert_irra_checkpoint(
            args.checkpoint,
            args.output,
            dtype=args.dtype,
            source=args.source,
            license=args.license,
            allow_unknown_modules=args.allow_unknown_modules,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
        )
    except (KeyError, ValueError, FileNotFoundError, FileExistsError) as error:
        message = error.args[0] if error.args else str(error)
        sys.exit(f"{args.checkpoint}: {message}")
    vision, text = model.config.vision_config, model.config.text_config
    print(
        f"converted: image tower {vision.num_hidden_layers} layers x {vision.hidden_size} (stride {vision.patch_stride}, "
        f"grid {vision.patch_grid[0]} x {vision.patch_grid[1]}), text tower {text.num_hidden_layers} layers x "
        f"{text.hidden_size}, embedding {model.config.projection_dim}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters in {args.dtype} -> {args.output}"
    )
    modules = Counter(key.split(".", 1)[0] for key in ignored)
    print(f"ignored {len(ignored)} training-only tensors: {', '.join(f'{m} ({n})' for m, n in modules.items()) or '-'}")


if __name__ == "__main__":
    main()
