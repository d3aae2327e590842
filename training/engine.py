"""The training loop's machinery, shared by every stage: optimiser and learning-rate schedule, progress state,
deterministic per-step randomness, batches on the device. How a stage starts and ends is training.stage's."""

from __future__ import annotations

import math
import random

import torch

from .config import TrainingConfig
from .irra_recipe import build_irra_optimizer, build_irra_scheduler


def derived_seed(*parts) -> int:
    """A 63-bit seed that depends only on `parts` (same on every run, platform and process start method)."""
    return random.Random("-".join(str(part) for part in parts)).getrandbits(63)


def build_optimizer(
    model: torch.nn.Module,
    name: str,
    learning_rate: float,
    weight_decay: float,
    bias_lr_factor: float = 1.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over two groups: weights at `learning_rate`, biases at `bias_lr_factor` times it."""
    weights, biases = [], []
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (biases if parameter_name.endswith(".bias") else weights).append(parameter)
    groups = [
        {"params": weights, "lr": learning_rate},
        {"params": biases, "lr": learning_rate * bias_lr_factor},
    ]
    # One fused kernel per parameter (CPU and GPU): the per-operation loop costs several times more on a small model.
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, weight_decay=weight_decay, fused=True)
    raise ValueError(f"optimizer must be sgd or adamw, got {name!r}")


def warmup_cosine_rate(
    position: float,
    base_lr: float,
    cosine_end: float,
    warmup: float,
    warmup_start_lr: float,
    min_lr: float,
    warmup_prefix: bool,
) -> float:
    """
    Learning rate of a parameter group whose peak is `base_lr`, at `position` of a warm-up + cosine schedule (timm's
    `CosineLRScheduler`, the released one): below `warmup`, linear from `warmup_start_lr` towards the peak,
    `warmup_start_lr + position (base_lr - warmup_start_lr) / warmup`; then the cosine
    `min_lr + 0.5 (base_lr - min_lr) (1 + cos(pi progress))`, `min_lr` from `cosine_end` on. Without `warmup_prefix`
    (released) the cosine runs from position 0 (`progress = position / cosine_end`) and the warm-up overrides its
    start; with it the cosine starts after the warm-up (`progress = (position - warmup) / (cosine_end - warmup)`).
    `warmup_start_lr` and `min_lr` are the same absolute rates for every group.
    """
    if position < warmup:
        return warmup_start_lr + position * (base_lr - warmup_start_lr) / warmup
    start = warmup if warmup_prefix else 0.0
    progress = min(1.0, (position - start) / max(1.0, cosine_end - start))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    total_steps: int,
    warmup_epochs: float,
    warmup_start_lr: float,
    min_lr: float,
    per_epoch: bool,
    warmup_prefix: bool,
    first_epoch: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """
    `warmup_cosine_rate` for every parameter group (its own peak: the group's rate when the scheduler is built),
    stepped once per optimiser step. Positions count optimiser steps from the schedule's epoch 0; training starts at
    epoch `first_epoch` (the released CUHK-PEDES loop counts epochs 1..120, the ICFG-PEDES and RSTPReid loops
    0..120). With `per_epoch` the rate is held for each epoch at its value at the epoch's start (the released
    scheduler is stepped with the epoch number). Without `warmup_prefix` the cosine reaches `min_lr` at the last
    epoch (or step), as in both released loops; with it at the end of training.
    """
    warmup = round(warmup_epochs * steps_per_epoch)
    offset = first_epoch * steps_per_epoch

    def position(step: int) -> int:
        return offset + ((step // steps_per_epoch) * steps_per_epoch if per_epoch else step)

    cosine_end = offset + total_steps if warmup_prefix else position(max(total_steps - 1, 0))

    def factor(base_lr: float):
        def rate(step: int) -> float:
            return warmup_cosine_rate(
                position(step), base_lr, cosine_end, warmup, warmup_start_lr, min_lr, warmup_prefix
            ) / base_lr

        return rate

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(group["lr"]) for group in optimizer.param_groups])


def build_optimizer_and_scheduler(
    model: torch.nn.Module, config: TrainingConfig, steps_per_epoch: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimiser and learning-rate schedule, as both stages use them."""
    if config.optimizer == "adam":
        optimizer = build_irra_optimizer(
            model,
            config.learning_rate,
            config.weight_decay,
            config.head_lr_factor,
            config.bias_lr_factor,
            config.bias_weight_decay,
            (config.adam_beta1, config.adam_beta2),
            config.adam_epsilon,
        )
    else:
        optimizer = build_optimizer(
            model,
            config.optimizer,
            config.learning_rate,
            config.weight_decay,
            config.bias_lr_factor,
            config.momentum,
            (config.adam_beta1, config.adam_beta2),
        )
    if config.lr_schedule == "irra":
        warmup_epochs = int(config.warmup_epochs)
        return optimizer, build_irra_scheduler(
            optimizer, steps_per_epoch, warmup_epochs, config.num_epochs, config.warmup_factor
        )
    scheduler = build_lr_scheduler(
        optimizer,
        steps_per_epoch,
        total_steps,
        config.warmup_epochs,
        config.warmup_start_lr,
        config.min_lr,
        per_epoch=config.schedule_unit == "epoch",
        warmup_prefix=config.warmup_prefix,
        first_epoch=config.first_epoch,
    )
    return optimizer, scheduler


class TrainingProgress:
    """Where the run is (epoch, optimiser step) and the best validation so far; saved with every checkpoint."""

    def __init__(self):
        self.epoch = 0
        self.global_step = 0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict | None = None
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def backward_and_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, max_grad_norm: float | None) -> None:
    """
    Inside `accelerator.accumulate(model)`: the backward pass of `loss`, then, on the micro-batch that completes an
    accumulation, gradient clipping to `max_grad_norm` (when set), the optimiser step and the schedule step.
    """
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if accelerator.sync_gradients:
        scheduler.step()
    optimizer.zero_grad()


def batch_to_device(batch, device):
    """The batch with every tensor in it (nested in dicts and lists, as IVT's text levels are) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {name: batch_to_device(value, device) for name, value in batch.items()}
    if isinstance(batch, list):
        return [batch_to_device(value, device) for value in batch]
    return batch
