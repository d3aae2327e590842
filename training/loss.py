"""The training objectives and the gathering of features across processes: CMPM (IVT), SDM, ID and IRR (IRRA) for
fine-tuning, ITC, ITM with hard negatives and MLM (and optionally CMPM) for pre-training. The models compute features
and logits; everything here that compares one process's pairs with another's takes the number of processes
(`world_size`) explicitly and gathers only when it is above 1.

The contrastive losses (CMPM, SDM) compare every image with every caption of the batch. Each process gathers every
process's image and text features with a gradient-carrying all-gather (`gather_with_grad`) and computes the loss of
the whole global batch. All processes then hold the same loss; the all-gather's backward sums the N copies of each
process's feature gradient, and DistributedDataParallel averages over the N processes, so the parameter gradient
equals that of one process holding the whole N x B batch. `local_loss=True` computes the loss of each process's own
batch, as the released code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn

from modeling_ivt import IVTForPreTraining, cmpm_loss


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0 in rank order; gradients flow back to each process's share."""
    return torch.cat(dist_functional.all_gather(tensor.contiguous()), dim=0)


def _real_token_mask(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The long 0/1 mask of a token sequence whose mask is None when nothing is padded."""
    if attention_mask is None:
        return hidden_states.new_ones(hidden_states.shape[:2], dtype=torch.long)
    return attention_mask.long()


def gather_padded_sequences(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (batch, length, D) sequences of possibly different lengths per process, right-padded to the longest,
    and their masks (1 for real tokens)."""
    mask = _real_token_mask(hidden_states, attention_mask)
    length = torch.tensor([hidden_states.shape[1]], device=hidden_states.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    padding = int(length) - hidden_states.shape[1]
    if padding:
        hidden_states = nn.functional.pad(hidden_states, (0, 0, 0, padding))
        mask = nn.functional.pad(mask, (0, padding))
    return gather_with_grad(hidden_states), gather_with_grad(mask.long())


class CMPMLoss(nn.Module):
    """CMPM of the global batch (every process's pairs, gathered with gradient when `world_size` > 1), or of this
    process's pairs with `local_loss=True`."""

    def __init__(self, local_loss: bool = False, world_size: int = 1):
        super().__init__()
        self.gathers = world_size > 1 and not local_loss

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, person_ids: torch.Tensor
    ) -> torch.Tensor:
        if self.gathers:
            image_features = gather_with_grad(image_features)
            text_features = gather_with_grad(text_features)
            person_ids = gather_with_grad(person_ids)
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


class SDMLoss(nn.Module):
    """SDM of the global batch (every process's pairs, gathered with gradient when `world_size` > 1), or of this
    process's pairs with `local_loss=True`."""

    def __init__(self, logit_scale: float, local_loss: bool = False, world_size: int = 1):
        super().__init__()
        self.logit_scale = logit_scale
        self.gathers = world_size > 1 and not local_loss

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, person_ids: torch.Tensor) -> torch.Tensor:
        if self.gathers:
            image_embeds = gather_with_grad(image_embeds)
            text_embeds = gather_with_grad(text_embeds)
            person_ids = gather_with_grad(person_ids)
        return sdm_loss(image_embeds, text_embeds, person_ids, self.logit_scale)


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
    token_logits: torch.Tensor, labels: torch.Tensor, ignore_label: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Cross-entropy of the predicted vocabulary distribution at the labelled positions (label != `ignore_label`).

    `token_logits` are (positions, vocabulary) rows, of the labelled positions only or of every position; zero, not
    NaN, when no position is labelled. With `world_size` 1 the mean is over this process's labelled positions; above
    1 over every process's: the sum is divided by the global count times the number of processes, which the
    averaging of gradients over processes undoes, so N processes step as one process holding all their captions.
    """
    labels = labels.reshape(-1)
    total = torch.nn.functional.cross_entropy(
        token_logits.float().reshape(labels.numel(), -1), labels, ignore_index=ignore_label, reduction="sum"
    )
    count = (labels != ignore_label).sum()
    if world_size > 1:
        count = count.clone()
        dist.all_reduce(count)
        return total * world_size / count.clamp(min=1)
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


class RetrievalLoss(nn.Module):
    """
    The fine-tuning objective: each of `loss_names` (weight 1, their sum is the training loss). Unless `local_loss`,
    each is that of the global batch of `world_size` processes: `sdm` and `cmpm` over features gathered from every
    process, `irr` averaged over every process's labelled tokens; `id` is a mean of per-item terms over equal
    batches, which the averaging of gradients makes global.
    """

    def __init__(self, loss_names: tuple[str, ...], logit_scale: float, local_loss: bool = False, world_size: int = 1):
        super().__init__()
        unknown = [name for name in loss_names if name not in LOSS_NAMES]
        if unknown:
            raise ValueError(f"unknown loss {unknown[0]!r}; available: {', '.join(LOSS_NAMES)}")
        self.loss_names = tuple(loss_names)
        self.sdm = SDMLoss(logit_scale, local_loss, world_size)
        self.cmpm = CMPMLoss(local_loss, world_size)
        self.irr_world_size = 1 if local_loss else world_size

    def forward(
        self, output: RetrievalTrainingOutput, person_ids: torch.Tensor, class_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        terms = {}
        for name in self.loss_names:
            if name == "sdm":
                terms[name] = self.sdm(output.image_embeds, output.text_embeds, person_ids)
            elif name == "cmpm":
                terms[name] = self.cmpm(output.image_embeds, output.text_embeds, person_ids)
            elif name == "id":
                terms[name] = identity_loss(output.image_logits, output.text_logits, class_ids)
            else:
                terms[name] = masked_token_loss(output.irr_logits, output.irr_labels, world_size=self.irr_world_size)
        return terms


def pair_targets(pair_ids: torch.Tensor, all_pair_ids: torch.Tensor) -> torch.Tensor:
    """Soft ITC targets: each row spreads 1 evenly over the columns with the row's pair id."""
    positives = (pair_ids.view(-1, 1) == all_pair_ids.view(1, -1)).float()
    return positives / positives.sum(dim=1, keepdim=True)


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor,
    all_text_embeds: torch.Tensor,
    pair_ids: torch.Tensor,
    all_pair_ids: torch.Tensor,
    temperature: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Image-text contrastive loss: local normalised embeddings against those of all processes (`all_*`, which contain
    the local ones), logits = cosine / temperature, soft targets by pair id, (CE_i2t + CE_t2i) / 2.
    Returns the loss and the image-to-text and text-to-image logits (local rows, all columns).
    """
    targets = pair_targets(pair_ids, all_pair_ids)
    with torch.autocast(image_embeds.device.type, enabled=False):  # fp32 logits even under bf16 autocast
        logits_per_image = image_embeds.float() @ all_text_embeds.float().t() / temperature
        logits_per_text = text_embeds.float() @ all_image_embeds.float().t() / temperature
        image_to_text = -(nn.functional.log_softmax(logits_per_image, dim=1) * targets).sum(dim=1).mean()
        text_to_image = -(nn.functional.log_softmax(logits_per_text, dim=1) * targets).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2, logits_per_image, logits_per_text


def sample_hard_negatives(
    logits: torch.Tensor, positive_mask: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """
    ALBEF-style hard negatives: for every row, one column drawn from softmax(logits) with the positives' probability
    set to zero, so a positive is never drawn however the similarities look. A row without any negative is an error.
    """
    if bool(positive_mask.all(dim=1).any()):
        row = int(positive_mask.all(dim=1).nonzero()[0])
        raise ValueError(
            f"row {row} has no negative to sample: every pair in the (gathered) batch shares its pair id; "
            "ITM needs at least two different pair ids per batch"
        )
    weights = nn.functional.softmax(logits.detach().float().masked_fill(positive_mask, float("-inf")), dim=1)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def masked_language_modeling_loss(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (labels != -100); zero, not NaN, when nothing was masked."""
    labels = mlm_labels.view(-1)
    total = nn.functional.cross_entropy(
        mlm_logits.float().view(-1, mlm_logits.shape[-1]), labels, ignore_index=-100, reduction="sum"
    )
    return total / (labels != -100).sum().clamp(min=1)


@dataclass
class PreTrainingLossOutput:
    """
    loss: the weighted sum of the objectives below.
    itc_loss, itm_loss, mlm_loss, cmpm_loss: the individual objectives (`mlm_loss` only with masked captions,
        `cmpm_loss` only when its weight is not zero).
    logits_per_text (`(batch_size, world_batch_size)`): ITC logits (cosine similarity / temperature) of every local
        caption against the images of all processes.
    itm_logits (`(3 * batch_size, 2)`): match / no-match logits of the positive pairs, then of (image, hard negative
        caption), then of (hard negative image, caption).
    mlm_logits (`(num_masked_tokens, vocab_size)`): MLM prediction scores of the masked positions only.
    text_embeds, image_embeds, temperature: the model's, for logging (the temperature detached).
    """

    loss: torch.Tensor
    itc_loss: torch.Tensor
    itm_loss: torch.Tensor
    logits_per_text: torch.Tensor
    itm_logits: torch.Tensor
    text_embeds: torch.Tensor
    image_embeds: torch.Tensor
    temperature: torch.Tensor
    mlm_loss: torch.Tensor | None = None
    cmpm_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None


class PreTrainingLoss(nn.Module):
    """
    The pre-training objective, weighted as configured: ITC, ITM on the positive pairs and on hard negatives drawn
    from the ITC similarities, MLM on masked captions, and optionally CMPM. With `world_size` > 1, ITC logits, ITM
    hard negatives and CMPM range over the pairs of all processes: embeddings and token sequences are gathered with
    gradient. ITM and MLM run `model`'s fusion encoder, so call this inside the forward of the module that
    DistributedDataParallel wraps (`PreTrainingObjective`).
    """

    def __init__(
        self,
        itc_weight: float = 1.0,
        itm_weight: float = 1.0,
        mlm_weight: float = 1.0,
        cmpm_weight: float = 0.0,
        world_size: int = 1,
    ):
        super().__init__()
        self.itc_weight, self.itm_weight = itc_weight, itm_weight
        self.mlm_weight, self.cmpm_weight = mlm_weight, cmpm_weight
        self.gathers = world_size > 1

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return gather_with_grad(tensor) if self.gathers else tensor

    def forward(
        self,
        model: IVTForPreTraining,
        outputs,
        pair_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PreTrainingLossOutput:
        """`outputs` is `model`'s `IVTForPreTrainingOutput` for the captions (`attention_mask`) and images of the
        pairs `pair_ids`; `generator` draws the hard negatives."""
        text_hidden, text_mask = outputs.text_last_hidden_state, outputs.text_attention_mask
        image_hidden, image_mask = outputs.image_last_hidden_state, outputs.image_attention_mask
        batch_size = text_hidden.shape[0]
        if pair_ids.shape[0] != batch_size:
            raise ValueError(
                f"pre-training needs one pair id per pair: got {batch_size} pairs and {pair_ids.shape[0]} pair_ids"
            )
        if (mlm_input_ids is None) != (mlm_labels is None):
            raise ValueError("pass mlm_input_ids and mlm_labels together (or neither)")

        text_embeds, image_embeds = outputs.text_embeds, outputs.image_embeds
        all_pair_ids = self._gather(pair_ids)
        loss_itc, logits_per_image, logits_per_text = itc_loss(
            image_embeds,
            text_embeds,
            self._gather(image_embeds),
            self._gather(text_embeds),
            pair_ids,
            all_pair_ids,
            outputs.temperature,
        )

        positives = pair_ids.view(-1, 1) == all_pair_ids.view(1, -1)
        negative_text_index = sample_hard_negatives(logits_per_image, positives, generator)
        negative_image_index = sample_hard_negatives(logits_per_text, positives, generator)
        local_text_mask = _real_token_mask(text_hidden, text_mask)
        local_image_mask = _real_token_mask(image_hidden, image_mask)
        if self.gathers:
            all_text_hidden, all_text_mask = gather_padded_sequences(text_hidden, text_mask)
            all_image_hidden, all_image_mask = gather_padded_sequences(image_hidden, image_mask)
        else:
            all_text_hidden, all_text_mask = text_hidden, local_text_mask
            all_image_hidden, all_image_mask = image_hidden, local_image_mask
        text_len, image_len = all_text_hidden.shape[1], all_image_hidden.shape[1]
        local_text_hidden = nn.functional.pad(text_hidden, (0, 0, 0, text_len - text_hidden.shape[1]))
        local_text_mask = nn.functional.pad(local_text_mask, (0, text_len - local_text_mask.shape[1]))
        local_image_hidden = nn.functional.pad(image_hidden, (0, 0, 0, image_len - image_hidden.shape[1]))
        local_image_mask = nn.functional.pad(local_image_mask, (0, image_len - local_image_mask.shape[1]))
        itm_logits = model.image_text_matching_logits(
            torch.cat([local_text_hidden, all_text_hidden[negative_text_index], local_text_hidden]),
            torch.cat([local_text_mask, all_text_mask[negative_text_index], local_text_mask]),
            torch.cat([local_image_hidden, local_image_hidden, all_image_hidden[negative_image_index]]),
            torch.cat([local_image_mask, local_image_mask, all_image_mask[negative_image_index]]),
        )
        itm_labels = torch.cat([itm_logits.new_ones(batch_size), itm_logits.new_zeros(2 * batch_size)]).long()
        loss_itm = nn.functional.cross_entropy(itm_logits.float(), itm_labels)

        result = PreTrainingLossOutput(
            loss=self.itc_weight * loss_itc + self.itm_weight * loss_itm,
            itc_loss=loss_itc,
            itm_loss=loss_itm,
            logits_per_text=logits_per_text,
            itm_logits=itm_logits,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            temperature=outputs.temperature.detach(),
        )
        if mlm_input_ids is not None:
            result.mlm_logits = model.masked_language_modeling_logits(
                mlm_input_ids, attention_mask, mlm_labels, image_hidden, image_mask
            )
            result.mlm_loss = masked_language_modeling_loss(result.mlm_logits, mlm_labels[mlm_labels != -100])
            result.loss = result.loss + self.mlm_weight * result.mlm_loss
        if self.cmpm_weight:
            result.cmpm_loss = cmpm_loss(
                self._gather(outputs.image_pooler_output), self._gather(outputs.text_pooler_output), all_pair_ids
            )
            result.loss = result.loss + self.cmpm_weight * result.cmpm_loss
        return result


class PreTrainingObjective(nn.Module):
    """
    `IVTForPreTraining` and its `PreTrainingLoss` in one `forward`, so that DistributedDataParallel sees a single
    call that uses every parameter (the fusion encoder runs inside the loss). `model` is what gets saved; the loss
    weights are its config's.
    """

    def __init__(self, model: IVTForPreTraining, world_size: int = 1):
        super().__init__()
        self.model = model
        config = model.config
        self.loss = PreTrainingLoss(
            config.itc_loss_weight, config.itm_loss_weight, config.mlm_loss_weight, config.cmpm_loss_weight, world_size
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        pair_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PreTrainingLossOutput:
        """One pre-training step's losses; `generator` draws the token dropping, then the hard negatives."""
        outputs = self.model(input_ids, pixel_values, attention_mask, token_drop_generator=generator)
        return self.loss(self.model, outputs, pair_ids, attention_mask, mlm_input_ids, mlm_labels, generator)
