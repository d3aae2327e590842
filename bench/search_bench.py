"""Exact gallery search (one matrix product + top-k) against approximate FAISS indexes (through `datasets.search`).

The gallery and the queries are synthetic L2-normalised embeddings with the structure of a person-retrieval gallery:
`--images-per-person` images around each person's centre, and one query per person drawn around the same centre
(text and image embeddings of one person are close, not equal). For every gallery size it reports, per method, the
build time, the latency of one query and of a batch of queries, and recall@k against the exact top-k.

    python -m bench.search_bench                 # 10k and 100k images, 768-d
    python -m bench.search_bench --intrinsic-dim 0 --output bench/results/search_bench_isotropic.json

Prints a table and writes JSON (atomically) to bench/results/search_bench.json by default. Needs faiss-cpu
(`pip install "ivt-hf[faiss]"`). Timings are wall-clock on whatever machine runs it: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import faiss
import torch

from ivt_search.index import build_faiss_index, exact_top_k
from modeling_ivt.cli import CommandParser
from modeling_ivt.safe_io import write_text_atomic


def synthetic_gallery(
    num_images: int, dim: int, images_per_person: int, num_queries: int, intrinsic_dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    (gallery (N, dim), queries (Q, dim)), both L2-normalised, clustered by person. With `intrinsic_dim` > 0 people
    and their variations live in a random `intrinsic_dim`-dimensional subspace plus a little isotropic noise (learned
    embeddings have far fewer directions of variation than dimensions); with 0 everything is isotropic Gaussian, the
    hardest case for approximate search.
    """
    generator = torch.Generator().manual_seed(seed)
    latent_dim = intrinsic_dim or dim
    projection = (
        torch.randn(latent_dim, dim, generator=generator) / latent_dim**0.5 if intrinsic_dim else torch.eye(dim)
    )
    num_people = max(num_images // images_per_person, 1)
    centres = torch.randn(num_people, latent_dim, generator=generator)
    person_of_image = torch.arange(num_images) % num_people
    query_people = torch.randint(num_people, (num_queries,), generator=generator)

    def embed(people: torch.Tensor, spread: float) -> torch.Tensor:
        latent = centres[people] + spread * torch.randn(len(people), latent_dim, generator=generator)
        isotropic = 0.1 * torch.randn(len(people), dim, generator=generator) if intrinsic_dim else 0.0
        return torch.nn.functional.normalize(latent @ projection + isotropic, dim=1)

    return embed(person_of_image, 0.8), embed(query_people, 1.0)


def _median_latency_ms(search_one, queries: torch.Tensor, repeats: int) -> float:
    times = []
    for row in range(repeats):
        query = queries[row : row + 1]
        start = time.perf_counter()
        search_one(query)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the exact top-k that the approximate top-k also returns, averaged over queries (in %)."""
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(found, exact, strict=True))
    return 100.0 * hits / exact.numel()


def bench_size(num_images: int, args: argparse.Namespace) -> list[dict]:
    gallery, queries = synthetic_gallery(
        num_images, args.dim, args.images_per_person, args.num_queries, args.intrinsic_dim, args.seed
    )
    k = args.top_k
    rows = []

    start = time.perf_counter()
    _, exact_positions = exact_top_k(queries, gallery, k)
    batch_s = time.perf_counter() - start
    single_ms = _median_latency_ms(lambda q: exact_top_k(q, gallery, k), queries, args.single_queries)
    rows.append(
        {
            "method": "exact (torch matmul + topk)",
            "build_s": 0.0,
            "single_query_ms": single_ms,
            "batch_query_ms": 1000 * batch_s / len(queries),
            "recall_at_k": 100.0,
        }
    )

    for factory, parameters in args.faiss_methods:
        start = time.perf_counter()
        index = build_faiss_index(gallery, string_factory=factory)
        build_s = time.perf_counter() - start
        for name, value in parameters.items():
            faiss.ParameterSpace().set_index_parameter(index.faiss_index, name, value)
        query_array = queries.numpy()
        start = time.perf_counter()
        _, positions = index.search_batch(query_array, k=k)
        batch_s = time.perf_counter() - start
        single_ms = _median_latency_ms(
            lambda q, index=index: index.search_batch(q.numpy(), k=k), queries, args.single_queries
        )
        label = factory + "".join(f" {name}={value}" for name, value in parameters.items())
        rows.append(
            {
                "method": f"faiss {label}",
                "build_s": build_s,
                "single_query_ms": single_ms,
                "batch_query_ms": 1000 * batch_s / len(queries),
                "recall_at_k": recall_at_k(torch.from_numpy(positions), exact_positions),
            }
        )
    for row in rows:
        row["gallery_size"] = num_images
    return rows


def text_encoder_latency_ms(repeats: int = 5) -> float:
    """Median time to embed one caption with a base-size IVT (random weights; the cost does not depend on them)."""
    from modeling_ivt import IVTConfig, IVTModel, create_processor

    model = IVTModel(IVTConfig()).eval()
    inputs = create_processor()(text=["a woman in a red coat and black trousers carrying a white handbag"])
    with torch.no_grad():
        model.get_text_features(**inputs)
        return _median_latency_ms(lambda _: model.get_text_features(**inputs), torch.zeros(repeats, 1), repeats)


def _parse_method(text: str) -> tuple[str, dict[str, int]]:
    """ "HNSW32:efSearch=64" -> ("HNSW32", {"efSearch": 64})."""
    factory, _, settings = text.partition(":")
    parameters = {}
    for setting in filter(None, settings.split(",")):
        name, _, value = setting.partition("=")
        parameters[name] = int(value)
    return factory, parameters


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m bench.search_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=768, help="embedding width (768 = IVT base)")
    parser.add_argument("--images-per-person", type=int, default=4)
    parser.add_argument(
        "--intrinsic-dim", type=int, default=64, help="dimensions the embeddings vary in; 0 = isotropic Gaussian"
    )
    parser.add_argument("--num-queries", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=50, help="one-at-a-time queries for the latency median")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--faiss",
        nargs="+",
        default=["HNSW32:efSearch=16", "HNSW32:efSearch=128", "IVF256,Flat:nprobe=8", "IVF256,Flat:nprobe=32"],
        help="FAISS index factory strings with optional :param=value settings",
    )
    parser.add_argument(
        "--skip-text-encoder", action="store_true", help="do not time one caption through a base-size IVT for scale"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="bench/results/search_bench.json")
    args = parser.parse_args(argv)
    args.faiss_methods = [_parse_method(text) for text in args.faiss]

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        rows.extend(bench_size(size, args))

    print(
        f"{'gallery':>8}  {'method':<36} {'build s':>8} {'1 query ms':>11} {'batch ms/q':>11} {'recall@' + str(args.top_k):>10}"
    )
    for row in rows:
        print(
            f"{row['gallery_size']:>8}  {row['method']:<36} {row['build_s']:8.2f} {row['single_query_ms']:11.3f} "
            f"{row['batch_query_ms']:11.4f} {row['recall_at_k']:10.2f}"
        )
    text_ms = None if args.skip_text_encoder else text_encoder_latency_ms()
    if text_ms is not None:
        print(f"for scale: embedding one caption with a base-size IVT takes {text_ms:.1f} ms")
    report = {
        "command": "python -m bench.search_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
            "torch": torch.__version__,
            "faiss": faiss.__version__,
        },
        "settings": {name: value for name, value in vars(args).items() if name not in ("faiss_methods", "output")},
        "results": rows,
        "text_encoder_single_caption_ms": text_ms,
    }
    output = write_text_atomic(args.output, json.dumps(report, indent=1))
    print(f"-> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
