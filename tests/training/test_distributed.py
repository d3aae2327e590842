"""Real multi-process runs with `accelerate launch --num_processes 2 --cpu` (gloo)."""

import json
from pathlib import Path

import torch

from local_hub import LocalHub
from modeling_ivt import IVTModel
from tests.hub.conftest import run_against

from .conftest import REPO_ROOT, launch, tiny_recipe

EQUIVALENCE_SCRIPT = Path(__file__).with_name("equivalence_script.py")


def test_two_processes_with_gathered_cmpm_equal_one_process_with_the_whole_batch(tmp_path):
    launch([str(EQUIVALENCE_SCRIPT), str(tmp_path / "gathered.pt")], cwd=REPO_ROOT)
    result = torch.load(tmp_path / "gathered.pt", weights_only=True)
    assert result["world_size"] == 2
    torch.testing.assert_close(result["losses"], result["reference_loss"].repeat(2), rtol=1e-5, atol=1e-6)
    assert result["gradients"].keys() == result["reference_gradients"].keys()
    assert len(result["gradients"]) > 20
    for name, gradient in result["gradients"].items():
        torch.testing.assert_close(gradient, result["reference_gradients"][name], rtol=1e-4, atol=1e-6, msg=name)

    # --finetune.local_loss: each process's CMPM over its own pairs only, as released
    local, own_batch = result["local_losses"].unbind(dim=1)
    torch.testing.assert_close(local, own_batch)
    assert not torch.allclose(local, result["reference_loss"].repeat(2))


def test_two_process_run_trains_evaluates_and_pushes_to_the_hub(tiny_benchmark, tmp_path):
    output_dir = tmp_path / "run"
    recipe = tiny_recipe(tiny_benchmark, output_dir, num_epochs=1, push_to_hub="local-user/ivt-tiny")
    with LocalHub(tmp_path / "hub-storage") as hub:
        hub_env = {
            "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": hub.token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf"),
        }
        offline = {name: "0" for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
        launch([str(REPO_ROOT / "training" / "run.py"), *recipe], cwd=REPO_ROOT, env_updates={**hub_env, **offline})

        results = json.loads((output_dir / "results.json").read_text())
        assert results["num_processes"] == 2
        assert results["effective_batch_size"] == 2 * 8 * 2  # processes x P x K
        # 80 identities x 2 chunks of K=2 pairs / 8 identities per batch = 20 batches, 10 per process
        assert results["trained_steps"] == 10
        assert set(results["test"]) == {"R@1", "R@5", "R@10", "mAP", "mINP"}
        card = (output_dir / "best" / "README.md").read_text()
        assert "2 process(es) x 16 items" in card and "ivt-tiny" in card

        local_model = IVTModel.from_pretrained(output_dir / "best")
        load = (
            "import torch\n"
            "from transformers import AutoModel\n"
            "from huggingface_hub import hf_hub_download\n"
            "model = AutoModel.from_pretrained('local-user/ivt-tiny', trust_remote_code=True)\n"
            f"torch.save(model.state_dict(), {str(tmp_path / 'pulled.pt')!r})\n"
            f"open({str(tmp_path / 'card.md')!r}, 'w').write(open(hf_hub_download('local-user/ivt-tiny', 'README.md')).read())\n"
        )
        run_against(hub, tmp_path, load)
    pulled = torch.load(tmp_path / "pulled.pt", weights_only=True)
    for name, value in local_model.state_dict().items():
        torch.testing.assert_close(pulled[name], value, msg=name)
    assert (tmp_path / "card.md").read_text() == card
