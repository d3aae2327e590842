"""Real multi-process pre-training (two gloo processes started by `accelerate launch`): gathered ITC equals the
single-process loss, ITM hard negatives come from both processes, and a short run on a local corpus trains, checkpoints, resumes exactly and saves a loadable model."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from modeling_ivt import IVTForPreTraining, IVTModel
from tests.pretraining.conftest import make_collator

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = [
    "--init", "random", "--model.hidden_size", "32", "--model.num_hidden_layers", "2",
    "--model.num_attention_heads", "4", "--model.intermediate_size", "64", "--model.image_size", "48", "32",
    "--model.patch_stride", "16", "--model.fusion_num_hidden_layers", "2", "--model.token_drop_ratio", "0",
    "--max_text_length", "32",
]  # fmt: skip

GATHERED_ITC = textwrap.dedent(
    """
    import sys, torch
    from accelerate import Accelerator
    sys.path.insert(0, {repo!r})
    from modeling_ivt import IVTForPreTraining
    from tests.pretraining.conftest import tiny_pretraining_config
    from training.loss import PreTrainingObjective
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = IVTForPreTraining(tiny_pretraining_config(hidden_dropout_prob=0.0))
    step = PreTrainingObjective(model, world_size=accelerator.num_processes).eval()
    batch = torch.load({batch!r}, weights_only=True)
    size = batch["input_ids"].shape[0] // accelerator.num_processes
    rows = slice(accelerator.process_index * size, (accelerator.process_index + 1) * size)
    local = {{name: value[rows] for name, value in batch.items()}}
    out = step(**local)
    out.itc_loss.backward()
    grad = model.ivt.final_layer_norm.weight.grad.clone()
    torch.distributed.all_reduce(grad)
    loss = out.itc_loss.detach().clone()
    torch.distributed.all_reduce(loss)
    n = accelerator.num_processes

    # ITM hard negatives: which process's sequences reach the fusion encoder as negatives
    fusion_inputs = []
    model.fusion_encoder.register_forward_pre_hook(lambda module, args: fusion_inputs.append(args))
    negative_sources = {{"text": [], "image": []}}
    with torch.no_grad():
        for seed in range(8):
            fusion_inputs.clear()
            step(**local, generator=torch.Generator().manual_seed(seed * n + accelerator.process_index))
            texts, _, images, _ = fusion_inputs[0]  # the ITM call: positives, then both kinds of negatives
            for kind, rows in (("text", texts[size : 2 * size]), ("image", images[2 * size :])):
                own = texts[:size] if kind == "text" else images[:size]
                everyone = torch.cat(accelerator.gather(own[None]).unbind(0))
                for row in rows:
                    match = (everyone == row).flatten(1).all(dim=1).nonzero().flatten().tolist()
                    negative_sources[kind].append(match[0] // size if len(match) == 1 else -1)
    sources = accelerator.gather(torch.tensor([negative_sources["text"], negative_sources["image"]])[None])
    if accelerator.is_main_process:
        torch.save({{"loss": loss / n, "grad": grad / n, "processes": n, "sources": sources}}, {result!r})
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    """
)


def launch(args, cwd, timeout=240):
    """Two gloo processes: accelerate 1.15 runs `launch --num_processes 2 --cpu` as ONE process, so launch
    torchrun-style (`--multi_gpu`) with ACCELERATE_USE_CPU, which works on a machine without a GPU."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "ACCELERATE_USE_CPU": "1",
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", *args]
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


def test_itc_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path, processor, pairs):
    from tests.pretraining.conftest import tiny_pretraining_config

    batch = dict(make_collator(processor, seed=0)(pairs))
    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "gathered_itc.py"
    result = tmp_path / "result.pt"
    script.write_text(GATHERED_ITC.format(repo=str(REPO), batch=str(tmp_path / "batch.pt"), result=str(result)))
    launch([str(script)], cwd=tmp_path)
    distributed = torch.load(result, weights_only=True)
    assert distributed["processes"] == 2

    from training.loss import PreTrainingObjective

    torch.manual_seed(0)
    model = IVTForPreTraining(tiny_pretraining_config(hidden_dropout_prob=0.0))
    out = PreTrainingObjective(model).eval()(**batch)
    out.itc_loss.backward()
    torch.testing.assert_close(distributed["loss"], out.itc_loss.detach())
    torch.testing.assert_close(distributed["grad"], model.ivt.final_layer_norm.weight.grad)

    # sources[rank, kind] lists, for each hard negative that rank drew, the rank whose pair it is (-1: no pair's)
    sources = distributed["sources"]
    assert bool((sources >= 0).all()), "every ITM negative must be one of the gathered pairs"
    for rank in range(2):
        for kind in range(2):
            assert rank in sources[rank, kind].tolist() and 1 - rank in sources[rank, kind].tolist(), (rank, kind)


def test_two_process_pretraining_checkpoints_resumes_exactly_and_saves_a_loadable_model(tmp_path, json_corpus):
    output = tmp_path / "run"
    common = [
        str(REPO / "training" / "run.py"), "--config", str(REPO / "training" / "configs" / "pretrain_generated.yaml"),
        "--pretrain.corpus", str(json_corpus), "--dataset", str(tmp_path / "no-benchmark"), "--no-generate-benchmark",
        *TINY_MODEL, "--pretrain.batch_size", "3", "--max_train_steps", "4", "--num_epochs", "2",
        "--checkpointing_steps", "2", "--report_to", "none", "--logging_steps", "1",
        "--pretrain.corpus_shuffle_buffer", "8", "--seed", "7",
        # as the default recipe's run: MLA, its augmentation, initialisation and precision
        "--mla", "--pad", "3", "--erasing_prob", "0.5", "--text_embedding_scale", "0.05", "--mixed_precision", "bf16",
        "--model.initializer_range", "0.05", "--model.drop_path_rate", "0", "--num_workers", "0", "--num_threads", "0",
    ]  # fmt: skip
    launch([*common, "--output_dir", str(output)], cwd=tmp_path)

    results = json.loads((output / "results.json").read_text())
    assert results["num_processes"] == 2 and results["effective_batch_size"] == 6
    # 16 pairs make 2 global batches of 6 per pass: 4 steps finish one pass, the second stops after its last full batch
    assert results["trained_steps"] == 4 and results["corpus_passes"] == 1
    assert set(results["final_losses"]) == {"loss", "itc_loss", "itm_loss", "mlm_loss"}
    assert all(value == value and value > 0 for value in results["final_losses"].values())
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    final = IVTForPreTraining.from_pretrained(output / "best")
    assert final.mlm_head.decoder.weight is final.ivt.text_embeddings.word_embeddings.weight
    assert "ITC + ITM + MLM" in (output / "best" / "README.md").read_text()
    assert type(IVTModel.from_pretrained(output / "best")) is IVTModel

    # Resume the same run from its step-2 checkpoint: the same batches, draws and updates give the same model.
    resumed = tmp_path / "resumed"
    shutil.copytree(output / "checkpoints" / "checkpoint_0", resumed / "checkpoints" / "checkpoint_0")
    launch([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"], cwd=tmp_path)
    again = IVTForPreTraining.from_pretrained(resumed / "best")
    assert json.loads((resumed / "results.json").read_text())["trained_steps"] == 4
    for name, value in final.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, msg=name)
