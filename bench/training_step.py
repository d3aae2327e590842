"""Where one training step of a recipe goes: data, tokenisation, forward, backward, optimiser, as shares of the step.

    python -m bench.training_step                        # the default recipe (training/configs/generated.yaml)
    python -m bench.training_step --threads 2 -- --attn_implementation sdpa   # recipe options after "--"

Times are CPU seconds of the process (`time.process_time`) with `--threads` torch threads (default 1): on a shared
machine they hold where wall-clock times do not, and the shares are what a profile needs. The dataset is the recipe's
(generated first if the recipe says so); its images are resized once before the timed steps, as the training
dataset keeps them after the first epoch.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from modeling_ivt.safe_io import write_json_atomic
from training.augmentation import TrainAugmentation
from training.config import parse_config
from training.engine import build_optimizer_and_scheduler
from training.stage import load_benchmark, resolve_mixed_precision
from training.initialization import build_model_and_processor
from training.loss import contiguous_class_ids
from training.ivt_training import IVTTrainingCollator, IVTTrainingDataset
from training.run import fine_tuning_criterion, identity_classes, select_training_pairs, training_model
from training.sampler import IdentityBatchSampler

PARTS = ("data (views and texts)", "collate (tokenise, stack)", "forward + loss", "backward", "optimizer")


def profile_steps(recipe_args: list[str], steps: int, warmup: int) -> dict:
    config = parse_config(recipe_args)
    config.mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    pairs = select_training_pairs(config, load_benchmark(config, accelerator))
    torch.manual_seed(config.seed)
    model, processor, _ = build_model_and_processor(config)
    augmentation = TrainAugmentation(
        tuple(model.config.image_size), config.pad, config.flip_prob, config.erasing_prob, config.augment
    )
    dataset = IVTTrainingDataset(pairs, augmentation, config.mla, config.word_max_phrases, config.word_level)
    for index in range(len(dataset)):
        dataset.resized_image(index)
    sampler = IdentityBatchSampler(
        dataset.person_ids, config.finetune.ids_per_batch, config.finetune.pairs_per_id, seed=config.seed
    )
    collate = IVTTrainingCollator(processor.tokenizer, config.max_text_length)
    steps_per_epoch = sampler.batches_per_epoch(0)
    optimizer, scheduler = build_optimizer_and_scheduler(
        model, config, steps_per_epoch, steps_per_epoch * config.num_epochs
    )
    class_ids = contiguous_class_ids(dataset.person_ids)
    trained, optimizer = accelerator.prepare(training_model(config, model, len(class_ids)), optimizer)
    seconds = collections.Counter()

    def timed(part, fn):
        start = time.process_time()
        result = fn()
        seconds[part] += time.process_time() - start
        return result

    def optimizer_step():
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    criterion = fine_tuning_criterion(config, accelerator.num_processes)
    sampler.set_epoch(0)
    keys = iter(sampler)
    for step in range(warmup + steps):
        if step == warmup:
            seconds.clear()
        batch_keys = next(keys)
        items = timed(PARTS[0], lambda: [dataset[key] for key in batch_keys])
        batch = timed(PARTS[1], lambda: collate(items))
        generator = torch.Generator().manual_seed(step)

        def forward():
            with accelerator.autocast():
                output = trained(batch["pixel_values"], batch["text_levels"], generator)
                classes = identity_classes(config, class_ids, batch["person_ids"])
                return sum(criterion(output, batch["person_ids"], classes).values())

        loss = timed(PARTS[2], forward)
        timed(PARTS[3], lambda: accelerator.backward(loss))
        timed(PARTS[4], optimizer_step)
    step_seconds = sum(seconds.values()) / steps
    return {
        "recipe_args": recipe_args,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "pairs_per_step": int(batch["pixel_values"].shape[0]),
        "text_lengths": [int(level["input_ids"].shape[1]) for level in batch["text_levels"]],
        "attn_implementation": model.config._attn_implementation,
        "losses": list(config.finetune.loss_names),
        "mixed_precision": config.mixed_precision,
        "cpu_seconds_per_step": step_seconds,
        "shares": {part: seconds[part] / steps / step_seconds for part in PARTS},
    }


def format_profile(profile: dict) -> str:
    lines = [
        f"one training step: {profile['pairs_per_step']} pairs, text lengths {profile['text_lengths']}, "
        f"losses {'+'.join(profile['losses'])}, {profile['threads']} thread(s), "
        f"attention {profile['attn_implementation']}, "
        f"{profile['cpu_seconds_per_step'] * 1000:.0f} CPU ms per step",
        "| part | share of the step |",
        "|---|---:|",
    ]
    lines += [f"| {part} | {100 * share:.0f}% |" for part, share in profile["shares"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own_args = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m bench.training_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", type=Path, default=Path("bench/results/training-step.json"), help="JSON path")
    args = parser.parse_args(own_args)
    torch.set_num_threads(args.threads)
    profile = profile_steps(recipe_args + ["--num_threads", str(args.threads)], args.steps, args.warmup)
    print(format_profile(profile))
    write_json_atomic(args.output, profile)
    print(f"JSON written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
