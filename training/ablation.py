"""Ablation of IVT's parts on a benchmark: CMPM only, + MLA, + BMM, full IVT, each over several seeds.

    python training/ablation.py                                  # default recipe, 3 seeds, 12 runs
    python training/ablation.py --seeds 1 2 3 -- --max_train_steps 150 --finetune.eval_every_epochs 5

Arguments after `--` go to every `training/run.py` call (the recipe: `--config`, budget, ...); every variant trains
IVT's own loss, CMPM, alone, in place of the recipe's losses (the default recipe adds the ID loss). Each run writes
OUTPUT_ROOT/<variant>-seed<k>/results.json; the table of mean +- std (sample standard deviation over seeds) of the test
R@1, R@5, R@10, mAP and mINP goes to a markdown file and a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from modeling_ivt.safe_io import write_text_atomic
from training.metrics import METRIC_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
IVT_LOSSES = ["--finetune.losses", "cmpm"]
VARIANTS = {
    "CMPM only": ["--no-mla", "--model.token_drop_ratio", "0"],
    "+ MLA": ["--mla", "--model.token_drop_ratio", "0"],
    "+ BMM": ["--no-mla", "--model.token_drop_ratio", "0.2"],
    "full IVT (MLA + BMM)": ["--mla", "--model.token_drop_ratio", "0.2"],
}


def run_variant(name: str, flags: list[str], seed: int, output_dir: Path, recipe: list[str]) -> dict:
    """One training run in a fresh process; its results.json (reused when the run already finished)."""
    results_file = output_dir / "results.json"
    if results_file.is_file():
        return json.loads(results_file.read_text())
    command = [
        sys.executable,
        str(REPO_ROOT / "training" / "run.py"),
        *recipe,
        *IVT_LOSSES,
        *flags,
        "--seed",
        str(seed),
        "--output_dir",
        str(output_dir),
        "--overwrite_output_dir",
        "--report_to",
        "none",
    ]
    started = time.time()
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL)
    print(f"{name}, seed {seed}: {time.time() - started:.0f} s", flush=True)
    return json.loads(results_file.read_text())


def summarise(results: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample standard deviation of every test metric per variant."""
    summary = {}
    for name, runs in results.items():
        values = {metric: [run["test"][metric] for run in runs] for metric in METRIC_NAMES}
        summary[name] = {
            metric: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for metric, v in values.items()
        }
    return summary


def markdown_table(summary: dict, seeds: list[int], recipe: list[str]) -> str:
    lines = [
        f"Test metrics (%), mean +- std over seeds {', '.join(map(str, seeds))}; recipe flags: "
        f"`{' '.join(recipe) or '(default recipe)'}`.",
        "",
        "| variant | " + " | ".join(METRIC_NAMES) + " |",
        "|---|" + "---:|" * len(METRIC_NAMES),
    ]
    for name, metrics in summary.items():
        cells = [f"{mean:.1f} +- {std:.1f}" for mean, std in (metrics[m] for m in METRIC_NAMES)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1234, 1235, 1236], help="one run per seed and variant"
    )
    parser.add_argument("--output_root", type=Path, default=Path("outputs/ablation"), help="folder of the runs")
    parser.add_argument("--table", type=Path, default=Path("docs/ablation.md"), help="markdown table to write")
    parser.add_argument("--json", type=Path, default=Path("docs/ablation.json"), help="JSON summary to write")
    args = parser.parse_args(own)

    results = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name, flags in VARIANTS.items():
            slug = name.split(" (")[0].replace("+ ", "plus-").replace(" ", "-").lower()
            results[name].append(run_variant(name, flags, seed, args.output_root / f"{slug}-seed{seed}", recipe))
    summary = summarise(results)
    table = markdown_table(summary, args.seeds, recipe)
    payload = {
        "seeds": args.seeds,
        "recipe_flags": recipe,
        "summary": {
            name: {m: {"mean": v[0], "std": v[1]} for m, v in metrics.items()} for name, metrics in summary.items()
        },
        "runs": {
            name: [{"seed": r["seed"], "test": r["test"], "wall_time_s": r["wall_time_s"]} for r in runs]
            for name, runs in results.items()
        },
    }
    for path, text in ((args.table, table), (args.json, json.dumps(payload, indent=2))):
        write_text_atomic(path, text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
