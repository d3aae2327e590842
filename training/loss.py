"""The fine-tuning losses: CMPM (IVT), SDM, ID and IRR (IRRA), and the gathering of features across processes.

The contrastive losses (CMPM, SDM) compare every image with every caption of the batch. Each process gathers every
process's image and text features with a gradient-carrying all-gather
(`torch.distributed.nn.functional.all_gather`) and computes the loss of the whole global batch. All processes
then hold the same loss; the all-gather's backward sums the N copies of each process's feature gradient, and
DistributedDataParallel averages over the N processes, so the parameter gradient equals that of one process holding
the whole N x B batch. `local=True` computes the loss of each process's own batch, as the released code does.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def sdm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    person_ids: torch.Tensor,
    logit_scale: float,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """
    Similarity distribution matching (IRRA, Jiang & Ye, CVPR 2023): the softmax of the scaled cosine similarities of
    each image to every caption (and of each caption to every image) is pulled towards the uniform distribution over
    the pairs of the same person, by KL(prediction || target) summed over both directions. Every pair of the same
    person is a positive. Computed in fp32 so that autocast cannot underflow it.
    """
    image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
    text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
    same_person = (person_ids.view(-1, 1) == person_ids.view(1, -1)).float()
    log_targets = torch.log(same_person / same_person.sum(dim=1, keepdim=True) + epsilon)
    image_to_text = logit_scale * image_embeds @ text_embeds.t()

    def kl(logits: torch.Tensor) -> torch.Tensor:
        log_probs = torch.nn.functional.log_softmax(logits, dim=1)
        return (log_probs.exp() * (log_probs - log_targets)).sum(dim=1).mean()

    return kl(image_to_text) + kl(image_to_text.t())


def distributed_sdm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    person_ids: torch.Tensor,
    logit_scale: float,
    local: bool = False,
) -> torch.Tensor:
    """SDM of the global batch (every process's pairs, gathered with gradient), or of this process's with `local`."""
    if not local and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        image_embeds = _gather_with_grad(image_embeds)
        text_embeds = _gather_with_grad(text_embeds)
        person_ids = _gather(person_ids)
    return sdm_loss(image_embeds, text_embeds, person_ids, logit_scale)


CLASSIFIER_STD = 0.001


def identity_classifier(embed_dim: int, num_train_ids: int) -> torch.nn.Linear:
    """The ID loss's classifier over contiguous training identities: weights N(0, 0.001), bias 0 (IRRA's init)."""
    classifier = torch.nn.Linear(embed_dim, num_train_ids)
    with torch.no_grad():
        classifier.weight.normal_(std=CLASSIFIER_STD)
        classifier.bias.zero_()
    return classifier


def contiguous_class_ids(person_ids) -> dict[int, int]:
    """Training person id -> class index 0 .. N-1, in sorted id order (the classifier needs contiguous classes)."""
    return {person_id: index for index, person_id in enumerate(sorted({int(pid) for pid in person_ids}))}


def identity_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """ID loss: the mean of the image and the text cross-entropy of one shared identity classifier.

    `class_ids` are the contiguous training-identity indices (0 .. number of training identities - 1). Each item's
    term depends on that item alone, so no gathering is needed: averaging over processes gives the global mean.
    """
    image_term = torch.nn.functional.cross_entropy(image_logits.float(), class_ids)
    text_term = torch.nn.functional.cross_entropy(text_logits.float(), class_ids)
    return (image_term + text_term) / 2


def masked_token_loss(
    token_logits: torch.Tensor, labels: torch.Tensor, ignore_label: int = 0, local: bool = True
) -> torch.Tensor:
    """Cross-entropy of the predicted vocabulary distribution at the labelled positions (label != `ignore_label`).

    `token_logits` are (positions, vocabulary) rows, of the labelled positions only or of every position; zero, not
    NaN, when no position is labelled. The mean is over this process's labelled positions, or with `local=False` over
    every process's: the sum is divided by the global count times the number of processes, which the averaging of
    gradients over processes undoes, so N processes step as one process holding all their captions.
    """
    labels = labels.reshape(-1)
    total = torch.nn.functional.cross_entropy(
        token_logits.float().reshape(labels.numel(), -1), labels, ignore_index=ignore_label, reduction="sum"
    )
    count = (labels != ignore_label).sum()
    if not local and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count = count.clone()
        dist.all_reduce(count)
        return total * dist.get_world_size() / count.clamp(min=1)
    return total / count.clamp(min=1)


LOSS_NAMES = ("sdm", "cmpm", "id", "irr")


@dataclass
class RetrievalTrainingOutput:
    """What the losses read: pooled embeddings, identity logits, IRR logits at the labelled positions and labels."""

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    image_logits: torch.Tensor | None = None
    text_logits: torch.Tensor | None = None
    irr_logits: torch.Tensor | None = None
    irr_labels: torch.Tensor | None = None


def retrieval_loss_terms(
    output: RetrievalTrainingOutput,
    person_ids: torch.Tensor,
    class_ids: torch.Tensor | None,
    loss_names: tuple[str, ...],
    logit_scale: float,
    local: bool = False,
) -> dict[str, torch.Tensor]:
    """
    Each selected loss (weight 1, their sum is the training loss). Unless `local`, each is that of the global batch:
    `sdm` and `cmpm` over features gathered from every process, `irr` averaged over every process's labelled tokens;
    `id` is a mean of per-item terms over equal batches, which the averaging of gradients makes global.
    """
    terms = {}
    for name in loss_names:
        if name == "sdm":
            terms[name] = distributed_sdm_loss(output.image_embeds, output.text_embeds, person_ids, logit_scale, local)
        elif name == "cmpm":
            terms[name] = distributed_cmpm_loss(output.image_embeds, output.text_embeds, person_ids, local)
        elif name == "id":
            terms[name] = identity_loss(output.image_logits, output.text_logits, class_ids)
        elif name == "irr":
            terms[name] = masked_token_loss(output.irr_logits, output.irr_labels, local=local)
        else:
            raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSS_NAMES)}")
    return terms
