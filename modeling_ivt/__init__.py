"""Text-based person retrieval models (IVT and the IRRA family) as Hugging Face models. Importing this package
registers "ivt" and "irra" with the Auto classes, so `AutoModel.from_pretrained(folder)` works without
`trust_remote_code` when the package is installed, and `IVTModel` is also the model of the zero-shot image
classification pipeline."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_irra import IRRAConfig, IRRATextConfig, IRRAVisionConfig
from .configuration_ivt import IVTConfig
from .defaults import (
    clip_vocabulary_file,
    create_irra_processor,
    create_irra_tokenizer,
    create_processor,
    minilm_dir,
)
from .image_processing_irra import IRRAImageProcessor
from .modeling_irra import IRRAModel, IRRAOutput, IRRAPreTrainedModel, IRRATextModel, IRRAVisionModel
from .modeling_ivt import IVTModel, IVTOutput, IVTPreTrainedModel, cmpm_loss
from .modeling_ivt_pretraining import IVTForPreTraining, IVTForPreTrainingOutput
from .processing_irra import IRRAProcessor, clean_caption
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

AutoConfig.register("irra", IRRAConfig, exist_ok=True)
AutoConfig.register("irra_text_model", IRRATextConfig, exist_ok=True)
AutoConfig.register("irra_vision_model", IRRAVisionConfig, exist_ok=True)
AutoModel.register(IRRAConfig, IRRAModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(IRRAConfig, IRRAModel, exist_ok=True)
AutoImageProcessor.register(IRRAConfig, image_processor_classes={"pil": IRRAImageProcessor}, exist_ok=True)
AutoProcessor.register(IRRAConfig, IRRAProcessor, exist_ok=True)
IRRAConfig.register_for_auto_class()
IRRAModel.register_for_auto_class("AutoModel")
IRRAImageProcessor.register_for_auto_class("AutoImageProcessor")
IRRAProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "IRRAConfig",
    "IRRAImageProcessor",
    "IRRAModel",
    "IRRAOutput",
    "IRRAPreTrainedModel",
    "IRRAProcessor",
    "IRRATextConfig",
    "IRRATextModel",
    "IRRAVisionConfig",
    "IRRAVisionModel",
    "IVTConfig",
    "IVTForPreTraining",
    "IVTForPreTrainingOutput",
    "IVTModel",
    "IVTOutput",
    "IVTPreTrainedModel",
    "IVTProcessor",
    "clean_caption",
    "clip_vocabulary_file",
    "create_irra_processor",
    "create_irra_tokenizer",
    "cmpm_loss",
    "create_processor",
    "minilm_dir",
]
