"""IRRA-family dual encoder configuration: a CLIP ViT image tower on rectangular pedestrian crops and CLIP's text tower."""

from transformers import PretrainedConfig


def _check_heads(tower: str, hidden_size: int, num_attention_heads: int):
    if num_attention_heads < 1 or hidden_size % num_attention_heads != 0:
        raise ValueError(
            f"{tower}: hidden_size ({hidden_size}) must be a positive multiple of num_attention_heads "
            f"({num_attention_heads})"
        )


def _check_positive(tower: str, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{tower}: {name} must be a positive integer, got {value!r}")


# IRRA's input: pedestrian crops resized to 384 x 128 (height x width); the image processor uses the same default.
DEFAULT_IMAGE_SIZE = (384, 128)


class IRRAVisionConfig(PretrainedConfig):
    r"""
    Configuration of the image tower of an [`IRRAModel`]: a pre-LayerNorm ViT whose patch grid may be strided and
    rectangular. The defaults are IRRA's ViT-B/16 on 384 x 128 pedestrian crops with non-overlapping patches.

    Args:
        hidden_size (`int`, *optional*, defaults to 768): token width.
        intermediate_size (`int`, *optional*, defaults to 3072): feed-forward width.
        num_hidden_layers (`int`, *optional*, defaults to 12): transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 12): attention heads per layer.
        num_channels (`int`, *optional*, defaults to 3): image channels.
        image_size (`tuple[int, int]`, *optional*, defaults to `(384, 128)`): input (height, width) in pixels.
        patch_size (`int`, *optional*, defaults to 16): side of the square patch kernel.
        patch_stride (`int`, *optional*, defaults to 16): step between patches (12 gives IRRA's overlapping grid).
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`): feed-forward activation, `x * sigmoid(1.702 x)`.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): eps of every LayerNorm.
        attention_dropout (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the patch-embedding initialisation.
    """

    model_type = "irra_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_channels=3,
        image_size=DEFAULT_IMAGE_SIZE,
        patch_size=16,
        patch_stride=16,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive(
            "vision_config",
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_channels=num_channels,
            patch_size=patch_size,
            patch_stride=patch_stride,
        )
        _check_heads("vision_config", hidden_size, num_attention_heads)
        image_size = tuple(image_size)
        if len(image_size) != 2 or min(image_size) < patch_size:
            raise ValueError(
                f"vision_config: image_size must be (height, width), each >= patch_size {patch_size}; got {image_size}"
            )
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_channels = num_channels
        self.image_size = list(image_size)
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, columns) of patches: ((H - P) // S + 1, (W - P) // S + 1), flattened row by row."""
        height, width = self.image_size
        return (
            (height - self.patch_size) // self.patch_stride + 1,
            (width - self.patch_size) // self.patch_stride + 1,
        )

    @property
    def num_positions(self) -> int:
        """Patches plus the class token."""
        rows, columns = self.patch_grid
        return rows * columns + 1


class IRRATextConfig(PretrainedConfig):
    r"""
    Configuration of the text tower of an [`IRRAModel`]: CLIP's causal text transformer. The defaults are CLIP's
    (and IRRA's): 512 wide, 12 layers, 8 heads, 77 positions, the 49,408-entry byte-level BPE vocabulary. A caption is
    embedded at its end-of-text token, found as its largest id.

    Args:
        vocab_size (`int`, *optional*, defaults to 49408): vocabulary size.
        hidden_size (`int`, *optional*, defaults to 512): token width.
        intermediate_size (`int`, *optional*, defaults to 2048): feed-forward width.
        num_hidden_layers (`int`, *optional*, defaults to 12): transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 8): attention heads per layer.
        max_position_embeddings (`int`, *optional*, defaults to 77): text positions (the caption length in tokens).
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`): feed-forward activation.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): eps of every LayerNorm.
        attention_dropout (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the token-embedding initialisation.
    """

    model_type = "irra_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size=49408,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive(
            "text_config",
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            max_position_embeddings=max_position_embeddings,
        )
        _check_heads("text_config", hidden_size, num_attention_heads)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range


class IRRAConfig(PretrainedConfig):
    r"""
    Configuration of an [`IRRAModel`], the inference model of IRRA (Jiang & Ye, CVPR 2023) and of the many
    text-based person retrieval models that keep it: two towers without shared weights, each ending in a linear
    projection to a common `projection_dim`-wide space where captions and images are compared by cosine similarity.

    Args:
        text_config (`dict` or [`IRRATextConfig`], *optional*): the text tower (CLIP's defaults).
        vision_config (`dict` or [`IRRAVisionConfig`], *optional*): the image tower (ViT-B/16 at 384 x 128, stride 16).
        projection_dim (`int`, *optional*, defaults to 512): width of the shared embedding space.
    """

    model_type = "irra"
    sub_configs_defaults = {"text_config": IRRATextConfig, "vision_config": IRRAVisionConfig}

    def __init__(self, text_config=None, vision_config=None, projection_dim=512, **kwargs):
        if not isinstance(text_config, IRRATextConfig):
            text_config = IRRATextConfig(**(text_config or {}))
        if not isinstance(vision_config, IRRAVisionConfig):
            vision_config = IRRAVisionConfig(**(vision_config or {}))
        self.text_config = text_config
        self.vision_config = vision_config
        super().__init__(**kwargs)
        _check_positive("IRRAConfig", projection_dim=projection_dim)
        self.projection_dim = projection_dim


__all__ = ["IRRAConfig", "IRRATextConfig", "IRRAVisionConfig"]
