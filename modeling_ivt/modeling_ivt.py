"""PyTorch IVT: one transformer shared by pedestrian images and their descriptions (Shu et al., ECCV-W 2022)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_ivt import IVTConfig
from .hub_utils import ProjectHubMixin


@dataclass
class IVTOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `person_ids` are given):
            CMPM loss between the image and text [CLS] features of the batch.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Cosine similarity of every caption to every image: the retrieval score.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            The transpose of `logits_per_text`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, hidden_size)`):
            L2-normalised text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, hidden_size)`):
            L2-normalised image embeddings.
        text_model_output (`BaseModelOutputWithPooling`): the text side's full output.
        vision_model_output (`BaseModelOutputWithPooling`): the image side's full output.
    """

    loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(
            self[k].to_tuple() if k in ("text_model_output", "vision_model_output") else self[k] for k in self.keys()
        )


def cmpm_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, person_ids: torch.Tensor, epsilon: float = 1e-8
) -> torch.Tensor:
    """
    Cross-modal projection matching (Zhang & Lu, ECCV 2018) exactly as IVT computes it: raw features projected on the
    other modality's normalised features, no temperature, targets = label rows divided by their L2 norm; the
    image-to-text and text-to-image KL terms are summed. Computed in fp32 with autocast off, so that bf16 autocast
    cannot round the projections.
    """
    with torch.autocast(image_features.device.type, enabled=False):
        image_features = image_features.float()
        text_features = text_features.float()
        labels = (person_ids.view(-1, 1) == person_ids.view(1, -1)).float()
        targets = labels / labels.norm(dim=1, keepdim=True)
        log_targets = torch.log(targets + epsilon)

        image_to_text = image_features @ nn.functional.normalize(text_features, dim=-1).t()
        text_to_image = text_features @ nn.functional.normalize(image_features, dim=-1).t()

        def kl(projections: torch.Tensor) -> torch.Tensor:
            log_probs = nn.functional.log_softmax(projections, dim=1)
            return (log_probs.exp() * (log_probs - log_targets)).sum(dim=1).mean()

        return kl(image_to_text) + kl(text_to_image)


def drop_tokens(
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    ratio: float,
    protect_last_token: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Bidirectional mask modelling: each sample independently loses k tokens, k uniform in {0, ..., floor(ratio * N)}
    with N its real (unpadded) length including [CLS]. [CLS] is never dropped, nor padding, nor (for text, where
    `protect_last_token` is set) the final [SEP]. Kept tokens are gathered to the front in their original order; the
    returned mask marks real tokens, or is None when no sample needs padding.
    """
    batch_size, seq_len, hidden_size = hidden_states.shape
    device = hidden_states.device
    valid = torch.ones(batch_size, seq_len, dtype=torch.bool, device=device)
    if attention_mask is not None:
        valid = attention_mask.bool()
    lengths = valid.sum(dim=1)

    candidates = valid.clone()
    candidates[:, 0] = False
    if protect_last_token:
        candidates[torch.arange(batch_size, device=device), lengths - 1] = False

    max_drop = torch.minimum(torch.floor(lengths * ratio).long(), candidates.sum(dim=1))
    uniform = torch.rand(batch_size, generator=generator, device=device)
    num_drop = torch.floor(uniform * (max_drop + 1)).long()

    scores = torch.rand(batch_size, seq_len, generator=generator, device=device)
    scores = scores.masked_fill(~candidates, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = valid & ~(candidates & (ranks < num_drop.unsqueeze(1)))

    new_len = int(keep.sum(dim=1).max())
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)[:, :new_len]
    hidden_states = hidden_states.gather(1, order.unsqueeze(-1).expand(-1, -1, hidden_size))
    new_mask = keep.gather(1, order)
    return hidden_states, (None if bool(new_mask.all()) else new_mask.long())


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch for whole samples, rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


class IVTImageEmbeddings(nn.Module):
    """Overlapping patch embedding, [CLS], then a position embedding and a per-position type embedding."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.image_size = tuple(config.image_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_stride
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_image_tokens, config.hidden_size))
        self.type_embedding = nn.Parameter(torch.zeros(1, config.num_image_tokens, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != self.image_size:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}); got {tuple(pixel_values.shape)}. Use the model's processor to resize images."
            )
        target_dtype = self.patch_embedding.weight.dtype
        patches = self._embed_patches(pixel_values.to(dtype=target_dtype))
        cls_tokens = self.cls_token.expand(patches.shape[0], -1, -1)
        embeddings = torch.cat([cls_tokens, patches], dim=1)
        return embeddings + self.position_embedding + self.type_embedding


    def _embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        (batch, patches, hidden). Patches that do not overlap (stride = size) are cut out by a reshape and projected by
        one matrix product with the convolution's weight: the same result as the convolution, with a backward pass
        several times cheaper on CPUs than the convolution's.
        """
        convolution = self.patch_embedding
        size, stride = self.config.patch_size, self.config.patch_stride
        if size != stride:
            return convolution(pixel_values).flatten(2).transpose(1, 2)
        rows, columns = self.config.patch_grid
        batch_size, channels = pixel_values.shape[:2]
        patches = (
            pixel_values[:, :, : rows * size, : columns * size]
            .reshape(batch_size, channels, rows, size, columns, size)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(batch_size, rows * columns, channels * size * size)
        )
        return nn.functional.linear(patches, convolution.weight.flatten(1), convolution.bias)


class IVTTextEmbeddings(nn.Module):
    """BERT embeddings: word + absolute position + token type 0, LayerNorm, dropout."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {seq_len} tokens but the model has {self.config.max_position_embeddings} text "
                "positions; tokenize with truncation (the IVT processor does)."
            )
        position_ids = self.position_ids[:, :seq_len]
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )
        return self.dropout(self.layer_norm(embeddings))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class IVTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, shared by both modalities."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            queries,
            keys,
            values,
            attention_mask,
            scaling=self.scale,
            dropout=0.0 if not self.training else self.dropout,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, seq_len, self.embed_dim)
        return self.out_proj(attn_output), attn_weights


class IVTMLP(nn.Module):
    def __init__(self, config: IVTConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class IVTEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm layer whose attention and norms are shared and whose feed-forward network is chosen by modality."""

    def __init__(self, config: IVTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = IVTAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.image_mlp = IVTMLP(config)
        self.text_mlp = IVTMLP(config)
        self.drop_path_rate = drop_path_rate

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, modality: str, **kwargs
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + drop_path(attn_output, self.drop_path_rate, self.training)
        mlp = self.image_mlp if modality == "image" else self.text_mlp
        mlp_output = mlp(self.layer_norm2(hidden_states))
        return hidden_states + drop_path(mlp_output, self.drop_path_rate, self.training)


class IVTEncoder(nn.Module):
    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.layers = nn.ModuleList([IVTEncoderLayer(config, rate) for rate in rates])
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, modality: str, **kwargs
    ) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, modality=modality, **kwargs)
        return hidden_states


class IVTPreTrainedModel(ProjectHubMixin, PreTrainedModel):
    config: IVTConfig
    config_class = IVTConfig
    base_model_prefix = "ivt"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    _no_split_modules = ["IVTImageEmbeddings", "IVTTextEmbeddings", "IVTEncoderLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module):
        """Normal(0.02) linear and embedding weights and identity LayerNorms (the library default), plus ViT's
        truncated-normal [CLS], position and type embeddings."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, IVTImageEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
            init.trunc_normal_(module.type_embedding, std=std)
        elif isinstance(module, IVTTextEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class IVTModel(IVTPreTrainedModel):
    """
    The IVT dual encoder. Images and captions run through the same layers; each embedding is the [CLS] token after
    the shared final LayerNorm, with no projection head, so both live in one `hidden_size`-wide space.
    """

    # Also the model of the zero-shot image classification pipeline, for remote code too.
    additional_auto_classes = ("AutoModelForZeroShotImageClassification",)

    def __init__(self, config: IVTConfig):
        super().__init__(config)
        self.image_embeddings = IVTImageEmbeddings(config)
        self.text_embeddings = IVTTextEmbeddings(config)
        self.encoder = IVTEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_embeddings.word_embeddings = value

    def _encode(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        modality: str,
        token_drop_generator: torch.Generator | None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if self.training and self.config.token_drop_ratio > 0:
            hidden_states, attention_mask = drop_tokens(
                hidden_states,
                attention_mask,
                self.config.token_drop_ratio,
                protect_last_token=modality == "text",
                generator=token_drop_generator,
            )
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        hidden_states = self.encoder(hidden_states, mask, modality=modality, **kwargs)
        hidden_states = self.final_layer_norm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0])

    def _text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_drop_generator: torch.Generator | None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """`get_text_features` with the token-dropping draws of training mode taken from `token_drop_generator`: the
        hook through which training code makes its runs reproducible."""
        return self._encode(self.text_embeddings(input_ids), attention_mask, "text", token_drop_generator, **kwargs)

    def _image_features(
        self, pixel_values: torch.Tensor, token_drop_generator: torch.Generator | None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """`get_image_features` with the token-dropping draws taken from `token_drop_generator`."""
        return self._encode(self.image_embeddings(pixel_values), None, "image", token_drop_generator, **kwargs)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Encode captions. `pooler_output` is the un-normalised [CLS] embedding (what the released model compares);
        `last_hidden_state` is the whole normed sequence (after token dropping in training mode, which draws from
        torch's global RNG).
        """
        return self._text_features(input_ids, attention_mask, None, **kwargs)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        r"""
        Encode pedestrian images of `config.image_size`. `pooler_output` is the un-normalised [CLS] embedding.
        """
        return self._image_features(pixel_values, None, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> IVTOutput:
        r"""
        Score every caption against every image. With `person_ids` (one per caption/image pair, the i-th caption
        describing the i-th image) the CMPM loss is returned: every pair sharing a person id counts as a positive.
        Given one modality only, only its L2-normalised embeddings (and that side's output) are returned: this is
        what the `feature-extraction` and `image-feature-extraction` pipelines read.
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("IVTModel.forward needs input_ids (captions), pixel_values (images) or both")
        if return_loss is None:
            return_loss = person_ids is not None
        if return_loss and (person_ids is None or input_ids is None or pixel_values is None):
            raise ValueError("the loss needs person_ids, input_ids and pixel_values")

        text_outputs = vision_outputs = text_embeds = image_embeds = None
        if input_ids is not None:
            text_outputs = self.get_text_features(input_ids, attention_mask, **kwargs)
            text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)
        if pixel_values is not None:
            vision_outputs = self.get_image_features(pixel_values, **kwargs)
            image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)

        loss = None
        if return_loss:
            text_features = text_outputs.pooler_output
            image_features = vision_outputs.pooler_output
            if not (len(person_ids) == len(text_features) == len(image_features)):
                raise ValueError(
                    f"the loss needs paired inputs: got {len(text_features)} captions, {len(image_features)} images "
                    f"and {len(person_ids)} person_ids"
                )
            loss = cmpm_loss(image_features, text_features, person_ids)

        logits_per_text = logits_per_image = None
        if text_embeds is not None and image_embeds is not None:
            logits_per_text = text_embeds @ image_embeds.t()
            logits_per_image = logits_per_text.t()
        return IVTOutput(
            loss=loss,
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_image,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


__all__ = ["IVTModel", "IVTPreTrainedModel", "IVTOutput", "cmpm_loss", "drop_tokens"]
