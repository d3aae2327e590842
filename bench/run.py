"""One command for the performance benchmark of IVT on this machine: prints a table and writes JSON.

    python -m bench                       # the full benchmark (about 10-15 minutes on 2 cores)
    python -m bench --quick               # tiny sizes, a few seconds: checks that every section runs
    python -m bench --output bench/results/cpu.json --no-compile

Sections: the machine's matmul ceiling; base IVT image/text embedding throughput at stride 12 and 16 in fp32 and with
bf16 weights, with MFU, and how close bf16 stays to fp32; the levers that change embedding speed; one fine-tuning step
(3 MLA views) in fp32 and bf16 with peak memory; evaluation at ICFG-PEDES scale, chunked against a full sort; the main
job's time to its final metrics. All ratios come from one run on one machine.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modeling_ivt.cli import CommandParser
from modeling_ivt.safe_io import write_json_atomic
from training.metrics import DEFAULT_CHUNK_SIZE

from .evaluation_scale import measure_evaluation
from .machine import cpu_info, measure_ceiling
from .model_speed import (
    agreement,
    base_config,
    build_model,
    embedding_runs,
    image_batches,
    lever_runs,
    load_bench_data,
    processor_for,
    profile_table,
    text_batches,
    top1_agreement,
    trained_model_agreement,
    training_runs,
)

logger = logging.getLogger("bench")

DEFAULT_MAIN_JOB = Path("outputs/ivt-drawn-pedestrians")


@dataclass(frozen=True)
class Sizes:
    num_people: int  # 2 images and 4 captions each
    image_batch: int
    text_batch: int
    lever_batch: int
    text_rounds: int
    training_items: int  # x 3 MLA views
    ceiling_size: int
    ceiling_budget_s: float
    eval_queries: int
    eval_gallery: int
    eval_people: int
    eval_dim: int
    eval_chunk: int


FULL = Sizes(8, 8, 16, 2, 3, 2, 2048, 2.0, 19_848, 19_848, 1_000, 768, DEFAULT_CHUNK_SIZE)
QUICK = Sizes(3, 3, 4, 2, 1, 2, 256, 0.2, 600, 500, 40, 32, 64)


def _embedding_section(sizes: Sizes, data, quick: bool) -> dict:
    section = {}
    text_embeds = {}
    for stride in (12, 16):
        config = base_config(stride, quick)
        model = build_model(config)
        processor = processor_for(config)
        images = image_batches(processor, data.images, sizes.image_batch)
        runs = embedding_runs(model, images, "image", ("fp32", "bf16"))
        entry = {precision: _without_embeds(run) for precision, run in runs.items()}
        entry["tokens"] = config.num_image_tokens
        entry["agreement"] = agreement(runs["fp32"]["embeds"], runs["bf16"]["embeds"])
        if stride == 12:
            texts = text_batches(processor, data.captions, sizes.text_batch)
            text_runs = embedding_runs(model, texts, "text", ("fp32", "bf16"), rounds=sizes.text_rounds)
            section["text"] = {precision: _without_embeds(run) for precision, run in text_runs.items()}
            section["text"]["agreement"] = agreement(text_runs["fp32"]["embeds"], text_runs["bf16"]["embeds"])
            text_embeds = {precision: run["embeds"] for precision, run in text_runs.items()}
            image_embeds = {precision: run["embeds"] for precision, run in runs.items()}
            section["top1_random_init"] = top1_agreement(
                text_embeds["fp32"], image_embeds["fp32"], text_embeds["bf16"], image_embeds["bf16"]
            )
        section[f"image_stride{stride}"] = entry
        del model
    return section


def _without_embeds(run: dict) -> dict:
    return {name: value for name, value in run.items() if name != "embeds"}


def read_main_job(results_dir: Path) -> dict:
    """The main job's time to its final metrics, from the results.json that training/run.py writes."""
    results_file = results_dir / "results.json"
    if not results_file.is_file():
        return {"status": f"not run ({results_file} is absent)"}
    results = json.loads(results_file.read_text(encoding="utf-8"))
    return {
        "status": "read",
        "results_file": str(results_file),
        "time_to_final_metrics_s": results.get("time_to_final_metrics_s"),
        "wall_time_s": results.get("wall_time_s"),
        "test": results.get("test"),
        "num_processes": results.get("num_processes"),
    }


def run_benchmark(quick: bool, main_job_dir: Path, compile_model: bool, skip_full_sort: bool = False) -> dict:
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": cpu_info(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
    }
    base = base_config(12, quick)
    logger.info("matmul ceiling")
    report["ceiling"] = measure_ceiling(
        sizes.ceiling_size,
        sizes.image_batch * base.num_image_tokens,
        base.hidden_size,
        base.intermediate_size,
        sizes.ceiling_budget_s,
    )
    with tempfile.TemporaryDirectory(prefix="ivt-bench-") as workdir:
        data = load_bench_data(Path(workdir), sizes.num_people)
        logger.info("embedding throughput")
        report["embedding"] = _embedding_section(sizes, data, quick)
        trained = main_job_dir / "best"
        report["trained_model_agreement"] = (
            trained_model_agreement(trained, data) if (trained / "config.json").is_file() else None
        )
        logger.info("levers and profiles")
        model = build_model(base)
        processor = processor_for(base)
        lever_images = image_batches(processor, data.images[: 2 * sizes.lever_batch], sizes.lever_batch)
        report["levers"] = lever_runs(model, lever_images, compile_model)
        report["profiles"] = {
            precision: profile_table(model, lever_images[0], precision) for precision in ("fp32", "bf16")
        }
        del model
        logger.info("training step")
        report["training"] = training_runs(base, processor, data, sizes.training_items, ("fp32", "bf16"))
    logger.info("evaluation at ICFG-PEDES scale")
    report["evaluation"] = measure_evaluation(
        sizes.eval_queries, sizes.eval_gallery, sizes.eval_people, sizes.eval_dim, sizes.eval_chunk, skip_full_sort
    )
    report["main_job"] = read_main_job(main_job_dir)
    report["load_average_at_end"] = os.getloadavg()
    report["bench_seconds"] = time.perf_counter() - started
    return report


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def format_report(report: dict) -> str:
    """The table of results with each performance target next to what was measured."""
    ceiling = report["ceiling"]
    peak = {"fp32": ceiling["fp32_gflops"], "bf16": ceiling["bf16_gflops"]}
    flags = report["machine"]["flags"]
    lines = [
        f"IVT benchmark ({report['mode']}), {report['date_utc']}, {report['machine']['model']}, "
        f"{report['machine']['usable_cpus']} cores, torch {report['machine']['torch']} "
        f"({report['machine']['torch_cpu_capability']}), GPU: {report['gpu'] or 'none'}",
        "CPU flags: " + ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in flags.items()),
        "",
        "| measurement | fp32 | bf16 | bf16 / fp32 | target |",
        "|---|---:|---:|---:|---|",
        f"| matmul {ceiling['square_size']}^2 GFLOP/s (ceiling) | {peak['fp32']:.1f} | {peak['bf16']:.1f} "
        f"| {_ratio(peak['bf16'], peak['fp32'])} | |",
        f"| linear {'x'.join(map(str, ceiling['linear_shape']))} GFLOP/s | {ceiling['fp32_linear_gflops']:.1f} "
        f"| {ceiling['bf16_linear_gflops']:.1f} "
        f"| {_ratio(ceiling['bf16_linear_gflops'], ceiling['fp32_linear_gflops'])} | |",
    ]
    embedding = report["embedding"]
    for stride in (12, 16):
        entry = embedding[f"image_stride{stride}"]
        fp32, bf16 = entry["fp32"], entry["bf16"]
        lines.append(
            f"| images/s, stride {stride} ({entry['tokens']} tokens) | {fp32['items_per_s']:.2f} | "
            f"{bf16['items_per_s']:.2f} | {_ratio(bf16['items_per_s'], fp32['items_per_s'])} | bf16 >= 3x |"
        )
        lines.append(
            f"| MFU images, stride {stride} | {100 * fp32['gflops'] / peak['fp32']:.0f}% | "
            f"{100 * bf16['gflops'] / peak['bf16']:.0f}% | | > 80% |"
        )
        lines.append(
            f"| image cosine bf16 vs fp32, stride {stride} (min / mean) | | {entry['agreement']['min_cosine']:.5f} / "
            f"{entry['agreement']['mean_cosine']:.5f} | | >= 0.999 |"
        )
    text = embedding["text"]
    lines += [
        f"| captions/s | {text['fp32']['items_per_s']:.2f} | {text['bf16']['items_per_s']:.2f} | "
        f"{_ratio(text['bf16']['items_per_s'], text['fp32']['items_per_s'])} | |",
        f"| MFU captions | {100 * text['fp32']['gflops'] / peak['fp32']:.0f}% | "
        f"{100 * text['bf16']['gflops'] / peak['bf16']:.0f}% | | > 80% |",
        f"| caption cosine bf16 vs fp32 (min / mean) | | {text['agreement']['min_cosine']:.5f} / "
        f"{text['agreement']['mean_cosine']:.5f} | | >= 0.999 |",
        f"| identical top-1, random-init base | | {embedding['top1_random_init']['identical_top1']} / "
        f"{embedding['top1_random_init']['queries']} | | all |",
    ]
    trained = report["trained_model_agreement"]
    if trained:
        lines.append(
            f"| identical top-1, trained main-job model (image cos min {trained['image']['min_cosine']:.5f}) | | "
            f"{trained['top1']['identical_top1']} / {trained['top1']['queries']} | | all |"
        )
    training = report["training"]
    lines += [
        f"| training pairs/s ({training['fp32']['pairs']} pairs = 3 views) | {training['fp32']['pairs_per_s']:.3f} | "
        f"{training['bf16']['pairs_per_s']:.3f} | "
        f"{_ratio(training['bf16']['pairs_per_s'], training['fp32']['pairs_per_s'])} "
        "| bf16 >= 1.8x |",
        f"| MFU training (approx.) | {100 * training['fp32']['gflops'] / peak['fp32']:.0f}% | "
        f"{100 * training['bf16']['gflops'] / peak['bf16']:.0f}% | | |",
        f"| training step peak memory MiB (RSS increase over weights + optimizer state) | "
        f"{training['fp32']['peak_rss_increase_mib']:.0f} | {training['bf16']['peak_rss_increase_mib']:.0f} | "
        f"{_ratio(training['bf16']['peak_rss_increase_mib'], training['fp32']['peak_rss_increase_mib'])} | |",
        "",
        "| evaluation | chunked | full sort | full / chunked | target |",
        "|---|---:|---:|---:|---|",
    ]
    evaluation = report["evaluation"]
    chunked, full = evaluation["chunked"], evaluation["full_sort"]
    size = f"{evaluation['queries']} x {evaluation['gallery']}, {evaluation['dim']}-d"
    lines.append(
        f"| time s / similarity products alone ({evaluation['similarity_products_seconds']:.1f} s) | "
        f"{evaluation['ratio_to_products']:.2f}x | | | <= 1.5x |"
    )
    if "skipped" in full:
        lines.append(f"| time s ({size}) | {chunked['seconds']:.1f} | skipped: {full['skipped']} | | |")
    else:
        lines += [
            f"| time s ({size}) | {chunked['seconds']:.1f} | {full['seconds']:.1f} | "
            f"{evaluation['speedup']:.1f}x | >= 10x |",
            f"| time s without the shared similarity products ({evaluation['similarity_products_seconds']:.1f} s) | "
            f"{chunked['seconds'] - evaluation['similarity_products_seconds']:.1f} | "
            f"{full['seconds'] - evaluation['similarity_products_seconds']:.1f} | "
            f"{evaluation['ranking_speedup']:.1f}x | |",
            f"| peak RSS increase MiB | {chunked['peak_rss_increase_mib']:.0f} | {full['peak_rss_increase_mib']:.0f} | "
            f"{evaluation['memory_ratio']:.1f}x | >= 10x |",
            f"| largest metric difference (percentage points) | {evaluation['max_abs_difference']:.2e} | | | equal |",
        ]
    main_job = report["main_job"]
    lines.append("")
    if main_job["status"] == "read":
        r1 = (main_job["test"] or {}).get("R@1")
        lines.append(
            f"Main job: final test R@1 {r1} after {main_job['time_to_final_metrics_s']:.0f} s "
            f"(wall {main_job['wall_time_s']:.0f} s, {main_job['num_processes']} process(es)) "
            f"from {main_job['results_file']}"
        )
    else:
        lines.append(f"Main job: {main_job['status']}")
    lines.append("")
    lines.append("| lever (image embedding, stride 12) | images/s | GFLOP/s | min cosine to fp32 | first call s |")
    lines.append("|---|---:|---:|---:|---:|")
    lines += [
        f"| {lever['setting']} | {lever['items_per_s']:.2f} | {lever['gflops']:.1f} | "
        f"{lever['min_cosine_to_fp32']:.5f} | {lever['warmup_seconds']:.1f} |"
        for lever in report["levers"]
    ]
    lines.append("")
    start, end = report["load_average_at_start"], report["load_average_at_end"]
    lines.append(
        f"Benchmark time: {report['bench_seconds']:.0f} s; 1-minute load average {start[0]:.1f} at the start, "
        f"{end[0]:.1f} at the end ({report['machine']['usable_cpus']} cores)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a few seconds, for a smoke test")
    parser.add_argument("--output", type=Path, default=Path("bench/results/latest.json"), help="JSON report path")
    parser.add_argument(
        "--main-job",
        type=Path,
        default=DEFAULT_MAIN_JOB,
        help="output folder of the main job (its results.json and best/ model)",
    )
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the torch.compile levers (compiling the base model takes a minute or more per precision)",
    )
    parser.add_argument("--profile-output", type=Path, help="also write the torch.profiler tables to this text file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run_benchmark(args.quick, args.main_job, args.compile)
    table = format_report(report)
    print(table)
    for precision, profile in report["profiles"].items():
        print(f"\nTop operators, image embedding, {precision} (torch.profiler, self CPU time):\n{profile}")
    write_json_atomic(args.output, report)
    if args.profile_output:
        args.profile_output.write_text(
            "\n\n".join(f"{precision}\n{profile}" for precision, profile in report["profiles"].items()),
            encoding="utf-8",
        )
    print(f"\nJSON report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
