import json

from bench.gpu_check import main


def test_tiny_check_runs_every_section_on_the_cpu(tmp_path, capsys):
    output = tmp_path / "check.json"
    assert main(["--device", "cpu", "--tiny", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["device"] == "cpu" and report["mode"] == "tiny"
    assert report["ceiling"]["bf16_tflops"] > 0 and report["ceiling"]["fp32_tflops"] > 0
    tuning = report["fine_tuning_bf16"]
    assert tuning["pairs_per_step"] == 3 * tuning["items_per_step"] and tuning["pairs_per_s"] > 0
    assert 0 < tuning["mfu"] and tuning["loss"] == tuning["loss"]  # a finite loss
    assert report["embedding_bf16_weights"]["images"]["items_per_s"] > 0
    evaluation = report["evaluation"]
    assert (evaluation["queries"], evaluation["gallery"]) == (300, 250)
    assert set(evaluation["metrics"]) == {"R@1", "R@5", "R@10", "mAP", "mINP"}
    assert "IVT accelerator check (tiny) on cpu" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
