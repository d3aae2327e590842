"""The pre-training stage (`training/run.py --stage pretrain`): ITC + ITM + MLM (optionally CMPM) on an
image-caption corpus, with the fine-tuning stage's accelerator, optimiser, schedule, checkpoint/resume and tracker
machinery (training.stage, training.engine).

    accelerate launch training/run.py --stage pretrain --config training/configs/pretrain.yaml --pretrain.corpus pairs.json
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 training/run.py --stage pretrain ...  # 2 CPU processes

The corpus is read as a stream (dataset_scripts.pretraining.pair_corpus: JSON, imagefolder or any Hugging Face
dataset, streaming included) in endless passes, each shuffled through a seeded buffer; every process reads the same
stream and keeps its slice of each global batch, so no corpus length is needed and a resumed run continues with the
exact batch where it stopped. Without `--pretrain.corpus`, the benchmark at `--dataset` lends its training captions as a
generic corpus (each caption its own pair, person ids ignored).

At the end OUTPUT_DIR/best holds the pre-trained `IVTForPreTraining` with its processor and card, and
OUTPUT_DIR/results.json the run's timings, final losses and, where the benchmark is there, the zero-shot retrieval
metrics of its dual encoder. Fine-tune from it with `--init OUTPUT_DIR/best` (the encoder is moved to the fine-tuning
patch stride by modeling_ivt.convert_pretraining).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from transformers import AutoProcessor

from dataset_scripts.pretraining import pair_corpus
from dataset_scripts.views import training_pairs
from modeling_ivt import IVTConfig, IVTForPreTraining
from modeling_ivt.conversion_utils import load_state_dict_file, save_model_folder
from modeling_ivt.convert_pretraining import pretraining_from_ivt

from .augmentation import TrainAugmentation
from .config import TrainingConfig
from .engine import backward_and_step, build_optimizer_and_scheduler, derived_seed
from .initialization import build_model_and_processor, checkpoint_overrides
from .loss import PreTrainingObjective
from .pretraining_data import MaskingSettings, PretrainingCollator
from .retrieval import evaluate_split
from .stage import load_benchmark, start_stage

logger = logging.getLogger(__name__)

LOSS_NAMES = ("loss", "itc_loss", "itm_loss", "mlm_loss", "cmpm_loss")


class BenchmarkCaptionCorpus:
    """A built benchmark split as a generic pair corpus: every (image, caption) its own pair, person ids ignored."""

    def __init__(self, split_ds, chunk_size: int = 64):
        self.pairs = training_pairs(split_ds)
        self.chunk_size = chunk_size
        self.describe = f"benchmark split of {len(self.pairs)} captions"

    def __iter__(self):
        for start in range(0, len(self.pairs), self.chunk_size):
            chunk = self.pairs[start : start + self.chunk_size]
            for offset, (image, caption) in enumerate(zip(chunk["image"], chunk["caption"], strict=True)):
                yield {"image": image, "caption": caption, "pair_id": start + offset}


def shuffled(pairs, buffer_size: int, rng: random.Random):
    """Shuffle a stream through a buffer of `buffer_size` pairs (the whole stream when it is smaller)."""
    buffer = []
    for pair in pairs:
        buffer.append(pair)
        if len(buffer) >= buffer_size:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class PairStream:
    """
    Endless shuffled passes over a corpus, cut into global batches of `batch_size x num_processes` pairs, of which
    this process keeps its `batch_size` slice; an incomplete last batch of a pass is dropped. `batches_consumed`
    (advanced by the training loop, saved with every checkpoint) makes a new iterator skip what was already trained on.
    """

    def __init__(self, corpus, batch_size: int, num_processes: int, process_index: int, buffer_size: int, seed: int):
        self.corpus = corpus
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.buffer_size = buffer_size
        self.seed = seed
        self.batches_consumed = 0
        self.passes = 0

    def state_dict(self) -> dict:
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state: dict) -> None:
        self.batches_consumed = state["batches_consumed"]

    def __iter__(self):
        global_batch = self.batch_size * self.num_processes
        start, end = self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size
        produced, skip = 0, self.batches_consumed
        self.passes = 0
        while True:
            rng = random.Random(derived_seed(self.seed, "corpus-shuffle", self.passes))
            group, batches_this_pass = [], 0
            for pair in shuffled(self.corpus, self.buffer_size, rng):
                group.append(pair)
                if len(group) == global_batch:
                    batches_this_pass += 1
                    if produced >= skip:
                        yield group[start:end]
                    produced += 1
                    group = []
            if batches_this_pass == 0:
                raise ValueError(
                    f"the pre-training corpus ({getattr(self.corpus, 'describe', self.corpus)}) has fewer usable pairs "
                    f"({len(group)}) than one global batch ({self.batch_size} x {self.num_processes} processes)"
                )
            self.passes += 1


def build_corpus(config: TrainingConfig, dataset_dict):
    if config.pretrain.corpus is None:
        if dataset_dict is None:
            raise ValueError("--stage pretrain needs --pretrain.corpus, or a benchmark at --dataset whose captions it can use")
        return BenchmarkCaptionCorpus(dataset_dict[config.train_split])
    return pair_corpus(config.pretrain.corpus, config.pretrain.corpus_image_column, config.pretrain.corpus_text_column)


def _fusion_bert_state(config: TrainingConfig) -> tuple[dict | None, str]:
    """BERT weights for the fusion layers and the MLM head: `fusion_init`, else the BERT of init=vit_bert."""
    source = config.pretrain.fusion_init or (config.bert_path if config.init == "vit_bert" else None)
    if source is None:
        return None, "random fusion layers and MLM head"
    return load_state_dict_file(source), f"fusion layers and MLM head from {source}"


def build_pretraining_model(config: TrainingConfig):
    """The model to pre-train: a saved `IVTForPreTraining` (to continue), or a new one around the initial IVT."""
    pretraining_fields = checkpoint_overrides(config.model, IVTConfig.pretraining_settings)
    saved_config = Path(config.init) / "config.json"
    if saved_config.is_file() and "IVTForPreTraining" in json.loads(saved_config.read_text()).get("architectures", []):
        model = IVTForPreTraining.from_pretrained(config.init, dtype=torch.float32, **pretraining_fields)
        return model, AutoProcessor.from_pretrained(config.init), f"pre-training checkpoint {config.init}"
    ivt, processor, init_source = build_model_and_processor(config)
    bert_state, fusion_source = _fusion_bert_state(config)
    model, report = pretraining_from_ivt(ivt, bert_state, **pretraining_fields)
    logger.info("pre-training model: %s", report.summary())
    return model, processor, f"{init_source}; {fusion_source}"


def pretraining_model_card(config: TrainingConfig, init_source: str, results: dict) -> ModelCard:
    metrics = results["test"]
    zero_shot = (
        "Zero-shot retrieval of the dual encoder on the benchmark's "
        f"{config.test_split} split: " + ", ".join(f"{name} {value:.2f}" for name, value in metrics.items())
        if metrics
        else "No retrieval evaluation was run."
    )
    corpus = config.pretrain.corpus or f"the training captions of {config.dataset} (each caption its own pair)"
    return ModelCard(
        f"""---
library_name: transformers
license: apache-2.0
tags:
- text-based-person-retrieval
- ivt
- vision-language-pretraining
---

# IVT pre-trained with ITC + ITM + MLM

IVT's shared image/text encoder with a {config.model.fusion_num_hidden_layers}-layer fusion encoder, pre-trained on
{corpus} for {results["trained_steps"]} steps ({results["num_processes"]} process(es), {results["effective_batch_size"]}
pairs per step). Initialisation: {init_source}. Loss weights ITC {config.model.itc_loss_weight}, ITM {config.model.itm_loss_weight},
MLM {config.model.mlm_loss_weight}, CMPM {config.model.cmpm_loss_weight}.

Load the pre-training model with `AutoModelForPreTraining` or only its dual encoder with `AutoModel` (both with
`trust_remote_code=True` without the ivt-hf package). Before fine-tuning at another patch stride, convert it:
`python -m modeling_ivt.convert_pretraining THIS_FOLDER --output ivt-init --patch-stride 12`.

{zero_shot}
"""
    )


def pretrain(config: TrainingConfig, start_time: float | None = None) -> dict:
    """Pre-train, save `best/` (the final model) and `results.json`; returns the results."""
    if config.max_train_steps is None:
        raise ValueError("--stage pretrain reads the corpus as an endless stream: set --max_train_steps")
    stage = start_stage(config, start_time)
    accelerator = stage.accelerator
    dataset_dict = None
    if config.generate_benchmark or Path(config.dataset).is_dir():
        dataset_dict = load_benchmark(config, accelerator)

    model, processor, init_source = build_pretraining_model(config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    stream = PairStream(
        build_corpus(config, dataset_dict),
        config.pretrain.batch_size,
        accelerator.num_processes,
        accelerator.process_index,
        config.pretrain.corpus_shuffle_buffer,
        config.seed,
    )
    masking = MaskingSettings(probability=config.pretrain.mlm_probability, max_masked_tokens=config.pretrain.mlm_max_masked_tokens)
    augmentation = TrainAugmentation(
        tuple(model.config.image_size), config.pad, config.flip_prob, config.erasing_prob, config.augment
    )
    collator = PretrainingCollator(
        processor.tokenizer,
        augmentation,
        masking,
        max_words=config.pretrain.max_caption_words,
        max_length=config.pretrain.max_caption_tokens,
        mla=config.mla,
        word_max_phrases=config.word_max_phrases,
        word_mode=config.word_level,
    )

    total_steps = config.max_train_steps
    steps_per_epoch = max(1, total_steps // config.num_epochs)
    optimizer, scheduler = build_optimizer_and_scheduler(model, config, steps_per_epoch, total_steps)
    objective, optimizer, progress, checkpoints = stage.prepare_training(
        PreTrainingObjective(model, stage.accelerator.num_processes), optimizer, scheduler, {"stream": stream}, "ivt-pretraining"
    )
    effective_batch_size = config.pretrain.batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    if config.mla:
        logger.info("MLA: every pair is trained as 3 (view, text level) pairs sharing its pair id")
    logger.info(
        "pre-training %s: %d processes, %d pairs per optimiser step, %d steps",
        init_source,
        accelerator.num_processes,
        effective_batch_size,
        total_steps,
    )

    objective.train()
    bar = stage.step_bar(total_steps, progress.global_step, "Pre-training")
    generator_device = "cuda" if accelerator.device.type == "cuda" else "cpu"
    running: dict[str, list[float]] = {}
    last_losses: dict[str, float] = {}
    batches = iter(stream)
    while progress.global_step < total_steps:
        pairs = next(batches)
        draw_seed = derived_seed(config.seed, "pretrain", stream.batches_consumed, accelerator.process_index)
        collator.rng.seed(draw_seed)
        batch = {name: tensor.to(accelerator.device) for name, tensor in collator(pairs).items()}
        generator = torch.Generator(generator_device).manual_seed(draw_seed)
        with accelerator.accumulate(objective):
            outputs = objective(**batch, generator=generator)
            backward_and_step(accelerator, objective, optimizer, scheduler, outputs.loss, config.max_grad_norm)
        stream.batches_consumed += 1
        for name in LOSS_NAMES:
            value = getattr(outputs, name)
            if value is not None:
                running.setdefault(name, []).append(value.detach().float().item())
        if not accelerator.sync_gradients:
            continue
        progress.global_step += 1
        progress.epoch = progress.global_step // steps_per_epoch
        bar.update(1)
        bar.set_postfix(loss=f"{outputs.loss.item():.3f}")
        if progress.global_step % config.logging_steps == 0 or progress.global_step == total_steps:
            last_losses = {name: sum(values) / len(values) for name, values in running.items()}
            accelerator.log(
                {
                    **{f"train/{name}": value for name, value in last_losses.items()},
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/temperature": outputs.temperature.item(),
                    "train/corpus_passes": stream.passes,
                },
                step=progress.global_step,
            )
            running = {}
        at_epoch_end = progress.global_step % steps_per_epoch == 0
        if (config.checkpointing_steps and progress.global_step % config.checkpointing_steps == 0) or (
            not config.checkpointing_steps and at_epoch_end
        ):
            checkpoints.save()
    bar.close()
    accelerator.wait_for_everyone()

    unwrapped = accelerator.unwrap_model(objective).model
    if accelerator.is_main_process:
        save_model_folder(unwrapped, processor, stage.best_dir, overwrite=True)
    test_metrics = None
    if dataset_dict is not None and config.test_split:
        unwrapped.eval()
        test_split = dataset_dict[config.test_split]
        test_metrics = evaluate_split(
            unwrapped.ivt, processor, test_split, batch_size=config.eval_batch_size, accelerator=accelerator
        )
        accelerator.log(
            {f"test/zero_shot_{name}": value for name, value in test_metrics.items()}, step=progress.global_step
        )
    results = stage.results(
        test=test_metrics,
        validation=None,
        best_epoch=progress.epoch,
        effective_batch_size=effective_batch_size,
        trained_steps=progress.global_step,
        corpus_passes=stream.passes,
        final_losses=last_losses,
    )
    return stage.finish(
        results,
        lambda: pretraining_model_card(config, init_source, results),
        commit_message="IVT pre-trained with ITC + ITM + MLM",
    )
