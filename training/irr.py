"""Implicit relation reasoning (IRRA's masked-language objective): caption masking and the cross-modal head.

A caption with some tokens masked goes through the text tower; its token outputs attend to the image tokens of the
same pair (one cross attention, then a small transformer) and a head predicts the masked tokens. Only training uses
this head: it is not part of the saved inference model. Module and parameter names are IRRA's (`cross_attn`,
`cross_modal_transformer.resblocks.{i}.attn.in_proj_weight`, `ln_pre_t`, `mlm_head.fc`, ...), so the training-only
tensors of an IRRA checkpoint load into it unchanged and the recipe's name-based learning-rate rules apply as released.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from transformers.activations import QuickGELUActivation

MASK_PROBABILITY = 0.15
MASKED_SHARE = 0.8
RANDOM_SHARE = 0.1
HEAD_WIDTH = 64
CROSS_MODAL_DEPTH = 4


def mask_caption_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    generator: torch.Generator,
    probability: float = MASK_PROBABILITY,
    masked_share: float = MASKED_SHARE,
    random_share: float = RANDOM_SHARE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    IRRA's masking of token ids (last dimension = one caption). Word tokens are the ids 0 < id < `mask_token_id`
    (padding is 0; start, end and mask tokens sit above the word vocabulary). Each word token is selected with
    `probability`; a selected token becomes the mask token with `masked_share`, a uniformly random word id with
    `random_share`, and stays as it is otherwise. A caption with no selected token gets its first word token (position
    1 after the start token) masked. Returns the masked ids and the labels: the original id where selected, 0
    elsewhere.
    """
    word = (input_ids > 0) & (input_ids < mask_token_id)
    selected = word & (torch.rand(input_ids.shape, generator=generator) < probability)
    outcome = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(1, mask_token_id, input_ids.shape, generator=generator)

    fallback = torch.zeros_like(selected)
    needs_fallback = ~selected.any(dim=-1, keepdim=True) & word.any(dim=-1, keepdim=True)
    fallback.scatter_(-1, word.long().argmax(dim=-1, keepdim=True), needs_fallback)

    to_mask = (selected & (outcome < masked_share)) | fallback
    to_random = selected & (outcome >= masked_share) & (outcome < masked_share + random_share)
    masked_ids = torch.where(to_random, random_ids, input_ids)
    masked_ids = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), masked_ids)
    labels = torch.where(selected | fallback, input_ids, torch.zeros_like(input_ids))
    return masked_ids, labels


class CrossModalBlock(nn.Module):
    """Pre-LayerNorm transformer block of width `width` with packed-projection attention and a QuickGELU MLP."""

    def __init__(self, width: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // HEAD_WIDTH, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELUActivation()), ("c_proj", nn.Linear(4 * width, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(hidden_states)
        hidden_states = hidden_states + self.attn(normed, normed, normed, need_weights=False)[0]
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class CrossModalTransformer(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.resblocks = nn.ModuleList(CrossModalBlock(width) for _ in range(depth))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            hidden_states = block(hidden_states)
        return hidden_states


class IRRHead(nn.Module):
    """
    Queries `ln_pre_t(text tokens)` attend to keys and values `ln_pre_i(image tokens)` (no residual), then a
    `depth`-block transformer without mask, `ln_post`, and `mlm_head` (Linear, QuickGELU, LayerNorm, Linear to the
    vocabulary). New weights follow IRRA's rules: std w^-0.5 for attention in-projections, w^-0.5 (2 depth)^-0.5 for
    out-projections and MLP outputs (and the head's vocabulary layer), (2 w)^-0.5 for MLP inputs (and the head's first
    layer); biases and LayerNorms keep torch's defaults.
    """

    def __init__(self, embed_dim: int, vocab_size: int, depth: int = CROSS_MODAL_DEPTH):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(embed_dim, embed_dim // HEAD_WIDTH, batch_first=True)
        self.cross_modal_transformer = CrossModalTransformer(embed_dim, depth)
        self.ln_pre_t = nn.LayerNorm(embed_dim)
        self.ln_pre_i = nn.LayerNorm(embed_dim)
        self.ln_post = nn.LayerNorm(embed_dim)
        self.mlm_head = nn.Sequential(
            OrderedDict(
                [
                    ("dense", nn.Linear(embed_dim, embed_dim)),
                    ("gelu", QuickGELUActivation()),
                    ("ln", nn.LayerNorm(embed_dim)),
                    ("fc", nn.Linear(embed_dim, vocab_size)),
                ]
            )
        )
        attention_std = embed_dim**-0.5
        projection_std = attention_std * (2 * depth) ** -0.5
        mlp_input_std = (2 * embed_dim) ** -0.5
        with torch.no_grad():
            for attention in [self.cross_attn] + [block.attn for block in self.cross_modal_transformer.resblocks]:
                attention.in_proj_weight.normal_(std=attention_std)
                attention.out_proj.weight.normal_(std=projection_std)
            for block in self.cross_modal_transformer.resblocks:
                block.mlp.c_fc.weight.normal_(std=mlp_input_std)
                block.mlp.c_proj.weight.normal_(std=projection_std)
            self.mlm_head.dense.weight.normal_(std=mlp_input_std)
            self.mlm_head.fc.weight.normal_(std=projection_std)

    def forward(
        self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Vocabulary logits at the labelled positions (label != 0), with those labels. The head is position-wise, so
        evaluating it only where a label is gives the same loss as IRRA's full (batch, length, vocabulary) logits.
        """
        image_tokens = self.ln_pre_i(image_tokens)
        hidden_states = self.cross_attn(self.ln_pre_t(text_tokens), image_tokens, image_tokens, need_weights=False)[0]
        hidden_states = self.ln_post(self.cross_modal_transformer(hidden_states))
        labelled = labels != 0
        return self.mlm_head(hidden_states[labelled]), labels[labelled]
