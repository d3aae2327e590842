"""Launched as N CPU processes: the CMPM loss and gradients of N processes x B pairs, gathered across processes,
against 1 process x N*B pairs (computed on rank 0 with a copy of the model); and the per-process `local` loss."""

import copy
import sys

import torch
from accelerate import Accelerator

from modeling_ivt import IVTConfig, IVTModel, cmpm_loss
from training.loss import CMPMLoss
from training.ivt_training import IVTForRetrievalTraining


def global_batch(world_size: int, per_process: int, config: IVTConfig) -> dict:
    generator = torch.Generator().manual_seed(0)
    total = world_size * per_process
    lengths = torch.randint(4, 12, (total,), generator=generator)
    input_ids = torch.randint(1000, 2000, (total, 12), generator=generator)
    attention_mask = (torch.arange(12) < lengths[:, None]).long()
    input_ids = input_ids * attention_mask
    pixel_values = torch.randn(total, 3, *config.image_size, generator=generator)
    person_ids = torch.arange(total) % (total // 3) + 100  # three pairs per person, spread over the processes
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "person_ids": person_ids,
    }


def main(output_file: str) -> None:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    config = IVTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=(32, 16),
        patch_size=8,
        patch_stride=8,
        drop_path_rate=0.0,
        token_drop_ratio=0.0,
        hidden_dropout_prob=0.0,
    )
    model = IVTModel(config)
    reference = copy.deepcopy(model)
    per_process = 6
    batch = global_batch(accelerator.num_processes, per_process, config)
    start = accelerator.process_index * per_process
    mine = {name: value[start : start + per_process] for name, value in batch.items()}

    wrapped = accelerator.prepare(IVTForRetrievalTraining(model))
    wrapped.train()
    text_levels = [{"input_ids": mine["input_ids"], "attention_mask": mine["attention_mask"]}]
    output = wrapped(mine["pixel_values"], text_levels)
    image_features, text_features = output.image_embeds, output.text_embeds
    loss = CMPMLoss(world_size=accelerator.num_processes)(image_features, text_features, mine["person_ids"])
    accelerator.backward(loss)
    losses = accelerator.gather(loss.detach().reshape(1))
    with torch.no_grad():
        local_cmpm = CMPMLoss(local_loss=True, world_size=accelerator.num_processes)
        local_loss = local_cmpm(image_features, text_features, mine["person_ids"])
        own_batch_loss = cmpm_loss(image_features, text_features, mine["person_ids"])
    local_losses = accelerator.gather(torch.stack([local_loss, own_batch_loss]).reshape(1, 2))

    if accelerator.is_main_process:
        reference.train()
        features = IVTForRetrievalTraining(reference)(
            batch["pixel_values"], [{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}]
        )
        reference_loss = cmpm_loss(features.image_embeds, features.text_embeds, batch["person_ids"])
        reference_loss.backward()
        torch.save(
            {
                "losses": losses,
                "local_losses": local_losses,
                "reference_loss": reference_loss.detach(),
                "gradients": {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None},
                "reference_gradients": {
                    name: p.grad.clone() for name, p in reference.named_parameters() if p.grad is not None
                },
                "world_size": accelerator.num_processes,
            },
            output_file,
        )
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
