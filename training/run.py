"""Fine-tune IVT on a built benchmark with accelerate: one code path for a CPU, one GPU, many GPUs and many machines.

    accelerate launch training/run.py                       # default recipe: training/configs/generated.yaml
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 training/run.py --num_epochs 2   # 2 CPU processes
    accelerate launch training/run.py --config training/configs/cuhk_pedes.yaml --dataset data/cuhk-pedes
    accelerate launch training/run.py --model.hidden_size 384 --finetune.ids_per_batch 8   # recipe values overridden
    accelerate launch training/run.py --output_dir outputs/run --resume_from_checkpoint latest
    accelerate launch training/run.py --config training/configs/pretrain_generated.yaml       # the pre-training stage

At the end the best-on-validation model (weights, processor, model card) is in OUTPUT_DIR/best, the test metrics are
printed and OUTPUT_DIR/results.json holds them with the timings and the full configuration.
"""

from __future__ import annotations

import time

START_TIME = time.time()

import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datasets  # noqa: E402
import torch  # noqa: E402

from dataset_scripts.generate import BENCHMARK_NAME  # noqa: E402
from dataset_scripts.views import training_pairs  # noqa: E402
from modeling_ivt.cli import user_errors  # noqa: E402
from modeling_ivt.conversion_utils import save_model_folder  # noqa: E402
from training.augmentation import IRRATrainAugmentation, TrainAugmentation  # noqa: E402
from training.config import TrainingConfig, parse_config  # noqa: E402
from training.engine import (  # noqa: E402
    backward_and_step,
    batch_to_device,
    build_optimizer_and_scheduler,
    derived_seed,
)
from training.initialization import build_irra_model_and_processor, build_model_and_processor  # noqa: E402
from training.irra_training import IRRAForRetrievalTraining, IRRATrainingDataset, collate_irra_items  # noqa: E402
from training.loss import RetrievalLoss, contiguous_class_ids  # noqa: E402
from training.ivt_training import IVTForRetrievalTraining, IVTTrainingCollator, IVTTrainingDataset  # noqa: E402
from training.metrics import METRIC_NAMES, metrics_table  # noqa: E402
from training.model_card import build_model_card  # noqa: E402
from training.pretrain import pretrain  # noqa: E402
from training.retrieval import evaluate_split  # noqa: E402
from training.sampler import IdentityBatchSampler, RandomBatchSampler  # noqa: E402
from training.stage import (  # noqa: E402
    BEST_DIR,
    RESULTS_FILE,
    configure_logging,
    load_benchmark,
    start_stage,
)
from training.text_levels import caption_word_starts  # noqa: E402

logger = logging.getLogger("training.run")


def dataset_display_name(config: TrainingConfig) -> str:
    """The benchmark's `pretty_name` from its dataset card, else its folder name."""
    card = Path(config.dataset) / "README.md"
    if card.is_file():
        for line in card.read_text(encoding="utf-8").splitlines():
            if line.startswith("pretty_name:"):
                return line.split(":", 1)[1].strip()
    return BENCHMARK_NAME if config.generate_benchmark else Path(config.dataset).name


def check_splits(config: TrainingConfig, dataset_dict: datasets.DatasetDict) -> None:
    splits = {
        "train_split": config.train_split,
        "finetune.validation_split": config.finetune.validation_split,
        "test_split": config.test_split,
    }
    for option, split in splits.items():
        if split is not None and split not in dataset_dict:
            raise ValueError(
                f"--{option} {split}: {config.dataset} has no such split (it has {', '.join(dataset_dict)}); "
                f"pass --{option} null to skip it"
            )


def select_training_pairs(config: TrainingConfig, dataset_dict: datasets.DatasetDict) -> datasets.Dataset:
    pairs = training_pairs(dataset_dict[config.train_split])
    limit = config.finetune.train_caption_words
    if limit is not None and config.finetune.long_train_captions == "drop":
        captions = pairs["caption"]
        pairs = pairs.select([index for index, text in enumerate(captions) if len(caption_word_starts(text)) <= limit])
        logger.info("left out %d training captions of more than %d words", len(captions) - len(pairs), limit)
    if config.finetune.max_train_ids is not None:
        kept = set(sorted(set(pairs["person_id"]))[: config.finetune.max_train_ids])
        pairs = pairs.filter(lambda batch: [pid in kept for pid in batch["person_id"]], batched=True)
    return pairs


def training_data(config: TrainingConfig, model, processor, pairs: datasets.Dataset, accelerator):
    """The model family's training dataset and collate function, and the selected sampler over it."""
    if config.model.model_type == "irra":
        image_processor = processor.image_processor
        augmentation = IRRATrainAugmentation(
            tuple(model.config.vision_config.image_size),
            tuple(image_processor.image_mean),
            tuple(image_processor.image_std),
            config.pad,
            config.flip_prob,
            config.erasing_prob,
            enabled=config.augment,
        )
        mask_token_id = processor.tokenizer.mask_token_id if "irr" in config.finetune.loss_names else None
        dataset = IRRATrainingDataset(pairs, augmentation, processor, mask_token_id)
        collate = collate_irra_items
    else:
        augmentation = TrainAugmentation(
            tuple(model.config.image_size), config.pad, config.flip_prob, config.erasing_prob, config.augment
        )
        cut_words = config.finetune.train_caption_words if config.finetune.long_train_captions == "cut" else None
        dataset = IVTTrainingDataset(
            pairs, augmentation, config.mla, config.word_max_phrases, config.word_level, max_caption_words=cut_words
        )
        collate = IVTTrainingCollator(processor.tokenizer, config.max_text_length)
    distributed = dict(num_replicas=accelerator.num_processes, rank=accelerator.process_index, seed=config.seed)
    if config.finetune.sampler == "random":
        sampler = RandomBatchSampler(len(dataset), config.finetune.batch_size, **distributed)
    else:
        sampler = IdentityBatchSampler(dataset.person_ids, config.finetune.ids_per_batch, config.finetune.pairs_per_id, **distributed)
    return dataset, collate, sampler


def training_model(config: TrainingConfig, model, num_train_ids: int) -> torch.nn.Module:
    """The saved model wrapped with the training-only heads its losses need."""
    classes = num_train_ids if "id" in config.finetune.loss_names else None
    if config.model.model_type == "irra":
        return IRRAForRetrievalTraining(model, classes, irr="irr" in config.finetune.loss_names)
    return IVTForRetrievalTraining(model, classes)


def fine_tuning_criterion(config: TrainingConfig, world_size: int) -> RetrievalLoss:
    """The recipe's losses (`finetune.losses`), over the global batch of `world_size` processes unless `local_loss`."""
    return RetrievalLoss(
        config.finetune.loss_names,
        1.0 / config.finetune.temperature,
        local_loss=config.finetune.local_loss,
        world_size=world_size,
    )


def identity_classes(
    config: TrainingConfig, class_ids: dict[int, int], person_ids: torch.Tensor
) -> torch.Tensor | None:
    """The ID loss's class index of each item (None when the recipe has no ID loss)."""
    if "id" not in config.finetune.loss_names:
        return None
    return torch.tensor([class_ids[pid] for pid in person_ids.tolist()], device=person_ids.device)


def train_one_epoch(
    *, accelerator, model, optimizer, scheduler, loader, sampler, progress, config, total_steps, bar, class_ids, checkpoints
) -> None:
    """Optimiser steps over the rest of this epoch's batches (a multiple of the accumulation steps)."""
    model.train()
    criterion = fine_tuning_criterion(config, accelerator.num_processes)
    accumulation = config.gradient_accumulation_steps
    usable_batches = sampler.batches_per_epoch() // accumulation * accumulation
    running_loss, running_count = 0.0, 0
    for batch in loader:
        if sampler.batches_consumed >= usable_batches or progress.global_step >= total_steps:
            break
        batch = batch_to_device(batch, accelerator.device)
        person_ids = batch.pop("person_ids")
        classes = identity_classes(config, class_ids, person_ids)
        if config.model.model_type == "ivt":
            generator_device = "cuda" if accelerator.device.type == "cuda" else "cpu"
            batch["token_drop_generator"] = torch.Generator(generator_device).manual_seed(
                derived_seed(
                    config.seed, "token-drop", progress.epoch, sampler.batches_consumed, accelerator.process_index
                )
            )
        with accelerator.accumulate(model):
            terms = criterion(model(**batch), person_ids, classes)
            loss = sum(terms.values())
            backward_and_step(accelerator, model, optimizer, scheduler, loss, config.max_grad_norm)
        sampler.batches_consumed += 1
        running_loss += loss.detach().float().item()
        running_count += 1
        if accelerator.sync_gradients:
            progress.global_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=progress.epoch)
            if progress.global_step % config.logging_steps == 0:
                logs = {"train/loss": running_loss / running_count, "train/lr": scheduler.get_last_lr()[0]}
                if len(terms) > 1:
                    logs.update({f"train/loss_{name}": term.item() for name, term in terms.items()})
                accelerator.log(logs, step=progress.global_step)
                running_loss, running_count = 0.0, 0
            if config.checkpointing_steps and progress.global_step % config.checkpointing_steps == 0:
                checkpoints.save()


def finetune(config: TrainingConfig, start_time: float | None = None) -> dict:
    """Train, select on validation, evaluate on test, save `best/` and `results.json`; returns the results."""
    stage = start_stage(config, start_time)
    accelerator = stage.accelerator
    dataset_dict = load_benchmark(config, accelerator)
    check_splits(config, dataset_dict)
    pairs = select_training_pairs(config, dataset_dict)

    head_tensors = {}
    if config.model.model_type == "irra":
        model, processor, init_source, head_tensors = build_irra_model_and_processor(config)
    else:
        model, processor, init_source = build_model_and_processor(config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    train_dataset, collate, sampler = training_data(config, model, processor, pairs, accelerator)
    loader = torch.utils.data.DataLoader(
        train_dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        generator=torch.Generator(),
    )
    class_ids = contiguous_class_ids(train_dataset.person_ids)
    steps_per_epoch = sampler.batches_per_epoch(0) // config.gradient_accumulation_steps
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_train_steps is not None:
        total_steps = min(total_steps, config.max_train_steps)
    wrapped = training_model(config, model, len(class_ids))
    if head_tensors:
        loaded = wrapped.load_training_heads(head_tensors)
        logger.info("training heads from %s: %d of %d tensors loaded", init_source, len(loaded), len(head_tensors))
    optimizer, scheduler = build_optimizer_and_scheduler(wrapped, config, steps_per_epoch, total_steps)
    model, optimizer, progress, checkpoints = stage.prepare_training(
        wrapped, optimizer, scheduler, {"sampler": sampler}, "ivt"
    )

    effective_batch_size = config.finetune.items_per_batch * accelerator.num_processes * config.gradient_accumulation_steps
    logger.info(
        "training %s on %d pairs (%d identities): %d processes, %d items per optimiser step, %d steps",
        init_source,
        len(pairs),
        len(class_ids),
        accelerator.num_processes,
        effective_batch_size,
        total_steps,
    )
    best_dir = stage.best_dir
    validation = dataset_dict[config.finetune.validation_split] if config.finetune.validation_split else None
    bar = stage.step_bar(total_steps, progress.global_step, "Training")
    while progress.epoch < config.num_epochs and progress.global_step < total_steps:
        sampler.set_epoch(progress.epoch)
        train_one_epoch(
            accelerator=accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            loader=loader,
            sampler=sampler,
            progress=progress,
            config=config,
            total_steps=total_steps,
            bar=bar,
            class_ids=class_ids,
            checkpoints=checkpoints,
        )
        progress.epoch += 1
        sampler.set_epoch(progress.epoch)
        last = progress.epoch >= config.num_epochs or progress.global_step >= total_steps
        if validation is not None and (progress.epoch % config.finetune.eval_every_epochs == 0 or last):
            unwrapped = accelerator.unwrap_model(model).model
            unwrapped.eval()
            metrics = evaluate_split(
                unwrapped, processor, validation, batch_size=config.eval_batch_size, accelerator=accelerator
            )
            accelerator.log(
                {f"validation/{name}": value for name, value in metrics.items()}, step=progress.global_step
            )
            progress.history.append({"epoch": progress.epoch, "step": progress.global_step, **metrics})
            logger.info("epoch %d validation: %s", progress.epoch, metrics)
            if progress.best_score is None or metrics["R@1"] > progress.best_score:
                progress.best_score, progress.best_epoch, progress.best_metrics = (
                    metrics["R@1"],
                    progress.epoch,
                    metrics,
                )
                if accelerator.is_main_process:
                    save_model_folder(unwrapped, processor, best_dir, overwrite=True)
        elif validation is None and last:
            progress.best_epoch = progress.epoch
            if accelerator.is_main_process:
                save_model_folder(accelerator.unwrap_model(model).model, processor, best_dir, overwrite=True)
        if not config.checkpointing_steps:
            checkpoints.save()
    bar.close()
    accelerator.wait_for_everyone()

    saved_class = type(accelerator.unwrap_model(model).model)
    best_model = saved_class.from_pretrained(best_dir, dtype=torch.float32).to(accelerator.device).eval()
    test_metrics = None
    if config.test_split:
        test_metrics = evaluate_split(
            best_model,
            processor,
            dataset_dict[config.test_split],
            batch_size=config.eval_batch_size,
            accelerator=accelerator,
        )
        accelerator.log({f"test/{name}": value for name, value in test_metrics.items()}, step=progress.global_step)
    results = stage.results(
        test=test_metrics,
        validation=progress.best_metrics,
        best_epoch=progress.best_epoch,
        effective_batch_size=effective_batch_size,
        trained_steps=progress.global_step,
        validation_history=progress.history,
    )
    dataset_name = dataset_display_name(config)

    def model_card():
        return build_model_card(
            config,
            model_config=best_model.config,
            dataset_name=dataset_name,
            init_source=init_source,
            test_metrics=test_metrics,
            best_epoch=progress.best_epoch if validation is not None else None,
            selection_split=config.finetune.validation_split,
            num_processes=accelerator.num_processes,
            trained_epochs=progress.epoch,
            trained_steps=progress.global_step,
            repo_id=config.push_to_hub,
        )

    family = saved_class.__name__.removesuffix("Model")
    return stage.finish(results, model_card, commit_message=f"{family} fine-tuned on {dataset_name}")


STAGES = {"finetune": finetune, "pretrain": pretrain}


def print_summary(results: dict, output_dir: Path) -> None:
    print()
    if results["test"]:
        print(f"Test metrics ({results['config']['test_split']} split):")
        print(metrics_table(results["test"]))
    if results["validation"]:
        print(
            f"Best validation (epoch {results['best_epoch']}): "
            + ", ".join(f"{name} {results['validation'][name]:.2f}" for name in METRIC_NAMES)
        )
    print(f"Model, processor and model card: {output_dir / BEST_DIR}")
    print(f"Results: {output_dir / RESULTS_FILE}  (wall time {results['wall_time_s']:.0f} s)")


def main(argv: list[str] | None = None) -> dict:
    configure_logging()
    config = parse_config(argv, description=__doc__)
    results = STAGES[config.stage](config, start_time=START_TIME)
    if results["wall_time_s"] is not None:
        print_summary(results, Path(config.output_dir))
    return results


if __name__ == "__main__":
    with user_errors():
        main()
