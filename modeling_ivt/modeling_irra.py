"""PyTorch IRRA-family dual encoder (Jiang & Ye, CVPR 2023): CLIP's two towers adapted to pedestrian crops."""

from dataclasses import dataclass

import torch
from torch import nn

from transformers import initialization as init
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel
from transformers.models.clip.modeling_clip import (
    CLIPAttention,
    CLIPEncoder,
    CLIPMLP,
    CLIPTextEmbeddings,
)
from transformers.utils import ModelOutput

from .configuration_irra import IRRAConfig, IRRATextConfig, IRRAVisionConfig
from .hub_utils import ProjectHubMixin


@dataclass
class IRRAOutput(ModelOutput):
    """
    Args:
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Cosine similarity of every caption to every image: the retrieval score.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            The transpose of `logits_per_text`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised image embeddings.
        text_model_output (`BaseModelOutputWithPooling`): the projected text sequence and embedding.
        vision_model_output (`BaseModelOutputWithPooling`): the projected image sequence and embedding.
    """

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


class IRRAVisionEmbeddings(nn.Module):
    """Strided patch grid over a rectangular image (no bias), a class token, and one learned position per token."""

    def __init__(self, config: IRRAVisionConfig):
        super().__init__()
        self.config = config
        self.image_size = tuple(config.image_size)
        self.embed_dim = config.hidden_size
        self.num_positions = config.num_positions
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_stride,
            bias=False,
        )
        self.position_embedding = nn.Embedding(self.num_positions, config.hidden_size)
        self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (self.config.num_channels, *self.image_size):
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}); got {tuple(pixel_values.shape)}. Use the model's processor to resize images."
            )
        target_dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype=target_dtype)).flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        embeddings = torch.cat([class_embeds, patches], dim=1)
        return embeddings + self.position_embedding(self.position_ids).to(patches.dtype)


class IRRAPreTrainedModel(ProjectHubMixin, PreTrainedModel):
    config: IRRAConfig
    config_class = IRRAConfig
    base_model_prefix = "irra"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "IRRAVisionEmbeddings"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        """OpenAI CLIP's initialisation (which IRRA keeps for new blocks): widths and depths set each std."""
        super()._init_weights(module)
        if isinstance(module, IRRAVisionEmbeddings):
            scale = module.embed_dim**-0.5
            init.normal_(module.class_embedding, std=scale)
            init.normal_(module.position_embedding.weight, std=scale)
            init.normal_(module.patch_embedding.weight, std=module.config.initializer_range)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, CLIPTextEmbeddings):
            init.normal_(module.token_embedding.weight, std=0.02)
            init.normal_(module.position_embedding.weight, std=0.01)
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
        elif isinstance(module, CLIPAttention):
            width, depth = module.embed_dim, module.config.num_hidden_layers
            for projection in (module.q_proj, module.k_proj, module.v_proj):
                init.normal_(projection.weight, std=width**-0.5)
            init.normal_(module.out_proj.weight, std=width**-0.5 * (2 * depth) ** -0.5)
        elif isinstance(module, CLIPMLP):
            width, depth = module.config.hidden_size, module.config.num_hidden_layers
            init.normal_(module.fc1.weight, std=(2 * width) ** -0.5)
            init.normal_(module.fc2.weight, std=width**-0.5 * (2 * depth) ** -0.5)
        elif isinstance(module, IRRAModel):
            init.normal_(module.visual_projection.weight, std=module.vision_embed_dim**-0.5)
            init.normal_(module.text_projection.weight, std=module.text_embed_dim**-0.5)


class IRRAVisionModel(IRRAPreTrainedModel):
    """The image tower without its projection: `last_hidden_state` is every token after `post_layernorm`."""

    config: IRRAVisionConfig
    config_class = IRRAVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: IRRAVisionConfig):
        super().__init__(config)
        self.embeddings = IRRAVisionEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        hidden_states = self.pre_layernorm(self.embeddings(pixel_values))
        hidden_states = self.encoder(inputs_embeds=hidden_states, **kwargs).last_hidden_state
        hidden_states = self.post_layernorm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0])


class IRRATextModel(IRRAPreTrainedModel):
    """
    CLIP's causal text tower without its projection. The pooled row is the end-of-text token, found as the argmax of
    the ids (end-of-text is the largest id); padding after it never reaches it through the causal mask.
    """

    config: IRRATextConfig
    config_class = IRRATextConfig
    input_modalities = ("text",)
    _input_embed_layer = "token_embedding"

    def __init__(self, config: IRRATextConfig):
        super().__init__(config)
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.token_embedding = value

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        hidden_states = self.embeddings(input_ids=input_ids)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
        )
        kwargs.pop("is_causal", None)
        hidden_states = self.encoder(
            inputs_embeds=hidden_states, attention_mask=mask, is_causal=True, **kwargs
        ).last_hidden_state
        hidden_states = self.final_layer_norm(hidden_states)
        end_of_text = input_ids.to(device=hidden_states.device).argmax(dim=-1)
        pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), end_of_text]
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)


class IRRAModel(IRRAPreTrainedModel):
    """
    The IRRA dual encoder. Each tower's final LayerNorm output is projected, token by token, into the shared space;
    an image is embedded by its class token, a caption by its end-of-text token, and they are compared by cosine
    similarity (no logit scale at inference).
    """

    # Also the model of the zero-shot image classification pipeline, for remote code too.
    additional_auto_classes = ("AutoModelForZeroShotImageClassification",)

    def __init__(self, config: IRRAConfig):
        super().__init__(config)
        self.text_embed_dim = config.text_config.hidden_size
        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_model = IRRATextModel._from_config(config.text_config)
        self.vision_model = IRRAVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_model.set_input_embeddings(value)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Encode captions. `last_hidden_state` is the whole projected sequence (`(batch, tokens, projection_dim)`, what
        IRRA's relation-reasoning head reads); `pooler_output` the un-normalised embedding at end-of-text.
        """
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        sequence = self.text_projection(outputs.last_hidden_state)
        end_of_text = input_ids.to(device=sequence.device).argmax(dim=-1)
        pooled = sequence[torch.arange(sequence.shape[0], device=sequence.device), end_of_text]
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        r"""
        Encode pedestrian images of `config.vision_config.image_size`. `last_hidden_state` is every projected token,
        `pooler_output` the un-normalised embedding (the class token).
        """
        outputs = self.vision_model(pixel_values=pixel_values, **kwargs)
        sequence = self.visual_projection(outputs.last_hidden_state)
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=sequence[:, 0])

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs,
    ) -> IRRAOutput:
        r"""
        Score every caption against every image by the cosine similarity of their embeddings. Given one modality
        only, only its L2-normalised embeddings (and that side's output) are returned: this is what the
        `feature-extraction` and `image-feature-extraction` pipelines read.
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("IRRAModel.forward needs input_ids (captions), pixel_values (images) or both")
        text_outputs = vision_outputs = text_embeds = image_embeds = None
        if input_ids is not None:
            text_outputs = self.get_text_features(input_ids, attention_mask, **kwargs)
            text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)
        if pixel_values is not None:
            vision_outputs = self.get_image_features(pixel_values, **kwargs)
            image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)
        logits_per_text = logits_per_image = None
        if text_embeds is not None and image_embeds is not None:
            logits_per_text = text_embeds @ image_embeds.t()
            logits_per_image = logits_per_text.t()
        return IRRAOutput(
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_image,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


__all__ = ["IRRAModel", "IRRAOutput", "IRRAPreTrainedModel", "IRRATextModel", "IRRAVisionModel"]
