"""CMPM over the features of all processes.

Each process gathers every process's image and text features with a gradient-carrying all-gather
(`torch.distributed.nn.functional.all_gather`) and computes the CMPM loss of the whole global batch. All processes
then hold the same loss; the all-gather's backward sums the N copies of each process's feature gradient, and
DistributedDataParallel averages over the N processes, so the parameter gradient equals that of one process holding
the whole N x B batch. `local=True` computes the loss of each process's own batch, as the released code does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional

from modeling_ivt import cmpm_loss


def _gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    return torch.cat(dist_functional.all_gather(tensor.contiguous()), dim=0)


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def distributed_cmpm_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, person_ids: torch.Tensor, local: bool = False
) -> torch.Tensor:
    """CMPM of the global batch (every process's pairs), or of this process's pairs with `local=True`."""
    if not local and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        image_features = _gather_with_grad(image_features)
        text_features = _gather_with_grad(text_features)
        person_ids = _gather(person_ids)
    return cmpm_loss(image_features, text_features, person_ids)
