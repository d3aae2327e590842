"""The accelerator check: what the base IVT does on one GPU, in one command of a few minutes, as a JSON report.

    python -m bench.gpu_check                     # on cuda:0, writes bench/results/gpu-<device name>.json
    python -m bench.gpu_check --device cpu --tiny # a 64-wide model and small sizes: checks that every section runs

Sections: the device's dense bf16 and fp32 matrix-product ceiling; bf16 fine-tuning of the base IVT (768 wide, 12
layers, stride 12, 384 x 128) at the released batch, 28 items x 3 MLA views, forward + backward + fused AdamW, with
its MFU against that ceiling; image and caption embedding throughput with bfloat16 weights; evaluation at ICFG-PEDES
scale (19,848 queries x 19,848 images, 768-d) against the similarity products alone. Each section runs a fixed,
small amount of work (one warm-up, then timed repeats), so the whole check stays within about 8 minutes on a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modeling_ivt import IVTConfig, IVTModel
from modeling_ivt.safe_io import write_json_atomic
from training.loss import CMPMLoss
from training.metrics import DEFAULT_CHUNK_SIZE, retrieval_metrics

from .common import image_forward_flops, text_forward_flops, training_step_flops
from .evaluation_scale import icfg_like_case

logger = logging.getLogger("bench.gpu_check")

RELEASED_ITEMS_PER_BATCH = 28
MLA_VIEWS = 3


@dataclass(frozen=True)
class CheckSizes:
    matmul_size: int
    train_items: int
    train_steps: int
    caption_tokens: tuple[int, int, int]  # sentence, phrase and word level, padded lengths
    image_batch: int
    text_batch: int
    embedding_batches: int
    eval_queries: int
    eval_gallery: int
    eval_people: int
    eval_dim: int


FULL = CheckSizes(8192, RELEASED_ITEMS_PER_BATCH, 10, (72, 24, 16), 256, 1024, 10, 19_848, 19_848, 1_000, 768)
TINY = CheckSizes(128, 4, 1, (16, 8, 6), 4, 8, 1, 300, 250, 20, 32)


def model_config(tiny: bool) -> IVTConfig:
    """The released base IVT at stride 12; a 64-wide 2-layer model on 64 x 32 images with `tiny`."""
    if tiny:
        return IVTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=(64, 32),
            patch_stride=12,
        )
    return IVTConfig(patch_stride=12)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Seconds per call over `repeats` calls after one untimed warm-up call, the device drained around them."""
    result = fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats, result


def matmul_ceiling(device: torch.device, size: int) -> dict:
    """Dense square matrix-product throughput (TFLOP/s) in bf16 and fp32 (TF32 off): the denominator of MFU."""
    ceiling = {"size": size}
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            left = torch.randn(size, size, device=device, dtype=dtype)
            right = torch.randn(size, size, device=device, dtype=dtype)
            seconds, _ = timed(lambda: left @ right, device, repeats=5)
            ceiling[f"{name}_tflops"] = 2 * size**3 / seconds / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return ceiling


def _inputs(config: IVTConfig, sizes: CheckSizes, device: torch.device, generator: torch.Generator) -> dict:
    pairs = MLA_VIEWS * sizes.train_items
    pixel_values = torch.randn(pairs, config.num_channels, *config.image_size, generator=generator).to(device)
    text_levels = [
        {
            "input_ids": torch.randint(1000, config.vocab_size, (sizes.train_items, length), generator=generator).to(
                device
            ),
            "attention_mask": torch.ones(sizes.train_items, length, dtype=torch.long, device=device),
        }
        for length in sizes.caption_tokens
    ]
    person_ids = torch.arange(sizes.train_items, device=device).repeat(MLA_VIEWS) // 2
    return {"pixel_values": pixel_values, "text_levels": text_levels, "person_ids": person_ids}


def fine_tuning(config: IVTConfig, sizes: CheckSizes, device: torch.device, peak_tflops: float) -> dict:
    """bf16-autocast training steps (token dropping on, as in training) with fused AdamW on fp32 weights."""
    generator = torch.Generator().manual_seed(0)
    model = IVTModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.02, fused=True)
    batch = _inputs(config, sizes, device, generator)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            image_features = model.get_image_features(batch["pixel_values"]).pooler_output
            text_features = torch.cat(
                [model.get_text_features(**level).pooler_output for level in batch["text_levels"]]
            )
            loss = CMPMLoss()(image_features, text_features, batch["person_ids"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, loss = timed(step, device, sizes.train_steps)
    pairs = MLA_VIEWS * sizes.train_items
    text_len = sum(sizes.caption_tokens) / len(sizes.caption_tokens)
    flops = training_step_flops(config, pairs, text_len)
    result = {
        "items_per_step": sizes.train_items,
        "pairs_per_step": pairs,
        "caption_tokens": list(sizes.caption_tokens),
        "seconds_per_step": seconds,
        "pairs_per_s": pairs / seconds,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak_tflops,
        "loss": float(loss),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def embedding(config: IVTConfig, sizes: CheckSizes, device: torch.device, peak_tflops: float) -> dict:
    """Images and captions embedded with bfloat16 weights (what `--bf16` loads), inference mode."""
    generator = torch.Generator().manual_seed(1)
    model = IVTModel(config).to(device=device, dtype=torch.bfloat16).eval()
    pixel_values = torch.randn(sizes.image_batch, config.num_channels, *config.image_size, generator=generator)
    pixel_values = pixel_values.to(device)
    text_len = sizes.caption_tokens[0]
    input_ids = torch.randint(1000, config.vocab_size, (sizes.text_batch, text_len), generator=generator).to(device)
    with torch.inference_mode():
        image_seconds, _ = timed(
            lambda: model.get_image_features(pixel_values).pooler_output, device, sizes.embedding_batches
        )
        text_seconds, _ = timed(
            lambda: model.get_text_features(input_ids).pooler_output, device, sizes.embedding_batches
        )
    image_flops = sizes.image_batch * image_forward_flops(config)
    text_flops = sizes.text_batch * text_forward_flops(config, text_len)
    return {
        "images": {
            "batch": sizes.image_batch,
            "items_per_s": sizes.image_batch / image_seconds,
            "mfu": image_flops / image_seconds / 1e12 / peak_tflops,
        },
        "captions": {
            "batch": sizes.text_batch,
            "tokens": text_len,
            "items_per_s": sizes.text_batch / text_seconds,
            "mfu": text_flops / text_seconds / 1e12 / peak_tflops,
        },
    }


def evaluation(sizes: CheckSizes, device: torch.device) -> dict:
    """`retrieval_metrics` at ICFG-PEDES scale on the device, against its similarity products alone."""
    case = icfg_like_case(sizes.eval_queries, sizes.eval_gallery, sizes.eval_people, sizes.eval_dim)
    case = [tensor.to(device) for tensor in case]
    query_embeds, gallery_embeds = case[0], case[1]

    def products() -> None:
        gallery_t = torch.nn.functional.normalize(gallery_embeds, dim=-1).t().contiguous()
        for start in range(0, len(query_embeds), DEFAULT_CHUNK_SIZE):
            torch.nn.functional.normalize(query_embeds[start : start + DEFAULT_CHUNK_SIZE], dim=-1) @ gallery_t

    products_seconds, _ = timed(products, device, repeats=1)
    metrics_seconds, metrics = timed(lambda: retrieval_metrics(*case), device, repeats=1)
    return {
        "queries": sizes.eval_queries,
        "gallery": sizes.eval_gallery,
        "dim": sizes.eval_dim,
        "seconds": metrics_seconds,
        "similarity_products_seconds": products_seconds,
        "ratio_to_products": metrics_seconds / products_seconds,
        "metrics": metrics,
    }


def run_check(device: torch.device, tiny: bool) -> dict:
    sizes = TINY if tiny else FULL
    config = model_config(tiny)
    started = time.perf_counter()
    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if tiny else "full",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": {
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "patch_stride": config.patch_stride,
            "image_size": list(config.image_size),
            "image_tokens": config.num_image_tokens,
        },
    }
    logger.info("matmul ceiling")
    report["ceiling"] = matmul_ceiling(device, sizes.matmul_size)
    peak = report["ceiling"]["bf16_tflops"]
    logger.info("bf16 fine-tuning steps")
    report["fine_tuning_bf16"] = fine_tuning(config, sizes, device, peak)
    logger.info("embedding throughput")
    report["embedding_bf16_weights"] = embedding(config, sizes, device, peak)
    logger.info("evaluation at ICFG-PEDES scale")
    report["evaluation"] = evaluation(sizes, device)
    report["seconds"] = time.perf_counter() - started
    return report


def format_report(report: dict) -> str:
    tuning, embeds, evaluation_ = report["fine_tuning_bf16"], report["embedding_bf16_weights"], report["evaluation"]
    return "\n".join(
        [
            f"IVT accelerator check ({report['mode']}) on {report['device_name']}, torch {report['torch']}",
            f"dense matmul ceiling: bf16 {report['ceiling']['bf16_tflops']:.1f} TFLOP/s, "
            f"fp32 {report['ceiling']['fp32_tflops']:.1f} TFLOP/s",
            f"bf16 fine-tuning, {tuning['items_per_step']} items x {MLA_VIEWS} views: {tuning['pairs_per_s']:.1f} "
            f"pairs/s, {tuning['seconds_per_step'] * 1000:.0f} ms/step, MFU {100 * tuning['mfu']:.0f}%",
            f"embedding (bf16 weights): {embeds['images']['items_per_s']:.0f} images/s "
            f"(MFU {100 * embeds['images']['mfu']:.0f}%), {embeds['captions']['items_per_s']:.0f} captions/s",
            f"evaluation {evaluation_['queries']} x {evaluation_['gallery']}: {evaluation_['seconds']:.2f} s, "
            f"{evaluation_['ratio_to_products']:.2f}x the similarity products alone",
            f"check time: {report['seconds']:.0f} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device to check (default: cuda)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and sizes: seconds, for a smoke test")
    parser.add_argument("--output", type=Path, help="JSON report path (default: bench/results/gpu-<device>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device (pass --device cpu to run the check here)", file=sys.stderr)
        return 2
    report = run_check(device, args.tiny)
    print(format_report(report))
    output = args.output
    if output is None:
        output = Path("bench/results") / f"gpu-{report['device_name'].replace(' ', '-').lower()}.json"
    write_json_atomic(output, report)
    print(f"JSON report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
