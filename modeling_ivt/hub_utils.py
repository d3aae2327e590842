"""Publishing model folders on the Hugging Face Hub (or any server `HF_ENDPOINT` names)."""

import logging
from pathlib import Path

from huggingface_hub import CommitInfo, ModelCard, ModelCardData, create_repo, upload_folder

logger = logging.getLogger(__name__)

# The Hub task of every IVT card: the transformers pipeline that runs an IVT folder as it is (captions as labels).
PIPELINE_TAG = "zero-shot-image-classification"

USAGE = """```python
import torch
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
with torch.no_grad():
    text = model.get_text_features(**processor(text=["a woman in a red coat with a white handbag"])).pooler_output
    images = model.get_image_features(**processor(images=gallery_images)).pooler_output
scores = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(images, dim=-1).T
```"""

RISKS = (
    "Text-based person retrieval finds people in camera footage from a description. It can serve missing-person "
    "searches, and it can serve surveillance and tracking of people who have not consented. Use it only where the "
    "law and the people filmed allow it, keep a human in the loop, and expect errors that fall unevenly on groups "
    "under-represented in the training data."
)


def push_folder_to_hub(folder, repo_id: str, commit_message: str, private: bool = False) -> CommitInfo:
    """Create `repo_id` if needed and upload a saved model folder (weights, config, code, processor, card) in one commit."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: save the model there before pushing it")
    create_repo(repo_id, private=private, exist_ok=True)
    info = upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    logger.info("pushed %s to %s (commit %s)", folder, repo_id, info.oid)
    return info


def converted_model_card(config, source: str, repo_id: str, ignored: list[str]) -> ModelCard:
    """Card of a model converted from the authors' checkpoint: provenance, sizes, usage, risks."""
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license="other",
        tags=["ivt", "text-based-person-retrieval", "person-search", "custom_code"],
    )
    text = f"""---
{data.to_yaml()}
---

# IVT converted from `{Path(source).name}`

IVT (Shu et al., ECCV 2022 Workshops) for text-based person retrieval, converted from a checkpoint of the authors'
code with `python -m modeling_ivt.convert_original_checkpoint`. Encoder: {config.num_hidden_layers} shared layers,
width {config.hidden_size}, {config.num_attention_heads} heads, patch stride {config.patch_stride} on
{config.image_size[0]} x {config.image_size[1]} images. Not carried over (training-only): {", ".join(ignored) or "nothing"}.
The licence is the one under which the original checkpoint was released.

## Usage

{USAGE.format(repo=repo_id)}

## Limitations and risks

{RISKS}
"""
    return ModelCard(text)
