import json

import pytest
import torch

from bench.model_speed import top1_agreement
from bench.run import format_report, main, read_main_job


@pytest.fixture
def one_thread():
    """The smoke test checks the pipeline, not speed: on a busy 2-core machine two threads make tiny ops crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quick_benchmark_reports_every_section(tmp_path, capsys, one_thread):
    output = tmp_path / "results" / "quick.json"
    main_job = tmp_path / "main-job"
    main_job.mkdir()
    (main_job / "results.json").write_text(
        json.dumps({"time_to_final_metrics_s": 321.5, "wall_time_s": 400.0, "test": {"R@1": 42.5}, "num_processes": 1})
    )
    assert main(["--quick", "--no-compile", "--output", str(output), "--main-job", str(main_job)]) == 0
    report = json.loads(output.read_text())
    printed = capsys.readouterr().out

    assert report["mode"] == "quick" and report["gpu"] is None
    assert report["ceiling"]["fp32_gflops"] > 0 and report["ceiling"]["bf16_gflops"] > 0
    assert set(report["machine"]["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    for stride in (12, 16):
        entry = report["embedding"][f"image_stride{stride}"]
        assert entry["fp32"]["items"] == entry["bf16"]["items"] > 0
        assert entry["agreement"]["min_cosine"] > 0.99  # bf16 rounding of a tiny random model stays close to fp32
    assert (
        report["embedding"]["image_stride12"]["tokens"] == 311
        and report["embedding"]["image_stride16"]["tokens"] == 193
    )
    top1 = report["embedding"]["top1_random_init"]
    # bf16 rounding (every cosine above 0.99) can swap near-tied galleries, but not most of the 12 rankings
    assert top1["queries"] == 12 and top1["identical_top1"] >= 9, top1
    for precision in ("fp32", "bf16"):
        training = report["training"][precision]
        assert training["pairs"] == 6 and training["pairs_per_s"] > 0 and training["peak_rss_mib"] > 0
    evaluation = report["evaluation"]
    assert evaluation["max_abs_difference"] < 1e-4
    assert evaluation["chunked"]["metrics"] == pytest.approx(evaluation["full_sort"]["metrics"], abs=1e-4)
    assert report["main_job"]["time_to_final_metrics_s"] == 321.5
    assert {lever["setting"] for lever in report["levers"]} >= {
        "fp32, sdpa, inference_mode (default)",
        "bf16 weights (model.to(bfloat16), what --bf16 loads), no autocast",
    }
    assert "aten::" in report["profiles"]["bf16"]

    assert format_report(report) in printed
    assert "Main job: final test R@1 42.5 after 322 s" in printed
    assert not list(output.parent.glob("*.partial"))


def test_missing_main_job_is_reported_as_not_run(tmp_path):
    assert read_main_job(tmp_path / "nowhere")["status"].startswith("not run")


def test_top1_agreement_counts_the_queries_whose_best_gallery_image_is_unchanged():
    gallery = torch.eye(4)
    queries = torch.tensor([[1.0, 0.2, 0, 0], [0, 1.0, 0.9, 0], [0, 0, 0.2, 1.0]])
    # the second query's best image moves from 1 to 2; 3 queries, 4 gallery images (a transposed count reads 4)
    swapped = torch.tensor([[1.0, 0.2, 0, 0], [0, 0.9, 1.0, 0], [0, 0, 0.2, 1.0]])
    assert top1_agreement(queries, gallery, queries, gallery) == {"queries": 3, "identical_top1": 3}
    assert top1_agreement(queries, gallery, swapped, gallery) == {"queries": 3, "identical_top1": 2}
