"""Every way of pushing a model leaves the project's model card on the Hub, never transformers' blank template."""

import os
import re
import socket
import subprocess
import textwrap
from pathlib import Path

import torch

from modeling_ivt import IVTModel, create_processor
from modeling_ivt.hub_utils import PROJECT_TAG, converted_model_card
from tests.model.conftest import TINY_IMAGE_SIZE, tiny_config
from tests.model.test_remote_code import WITHOUT_PACKAGE

from .conftest import REPO_ROOT, run_against

HUB_GUIDE = REPO_ROOT / "docs" / "hub.md"
BLANK_CARD = "Model Card for Model ID"


def hub_card(hub, repo: str) -> str:
    store = hub.server.store
    history = store.repos[store.key("model", repo)]
    files = history["commits"][history["branches"]["main"]]["files"]
    return store.read_blob(files["README.md"]["sha256"]).decode()


def saved_model_with_card(folder: Path) -> str:
    """A tiny IVT folder as the converter writes it: weights, code, processor and the project's card."""
    torch.manual_seed(0)
    model = IVTModel(tiny_config())
    model.save_pretrained(folder)
    create_processor(image_size=TINY_IMAGE_SIZE).save_pretrained(folder)
    card = converted_model_card(model.config, "best.pth", "local-user/ivt", ignored=[])
    card.save(folder / "README.md")
    return (folder / "README.md").read_text()


def test_model_and_processor_push_to_hub_publish_the_project_card(hub, tmp_path):
    folder = tmp_path / "ivt"
    card = saved_model_with_card(folder)
    run_against(hub, tmp_path, textwrap.dedent(f"""
        from transformers import AutoModel, AutoProcessor
        from modeling_ivt import IVTModel
        from tests.model.conftest import tiny_config
        AutoModel.from_pretrained({str(folder)!r}).push_to_hub("local-user/from-folder")
        AutoProcessor.from_pretrained({str(folder)!r}).push_to_hub("local-user/processor-from-folder")
        IVTModel(tiny_config()).push_to_hub("local-user/new-model")
        AutoProcessor.from_pretrained({str(folder)!r}).push_to_hub("local-user/new-model")
    """))
    assert hub_card(hub, "local-user/from-folder") == card
    assert hub_card(hub, "local-user/processor-from-folder") == card

    new_card = hub_card(hub, "local-user/new-model")
    assert BLANK_CARD not in new_card and PROJECT_TAG in new_card
    assert "pipeline_tag: zero-shot-image-classification" in new_card and "Limitations and risks" in new_card
    store = hub.server.store
    history = store.repos[store.key("model", "local-user/new-model")]
    files = history["commits"][history["branches"]["main"]]["files"]
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json"} <= set(files)


def test_push_from_a_folder_loaded_with_remote_code_keeps_the_card(hub, tmp_path):
    folder = tmp_path / "ivt"
    card = saved_model_with_card(folder)
    assert "hub_utils.py" in {path.name for path in folder.iterdir()}, "the push code travels with the model code"
    run_against(hub, tmp_path, WITHOUT_PACKAGE + textwrap.dedent(f"""
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        model.push_to_hub("local-user/remote-code")
    """))
    assert hub_card(hub, "local-user/remote-code") == card


def test_hub_guide_local_hub_commands_work_as_pasted(tmp_path):
    """The Hub guide's commands, run by bash as written (only the port is a free one), push the main job's folder."""
    section = HUB_GUIDE.read_text(encoding="utf-8").split("## Try it on a local Hub", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    folder = re.search(r"push_folder_to_hub\('([^']+)'", commands).group(1)
    repo = re.search(r"push_folder_to_hub\('[^']+', '([^']+)'", commands).group(1)
    card = saved_model_with_card(tmp_path / folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE") and not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO_ROOT))
    lines = commands.replace("8080", port).splitlines()
    server = next(number for number, line in enumerate(lines) if line.startswith("python -m local_hub"))
    script = "\n".join([*lines[: server + 1], "trap 'kill $!' EXIT", *lines[server + 1 :]])
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "32", result.stdout

    from local_hub.server import HubStore

    store = HubStore(tmp_path / "hub-storage")
    history = store.repos[store.key("model", repo)]
    files = history["commits"][history["branches"]["main"]]["files"]
    assert store.read_blob(files["README.md"]["sha256"]).decode() == card
