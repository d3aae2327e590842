"""PyTorch IVT vision-language pre-training: the IVT dual encoder plus a fusion encoder, trained with ITC, ITM and
MLM (ivt_spec.md section 4), optionally with CMPM on the pairs."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_ivt import IVTConfig
from .modeling_ivt import IVTModel, IVTPreTrainedModel, cmpm_loss, drop_tokens, eager_attention_forward

TEMPERATURE_RANGE = (0.001, 0.5)


@dataclass
class IVTForPreTrainingOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`): the weighted sum of the losses below.
        itc_loss, itm_loss, mlm_loss, cmpm_loss (`torch.FloatTensor` of shape `()`): the individual objectives
            (`mlm_loss` only with `mlm_input_ids`, `cmpm_loss` only when its weight is not zero).
        logits_per_text (`torch.FloatTensor` of shape `(batch_size, world_batch_size)`): ITC logits (cosine
            similarity / temperature) of every local caption against the images of all processes.
        itm_logits (`torch.FloatTensor` of shape `(3 * batch_size, 2)`): match / no-match logits of the positive
            pairs, then of (image, hard negative caption), then of (hard negative image, caption).
        mlm_logits (`torch.FloatTensor` of shape `(num_masked_tokens, vocab_size)`): MLM prediction scores of the
            masked positions only (`mlm_labels != -100`, in row-major order): the vocabulary projection of every
            other token would cost most of the step and feed no loss.
        text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): L2-normalised [CLS].
        temperature (`torch.FloatTensor` of shape `()`): the clamped ITC temperature used.
    """

    loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    cmpm_loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None


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


def _gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over all processes along dim 0; gradients flow back to every process's share."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    if torch.distributed.get_world_size() == 1:
        return tensor
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor.contiguous()), dim=0)


def _gather_sequences(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (batch, length, D) sequences of possibly different lengths per process, right-padded to the longest."""
    mask = attention_mask
    if mask is None:
        mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        length = torch.tensor([hidden_states.shape[1]], device=hidden_states.device)
        torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
        padding = int(length) - hidden_states.shape[1]
        if padding:
            hidden_states = nn.functional.pad(hidden_states, (0, 0, 0, padding))
            mask = nn.functional.pad(mask, (0, padding))
    return _gather_with_grad(hidden_states), _gather_with_grad(mask.long())


class IVTFusionAttention(nn.Module):
    """BERT-style multi-head attention with separate q/k/v projections; cross-attention when given key states."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.fusion_num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        batch_size, query_len, _ = hidden_states.shape
        source = hidden_states if key_value_states is None else key_value_states
        key_len = source.shape[1]
        queries = self.q_proj(hidden_states).view(batch_size, query_len, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.k_proj(source).view(batch_size, key_len, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.v_proj(source).view(batch_size, key_len, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            queries,
            keys,
            values,
            attention_mask,
            scaling=self.scale,
            dropout=0.0 if not self.training else self.dropout,
            **kwargs,
        )
        return self.out_proj(attn_output.reshape(batch_size, query_len, self.embed_dim))


class IVTFusionLayer(GradientCheckpointingLayer):
    """A post-LayerNorm BERT layer with cross-attention: text self-attention, text-to-image attention, FFN."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        eps = config.text_layer_norm_eps
        self.self_attn = IVTFusionAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.cross_attn = IVTFusionAttention(config)
        self.cross_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.fusion_intermediate_size)
        self.fc2 = nn.Linear(config.fusion_intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_hidden_states: torch.Tensor,
        image_attention_mask: torch.Tensor | None,
        **kwargs,
    ) -> torch.Tensor:
        attended = self.self_attn(hidden_states, attention_mask, **kwargs)
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attended))
        attended = self.cross_attn(hidden_states, image_attention_mask, key_value_states=image_hidden_states, **kwargs)
        hidden_states = self.cross_attn_layer_norm(hidden_states + self.dropout(attended))
        mlp_output = self.fc2(self.activation_fn(self.fc1(hidden_states)))
        return self.final_layer_norm(hidden_states + self.dropout(mlp_output))


class IVTFusionEncoder(nn.Module):
    """Fusion layers: caption tokens attend to each other and to the image tokens of their pair."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([IVTFusionLayer(config) for _ in range(config.fusion_num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        image_hidden_states: torch.Tensor,
        image_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=text_hidden_states, attention_mask=text_attention_mask
        )
        cross_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=text_hidden_states,
            attention_mask=image_attention_mask,
            encoder_hidden_states=image_hidden_states,
        )
        hidden_states = text_hidden_states
        for layer in self.layers:
            hidden_states = layer(hidden_states, self_mask, image_hidden_states, cross_mask)
        return hidden_states


class IVTMaskedLanguageModelingHead(nn.Module):
    """BERT's MLM head: dense -> activation -> LayerNorm -> vocabulary logits (decoder tied to the word embeddings)."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation_fn(self.dense(hidden_states))))


class IVTForPreTraining(IVTPreTrainedModel):
    """
    IVT with the pre-training heads of the released recipe. `ivt` is a plain [`IVTModel`], so
    `IVTModel.from_pretrained(folder)` takes the encoder out of a saved pre-training model (same patch stride) and
    `modeling_ivt.convert_pretraining` does so across a stride change. The fusion encoder and the heads exist only
    for pre-training.
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "ivt.text_embeddings.word_embeddings.weight"}
    _no_split_modules = IVTPreTrainedModel._no_split_modules + ["IVTFusionLayer"]

    def __init__(self, config: IVTConfig):
        super().__init__(config)
        self.ivt = IVTModel(config)
        self.fusion_encoder = IVTFusionEncoder(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.mlm_head = IVTMaskedLanguageModelingHead(config)
        self.temperature = nn.Parameter(torch.empty(()))
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, IVTForPreTraining):
            init.constant_(module.temperature, self.config.temperature_init)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also map `AutoModel` to the dual encoder, so that `AutoModel.from_pretrained(folder)` gives `IVTModel`."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": "modeling_ivt.IVTModel"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.ivt.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.ivt.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.mlm_head.decoder = new_embeddings

    def clamped_temperature(self) -> torch.Tensor:
        """The ITC temperature, clamped to `TEMPERATURE_RANGE` as CLIP and ALBEF do (the released code does not)."""
        return self.temperature.clamp(*TEMPERATURE_RANGE)

    def _encode(
        self,
        embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        modality: str,
        drop: bool,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        The shared encoder's normed token sequence and its key-padding mask. Like `IVTModel`'s encoding, but the mask
        left after BMM token dropping is returned (the fusion encoder needs it), and masked captions (`drop=False`)
        keep every token, since MLM predicts at fixed positions.
        """
        if drop and self.training and self.config.token_drop_ratio > 0:
            embeddings, attention_mask = drop_tokens(
                embeddings,
                attention_mask,
                self.config.token_drop_ratio,
                protect_last_token=modality == "text",
                generator=generator,
            )
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask)
        hidden_states = self.ivt.encoder(embeddings, mask, modality=modality)
        return self.ivt.final_layer_norm(hidden_states), attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        pair_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> IVTForPreTrainingOutput:
        r"""
        One pre-training step on a batch of (image, caption) pairs; pairs sharing a `pair_id` count as positives.

        input_ids, attention_mask: the captions, unmasked (ITC, ITM, CMPM).
        pixel_values: the images, one per caption.
        pair_ids (`torch.LongTensor` of shape `(batch_size,)`): pair identity (the row index for generic corpora).
        mlm_input_ids, mlm_labels: the masked captions and their labels (-100 where not masked), from
            `training.pretraining_data.mask_captions`; without them no MLM loss is computed.
        generator (`torch.Generator`, *optional*): source of the token-dropping and hard-negative draws.

        Under `torch.distributed` (e.g. `accelerate launch`), ITC logits and ITM hard negatives range over the pairs of
        all processes: features and token sequences are gathered with gradient.
        """
        batch_size = input_ids.shape[0]
        if not (pixel_values.shape[0] == batch_size == pair_ids.shape[0]):
            raise ValueError(
                f"pre-training needs paired inputs: got {batch_size} captions, {pixel_values.shape[0]} images and "
                f"{pair_ids.shape[0]} pair_ids"
            )
        if (mlm_input_ids is None) != (mlm_labels is None):
            raise ValueError("pass mlm_input_ids and mlm_labels together (or neither)")
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None

        text_hidden, text_mask = self._encode(
            self.ivt.text_embeddings(input_ids), attention_mask, "text", drop=True, generator=generator
        )
        image_hidden, image_mask = self._encode(
            self.ivt.image_embeddings(pixel_values), None, "image", drop=True, generator=generator
        )
        text_features, image_features = text_hidden[:, 0], image_hidden[:, 0]

        text_embeds = nn.functional.normalize(text_features, dim=-1)
        image_embeds = nn.functional.normalize(image_features, dim=-1)
        all_text_embeds = _gather_with_grad(text_embeds)
        all_image_embeds = _gather_with_grad(image_embeds)
        all_pair_ids = _gather_with_grad(pair_ids)
        temperature = self.clamped_temperature()
        loss_itc, logits_per_image, logits_per_text = itc_loss(
            image_embeds, text_embeds, all_image_embeds, all_text_embeds, pair_ids, all_pair_ids, temperature
        )

        positives = pair_ids.view(-1, 1) == all_pair_ids.view(1, -1)
        negative_text_index = sample_hard_negatives(logits_per_image, positives, generator)
        negative_image_index = sample_hard_negatives(logits_per_text, positives, generator)
        all_text_hidden, all_text_mask = _gather_sequences(text_hidden, text_mask)
        all_image_hidden, all_image_mask = _gather_sequences(image_hidden, image_mask)
        local_text_mask = all_text_mask.new_ones(text_hidden.shape[:2]) if text_mask is None else text_mask.long()
        text_len = all_text_hidden.shape[1]
        local_text_hidden = nn.functional.pad(text_hidden, (0, 0, 0, text_len - text_hidden.shape[1]))
        local_text_mask = nn.functional.pad(local_text_mask, (0, text_len - local_text_mask.shape[1]))
        image_len = all_image_hidden.shape[1]
        local_image_mask = all_image_mask.new_ones(image_hidden.shape[:2]) if image_mask is None else image_mask.long()

        fusion_text = torch.cat([local_text_hidden, all_text_hidden[negative_text_index], local_text_hidden])
        fusion_text_mask = torch.cat([local_text_mask, all_text_mask[negative_text_index], local_text_mask])
        local_image_hidden = nn.functional.pad(image_hidden, (0, 0, 0, image_len - image_hidden.shape[1]))
        local_image_mask = nn.functional.pad(local_image_mask, (0, image_len - local_image_mask.shape[1]))
        fusion_image = torch.cat([local_image_hidden, local_image_hidden, all_image_hidden[negative_image_index]])
        fusion_image_mask = torch.cat([local_image_mask, local_image_mask, all_image_mask[negative_image_index]])
        fused = self.fusion_encoder(
            fusion_text,
            None if bool(fusion_text_mask.all()) else fusion_text_mask,
            fusion_image,
            None if bool(fusion_image_mask.all()) else fusion_image_mask,
        )
        itm_logits = self.itm_head(fused[:, 0])
        itm_labels = torch.cat([itm_logits.new_ones(batch_size), itm_logits.new_zeros(2 * batch_size)]).long()
        loss_itm = nn.functional.cross_entropy(itm_logits.float(), itm_labels)

        loss = self.config.itc_loss_weight * loss_itc + self.config.itm_loss_weight * loss_itm
        loss_mlm = mlm_logits = None
        if mlm_input_ids is not None:
            masked_text, _ = self._encode(
                self.ivt.text_embeddings(mlm_input_ids), attention_mask, "text", drop=False, generator=None
            )
            mlm_hidden = self.fusion_encoder(masked_text, attention_mask, image_hidden, image_mask)
            masked = mlm_labels != -100
            mlm_logits = self.mlm_head(mlm_hidden[masked])
            loss_mlm = masked_language_modeling_loss(mlm_logits, mlm_labels[masked])
            loss = loss + self.config.mlm_loss_weight * loss_mlm
        loss_cmpm = None
        if self.config.cmpm_loss_weight:
            loss_cmpm = cmpm_loss(
                _gather_with_grad(image_features),
                _gather_with_grad(text_features),
                all_pair_ids,
            )
            loss = loss + self.config.cmpm_loss_weight * loss_cmpm

        return IVTForPreTrainingOutput(
            loss=loss,
            itc_loss=loss_itc,
            itm_loss=loss_itm,
            mlm_loss=loss_mlm,
            cmpm_loss=loss_cmpm,
            logits_per_text=logits_per_text,
            itm_logits=itm_logits,
            mlm_logits=mlm_logits,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            temperature=temperature.detach(),
        )


__all__ = [
    "IVTForPreTraining",
    "IVTForPreTrainingOutput",
    "itc_loss",
    "masked_language_modeling_loss",
    "pair_targets",
    "sample_hard_negatives",
]
