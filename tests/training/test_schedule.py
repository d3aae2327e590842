"""The learning-rate schedule: the released recipes' epoch by epoch, and the main job's warm-up-prefixed one."""

import math

import pytest
import torch

from training.config import CONFIG_DIR, parse_config
from training.engine import build_optimizer_and_scheduler

STEPS_PER_EPOCH = 3


def released_rate(epoch: int, base_lr: float) -> float:
    """The released schedule, written out: timm's CosineLRScheduler(t_initial=120, lr_min=1e-5, warmup_t=5,
    warmup_lr_init=5e-5) stepped with the epoch number; both ends absolute for every parameter group."""
    if epoch < 5:
        return 5e-5 + epoch * (base_lr - 5e-5) / 5
    return 1e-5 + 0.5 * (base_lr - 1e-5) * (1 + math.cos(math.pi * epoch / 120))


def rates_by_step(config, total_steps, steps_per_epoch=STEPS_PER_EPOCH):
    """(weight rate, bias rate) in force at every optimiser step, read off the optimiser as the training loop does."""
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer_and_scheduler(model, config, steps_per_epoch, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    "recipe,epochs", [("cuhk_pedes", range(1, 121)), ("icfg_pedes", range(0, 121)), ("rstpreid", range(0, 121))]
)
def test_released_recipes_follow_the_released_schedule_every_epoch(recipe, epochs):
    config = parse_config(["--config", str(CONFIG_DIR / f"{recipe}.yaml")])
    total_steps = config.num_epochs * STEPS_PER_EPOCH
    rates = rates_by_step(config, total_steps)
    assert len(rates) == len(epochs) * STEPS_PER_EPOCH
    for step, (weight_rate, bias_rate) in enumerate(rates):
        epoch = epochs[step // STEPS_PER_EPOCH]
        assert weight_rate == pytest.approx(released_rate(epoch, 0.005), rel=1e-12, abs=0), (recipe, epoch)
        assert bias_rate == pytest.approx(released_rate(epoch, 0.01), rel=1e-12, abs=0), (recipe, epoch)


def test_released_schedule_values_worked_out_by_hand():
    cuhk = rates_by_step(parse_config(["--config", str(CONFIG_DIR / "cuhk_pedes.yaml")]), 120 * STEPS_PER_EPOCH)
    icfg = rates_by_step(parse_config(["--config", str(CONFIG_DIR / "icfg_pedes.yaml")]), 121 * STEPS_PER_EPOCH)
    by_epoch = {
        "cuhk": {epoch: cuhk[(epoch - 1) * STEPS_PER_EPOCH] for epoch in range(1, 121)},
        "icfg": {epoch: icfg[epoch * STEPS_PER_EPOCH] for epoch in range(121)},
    }
    assert by_epoch["icfg"][0] == pytest.approx((5e-5, 5e-5))  # warm-up start: the same absolute rate for biases
    assert by_epoch["cuhk"][1] == pytest.approx((0.00104, 0.00204))  # 5e-5 + (base - 5e-5) / 5
    assert by_epoch["icfg"][4] == pytest.approx((0.00401, 0.00801))  # 5e-5 + 4 (base - 5e-5) / 5
    assert by_epoch["cuhk"][60] == pytest.approx((0.002505, 0.005005))  # 1e-5 + (base - 1e-5) / 2
    assert by_epoch["cuhk"][120] == pytest.approx((1e-5, 1e-5)) and by_epoch["icfg"][120] == pytest.approx((1e-5, 1e-5))
    assert by_epoch["cuhk"][5] == by_epoch["icfg"][5]  # the same curve, entered one epoch later by CUHK-PEDES


def test_the_main_job_keeps_its_warm_up_prefixed_per_step_schedule():
    config = parse_config([])
    assert (config.warmup_prefix, config.schedule_unit, config.bias_lr_factor) == (True, "step", 1.0)
    steps_per_epoch, total_steps = 20, 200
    warmup = round(config.warmup_epochs * steps_per_epoch)
    assert warmup == 2
    rates = rates_by_step(config, total_steps, steps_per_epoch)
    peak, start, floor = config.learning_rate, config.warmup_start_lr, config.min_lr
    for step, (weight_rate, bias_rate) in enumerate(rates):
        if step < warmup:
            expected = start + (peak - start) * step / warmup
        else:
            expected = floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total_steps - warmup)))
        assert weight_rate == pytest.approx(expected, rel=1e-12) and bias_rate == pytest.approx(expected, rel=1e-12)
