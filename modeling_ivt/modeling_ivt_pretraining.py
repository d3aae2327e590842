"""PyTorch IVT vision-language pre-training: the IVT dual encoder plus a fusion encoder and the heads of ITC, ITM and
MLM (ivt_spec.md section 4). The model computes features and logits; the objectives, which compare features across
processes, are in the training code (`training.loss.PreTrainingLoss`)."""

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
from .modeling_ivt import IVTModel, IVTPreTrainedModel, drop_tokens, eager_attention_forward

TEMPERATURE_RANGE = (0.001, 0.5)


@dataclass
class IVTForPreTrainingOutput(ModelOutput):
    """
    Args:
        text_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`): the shared
            encoder's normed caption tokens (after BMM token dropping in training mode): what the fusion encoder reads.
        text_attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`): 1 for the real tokens of
            `text_last_hidden_state`; None when no caption is padded.
        image_last_hidden_state, image_attention_mask: the same for the images.
        text_pooler_output, image_pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): the
            un-normalised [CLS] features (what CMPM compares).
        text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): L2-normalised [CLS].
        temperature (`torch.FloatTensor` of shape `()`): the clamped ITC temperature.
    """

    text_last_hidden_state: torch.FloatTensor | None = None
    text_attention_mask: torch.LongTensor | None = None
    image_last_hidden_state: torch.FloatTensor | None = None
    image_attention_mask: torch.LongTensor | None = None
    text_pooler_output: torch.FloatTensor | None = None
    image_pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None


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
    for pre-training: `forward` encodes the pairs, `image_text_matching_logits` and `masked_language_modeling_logits`
    run the heads on what the objectives choose (hard negatives, masked captions).
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
        attention_mask: torch.Tensor | None = None,
        token_drop_generator: torch.Generator | None = None,
    ) -> IVTForPreTrainingOutput:
        r"""
        Encode a batch of (image, caption) pairs for the pre-training objectives: the token sequences the fusion
        encoder reads, and the normalised [CLS] embeddings that ITC compares.

        input_ids, attention_mask: the captions, unmasked.
        pixel_values: the images, one per caption.
        token_drop_generator (`torch.Generator`, *optional*): source of the BMM token-dropping draws in training mode.
        """
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"pre-training needs paired inputs: got {input_ids.shape[0]} captions and "
                f"{pixel_values.shape[0]} images"
            )
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        text_hidden, text_mask = self._encode(
            self.ivt.text_embeddings(input_ids), attention_mask, "text", drop=True, generator=token_drop_generator
        )
        image_hidden, image_mask = self._encode(
            self.ivt.image_embeddings(pixel_values), None, "image", drop=True, generator=token_drop_generator
        )
        text_features, image_features = text_hidden[:, 0], image_hidden[:, 0]
        return IVTForPreTrainingOutput(
            text_last_hidden_state=text_hidden,
            text_attention_mask=text_mask,
            image_last_hidden_state=image_hidden,
            image_attention_mask=image_mask,
            text_pooler_output=text_features,
            image_pooler_output=image_features,
            text_embeds=nn.functional.normalize(text_features, dim=-1),
            image_embeds=nn.functional.normalize(image_features, dim=-1),
            temperature=self.clamped_temperature(),
        )

    def image_text_matching_logits(
        self,
        text_hidden_state: torch.Tensor,
        text_attention_mask: torch.Tensor,
        image_hidden_state: torch.Tensor,
        image_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """
        Match / no-match logits `(batch, 2)` of encoded captions and images paired row by row (the i-th caption with
        the i-th image), from the fusion encoder's [CLS]. The masks mark real tokens with 1.
        """
        fused = self.fusion_encoder(
            text_hidden_state,
            None if bool(text_attention_mask.all()) else text_attention_mask,
            image_hidden_state,
            None if bool(image_attention_mask.all()) else image_attention_mask,
        )
        return self.itm_head(fused[:, 0])

    def masked_language_modeling_logits(
        self,
        mlm_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mlm_labels: torch.Tensor,
        image_hidden_state: torch.Tensor,
        image_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """
        MLM prediction scores `(num_masked_tokens, vocab_size)` of the masked positions only (`mlm_labels != -100`,
        in row-major order), the masked captions attending to their encoded images: the vocabulary projection of
        every other token would cost most of the step and feed no loss. Masked captions are never token-dropped.
        """
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        masked_text, _ = self._encode(
            self.ivt.text_embeddings(mlm_input_ids), attention_mask, "text", drop=False, generator=None
        )
        mlm_hidden = self.fusion_encoder(masked_text, attention_mask, image_hidden_state, image_attention_mask)
        return self.mlm_head(mlm_hidden[mlm_labels != -100])


__all__ = ["IVTForPreTraining", "IVTForPreTrainingOutput"]
