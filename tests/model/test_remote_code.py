"""The saved folder must work for someone who has only transformers: no `modeling_ivt` package importable."""

import json
import subprocess
import sys
import textwrap

import torch

WITHOUT_PACKAGE = textwrap.dedent(
    """
    import importlib.util, os, sys
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "modeling_ivt"))]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in f.__module__.lower()]
    assert importlib.util.find_spec("modeling_ivt") is None, "the package must not be importable here"
    """
)
LOAD_WITHOUT_PACKAGE = WITHOUT_PACKAGE + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor
    model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained({folder!r}, trust_remote_code=True)
    batch = processor(text={captions!r}, images=[Image.new("RGB", (64, 160), (200, 30, 30))] * {n})
    with torch.no_grad():
        out = model(**batch)
    torch.save({{"text": out.text_embeds, "image": out.image_embeds, "module": type(model).__module__}}, {result!r})
    """
)


def test_saved_folder_loads_with_trust_remote_code_in_a_fresh_process(tmp_path, model, processor, captions):
    from PIL import Image

    folder = tmp_path / "ivt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_ivt.IVTConfig",
        "AutoModel": "modeling_ivt.IVTModel",
        "AutoModelForZeroShotImageClassification": "modeling_ivt.IVTModel",
    }
    assert {"configuration_ivt.py", "modeling_ivt.py", "processing_ivt.py"} <= {p.name for p in folder.iterdir()}

    result = tmp_path / "embeddings.pt"
    script = LOAD_WITHOUT_PACKAGE.format(
        folder=str(folder), captions=captions, n=len(captions), result=str(result)
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)

    remote = torch.load(result, weights_only=True)
    assert remote["module"].startswith("transformers_modules.")
    batch = processor(text=captions, images=[Image.new("RGB", (64, 160), (200, 30, 30))] * len(captions))
    with torch.no_grad():
        local = model(**batch)
    torch.testing.assert_close(remote["text"], local.text_embeds)
    torch.testing.assert_close(remote["image"], local.image_embeds)


def test_irra_folder_loads_with_trust_remote_code_in_a_fresh_process(tmp_path, irra_model, irra_processor):
    from PIL import Image

    folder = tmp_path / "irra"
    irra_model.save_pretrained(folder)
    irra_processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_irra.IRRAConfig",
        "AutoModel": "modeling_irra.IRRAModel",
        "AutoModelForZeroShotImageClassification": "modeling_irra.IRRAModel",
    }
    assert {"configuration_irra.py", "modeling_irra.py", "processing_irra.py", "image_processing_irra.py"} <= {
        p.name for p in folder.iterdir()
    }
    assert not {"modeling_ivt.py", "configuration_ivt.py"} & {p.name for p in folder.iterdir()}

    captions = ["A woman in a RED coat &amp; white shoes", "a man"]
    result = tmp_path / "embeddings.pt"
    script = LOAD_WITHOUT_PACKAGE.format(folder=str(folder), captions=captions, n=len(captions), result=str(result))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)

    remote = torch.load(result, weights_only=True)
    assert remote["module"].startswith("transformers_modules.")
    batch = irra_processor(text=captions, images=[Image.new("RGB", (64, 160), (200, 30, 30))] * len(captions))
    with torch.no_grad():
        local = irra_model(**batch)
    torch.testing.assert_close(remote["text"], local.text_embeds)
    torch.testing.assert_close(remote["image"], local.image_embeds)
