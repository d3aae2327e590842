"""IVT model configuration."""

from transformers import PretrainedConfig

MAX_TEXT_POSITIONS = 512  # BERT's text positions: the longest caption a model or processor takes, in tokens


class IVTConfig(PretrainedConfig):
    r"""
    Configuration of an [`IVTModel`]: one pre-LayerNorm transformer shared by images and text, with a separate
    feed-forward network per modality. The defaults reproduce the released base model (ViT-B/16 width and depth,
    384 x 128 pedestrian images cut into overlapping 16 x 16 patches with stride 12, the BERT uncased vocabulary).

    Args:
        hidden_size (`int`, *optional*, defaults to 768): width of tokens and of the output embedding.
        num_hidden_layers (`int`, *optional*, defaults to 12): number of shared transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 12): attention heads per layer.
        intermediate_size (`int`, *optional*, defaults to 3072): width of each modality's feed-forward network.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): activation of the feed-forward networks (exact erf GELU).
        image_size (`tuple[int, int]`, *optional*, defaults to `(384, 128)`): input (height, width) in pixels.
        patch_size (`int`, *optional*, defaults to 16): side of the square patch kernel.
        patch_stride (`int`, *optional*, defaults to 12): step between patches; below `patch_size` the patches overlap.
        num_channels (`int`, *optional*, defaults to 3): image channels.
        vocab_size (`int`, *optional*, defaults to 30522): WordPiece vocabulary size.
        max_position_embeddings (`int`, *optional*, defaults to 512): longest text the model accepts, in tokens.
        type_vocab_size (`int`, *optional*, defaults to 2): BERT token-type vocabulary (IVT always uses type 0).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1): dropout after the text embedding LayerNorm.
        attention_dropout (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        drop_path_rate (`float`, *optional*, defaults to 0.1): stochastic depth at the last layer (linear from 0).
        token_drop_ratio (`float`, *optional*, defaults to 0.2): largest fraction of tokens dropped in training (BMM).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): eps of the transformer LayerNorms.
        text_layer_norm_eps (`float`, *optional*, defaults to 1e-12): eps of the text embedding LayerNorm.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated-normal initialisation.
        pad_token_id (`int`, *optional*, defaults to 0): id of the [PAD] token (BERT's).
        fusion_num_hidden_layers (`int`, *optional*, defaults to 6): depth of the pre-training fusion encoder
            ([`IVTForPreTraining`] only; the dual encoder ignores the `fusion_*` and `*_loss_weight` fields).
        fusion_num_attention_heads (`int`, *optional*): fusion attention heads (default: `num_attention_heads`).
        fusion_intermediate_size (`int`, *optional*): fusion feed-forward width (default: `intermediate_size`).
        temperature_init (`float`, *optional*, defaults to 0.5): initial ITC temperature, learnable, clamped to
            [0.001, 0.5].
        itc_loss_weight, itm_loss_weight, mlm_loss_weight (`float`, *optional*, default to 1.0): pre-training loss
            weights.
        cmpm_loss_weight (`float`, *optional*, defaults to 0.0): weight of the optional CMPM loss on the pairs
            during pre-training (each pair its own id; with `token_drop_ratio` > 0 this is BMM).
        tie_word_embeddings (`bool`, *optional*, defaults to `True`): the pre-training MLM decoder shares the word
            embedding matrix, as in BERT.
    """

    model_type = "ivt"
    # Settings that shape training, not the saved weights: a training run sets them on a loaded checkpoint too.
    training_settings = ("drop_path_rate", "hidden_dropout_prob", "token_drop_ratio")
    # Settings of the pre-training objective around the dual encoder ([`IVTForPreTraining`]).
    pretraining_settings = (
        "fusion_num_hidden_layers",
        "temperature_init",
        "itc_loss_weight",
        "itm_loss_weight",
        "mlm_loss_weight",
        "cmpm_loss_weight",
    )

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        image_size: tuple[int, int] = (384, 128),
        patch_size: int = 16,
        patch_stride: int = 12,
        num_channels: int = 3,
        vocab_size: int = 30522,
        max_position_embeddings: int = MAX_TEXT_POSITIONS,
        type_vocab_size: int = 2,
        hidden_dropout_prob: float = 0.1,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.1,
        token_drop_ratio: float = 0.2,
        layer_norm_eps: float = 1e-6,
        text_layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        fusion_num_hidden_layers: int = 6,
        fusion_num_attention_heads: int | None = None,
        fusion_intermediate_size: int | None = None,
        temperature_init: float = 0.5,
        itc_loss_weight: float = 1.0,
        itm_loss_weight: float = 1.0,
        mlm_loss_weight: float = 1.0,
        cmpm_loss_weight: float = 0.0,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
        sizes = {
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "intermediate_size": intermediate_size,
            "patch_size": patch_size,
            "patch_stride": patch_stride,
            "num_channels": num_channels,
            "vocab_size": vocab_size,
            "max_position_embeddings": max_position_embeddings,
            "type_vocab_size": type_vocab_size,
            "fusion_num_hidden_layers": fusion_num_hidden_layers,
            "fusion_num_attention_heads": fusion_num_attention_heads or num_attention_heads,
            "fusion_intermediate_size": fusion_intermediate_size or intermediate_size,
        }
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in {
            "hidden_dropout_prob": hidden_dropout_prob,
            "attention_dropout": attention_dropout,
            "drop_path_rate": drop_path_rate,
        }.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if not 0.0 <= token_drop_ratio < 1.0:
            raise ValueError(f"token_drop_ratio must be in [0, 1), got {token_drop_ratio}")
        image_size = tuple(image_size)
        if len(image_size) != 2 or min(image_size) < patch_size:
            raise ValueError(f"image_size must be (height, width), each >= patch_size {patch_size}; got {image_size}")
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.image_size = list(image_size)
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.num_channels = num_channels
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.token_drop_ratio = token_drop_ratio
        self.layer_norm_eps = layer_norm_eps
        self.text_layer_norm_eps = text_layer_norm_eps
        self.initializer_range = initializer_range
        fusion_heads = fusion_num_attention_heads or num_attention_heads
        if hidden_size % fusion_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by fusion_num_attention_heads ({fusion_heads})"
            )
        self.fusion_num_hidden_layers = fusion_num_hidden_layers
        self.fusion_num_attention_heads = fusion_heads
        self.fusion_intermediate_size = fusion_intermediate_size or intermediate_size
        self.temperature_init = temperature_init
        self.itc_loss_weight = itc_loss_weight
        self.itm_loss_weight = itm_loss_weight
        self.mlm_loss_weight = mlm_loss_weight
        self.cmpm_loss_weight = cmpm_loss_weight

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, columns) of patches: ((H - P) // S + 1, (W - P) // S + 1)."""
        height, width = self.image_size
        return (
            (height - self.patch_size) // self.patch_stride + 1,
            (width - self.patch_size) // self.patch_stride + 1,
        )

    @property
    def num_image_tokens(self) -> int:
        """Patches plus the [CLS] token."""
        rows, columns = self.patch_grid
        return rows * columns + 1


__all__ = ["MAX_TEXT_POSITIONS", "IVTConfig"]
