"""The model and processor a run starts from. IVT: random, MiniLM text init, ViT + BERT init, or any IVT checkpoint.
IRRA family: random, CLIP, an IRRA checkpoint (with its training heads), or any saved IRRA-family model."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from transformers import AutoProcessor

from modeling_ivt import IRRAModel, IVTConfig, IVTModel, create_irra_processor, create_processor, minilm_dir
from modeling_ivt.conversion_utils import load_state_dict_file
from modeling_ivt.convert_clip import irra_from_clip_folder
from modeling_ivt.convert_irra_checkpoint import TRAINING_ONLY_PREFIXES, convert_irra_state_dict
from modeling_ivt.convert_pretraining import encoder_from_pretraining
from modeling_ivt.convert_vit_bert import initialize_from_vit_and_bert

from .config import TrainingConfig

logger = logging.getLogger(__name__)


def checkpoint_overrides(model_config: IVTConfig, names: tuple[str, ...]) -> dict:
    """The recipe's values of the `IVTConfig` settings `names`, which a run sets on a loaded checkpoint too."""
    return {name: getattr(model_config, name) for name in names}


def build_model_and_processor(config: TrainingConfig) -> tuple[IVTModel, object, str]:
    """The initial model, its processor and a one-line description of where the weights came from."""
    model, processor, source = _initial_model_and_processor(config)
    model.set_attn_implementation(config.attn_implementation)
    if config.text_embedding_scale is not None and config.init in ("random", "minilm", "vit_bert"):
        with torch.no_grad():
            model.text_embeddings.layer_norm.weight.mul_(config.text_embedding_scale)
            model.text_embeddings.layer_norm.bias.mul_(config.text_embedding_scale)
        source += f" (text embedding LayerNorm scaled by {config.text_embedding_scale})"
    return model, processor, source


def _initial_model_and_processor(config: TrainingConfig) -> tuple[IVTModel, object, str]:
    image_size = tuple(config.model.image_size)
    if config.init == "random":
        model = IVTModel(copy.deepcopy(config.model))
        return model, create_processor(image_size, config.max_text_length), "random initialisation"
    if config.init == "minilm":
        folder = minilm_dir()
        state_dict = load_state_dict_file(folder)
        model, report = initialize_from_vit_and_bert(
            copy.deepcopy(config.model), None, state_dict, shared_from_bert=config.init_shared_from_text
        )
        source = "text embeddings and text MLPs from all-MiniLM-L6-v2"
        if config.init_shared_from_text:
            source += ", shared attention and LayerNorms from MiniLM"
        logger.info("MiniLM initialisation: %s", report.summary())
        return model, create_processor(image_size, config.max_text_length, tokenizer_dir=folder), source
    if config.init == "vit_bert":
        if not (config.vit_path or config.bert_path):
            raise ValueError(
                "init=vit_bert needs --vit_path, --bert_path or both (ViT / BERT weight files or folders)"
            )
        vit = load_state_dict_file(config.vit_path) if config.vit_path else None
        bert = load_state_dict_file(config.bert_path) if config.bert_path else None
        model, report = initialize_from_vit_and_bert(copy.deepcopy(config.model), vit, bert)
        logger.info("ViT + BERT initialisation: %s", report.summary())
        bert_path = Path(config.bert_path) if config.bert_path else None
        tokenizer_dir = bert_path if bert_path and (bert_path / "tokenizer_config.json").is_file() else None
        processor = create_processor(image_size, config.max_text_length, tokenizer_dir=tokenizer_dir)
        names = " + ".join(str(path) for path in (config.vit_path, config.bert_path) if path)
        return model, processor, f"ViT + BERT initialisation from {names}"
    training_settings = checkpoint_overrides(config.model, IVTConfig.training_settings)
    saved_config = Path(config.init) / "config.json"
    if saved_config.is_file() and "IVTForPreTraining" in json.loads(saved_config.read_text()).get("architectures", []):
        stride = config.model.patch_stride
        model, report = encoder_from_pretraining(config.init, patch_stride=stride, **training_settings)
        logger.info("encoder of the pre-trained %s at patch stride %d: %s", config.init, stride, report.summary())
        return model, AutoProcessor.from_pretrained(config.init), f"pre-trained IVT {config.init}"
    model = IVTModel.from_pretrained(config.init, dtype=torch.float32, **training_settings)
    processor = AutoProcessor.from_pretrained(config.init)
    if tuple(model.config.image_size) != image_size:
        logger.warning(
            "%s takes %s images; model.image_size (%s) is ignored",
            config.init,
            model.config.image_size,
            image_size,
        )
    return model, processor, f"IVT checkpoint {config.init}"


def build_irra_model_and_processor(config: TrainingConfig) -> tuple[IRRAModel, object, str, dict[str, torch.Tensor]]:
    """
    The initial IRRA-family model, its processor, a one-line description of where the weights came from, and the
    training-only tensors of an IRRA checkpoint (IRRA's names; empty for the other starts) for
    `IRRAForRetrievalTraining.load_training_heads`.
    """
    vision = config.model.vision_config
    image_size = tuple(vision.image_size)
    if config.init == "random":
        model = IRRAModel(copy.deepcopy(config.model))
        return model, create_irra_processor(model.config), "random initialisation", {}
    if config.init == "clip":
        if not config.clip_path:
            raise ValueError("init=clip needs --clip_path (a CLIPModel folder with config.json and model.safetensors)")
        model, report = irra_from_clip_folder(config.clip_path, image_size, vision.patch_stride)
        logger.info("CLIP initialisation from %s: %s", config.clip_path, report.summary())
        return model, create_irra_processor(model.config), f"CLIP {config.clip_path}", {}
    if Path(config.init).is_file():
        state_dict = load_state_dict_file(config.init)
        model, left_out = convert_irra_state_dict(state_dict)
        heads = {key: state_dict[key].float() for key in left_out if key.startswith(TRAINING_ONLY_PREFIXES)}
        logger.info("IRRA checkpoint %s: dual encoder loaded, %d training-head tensors kept", config.init, len(heads))
        return model, create_irra_processor(model.config), f"IRRA checkpoint {Path(config.init).name}", heads
    model = IRRAModel.from_pretrained(config.init, dtype=torch.float32)
    if tuple(model.config.vision_config.image_size) != image_size:
        logger.warning(
            "%s takes %s images; model.vision_config.image_size (%s) is ignored",
            config.init,
            model.config.vision_config.image_size,
            image_size,
        )
    return model, AutoProcessor.from_pretrained(config.init), f"IRRA-family model {config.init}", {}
