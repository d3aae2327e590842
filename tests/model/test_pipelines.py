"""The transformers pipelines a CLIP user reaches for work on a saved IVT folder, with only transformers installed."""

import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_ivt.hub_utils import PIPELINE_TAG, converted_model_card

from .test_remote_code import WITHOUT_PACKAGE

LABELS = ["a woman in a red coat", "a man in a blue shirt", "a child with a green backpack"]

PIPELINES_WITHOUT_PACKAGE = WITHOUT_PACKAGE + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoTokenizer, pipeline
    image = Image.new("RGB", (64, 160), (200, 30, 30))
    zero_shot = pipeline({task!r}, model={folder!r}, trust_remote_code=True)
    image_features = pipeline("image-feature-extraction", model={folder!r}, trust_remote_code=True)
    text_features = pipeline("feature-extraction", model={folder!r}, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained({folder!r}, trust_remote_code=True)
    torch.save(
        {{
            "ranking": [result["label"] for result in zero_shot(image, candidate_labels={labels!r})],
            "image_embeds": torch.tensor(image_features(image)),
            "text_embeds": torch.tensor(text_features({labels!r})),
            "tokens": dict(tokenizer(["This is a photo of " + label + "." for label in {labels!r}], padding=True)),
            "module": type(zero_shot.model).__module__,
        }},
        {result!r},
    )
    """
)


@pytest.mark.parametrize("family", ["ivt", "irra"])
def test_zero_shot_and_feature_extraction_pipelines_match_the_model(tmp_path, family, request):
    """The card's pipeline_tag is the zero-shot task run here; its ranking is the model's own logits_per_image."""
    from PIL import Image

    prefix = "" if family == "ivt" else "irra_"
    model, processor = request.getfixturevalue(f"{prefix}model"), request.getfixturevalue(f"{prefix}processor")

    assert PIPELINE_TAG == "zero-shot-image-classification"
    if family == "ivt":
        assert converted_model_card(model.config, "best.pth", "someone/ivt", ignored=[]).data.pipeline_tag == PIPELINE_TAG

    folder = tmp_path / "ivt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    result = tmp_path / "pipelines.pt"
    script = PIPELINES_WITHOUT_PACKAGE.format(
        task=PIPELINE_TAG, folder=str(folder), labels=LABELS, result=str(result)
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    remote = torch.load(result, weights_only=True)
    assert remote["module"].startswith("transformers_modules.")

    image = Image.new("RGB", (64, 160), (200, 30, 30))
    hypotheses = [f"This is a photo of {label}." for label in LABELS]
    inputs = processor(text=hypotheses, images=[image])
    assert set(remote["tokens"]) == {"input_ids", "attention_mask"}, "the tokenizer gives the processor's inputs"
    for row, (ids, mask) in enumerate(zip(remote["tokens"]["input_ids"], remote["tokens"]["attention_mask"], strict=True)):
        expected_mask = inputs["attention_mask"][row]
        assert [i for i, m in zip(ids, mask, strict=True) if m] == inputs["input_ids"][row][expected_mask.bool()].tolist()
    with torch.no_grad():
        both = model(**inputs)
        captions = model(**processor(text=LABELS))
    order = both.logits_per_image[0].argsort(descending=True).tolist()
    assert remote["ranking"] == [LABELS[i] for i in order]
    torch.testing.assert_close(remote["image_embeds"].reshape(1, -1), both.image_embeds)
    torch.testing.assert_close(remote["text_embeds"].reshape(len(LABELS), -1), captions.text_embeds)


def test_one_modality_gives_that_side_s_embeddings(model, processor, captions, images):
    with torch.no_grad():
        both = model(**processor(text=captions, images=images))
        text_only = model(**processor(text=captions))
        images_only = model(**processor(images=images))
    torch.testing.assert_close(text_only.text_embeds, both.text_embeds)
    torch.testing.assert_close(images_only.image_embeds, both.image_embeds)
    assert text_only.image_embeds is None and text_only.logits_per_text is None
    torch.testing.assert_close(images_only[0], both.image_embeds)


def test_pipelines_run_an_irra_folder(tmp_path, irra_model, irra_processor):
    from PIL import Image
    from transformers import pipeline

    irra_model.save_pretrained(tmp_path)
    irra_processor.save_pretrained(tmp_path)
    image = Image.new("RGB", (64, 160), (200, 30, 30))
    zero_shot = pipeline(PIPELINE_TAG, model=str(tmp_path), trust_remote_code=True)
    ranking = [result["label"] for result in zero_shot(image, candidate_labels=LABELS)]
    text_features = pipeline("feature-extraction", model=str(tmp_path), trust_remote_code=True)
    with torch.no_grad():
        both = irra_model(**irra_processor(text=[f"This is a photo of {label}." for label in LABELS], images=[image]))
        captions = irra_model(**irra_processor(text=LABELS))
    assert ranking == [LABELS[i] for i in both.logits_per_image[0].argsort(descending=True).tolist()]
    embeds = torch.tensor(text_features(LABELS)).reshape(len(LABELS), -1)
    torch.testing.assert_close(embeds, captions.text_embeds)
