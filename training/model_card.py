"""The model card of a fine-tuned IVT or IRRA-family model, filled into the `model_card.md` template at the repository
root."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_ivt.hub_utils import PIPELINE_TAG, RISKS, TAGS, USAGE

from .config import TrainingConfig
from .metrics import METRIC_NAMES, metrics_table

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
METRIC_TYPES = {"R@1": "recall_at_1", "R@5": "recall_at_5", "R@10": "recall_at_10", "mAP": "map", "mINP": "minp"}
GENERATED_CAVEAT = (
    "Drawn Pedestrians is procedurally drawn: a model trained only on it is a demonstration of the pipeline, not a "
    "person retrieval system for real photos."
)
DESCRIPTIONS = {
    "ivt": (
        'IVT (Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval", ECCV 2022 '
        "Workshops) for text-based person retrieval: it embeds a free-text description of a pedestrian and pedestrian "
        "photos into one space, so that a gallery can be ranked by cosine similarity to the description. One "
        "transformer is shared by both modalities; only the feed-forward networks and the input embeddings are "
        "modality-specific."
    ),
    "irra": (
        'An IRRA-family dual encoder (Jiang & Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for '
        'Text-to-Image Person Retrieval", CVPR 2023) for text-based person retrieval: a CLIP-style image transformer '
        "and a causal text transformer, without shared weights, each projected into one embedding space, so that a "
        "gallery can be ranked by cosine similarity to a free-text description of a pedestrian."
    ),
}
REAL_CAVEAT = (
    "The benchmark's images were collected from surveillance-style cameras and are licensed for research only; check "
    "that licence before any other use of this model."
)


def _metadata(config: TrainingConfig, dataset_name: str, model_name: str, test_metrics: dict | None) -> ModelCardData:
    eval_results = [
        EvalResult(
            task_type="text-to-image-retrieval",
            task_name="Text-based person retrieval",
            dataset_type=config.dataset,
            dataset_name=dataset_name,
            dataset_split=config.test_split,
            metric_type=METRIC_TYPES[name],
            metric_name=name,
            metric_value=round(float(test_metrics[name]), 2),
        )
        for name in METRIC_NAMES
        if test_metrics
    ]
    base_model = None
    if config.init == "minilm":
        base_model = "sentence-transformers/all-MiniLM-L6-v2"
    elif config.init == "clip":
        base_model = config.clip_path
    elif config.init not in ("random", "vit_bert"):
        base_model = config.init
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license="apache-2.0",
        tags=[config.model.model_type, *TAGS],
        datasets=[dataset_name],
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def _architecture(model_config) -> dict[str, object]:
    """The encoder and image rows of the recipe table, for an IVTConfig or an IRRAConfig."""
    if hasattr(model_config, "vision_config"):
        vision, text = model_config.vision_config, model_config.text_config
        return dict(
            architecture=(
                f"image tower {vision.num_hidden_layers} layers, width {vision.hidden_size}, "
                f"{vision.num_attention_heads} heads; text tower {text.num_hidden_layers} layers, width "
                f"{text.hidden_size}, {text.num_attention_heads} heads, {text.max_position_embeddings} tokens; "
                f"embedding {model_config.projection_dim}"
            ),
            image_height=vision.image_size[0],
            image_width=vision.image_size[1],
            patch_size=vision.patch_size,
            patch_stride=vision.patch_stride,
            num_image_tokens=vision.num_positions,
        )
    return dict(
        architecture=(
            f"{model_config.num_hidden_layers} shared layers, width {model_config.hidden_size}, "
            f"{model_config.num_attention_heads} heads, feed-forward {model_config.intermediate_size}"
        ),
        image_height=model_config.image_size[0],
        image_width=model_config.image_size[1],
        patch_size=model_config.patch_size,
        patch_stride=model_config.patch_stride,
        num_image_tokens=model_config.num_image_tokens,
    )


def _objective(config: TrainingConfig, model_config) -> str:
    """The selected losses in words, with IVT's multi-level alignment and token dropping where they apply."""
    parts = []
    for name in config.finetune.loss_names:
        if name == "cmpm":
            parts.append("CMPM")
        elif name == "sdm":
            parts.append(f"SDM (similarity distribution matching, temperature {config.finetune.temperature})")
        elif name == "id":
            parts.append("ID loss (identity classifier, not saved)")
        elif name == "irr":
            parts.append("IRR (masked-token reasoning through a cross-modal transformer, not saved)")
    objective = " + ".join(parts)
    if config.model.model_type != "ivt":
        return objective
    if config.mla:
        objective += f" with multi-level alignment (sentence / phrase / word level, word level: {config.word_level})"
    objective += (
        f", bidirectional token dropping up to {model_config.token_drop_ratio:.0%} of the tokens"
        if model_config.token_drop_ratio > 0
        else ", no token dropping"
    )
    return objective


def build_model_card(
    config: TrainingConfig,
    *,
    model_config,
    dataset_name: str,
    init_source: str,
    test_metrics: dict | None,
    best_epoch: int | None,
    selection_split: str | None,
    num_processes: int,
    trained_epochs: int,
    trained_steps: int,
    repo_id: str | None = None,
) -> ModelCard:
    """A ModelCard with YAML metadata (incl. a model-index of the test metrics), recipe, usage and risks."""
    run_name = Path(config.output_dir).name
    prefix = config.model.model_type
    default_name = run_name if run_name.startswith(prefix) else f"{prefix}-{run_name}"
    model_name = repo_id.split("/")[-1] if repo_id else default_name
    effective_items = config.finetune.items_per_batch * num_processes * config.gradient_accumulation_steps
    levels = 3 if config.mla and config.model.model_type == "ivt" else 1
    if selection_split and best_epoch is not None:
        selection = (
            f"on the **{selection_split}** split (best R@1, epoch {best_epoch}); the test split was evaluated once"
        )
    else:
        selection = "as the last epoch (no validation split); the test split was evaluated once"
    if config.lr_schedule == "irra":
        schedule = (
            f"per epoch: linear warm-up of the factor from {config.warmup_factor} over {int(config.warmup_epochs)} "
            f"epoch(s), then cosine to 0 at epoch {config.num_epochs}"
        )
    else:
        schedule = (
            f"linear warm-up from {config.warmup_start_lr} over {config.warmup_epochs} epoch(s), cosine to "
            f"{config.min_lr} "
            f"{'after the warm-up' if config.warmup_prefix else 'from epoch 0 (warm-up overriding its start)'}"
            f", updated every {config.schedule_unit}"
        )
    if not config.augment:
        augmentation = "none (test-time resize only)"
    elif config.model.model_type == "irra":
        augmentation = (
            f"bilinear resize, flip {config.flip_prob}, pad {config.pad}, random crop, random erasing "
            f"{config.erasing_prob} filled with the mean"
        )
    else:
        augmentation = (
            f"bicubic resize, pad {config.pad}, random crop, flip {config.flip_prob}, random erasing "
            f"{config.erasing_prob}; drawn independently per view"
        )
    if config.finetune.sampler == "random":
        sampler = f"random, {config.finetune.batch_size} pairs per process and batch"
    else:
        sampler = f"{config.finetune.ids_per_batch} identities x {config.finetune.pairs_per_id} pairs per process and batch"
    optimiser = (
        f"{config.optimizer}, peak learning rate {config.learning_rate} (biases x{config.bias_lr_factor}), "
        f"weight decay {config.weight_decay}"
    )
    if config.optimizer == "adam":
        optimiser += (
            f", epsilon {config.adam_epsilon}; parameters named cross / classifier / mlm_head "
            f"x{config.head_lr_factor}; bias weight decay {config.bias_weight_decay}"
        )
    fields = dict(
        metadata=_metadata(config, dataset_name, model_name, test_metrics).to_yaml(),
        model_name=model_name,
        dataset_name=dataset_name,
        dataset_path=config.dataset,
        test_split=config.test_split,
        test_table=metrics_table(test_metrics),
        selection=selection,
        init_source=init_source,
        model_description=DESCRIPTIONS[config.model.model_type],
        **_architecture(model_config),
        objective=_objective(config, model_config),
        loss_scope="per process (as released)" if config.finetune.local_loss else "over the features of all processes",
        augmentation=augmentation,
        sampler=sampler,
        effective_batch_size=effective_items,
        effective_pairs=effective_items * levels,
        num_processes=num_processes,
        items_per_batch=config.finetune.items_per_batch,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        optimiser=optimiser,
        schedule=schedule,
        trained_epochs=trained_epochs,
        trained_steps=trained_steps,
        mixed_precision=config.mixed_precision,
        seed=config.seed,
        usage=USAGE.format(repo=repo_id or "path/to/best"),
        risks=RISKS,
        dataset_caveat=GENERATED_CAVEAT if "drawn" in dataset_name.lower() else REAL_CAVEAT,
    )
    return ModelCard(TEMPLATE.read_text(encoding="utf-8").format(**fields))
