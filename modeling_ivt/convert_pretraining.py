"""
Move between the pre-training model and the dual encoder:
- `pretraining_from_ivt`: an `IVTForPreTraining` around an existing IVT (e.g. from `convert_vit_bert`), initialised
  as released from a BERT with its pre-training heads: fusion layer i from BERT layer i (self-attention, LayerNorms,
  feed-forward; cross-attention random) and the MLM head from BERT's `cls.predictions`;
- `encoder_from_pretraining`: the `IVTModel` inside a pre-trained model, at a new patch stride (16 -> 12 when moving
  to fine-tuning): the position and type embeddings are resized to the new patch grid, never dropped.

    python -m modeling_ivt.convert_pretraining PRETRAINED_FOLDER --output ivt-finetune-init --patch-stride 12
"""

import itertools
import logging
from pathlib import Path

import torch
from transformers import AutoProcessor

from .cli import CommandParser, user_errors
from .configuration_ivt import IVTConfig
from .conversion_utils import load_state_dict_file, resize_position_grid, save_model_folder
from .convert_vit_bert import KINDS, InitializationReport, canonical_bert_state_dict, take_tensors
from .modeling_ivt import IVTModel
from .modeling_ivt_pretraining import IVTForPreTraining

logger = logging.getLogger(__name__)

GRID_EMBEDDINGS = ("image_embeddings.position_embedding", "image_embeddings.type_embedding")
BERT_FUSION_MAP = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "final_layer_norm",
}


BERT_MLM_HEAD_MAP = {
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.layer_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.layer_norm.bias",
    "cls.predictions.bias": "mlm_head.decoder.bias",
}


def bert_fusion_tensors(bert_state_dict: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """
    BERT layers `0..num_layers-1` as fusion layers `0..num_layers-1` (the released fusion encoder is BERT's first
    layers with cross-attention added) and BERT's MLM head (`cls.predictions`; its decoder weight is the word
    embedding, tied) in `IVTForPreTraining` names. Any layout `canonical_bert_state_dict` reads; the MLM head needs a
    `BertForMaskedLM` or `BertForPreTraining` checkpoint, such as the Hub's bert-base-uncased.
    """
    state_dict = canonical_bert_state_dict(bert_state_dict)
    mapping = {target: name for name, target in BERT_MLM_HEAD_MAP.items()}
    for index, (source, target), kind in itertools.product(range(num_layers), BERT_FUSION_MAP.items(), KINDS):
        mapping[f"fusion_encoder.layers.{index}.{target}.{kind}"] = f"encoder.layer.{index}.{source}.{kind}"
    return take_tensors(state_dict, mapping, "BERT")


def pretraining_from_ivt(
    ivt: IVTModel, bert_state_dict: dict | None = None, **config_overrides
) -> tuple[IVTForPreTraining, InitializationReport]:
    """
    An `IVTForPreTraining` whose dual encoder is a copy of `ivt` and whose fusion layers and MLM head come from the
    BERT checkpoint when given (`bert_fusion_tensors`; a tensor it lacks is an error naming it). `config_overrides`
    set pre-training fields (`fusion_num_hidden_layers`, loss weights, `token_drop_ratio`...); the encoder's shape
    fields must stay as they are.
    """
    config = IVTConfig.from_dict({**ivt.config.to_dict(), **config_overrides})
    config.auto_map = None
    model = IVTForPreTraining(config)
    model.ivt.load_state_dict(ivt.state_dict())
    report = InitializationReport(loaded={f"ivt.{key}": "ivt" for key in ivt.state_dict()})
    if model.mlm_head.decoder.weight is model.get_input_embeddings().weight:
        report.loaded["mlm_head.decoder.weight"] = "ivt (tied to the word embeddings)"
    if bert_state_dict is not None:
        expected = model.state_dict()
        tensors = bert_fusion_tensors(bert_state_dict, config.fusion_num_hidden_layers)
        problems = [
            f"{key}: BERT gives {tuple(value.shape)}, the fusion encoder needs {tuple(expected[key].shape)}"
            for key, value in tensors.items()
            if value.shape != expected[key].shape
        ]
        if problems:
            raise ValueError("the BERT layers do not fit the fusion encoder:\n  " + "\n  ".join(problems))
        model.load_state_dict(tensors, strict=False)
        report.loaded.update(dict.fromkeys(tensors, "bert"))
    report.not_loaded = sorted(key for key in model.state_dict() if key not in report.loaded)
    logger.info("initialised IVTForPreTraining: %s", report.summary())
    return model, report


def encoder_from_pretraining(
    pretrained, patch_stride: int | None = None, image_size=None, **config_overrides
) -> tuple[IVTModel, InitializationReport]:
    """
    The dual encoder of a pre-trained model (an `IVTForPreTraining`, or a folder or weights file of one, or of an
    `IVTModel`) as a new `IVTModel` with `patch_stride` / `image_size` changed if given. Position and type
    embeddings are resized bilinearly from the old patch grid to the new one ([CLS] entry kept); the patch kernel is
    unchanged by a stride change and is copied as is. Everything else must match in shape.
    """
    if isinstance(pretrained, IVTForPreTraining):
        old_config, state_dict = pretrained.config, pretrained.ivt.state_dict()
    else:
        folder = Path(pretrained)
        old_config = IVTConfig.from_pretrained(folder)
        state_dict = load_state_dict_file(folder)
        if any(key.startswith("ivt.") for key in state_dict):
            state_dict = {
                key.removeprefix("ivt."): value for key, value in state_dict.items() if key.startswith("ivt.")
            }
    overrides = dict(config_overrides)
    if patch_stride is not None:
        overrides["patch_stride"] = patch_stride
    if image_size is not None:
        overrides["image_size"] = list(image_size)
    config = IVTConfig.from_dict({**old_config.to_dict(), **overrides})
    config.auto_map = None
    model = IVTModel(config)
    expected = model.state_dict()
    report = InitializationReport()
    tensors = {}
    for key, value in state_dict.items():
        if key in GRID_EMBEDDINGS and value.shape != expected[key].shape:
            tensors[key] = resize_position_grid(value, old_config.patch_grid, config.patch_grid)
            report.notes.append(
                f"{key} resized from grid {tuple(old_config.patch_grid)} (stride {old_config.patch_stride}) to "
                f"{tuple(config.patch_grid)} (stride {config.patch_stride})"
            )
        elif key in expected:
            tensors[key] = value
        else:
            report.unused.append(key)
    problems = [
        f"{key}: pre-trained {tuple(value.shape)}, new config {tuple(expected[key].shape)}"
        for key, value in tensors.items()
        if value.shape != expected[key].shape
    ]
    if problems:
        raise ValueError("the pre-trained encoder does not fit the new config:\n  " + "\n  ".join(problems))
    model.load_state_dict(tensors, strict=False)
    report.loaded = dict.fromkeys(tensors, "pretrained")
    report.not_loaded = sorted(key for key in expected if key not in tensors)
    logger.info("IVT encoder carried over from pre-training: %s", report.summary())
    return model, report


def main(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("pretrained", type=Path, help="a saved IVTForPreTraining folder (with its processor)")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the IVTModel to")
    parser.add_argument("--patch-stride", type=int, default=12, help="stride for fine-tuning (default 12)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with user_errors():
        if not (args.pretrained / "config.json").is_file():
            raise FileNotFoundError(
                f"{args.pretrained} is not a saved model folder (no config.json): give the best/ folder that "
                "pre-training wrote"
            )
        model, report = encoder_from_pretraining(args.pretrained, patch_stride=args.patch_stride)
        processor = AutoProcessor.from_pretrained(args.pretrained)
        save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(report.summary())
    print(f"saved the pre-trained encoder at stride {args.patch_stride} to {args.output}")


if __name__ == "__main__":
    main()
