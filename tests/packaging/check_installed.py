"""Use the installed ivt-hf the way a user of `pip install ivt-hf` would, from outside any checkout; exit status 1 and
the reason when something is wrong. .ci/run installs the wheel into a fresh virtual environment and runs

    cd SOMEWHERE_ELSE && VENV/bin/python CHECKOUT/tests/packaging/check_installed.py

It checks that the packages come from that environment's site-packages, that the distribution installed only the
project's own top-level names, that every console script answers `--help`, and a real use: a small random IVT saved
and reloaded with `AutoModel` and `trust_remote_code=True` from the folder (the model code copied out of
site-packages), which embeds a caption as the original does, and `ivt-search index` / `query` on a few images.
Runs on its own: the checkout is not importable here, so nothing of tests/ is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CHECKOUT_ONLY = ("training", "dataset_scripts", "local_hub", "demo", "bench")
CAPTION = "a woman in a red coat carrying a white handbag"
# In a process that never imports modeling_ivt, the Auto classes can only use the code saved in the folder.
RELOAD_FROM_FOLDER = """
import sys
import torch
from transformers import AutoModel, AutoProcessor
folder, caption, output = sys.argv[1:]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert "modeling_ivt" not in sys.modules, "the installed package was imported"
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
with torch.inference_mode():
    torch.save(model.get_text_features(**processor(text=[caption])).pooler_output, output)
"""


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    check(result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def check_installed_names() -> importlib.metadata.Distribution:
    import ivt_search
    import modeling_ivt

    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in (modeling_ivt, ivt_search):
        location = Path(module.__file__).resolve()
        check(location.is_relative_to(site_packages), f"{module.__name__} imported from {location}, not {site_packages}")
    distribution = importlib.metadata.distribution("ivt-hf")
    names = {
        Path(file.parts[0]).stem if len(file.parts) == 1 else file.parts[0]
        for file in distribution.files
        if file.parts[0] != ".." and not file.parts[0].endswith(".dist-info")
    }
    names |= set((distribution.read_text("top_level.txt") or "").split())
    check(names == {"modeling_ivt", "ivt_search"}, f"ivt-hf installed the top-level names {sorted(names)}")
    for name in CHECKOUT_ONLY:
        check(importlib.util.find_spec(name) is None, f"`import {name}` works outside the checkout")
    return distribution


def check_console_scripts(distribution: importlib.metadata.Distribution, workdir: Path) -> None:
    """Every console script answers `--help`; the first alone (it writes the bytecode caches), the rest at once."""
    scripts = sorted(distribution.entry_points.select(group="console_scripts"), key=lambda script: script.name)
    check(len(scripts) > 0, "ivt-hf installed no console scripts")
    executables = [Path(sys.executable).parent / script.name for script in scripts]
    for executable in executables:
        check(executable.is_file(), f"console script {executable.name} is not in {executable.parent}")
    check("usage:" in run([str(executables[0]), "--help"], workdir), f"{executables[0].name} --help printed no usage")
    running = {
        executable.name: subprocess.Popen(
            [str(executable), "--help"], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for executable in executables[1:]
    }
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        check(process.returncode == 0, f"{name} --help exited {process.returncode}:\n{stderr[-3000:]}")
        check("usage:" in stdout, f"{name} --help printed no usage")


def check_model_round_trip(workdir: Path) -> None:
    import torch
    from PIL import Image

    from modeling_ivt import IVTConfig, IVTModel, create_processor
    from modeling_ivt.embedding import embed_captions, embed_images

    torch.manual_seed(0)
    image_size = (48, 32)
    config = IVTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=image_size,
        patch_size=16, patch_stride=16, vocab_size=30522,
    )
    model, processor = IVTModel(config).eval(), create_processor(image_size=image_size)
    folder = workdir / "tiny-ivt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    with torch.inference_mode():
        original = model.get_text_features(**processor(text=[CAPTION])).pooler_output
    embedding_file = workdir / "caption_embedding.pt"
    run([sys.executable, "-c", RELOAD_FROM_FOLDER, str(folder), CAPTION, str(embedding_file)], workdir)
    from_folder = torch.load(embedding_file, weights_only=True)
    check(from_folder.shape == original.shape, f"caption embedding of shape {tuple(from_folder.shape)}")
    torch.testing.assert_close(from_folder, original)

    gallery = workdir / "gallery"
    gallery.mkdir()
    colours = [(200, 30, 30), (30, 30, 200), (240, 240, 240), (20, 120, 20)]
    images = [Image.new("RGB", (64, 160), colour) for colour in colours]
    for number, image in enumerate(images):
        image.save(gallery / f"person{number}.png")
    scores = (embed_captions(model, processor, [CAPTION]) @ embed_images(model, processor, images).T)[0]
    expected = [f"person{number}.png" for number in scores.argsort(descending=True)[:3].tolist()]

    bin_dir = Path(sys.executable).parent
    index_dir = workdir / "index"
    run([str(bin_dir / "ivt-search"), "index", str(index_dir), "--model", str(folder), "--images", str(gallery)], workdir)
    output = run([str(bin_dir / "ivt-search"), "query", str(index_dir), CAPTION, "--top-k", "3", "--json"], workdir)
    [hits] = json.loads(output)
    ranked = [Path(hit["path"]).name for hit in hits]
    check(ranked == expected, f"ivt-search ranked {ranked}; the model's own embeddings rank {expected}")


def main() -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="ivt-installed-") as workdir:
            distribution = check_installed_names()
            check_console_scripts(distribution, Path(workdir))
            check_model_round_trip(Path(workdir))
    except CheckFailed as failure:
        print(f"installed-package check failed: {failure}", file=sys.stderr)
        return 1
    print(f"installed ivt-hf {distribution.version} works outside the checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
