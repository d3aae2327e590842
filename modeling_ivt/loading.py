"""The one place that decides whether a model folder's own code may run when the project loads a model.

A saved IVT folder carries its modeling code (for people who have only transformers), and a config can name any
code through `auto_map`. The project's commands load IVTs with the installed `modeling_ivt` package and run a
folder's or a Hub repository's code only when the user typed `--trust-remote-code` on the command line: never
because a data file (an index's `index.json`, a Space's settings) names a model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoModel, AutoProcessor

from .conversion_utils import check_vocabulary
from .inference import inference_dtype
from .modeling_irra import IRRAModel
from .modeling_ivt import IVTModel

logger = logging.getLogger(__name__)

# The dual encoders the project's commands run with the installed code.
MODEL_CLASSES = (IVTModel, IRRAModel)

TRUST_REMOTE_CODE_HELP = (
    "run the Python code that the model folder or Hub repository ships (its config's auto_map) instead of the "
    "installed model code; only for models whose code you have read or whose authors you trust"
)


def embedding_dim(config) -> int:
    """Width of a model's retrieval embeddings: IRRA-family models project into `projection_dim`, IVT compares its
    `hidden_size`-wide [CLS] tokens."""
    return getattr(config, "projection_dim", None) or config.hidden_size


BF16_HELP = (
    "load the weights in bfloat16: about 3x faster on GPUs and on CPUs with native bf16 (AVX512-BF16 or AMX), "
    "embeddings within 0.1%% of float32"
)


def add_bf16_argument(parser: argparse.ArgumentParser) -> None:
    """`--bf16`, off unless typed; pass its value to `load_model_and_processor`."""
    parser.add_argument("--bf16", action="store_true", help=BF16_HELP)


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    """`--trust-remote-code`, off unless typed; pass its value to `load_model_and_processor`."""
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)


def check_model_location(name_or_path: str) -> None:
    """A name that is neither an existing folder nor a valid Hub repository id is a mistyped or not yet written
    folder: say so (`FileNotFoundError`) instead of the Hub client's "Repo id must be in the form ..."."""
    if Path(name_or_path).exists():
        return
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        raise FileNotFoundError(
            f"model folder {name_or_path} does not exist (nor is it a Hub repository id like your-name/ivt-model): "
            "check the path, or train a model first (`accelerate launch training/run.py` writes "
            "outputs/ivt-drawn-pedestrians/best)"
        ) from None


def load_model_and_processor(
    name_or_path: str,
    device: str = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
    bf16: bool = False,
):
    """
    An IVT or IRRA-family model (float32, or bfloat16 weights with `bf16`; eval mode, on `device`) and its processor
    from a folder or a Hub repository id. Without `trust_remote_code` only the installed code runs and any other model
    is refused (`ValueError`).
    """
    dtype = inference_dtype(bf16, device)
    check_model_location(name_or_path)
    if trust_remote_code:
        logger.warning("--trust-remote-code: running the code that %s ships, if any", name_or_path)
    try:
        model = AutoModel.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype
        )
        processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if trust_remote_code or "trust_remote_code" not in str(error):
            raise ValueError(f"model {name_or_path} cannot be loaded: {error}") from error
        raise ValueError(
            f"model {name_or_path} asks to run its own code (auto_map in its config), which is not run by default; "
            f"pass --trust-remote-code only if you trust its authors"
        ) from None
    if not trust_remote_code and not isinstance(model, MODEL_CLASSES):
        raise ValueError(
            f"model {name_or_path} is a {type(model).__name__} (model_type {model.config.model_type!r}), neither an "
            "IVT nor an IRRA-family model"
        )
    check_vocabulary(model.config, processor.tokenizer, f"model {name_or_path}")
    return model.to(device).eval(), processor


__all__ = [
    "BF16_HELP",
    "MODEL_CLASSES",
    "TRUST_REMOTE_CODE_HELP",
    "add_bf16_argument",
    "add_trust_remote_code_argument",
    "check_model_location",
    "embedding_dim",
    "load_model_and_processor",
]
