"""IVT for text-based person retrieval, as a Hugging Face model. Importing this package registers "ivt" with the
Auto classes, so `AutoModel.from_pretrained(folder)` works without `trust_remote_code` when the package is installed,
and `IVTModel` is also the model of the zero-shot image classification pipeline."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_ivt import IVTConfig
from .defaults import create_processor, minilm_dir
from .modeling_ivt import IVTModel, IVTOutput, IVTPreTrainedModel, cmpm_loss
from .modeling_ivt_pretraining import IVTForPreTraining, IVTForPreTrainingOutput
from .processing_ivt import IVTProcessor

AutoConfig.register("ivt", IVTConfig, exist_ok=True)
AutoModel.register(IVTConfig, IVTModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(IVTConfig, IVTModel, exist_ok=True)
AutoModelForPreTraining.register(IVTConfig, IVTForPreTraining, exist_ok=True)
AutoProcessor.register(IVTConfig, IVTProcessor, exist_ok=True)
IVTConfig.register_for_auto_class()
IVTModel.register_for_auto_class("AutoModel")
IVTForPreTraining.register_for_auto_class("AutoModelForPreTraining")
IVTProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "IVTConfig",
    "IVTForPreTraining",
    "IVTForPreTrainingOutput",
    "IVTModel",
    "IVTOutput",
    "IVTPreTrainedModel",
    "IVTProcessor",
    "cmpm_loss",
    "create_processor",
    "minilm_dir",
]
