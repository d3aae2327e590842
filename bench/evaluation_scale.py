"""Evaluation at ICFG-PEDES scale: the chunked metric function against the straightforward full sort."""

from __future__ import annotations

import multiprocessing

import psutil
import torch

from training.metrics import full_sort_retrieval_metrics, retrieval_metrics

from .common import peak_rss, time_calls

# The full sort holds the fp32 scores, the int64 argsort, the sort's own copy of the values and a bool matrix.
FULL_SORT_BYTES_PER_PAIR = 4 + 8 + 4 + 1


def icfg_like_case(num_queries: int, num_gallery: int, num_people: int, dim: int, seed: int = 0):
    """Random unit embeddings with person ids spread like ICFG-PEDES' test split (about 20 images per person)."""
    generator = torch.Generator().manual_seed(seed)
    gallery_person_ids = torch.arange(num_gallery) % num_people
    query_person_ids = gallery_person_ids[torch.randperm(num_gallery, generator=generator)][:num_queries]
    if num_queries > num_gallery:
        query_person_ids = torch.arange(num_queries) % num_people
    query_embeds = torch.randn(num_queries, dim, generator=generator)
    gallery_embeds = torch.randn(num_gallery, dim, generator=generator)
    return query_embeds, gallery_embeds, query_person_ids, gallery_person_ids


def scores_only(query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, chunk_size: int) -> None:
    """
    The similarity products any exact evaluation pays, chunk by chunk and thrown away: the floor. Normalised and laid
    out as `retrieval_metrics` does (a contiguous transposed gallery multiplies fastest).
    """
    gallery_t = torch.nn.functional.normalize(gallery_embeds, dim=-1).t().contiguous()
    for start in range(0, len(query_embeds), chunk_size):
        torch.nn.functional.normalize(query_embeds[start : start + chunk_size], dim=-1) @ gallery_t


def measure_evaluation(
    num_queries: int, num_gallery: int, num_people: int, dim: int, chunk_size: int, skip_full_sort: bool = False
) -> dict:
    """
    Runs in a fresh process: the peak-memory readings then reflect the metric computations, not the heap left
    fragmented by earlier benchmark sections.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_evaluation, (num_queries, num_gallery, num_people, dim, chunk_size, skip_full_sort))


def _measure_evaluation(
    num_queries: int, num_gallery: int, num_people: int, dim: int, chunk_size: int, skip_full_sort: bool
) -> dict:
    retrieval_metrics(*icfg_like_case(50, 40, 5, dim, seed=1))  # first calls of the kernels, untimed
    case = icfg_like_case(num_queries, num_gallery, num_people, dim)
    result = {"queries": num_queries, "gallery": num_gallery, "dim": dim, "chunk_size": chunk_size}

    # The products are timed before and after the metrics: on a shared machine the load drifts during a run.
    products_before = time_calls(lambda: scores_only(case[0], case[1], chunk_size), budget_s=0.0, warmup=0)
    with peak_rss() as memory:
        timing = time_calls(lambda: retrieval_metrics(*case, chunk_size=chunk_size), budget_s=0.0, warmup=0)
    products_after = time_calls(lambda: scores_only(case[0], case[1], chunk_size), budget_s=0.0, warmup=0)
    chunked = timing.result
    result["chunked"] = {
        "seconds": timing.seconds_per_call,
        "peak_rss_increase_mib": memory.increase_mib,
        "metrics": chunked,
    }
    products = (products_before.seconds_per_call + products_after.seconds_per_call) / 2
    result["similarity_products_seconds"] = products
    result["ratio_to_products"] = timing.seconds_per_call / products

    needed = FULL_SORT_BYTES_PER_PAIR * num_queries * num_gallery
    available = psutil.virtual_memory().available
    if skip_full_sort or needed > 0.8 * available:
        reason = (
            "not requested" if skip_full_sort else f"needs ~{needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB free"
        )
        result["full_sort"] = {"skipped": reason}
        return result
    with peak_rss() as memory:
        timing = time_calls(lambda: full_sort_retrieval_metrics(*case), budget_s=0.0, warmup=0)
    full = timing.result
    result["full_sort"] = {
        "seconds": timing.seconds_per_call,
        "peak_rss_increase_mib": memory.increase_mib,
        "metrics": full,
    }
    result["max_abs_difference"] = max(abs(chunked[name] - full[name]) for name in chunked)
    result["speedup"] = result["full_sort"]["seconds"] / result["chunked"]["seconds"]
    # An RSS increase below 1 MiB is page-granularity noise: divide by at least that.
    result["memory_ratio"] = result["full_sort"]["peak_rss_increase_mib"] / max(
        1.0, result["chunked"]["peak_rss_increase_mib"]
    )
    floor = result["similarity_products_seconds"]
    result["ranking_speedup"] = (result["full_sort"]["seconds"] - floor) / max(
        result["chunked"]["seconds"] - floor, 1e-9
    )
    return result
