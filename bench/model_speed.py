"""Throughput of the IVT encoder: embedding images and captions, one training step, and the levers that change them.

Every measurement runs a fixed, small amount of real work (a warm-up batch, then the timed batches) on images and
captions of a small generated Drawn Pedestrians split, so that slow settings stay bounded in time.
"""

from __future__ import annotations

import copy
import functools
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from dataset_scripts import views
from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
from modeling_ivt import IVTConfig, IVTModel, IVTProcessor, create_processor

from .common import (
    autocast_context,
    image_forward_flops,
    peak_rss,
    text_forward_flops,
    time_calls,
    training_step_flops,
)


@dataclass
class BenchData:
    """Test images with their captions: caption i describes image `caption_image[i]`."""

    images: list
    captions: list[str]
    caption_image: list[int]
    person_ids: list[int]


def load_bench_data(workdir: Path, num_people: int) -> BenchData:
    """A small generated test split: `num_people` people x 2 images x 2 captions (drawn once, then cached)."""
    dataset_dict = ensure_generated_benchmark(
        workdir / "drawn-pedestrians",
        GeneratorSettings(num_train_ids=1, num_val_ids=1, num_test_ids=num_people, images_per_id=2, captions_per_image=2),
        num_workers=1,
    )
    test_split: datasets.Dataset = dataset_dict["test"]
    captions, _ = views.queries(test_split)
    caption_image = [row for row, row_captions in enumerate(test_split["captions"]) for _ in row_captions]
    images = [test_split[row]["image"] for row in range(len(test_split))]
    return BenchData(images, captions, caption_image, test_split["person_id"])


def base_config(patch_stride: int, quick: bool) -> IVTConfig:
    """The released base IVT (768 wide, 12 layers) at `patch_stride`; a 64-wide 2-layer model in quick mode."""
    if quick:
        return IVTConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, patch_stride=patch_stride
        )
    return IVTConfig(patch_stride=patch_stride)


def build_model(config: IVTConfig, seed: int = 0) -> IVTModel:
    torch.manual_seed(seed)
    return IVTModel(config).eval()


def _batches(tensor: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(tensor.split(batch_size))


def _batch_flops(config: IVTConfig, batch: dict, modality: str) -> float:
    if modality == "image":
        return len(batch["pixel_values"]) * image_forward_flops(config)
    batch_size, seq_len = batch["input_ids"].shape
    return batch_size * text_forward_flops(config, seq_len)


def embedding_runs(
    model: IVTModel, batches: list[dict], modality: str, precisions: tuple[str, ...], rounds: int = 1
) -> dict[str, dict]:
    """
    Embed `batches` in each precision ("bf16": a copy with bfloat16 weights, what `--bf16` loads; no autocast): the
    first batch is an untimed warm-up, then every further batch is run in
    each precision in turn, `rounds` times over, so that a change in the machine's load hits all precisions alike.
    Returns, per precision, the timed throughput and every embedding (normalised, float32).
    """
    bf16_model = copy.deepcopy(model).to(torch.bfloat16) if "bf16" in precisions else None
    embeds = {precision: [] for precision in precisions}
    seconds = dict.fromkeys(precisions, 0.0)
    warmup_seconds = {}

    def run(batch, precision):
        ivt = bf16_model if precision == "bf16" else model
        encode = ivt.get_image_features if modality == "image" else ivt.get_text_features
        start = time.perf_counter()
        with torch.inference_mode():
            features = encode(**batch).pooler_output
        elapsed = time.perf_counter() - start
        embeds[precision].append(torch.nn.functional.normalize(features.float(), dim=-1))
        return elapsed

    for precision in precisions:
        warmup_seconds[precision] = run(batches[0], precision)
    timed = (batches[1:] or batches) * rounds
    for batch in timed:
        for precision in precisions:
            seconds[precision] += run(batch, precision)
    items = sum(len(next(iter(batch.values()))) for batch in timed)
    flops = sum(_batch_flops(model.config, batch, modality) for batch in timed)
    return {
        precision: {
            "items": items,
            "seconds": seconds[precision],
            "warmup_seconds": warmup_seconds[precision],
            "items_per_s": items / seconds[precision],
            "gflops": flops / seconds[precision] / 1e9,
            "embeds": torch.cat(embeds[precision][: len(batches)]),
        }
        for precision in precisions
    }


def image_batches(processor: IVTProcessor, images: list, batch_size: int) -> list[dict]:
    pixel_values = processor(images=images)["pixel_values"]
    return [{"pixel_values": chunk} for chunk in _batches(pixel_values, batch_size)]


def text_batches(processor: IVTProcessor, captions: list[str], batch_size: int) -> list[dict]:
    return [dict(processor(text=captions[start : start + batch_size])) for start in range(0, len(captions), batch_size)]


def agreement(fp32_embeds: torch.Tensor, bf16_embeds: torch.Tensor) -> dict:
    """How close bf16 embeddings stay to fp32 ones: cosine similarity per item (min and mean)."""
    cosine = (fp32_embeds * bf16_embeds).sum(dim=1)
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}


def top1_agreement(text_fp32, image_fp32, text_bf16, image_bf16) -> dict:
    """Share of queries whose top-1 gallery image is the same with all-bf16 and all-fp32 embeddings."""
    top1_fp32 = (text_fp32 @ image_fp32.t()).argmax(dim=1)
    top1_bf16 = (text_bf16 @ image_bf16.t()).argmax(dim=1)
    return {"queries": len(top1_fp32), "identical_top1": int((top1_fp32 == top1_bf16).sum())}


@contextmanager
def _attention(model: IVTModel, implementation: str):
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


@contextmanager
def _threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def lever_runs(model: IVTModel, batches: list[dict], compile_model: bool) -> list[dict]:
    """
    Image-embedding throughput under each setting on the same batches: what each lever is worth here. Every
    setting first runs the warm-up batch (its time is reported: torch.compile compiles then), then the timed batches
    are run setting after setting in turn, so that a change in the machine's load hits every setting alike.
    """
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    settings = [
        ("fp32, sdpa, inference_mode (default)", model.get_image_features, "fp32", torch.inference_mode, nullcontext),
        ("fp32, no_grad instead of inference_mode", model.get_image_features, "fp32", torch.no_grad, nullcontext),
        (
            "fp32, eager attention",
            model.get_image_features,
            "fp32",
            torch.inference_mode,
            lambda: _attention(model, "eager"),
        ),
        ("fp32, 1 thread", model.get_image_features, "fp32", torch.inference_mode, lambda: _threads(1)),
        ("bf16 autocast", model.get_image_features, "bf16", torch.inference_mode, nullcontext),
        (
            "bf16 autocast, oneDNN (mkldnn) off",
            model.get_image_features,
            "bf16",
            torch.inference_mode,
            lambda: torch.backends.mkldnn.flags(enabled=False),
        ),
        (
            "bf16 weights (model.to(bfloat16), what --bf16 loads), no autocast",
            bf16_model.get_image_features,
            "fp32",
            torch.inference_mode,
            nullcontext,
        ),
        (
            "bf16 weights, eager attention",
            bf16_model.get_image_features,
            "fp32",
            torch.inference_mode,
            lambda: _attention(bf16_model, "eager"),
        ),
    ]
    if compile_model:
        settings += [
            (
                "fp32 + torch.compile",
                torch.compile(model.get_image_features),
                "fp32",
                torch.inference_mode,
                nullcontext,
            ),
            (
                "bf16 autocast + torch.compile",
                torch.compile(model.get_image_features),
                "bf16",
                torch.inference_mode,
                nullcontext,
            ),
            (
                "bf16 weights + torch.compile",
                torch.compile(bf16_model.get_image_features),
                "fp32",
                torch.inference_mode,
                nullcontext,
            ),
        ]

    def run(setting, batch) -> tuple[float, torch.Tensor]:
        _, encode, precision, grad_mode, context = setting
        start = time.perf_counter()
        with context(), grad_mode(), autocast_context(precision):
            features = encode(**batch).pooler_output
        return time.perf_counter() - start, torch.nn.functional.normalize(features.float(), dim=-1)

    warmup = {setting[0]: run(setting, batches[0]) for setting in settings}
    timed = batches[1:] or batches
    seconds = {setting[0]: 0.0 for setting in settings}
    for batch in timed:
        for setting in settings:
            seconds[setting[0]] += run(setting, batch)[0]
    items = sum(len(batch["pixel_values"]) for batch in timed)
    flops = items * image_forward_flops(model.config)
    reference = warmup[settings[0][0]][1]
    return [
        {
            "setting": name,
            "warmup_seconds": warmup[name][0],
            "items_per_s": items / seconds[name],
            "gflops": flops / seconds[name] / 1e9,
            "min_cosine_to_fp32": float((warmup[name][1] * reference).sum(dim=1).min()),
        }
        for name in seconds
    ]


def profile_table(model: IVTModel, batch: dict, precision: str, rows: int = 12) -> str:
    """torch.profiler's top operators by self CPU time for one image batch ("bf16": bfloat16 weights)."""
    if precision == "bf16":
        model, precision = copy.deepcopy(model).to(torch.bfloat16), "fp32"
    with torch.inference_mode(), autocast_context(precision):
        model.get_image_features(**batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            model.get_image_features(**batch)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def training_runs(
    config: IVTConfig, processor: IVTProcessor, data: BenchData, items: int, precisions: tuple[str, ...]
) -> dict[str, dict]:
    """
    IVT fine-tuning steps: `items` pairs x 3 MLA views = 3 x `items` (image, caption) pairs through the model in
    training mode (token dropping and drop path on), CMPM loss, backward, SGD momentum. One model per precision,
    identically initialised; a warm-up step each, then one timed step each in turn (load changes hit all alike).
    Every step draws the same token drops and drop paths.
    """
    rows = [data.caption_image[index] for index in range(items)]
    inputs = dict(
        processor(
            text=[data.captions[index] for index in range(items)] * 3, images=[data.images[row] for row in rows] * 3
        )
    )
    person_ids = torch.tensor([data.person_ids[row] for row in rows] * 3)
    trainers = {}
    for precision in precisions:
        model = build_model(config).train()
        trainers[precision] = (model, torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4))

    def step(precision):
        model, optimizer = trainers[precision]
        torch.manual_seed(0)
        with autocast_context(precision):
            loss = model(**inputs, person_ids=person_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for precision in precisions:
        step(precision)
    pairs = 3 * items
    flops = training_step_flops(config, pairs, inputs["input_ids"].shape[1])
    results = {}
    for precision in precisions:
        with peak_rss() as memory:
            timing = time_calls(functools.partial(step, precision), budget_s=0.0, warmup=0)
        results[precision] = {
            "pairs": pairs,
            "seconds_per_step": timing.seconds_per_call,
            "pairs_per_s": pairs / timing.seconds_per_call,
            "gflops": flops / timing.seconds_per_call / 1e9,
            "peak_rss_mib": memory.peak_mib,
            "peak_rss_increase_mib": memory.increase_mib,
            "loss": timing.result,
        }
    return results


def trained_model_agreement(model_dir: Path, data: BenchData) -> dict:
    """fp32 vs bf16 agreement of a trained model (the main job's) on the bench images and captions."""
    model = IVTModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = IVTProcessor.from_pretrained(model_dir)
    images = image_batches(processor, data.images, 8)
    texts = text_batches(processor, data.captions, 16)
    text_runs = embedding_runs(model, texts, "text", ("fp32", "bf16"))
    image_runs = embedding_runs(model, images, "image", ("fp32", "bf16"))
    runs = {precision: (text_runs[precision]["embeds"], image_runs[precision]["embeds"]) for precision in text_runs}
    return {
        "model": str(model_dir),
        "image": agreement(runs["fp32"][1], runs["bf16"][1]),
        "text": agreement(runs["fp32"][0], runs["bf16"][0]),
        "top1": top1_agreement(*runs["fp32"], *runs["bf16"]),
    }


def processor_for(config: IVTConfig) -> IVTProcessor:
    return create_processor(image_size=tuple(config.image_size))
