import pytest
import torch

from training.metrics import full_sort_retrieval_metrics, retrieval_metrics


def _reference_metrics(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids):
    """
    The protocol by its definition, written apart from training.metrics: each row sorted by Python's stable sort on
    descending cosine similarity (equal scores keep gallery order), then R@K, AP and INP read off the 1-based
    positions of the relevant images.
    """
    query_embeds = torch.nn.functional.normalize(query_embeds, dim=-1)
    gallery_embeds = torch.nn.functional.normalize(gallery_embeds, dim=-1)
    totals = dict.fromkeys(("R@1", "R@5", "R@10", "mAP", "mINP"), 0.0)
    for query, person in zip(query_embeds, query_person_ids.tolist()):
        row = (gallery_embeds @ query).tolist()
        ranking = sorted(range(len(row)), key=lambda column: -row[column])
        positions = [place + 1 for place, column in enumerate(ranking) if gallery_person_ids[column] == person]
        for k in (1, 5, 10):
            totals[f"R@{k}"] += positions[0] <= k
        totals["mAP"] += sum(hit / position for hit, position in enumerate(positions, start=1)) / len(positions)
        totals["mINP"] += len(positions) / positions[-1]
    return {name: 100.0 * total / len(query_embeds) for name, total in totals.items()}


def _tie_heavy_case(seed: int, num_queries: int, num_gallery: int, num_people: int, dim: int):
    """
    Embeddings of +-1 entries (dim a power of 4, so normalised entries and every dot product are exact in any
    summation order): only dim + 1 distinct scores exist, so most relevant images tie with others, with each other,
    or with every image of the gallery.
    """
    generator = torch.Generator().manual_seed(seed)

    def signs(count):
        return torch.randint(0, 2, (count, dim), generator=generator).float() * 2 - 1

    gallery_person_ids = torch.randint(num_people, (num_gallery,), generator=generator) * 3 + 100
    gallery_person_ids[:num_people] = torch.arange(num_people) * 3 + 100
    query_person_ids = gallery_person_ids[torch.randint(num_gallery, (num_queries,), generator=generator)]
    return signs(num_queries), signs(num_gallery), query_person_ids, gallery_person_ids


def _random_case(seed: int, num_queries: int, num_gallery: int, num_people: int, dim: int = 8):
    """Random embeddings (ties have probability ~0) and scattered, non-contiguous, partly negative person ids."""
    generator = torch.Generator().manual_seed(seed)
    id_space = torch.randperm(10_000, generator=generator)[:num_people] * 7 - 20_000
    gallery_person_ids = id_space[torch.randint(num_people, (num_gallery,), generator=generator)]
    gallery_person_ids[:num_people] = id_space  # every person has at least one gallery image
    query_person_ids = id_space[torch.randint(num_people, (num_queries,), generator=generator)]
    query_embeds = torch.randn(num_queries, dim, generator=generator) * 3
    gallery_embeds = torch.randn(num_gallery, dim, generator=generator)
    return query_embeds, gallery_embeds, query_person_ids, gallery_person_ids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 5000])
def test_chunked_equals_full_sort_on_random_cases(seed, chunk_size):
    case = _random_case(seed, num_queries=97, num_gallery=61 + 13 * seed, num_people=5 + 4 * seed)
    expected = full_sort_retrieval_metrics(*case)
    actual = retrieval_metrics(*case, chunk_size=chunk_size)
    assert actual.keys() == expected.keys() == {"R@1", "R@5", "R@10", "mAP", "mINP"}
    for name in expected:
        assert isinstance(actual[name], float)
        assert actual[name] == pytest.approx(expected[name], abs=1e-5), name


@pytest.mark.parametrize(
    ("seed", "dim", "num_gallery", "num_people"), [(0, 4, 60, 7), (1, 16, 300, 25), (2, 16, 700, 9), (3, 4, 40, 40)]
)
def test_ties_rank_like_a_stable_full_sort(seed, dim, num_gallery, num_people):
    case = _tie_heavy_case(seed, num_queries=90, num_gallery=num_gallery, num_people=num_people, dim=dim)
    expected = _reference_metrics(*case)
    assert full_sort_retrieval_metrics(*case) == pytest.approx(expected, abs=1e-5)  # it sums precision in fp32
    for chunk_size in (1, 7, 128):
        assert retrieval_metrics(*case, chunk_size=chunk_size) == pytest.approx(expected, abs=1e-9)


def test_every_gallery_image_tying():
    # One gallery image repeated: every row's scores are equal, so the ranking is the gallery order itself.
    gallery_embeds = torch.ones(9, 4)
    gallery_person_ids = torch.tensor([3, 1, 2, 1, 3, 3, 2, 1, 2])
    query_embeds = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    query_person_ids = torch.tensor([1, 3, 2])
    expected = _reference_metrics(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids)
    assert expected["R@1"] == pytest.approx(100 / 3)  # only person 3 owns the first gallery image
    for chunk_size in (1, 3):
        actual = retrieval_metrics(
            query_embeds, gallery_embeds, query_person_ids, gallery_person_ids, chunk_size=chunk_size
        )
        assert actual == pytest.approx(expected, abs=1e-9)


def test_reference_agrees_on_random_cases():
    case = _random_case(5, num_queries=40, num_gallery=70, num_people=9)
    assert retrieval_metrics(*case) == pytest.approx(_reference_metrics(*case), abs=1e-9)


def test_scale_of_embeddings_does_not_matter():
    """Cosine similarity: every query and every gallery image may come with its own norm."""
    query_embeds, gallery_embeds, query_person_ids, gallery_person_ids = _random_case(9, 40, 30, 6)
    plain = retrieval_metrics(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids)
    generator = torch.Generator().manual_seed(1)
    query_scales = torch.rand(40, 1, generator=generator) * 100
    gallery_scales = torch.rand(30, 1, generator=generator) * 10 + 0.01
    for metric in (retrieval_metrics, full_sort_retrieval_metrics):
        rescaled = metric(query_embeds * query_scales, gallery_embeds * gallery_scales, query_person_ids,
                          gallery_person_ids)  # fmt: skip
        assert rescaled == pytest.approx(plain)


def test_hand_worked_ranks():
    # Gallery scores against the single query q = (1, 0): g0 = 0.6, g1 = 1.0, g2 = 0.8, g3 = -1.0, g4 = 0.0.
    # Descending order: g1, g2, g0, g4, g3. Person 5 owns g0 and g4 -> ranks 2 and 3 (0-based).
    gallery_embeds = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [0.0, 1.0]])
    gallery_person_ids = torch.tensor([5, 9, 11, 9, 5])
    query_embeds = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # Second query (0, 1): scores g0 0.8, g1 0.0, g2 0.6, g3 0.0, g4 1.0 -> order g4, g0, g2, g1, g3 (g1 before g3
    # on the tie). Person 9 owns g1 and g3 -> ranks 3 and 4.
    query_person_ids = torch.tensor([5, 9])
    ap = [(1 / 3 + 2 / 4) / 2, (1 / 4 + 2 / 5) / 2]
    inp = [2 / 4, 2 / 5]
    expected = {
        "R@1": 0.0,
        "R@5": 100.0,
        "R@10": 100.0,
        "mAP": 100 * sum(ap) / 2,
        "mINP": 100 * sum(inp) / 2,
    }
    for metric in (retrieval_metrics, full_sort_retrieval_metrics):
        assert metric(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids) == pytest.approx(expected)


def test_ties_are_broken_by_gallery_order():
    # Four identical gallery images: a stable sort ranks them in gallery order, so only the position of the
    # relevant ones decides. Person 3 owns g1 and g3 -> ranks 1 and 3.
    gallery_embeds = torch.ones(4, 3)
    query_embeds = torch.tensor([[1.0, 2.0, 3.0]])
    gallery_person_ids = torch.tensor([8, 3, 8, 3])
    expected = {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "mAP": 100 * (1 / 2 + 2 / 4) / 2, "mINP": 100 * 2 / 4}
    for chunk_size in (1, 2):
        actual = retrieval_metrics(
            query_embeds, gallery_embeds, torch.tensor([3]), gallery_person_ids, chunk_size=chunk_size
        )
        assert actual == pytest.approx(expected)
    assert full_sort_retrieval_metrics(
        query_embeds, gallery_embeds, torch.tensor([3]), gallery_person_ids
    ) == pytest.approx(expected)


def test_recall_at_k_counts_the_first_relevant_image_only():
    # 12 gallery images on a circle; the query sits on image 0's direction, person 1 owns images 6 and 11 only.
    angles = torch.arange(12) * (torch.pi / 12)
    gallery_embeds = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    gallery_person_ids = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    metrics = retrieval_metrics(torch.tensor([[1.0, 0.0]]), gallery_embeds, torch.tensor([1]), gallery_person_ids)
    # Ranks 6 and 11: R@1 and R@5 miss, R@10 hits; AP = (1/7 + 2/12) / 2; INP = 2/12.
    assert metrics == pytest.approx(
        {"R@1": 0.0, "R@5": 0.0, "R@10": 100.0, "mAP": 100 * (1 / 7 + 2 / 12) / 2, "mINP": 100 * 2 / 12}
    )


def test_negative_zero_ties_with_zero():
    # Scores -0.0 (g0) and +0.0 (g1) are equal; the stable order keeps g0 first, so the relevant g1 is rank 1.
    gallery_embeds = torch.tensor([[-0.0, 1.0], [0.0, 1.0]])
    metrics = retrieval_metrics(torch.tensor([[1.0, 0.0]]), gallery_embeds, torch.tensor([4]), torch.tensor([2, 4]))
    assert metrics["R@1"] == 0.0 and metrics["mAP"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {**c, "query_embeds": torch.randn(3)}, "query_embeds must be a non-empty 2-D tensor"),
        (lambda c: {**c, "gallery_embeds": torch.randn(5, 4)}, "dimension 3 but gallery_embeds has 4"),
        (lambda c: {**c, "query_person_ids": torch.tensor([1, 2])}, "query_person_ids must be a 1-D tensor"),
        (lambda c: {**c, "gallery_person_ids": torch.ones(5)}, "gallery_person_ids must hold integer person ids"),
        (lambda c: {**c, "query_embeds": torch.full((3, 3), float("nan"))}, "query_embeds contains NaN"),
        (
            lambda c: {**c, "query_person_ids": torch.tensor([1, 2, 99])},
            "1 queries have no gallery image .* query 2, person_id 99",
        ),
        (lambda c: {**c, "chunk_size": 0}, "chunk_size must be a positive integer"),
    ],
)
@pytest.mark.parametrize("metric", [retrieval_metrics, full_sort_retrieval_metrics])
def test_bad_input_is_named(metric, change, message):
    case = {
        "query_embeds": torch.randn(3, 3),
        "gallery_embeds": torch.randn(5, 3),
        "query_person_ids": torch.tensor([1, 2, 2]),
        "gallery_person_ids": torch.tensor([1, 2, 1, 2, 1]),
    }
    case = change(case)
    chunk_size = case.pop("chunk_size", 2)
    with pytest.raises(ValueError, match=message):
        metric(**case, chunk_size=chunk_size)


def test_evaluate_module_loads_offline_and_matches(tmp_path):
    evaluate = pytest.importorskip("evaluate")
    query_embeds, gallery_embeds, query_person_ids, gallery_person_ids = _random_case(3, 50, 40, 8)
    metric = evaluate.load("training/ivt_retrieval", cache_dir=str(tmp_path))
    for start in range(0, 50, 16):
        metric.add_batch(
            query_embeds=query_embeds[start : start + 16].tolist(),
            query_person_ids=query_person_ids[start : start + 16].tolist(),
        )
    result = metric.compute(gallery_embeds=gallery_embeds, gallery_person_ids=gallery_person_ids, chunk_size=9)
    assert result == pytest.approx(
        retrieval_metrics(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids), abs=1e-5
    )
    with pytest.raises(ValueError, match="needs gallery_embeds"):
        metric.compute(query_embeds=query_embeds.tolist(), query_person_ids=query_person_ids.tolist())
