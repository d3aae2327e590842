"""Evaluate a saved or Hub model (IVT or IRRA-family) on a built benchmark split: text-to-image R@1, R@5, R@10, mAP and mINP.

python training/evaluate.py --model outputs/ivt-drawn-pedestrians/best --dataset data/drawn-pedestrians
python training/evaluate.py --model user/ivt-cuhk-pedes --dataset data/cuhk-pedes --split test --output m.json
accelerate launch --multi_gpu --num_processes 2 training/evaluate.py ...   (embedding sharded over processes;
    add ACCELERATE_USE_CPU=1 on a machine without GPUs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, this file's folder would come first on sys.path and this file would shadow the `evaluate`
    # library for every later import; the repository root is what the imports below need instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import datasets  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from modeling_ivt.cli import CommandParser  # noqa: E402
from modeling_ivt.loading import (  # noqa: E402
    add_bf16_argument,
    add_trust_remote_code_argument,
    load_model_and_processor,
)
from modeling_ivt.safe_io import write_json_atomic  # noqa: E402
from training.metrics import metrics_table  # noqa: E402
from training.retrieval import evaluate_split  # noqa: E402


def load_split(dataset_dir: str, split: str) -> datasets.Dataset:
    path = Path(dataset_dir)
    if not (path / "dataset_dict.json").is_file():
        raise SystemExit(f"--dataset {dataset_dir}: not a built benchmark (no dataset_dict.json); build it first")
    dataset_dict = datasets.load_from_disk(str(path))
    if split not in dataset_dict:
        raise SystemExit(f"--split {split}: {dataset_dir} has the splits {sorted(dataset_dict)}")
    return dataset_dict[split]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(
        prog="python training/evaluate.py",
        description="Text-to-image retrieval metrics of an IVT or IRRA-family model on a built benchmark split (IRRA's protocol).",
    )
    parser.add_argument("--model", required=True, help="saved model folder or Hub repo id (model + processor)")
    parser.add_argument("--dataset", required=True, help="built benchmark folder (dataset_scripts.build output)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--output", type=Path, help="write the metrics and run details to this JSON file")
    parser.add_argument("--batch-size", type=int, default=64, help="captions or images embedded at once")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    add_bf16_argument(parser)
    add_trust_remote_code_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator()
    split_ds = load_split(args.dataset, args.split)
    model, processor = load_model_and_processor(
        args.model, accelerator.device, trust_remote_code=args.trust_remote_code, revision=args.revision, bf16=args.bf16
    )
    metrics = evaluate_split(model, processor, split_ds, batch_size=args.batch_size, accelerator=accelerator)
    if not accelerator.is_main_process:
        return 0
    print(f"{args.model} on {args.dataset} ({args.split}, {len(split_ds)} gallery images)")
    print(metrics_table(metrics))
    if args.output is not None:
        num_queries = sum(len(captions) for captions in split_ds["captions"])
        write_json_atomic(
            args.output,
            {
                "model": args.model,
                "dataset": args.dataset,
                "split": args.split,
                "num_queries": num_queries,
                "num_gallery": len(split_ds),
                "num_processes": accelerator.num_processes,
                "dtype": str(model.dtype).removeprefix("torch."),
                "metrics": metrics,
            },
        )
        print(f"metrics written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
