"""Token dropping (BMM) observed through the model: which rows reach the first encoder layer, over many seeds.

A sample of N tokens (N counts [CLS] and, for text, [SEP]) loses k tokens, k uniform in {0, ..., floor(ratio * N)}.
"""

import math
from collections import Counter

import pytest
import torch

from modeling_ivt import IVTModel

from .conftest import tiny_config

SEEDS = range(240)


def _encoder_inputs(model: IVTModel, encode) -> list[torch.Tensor]:
    """Run `encode(seed)` for every seed and return the hidden states that entered the encoder each time."""
    seen = []
    handle = model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            for seed in SEEDS:
                encode(torch.Generator().manual_seed(seed))
    finally:
        handle.remove()
    return seen


def _kept_positions(rows: torch.Tensor, embeddings: torch.Tensor) -> list[int]:
    """The original position of every row that entered the encoder (embeddings differ at every position)."""
    matches = (rows[:, None, :] == embeddings[None, :, :]).all(dim=-1)
    assert bool((matches.sum(dim=1) == 1).all()), "a row reached the encoder that is no input token"
    return matches.float().argmax(dim=1).tolist()


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_text_drops_every_k_up_to_floor_of_ratio_times_n_counting_cls_and_sep(processor, ratio):
    model = IVTModel(tiny_config(token_drop_ratio=ratio, hidden_dropout_prob=0.0, drop_path_rate=0.0)).train()
    batch = processor(text=["a tall man in a grey coat with a black bag and blue jeans walking to the left"])
    input_ids = batch["input_ids"]
    n = input_ids.shape[1]  # [CLS] + words + [SEP], no padding
    assert n == 20, "the caption is chosen so that floor(ratio * N) changes if [CLS] or [SEP] is not counted"
    assert math.floor(ratio * n) != math.floor(ratio * (n - 1))
    with torch.no_grad():
        embeddings = model.text_embeddings(input_ids)[0]

    seen = _encoder_inputs(
        model, lambda generator: model._text_features(input_ids, None, generator)
    )
    drop_counts = Counter()
    dropped_ever = set()
    for rows in seen:
        kept = _kept_positions(rows[0], embeddings)
        assert kept[0] == 0, "[CLS] must stay the first token"
        assert n - 1 in kept, "the final [SEP] must never be dropped"
        assert len(set(kept)) == len(kept)
        drop_counts[n - len(kept)] += 1
        dropped_ever |= set(range(n)) - set(kept)
    assert sorted(drop_counts) == list(range(math.floor(ratio * n) + 1)), drop_counts
    assert min(drop_counts.values()) >= len(SEEDS) / (math.floor(ratio * n) + 1) / 3, "k is not drawn uniformly"
    assert dropped_ever == set(range(1, n - 1)), "every word position must be droppable"


def test_image_drops_every_k_up_to_floor_of_ratio_times_n_and_never_the_cls():
    config = tiny_config(token_drop_ratio=0.25, drop_path_rate=0.0)
    model = IVTModel(config).train()
    n = config.num_image_tokens  # [CLS] + patches
    assert math.floor(0.25 * n) != math.floor(0.25 * (n - 1))
    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, *config.image_size)
    with torch.no_grad():
        embeddings = model.image_embeddings(pixel_values)[0]

    seen = _encoder_inputs(
        model, lambda generator: model._image_features(pixel_values, generator)
    )
    drop_counts = Counter()
    dropped_ever = set()
    for rows in seen:
        kept = _kept_positions(rows[0], embeddings)
        assert kept[0] == 0, "[CLS] must stay the first token"
        drop_counts[n - len(kept)] += 1
        dropped_ever |= set(range(n)) - set(kept)
    assert sorted(drop_counts) == list(range(math.floor(0.25 * n) + 1)), drop_counts
    assert dropped_ever == set(range(1, n)), "every patch, the last one included, must be droppable"


def test_the_training_forward_drops_tokens_by_its_generator_and_the_public_methods_take_none(processor):
    from training.ivt_training import IVTForRetrievalTraining

    model = IVTModel(tiny_config(token_drop_ratio=0.5, hidden_dropout_prob=0.0, drop_path_rate=0.0))
    trained = IVTForRetrievalTraining(model).train()
    batch = processor(
        text=["a tall man in a grey coat with a black bag", "a woman in a red dress"],
        images=[torch.zeros(3, 64, 32).numpy().transpose(1, 2, 0)] * 2,
        return_tensors="pt",
    )
    levels = [{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}]

    def embeds(seed: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        with torch.no_grad():
            output = trained(batch["pixel_values"], levels, torch.Generator().manual_seed(seed))
        return torch.cat([output.image_embeds, output.text_embeds])

    torch.testing.assert_close(embeds(3, 0), embeds(3, 1))
    assert not any(torch.allclose(embeds(3, 0), embeds(seed, 0)) for seed in (4, 5))
    with pytest.raises(TypeError):
        model.get_text_features(batch["input_ids"], token_drop_generator=torch.Generator())
