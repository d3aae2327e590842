"""Publishing models on the Hugging Face Hub (or any server `HF_ENDPOINT` names) with the project's model card.

This file travels with the model code (`trust_remote_code`), so it imports nothing of the project.
"""

import logging
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData, create_repo, upload_folder
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

logger = logging.getLogger(__name__)

# The Hub task of every card: the transformers pipeline that runs a model folder as it is (captions as labels).
PIPELINE_TAG = "zero-shot-image-classification"
# The tag every card of this project carries: how a push tells the project's card from transformers' blank template.
PROJECT_TAG = "text-based-person-retrieval"
TAGS = [PROJECT_TAG, "person-search", "custom_code"]

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
        tags=["ivt", *TAGS],
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


def new_model_card(repo_id: str, model_type: str) -> ModelCard:
    """The card of a model pushed from Python with no card of its own yet: what it is, usage and risks."""
    data = ModelCardData(library_name="transformers", pipeline_tag=PIPELINE_TAG, tags=[model_type, *TAGS])
    return ModelCard(
        f"""---
{data.to_yaml()}
---

# {repo_id.split("/")[-1]}

A {model_type.upper()} dual encoder for text-based person retrieval: it embeds descriptions of people and pedestrian
images in one space, so that a description ranks a gallery by cosine similarity. This upload carries no evaluation
results; the cards that the project's training and conversion commands write next to the weights do, and a push of a
model loaded from such a folder publishes that card.

## Usage

{USAGE.format(repo=repo_id)}

## Limitations and risks

{RISKS}
"""
    )


def card_to_publish(source_folder, repo_id: str, model_type: str, token=None) -> ModelCard:
    """
    The card a push to `repo_id` publishes: the project's card saved in `source_folder` (where the weights were
    loaded from), else the project's card already on `repo_id`, else `new_model_card`. A card without the project's
    tag (transformers' blank template, a base model's card) is never chosen.
    """
    local = Path(source_folder) / "README.md" if source_folder else None
    if local is not None and local.is_file():
        card = ModelCard.load(local)
        if PROJECT_TAG in (card.data.tags or []):
            return card
    try:
        card = ModelCard.load(repo_id, token=token)
        if PROJECT_TAG in (card.data.tags or []):
            return card
    except (EntryNotFoundError, RepositoryNotFoundError):
        pass
    return new_model_card(repo_id, model_type)


class ProjectHubMixin:
    """
    What the project's models and processors add to transformers' saving and pushing: `push_to_hub` publishes the
    project's model card (`card_to_publish`) in the same commit as the files (transformers' own writes its blank
    template over it), and saving with the model code names every auto class in `additional_auto_classes` in
    `auto_map`, which otherwise records only the auto class the class was registered for.
    """

    additional_auto_classes: tuple[str, ...] = ()

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self.additional_auto_classes and getattr(self, "_auto_class", None) is not None:
            own_name = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                **dict.fromkeys(self.additional_auto_classes, own_name),
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _card_source_folder(self):
        tokenizer = getattr(self, "tokenizer", None)
        return getattr(self, "name_or_path", None) or getattr(tokenizer, "name_or_path", None)

    def _card_model_type(self) -> str:
        config = getattr(self, "config", None)
        return config.model_type if config is not None else type(self).__name__.removesuffix("Processor").lower()

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        tags: list[str] | None = None,
        **save_kwargs,
    ) -> CommitInfo:
        """Save to a temporary folder, add the card (and `tags` to it), and upload it all as one commit to `repo_id`
        (created if needed). Other keyword arguments go to `save_pretrained` (e.g. `max_shard_size`)."""
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        card = card_to_publish(self._card_source_folder(), repo_id, self._card_model_type(), token=token)
        card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *(tags or [])]))
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, **save_kwargs)
            card.save(Path(folder) / "README.md")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
            )
        logger.info("pushed %s to %s (commit %s)", type(self).__name__, repo_id, info.oid)
        return info


def irra_model_card(
    config, checkpoint_name: str, repo_id: str, ignored: list[str], source: str | None, license: str
) -> ModelCard:
    """Card of an IRRA-family model converted from its authors' checkpoint: provenance, licence, sizes, usage, risks."""
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=["irra", "clip", *TAGS],
    )
    vision, text = config.vision_config, config.text_config
    modules = sorted({key.split(".", 1)[0] for key in ignored})
    origin = f"obtained from {source}" if source else "whose origin was not recorded at conversion"
    text_block = f"""---
{data.to_yaml()}
---

# IRRA-family model converted from `{checkpoint_name}`

The inference model of IRRA (Jiang & Ye, *Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image
Person Retrieval*, CVPR 2023), a CLIP dual encoder for pedestrian crops, converted with
`python -m modeling_ivt.convert_irra_checkpoint` from the checkpoint `{checkpoint_name}`, {origin}. The weights are
those of that checkpoint, unchanged (stored as {str(config.dtype or "float32").removeprefix("torch.")}).

**Licence:** `{license}`, the licence under which the checkpoint's authors released it (IRRA's own code and released
files are under the MIT licence; the images of the benchmark it was trained on come with their own, usually
research-only, terms). Check both before using or sharing the model.

Image tower: ViT with {vision.num_hidden_layers} layers of width {vision.hidden_size}, {vision.patch_size}-pixel patches with
stride {vision.patch_stride} on {vision.image_size[0]} x {vision.image_size[1]} images ({vision.patch_grid[0]} x
{vision.patch_grid[1]} patches). Text tower: {text.num_hidden_layers} causal layers of width {text.hidden_size}, CLIP's BPE vocabulary
({text.vocab_size} tokens), {text.max_position_embeddings} positions. Shared embedding: {config.projection_dim}. Not carried over
(training-only): {", ".join(modules) or "nothing"}.

## Usage

{USAGE.format(repo=repo_id)}

## Limitations and risks

{RISKS}
"""
    return ModelCard(text_block)
