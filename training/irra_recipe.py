"""IRRA's released optimiser and schedule: Adam over name-based parameter groups, per-epoch warm-up then cosine.

Group rules, applied in this order to each trainable parameter's name in the training model (so that the order
decides, as in IRRA's code): a name containing `cross` gets `head_lr_factor` x the rate; a name containing `bias`
gets `bias_lr_factor` x the rate and `bias_weight_decay`; a name containing `classifier` or `mlm_head` gets
`head_lr_factor` x the rate (its bias too, keeping the bias weight decay). Everything else: the rate and
`weight_decay`.
"""

from __future__ import annotations

import math

import torch

HEAD_NAME_PARTS = ("classifier", "mlm_head")


def parameter_setting(
    name: str,
    learning_rate: float,
    weight_decay: float,
    head_lr_factor: float,
    bias_lr_factor: float,
    bias_weight_decay: float,
) -> tuple[float, float]:
    """(learning rate, weight decay) of the parameter called `name` under the rules in the module docstring."""
    rate, decay = learning_rate, weight_decay
    if "cross" in name:
        rate = learning_rate * head_lr_factor
    if "bias" in name:
        rate, decay = learning_rate * bias_lr_factor, bias_weight_decay
    if any(part in name for part in HEAD_NAME_PARTS):
        rate = learning_rate * head_lr_factor
    return rate, decay


def build_irra_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    head_lr_factor: float,
    bias_lr_factor: float,
    bias_weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.Adam:
    """Adam (L2 weight decay, as IRRA's) with one group per distinct (learning rate, weight decay) setting."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            setting = parameter_setting(
                name, learning_rate, weight_decay, head_lr_factor, bias_lr_factor, bias_weight_decay
            )
            groups.setdefault(setting, []).append(parameter)
    return torch.optim.Adam(
        [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in groups.items()],
        lr=learning_rate,
        betas=betas,
        eps=eps,
    )


def irra_schedule_factor(epoch: int, warmup_epochs: int, num_epochs: int, warmup_factor: float) -> float:
    """
    Multiplier of every group's rate in (0-based) `epoch`: linear from `warmup_factor` towards 1 over the first
    `warmup_epochs` epochs (`warmup_factor + (1 - warmup_factor) epoch / warmup_epochs`), then cosine from 1 to 0 over
    the remaining ones (`0.5 (1 + cos(pi (epoch - warmup_epochs) / (num_epochs - warmup_epochs)))`).
    """
    if epoch < warmup_epochs:
        return warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max(1, num_epochs - warmup_epochs)))


def build_irra_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, warmup_epochs: int, num_epochs: int, warmup_factor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-epoch schedule, stepped once per optimiser step (the rate changes at each epoch's first step)."""

    def factor(step: int) -> float:
        return irra_schedule_factor(step // steps_per_epoch, warmup_epochs, num_epochs, warmup_factor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
