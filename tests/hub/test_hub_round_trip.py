"""Push to and load from a real HTTP server that speaks the Hub's protocol, with the real client libraries."""

import json
import textwrap

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from tests.model.original_ivt_reference import random_original_checkpoint

from .conftest import run_against

LOAD_AND_EMBED = textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor
    results = {{}}
    for name, revision in {revisions!r}.items():
        model = AutoModel.from_pretrained({repo!r}, trust_remote_code=True, revision=revision).eval()
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True, revision=revision)
        batch = processor(text=["a man in a black jacket carrying a red bag"], images=[Image.new("RGB", (60, 150), (20, 90, 200))])
        with torch.no_grad():
            out = model(**batch)
        results[name] = {{"text": out.text_embeds, "image": out.image_embeds}}
    torch.save(results, {output!r})
    """
)


def _local_embeddings(folder):
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(text=["a man in a black jacket carrying a red bag"], images=[Image.new("RGB", (60, 150), (20, 90, 200))])
    with torch.no_grad():
        out = model(**batch)
    return {"text": out.text_embeds, "image": out.image_embeds}


def test_converter_push_then_load_from_the_hub_with_a_pinned_revision(hub, tmp_path):
    repo = "local-user/ivt-converted"
    folders = [tmp_path / f"converted-v{version}" for version in (1, 2)]
    conversions = []
    for version, folder in zip((1, 2), folders):
        checkpoint = tmp_path / f"v{version}.pth"
        torch.save({"state_dict": random_original_checkpoint(width=32, depth=1, vocab=30522, stride=16, seed=version)}, checkpoint)
        conversions.append((str(checkpoint), str(folder)))
    run_against(hub, tmp_path, textwrap.dedent(f"""
        from modeling_ivt.convert_original_checkpoint import main
        for checkpoint, folder in {conversions!r}:  # two pushes, two commits
            main(["--checkpoint", checkpoint, "--output", folder, "--num-heads", "2", "--push-to-hub", {repo!r}])
    """))

    store = hub.server.store
    history = store.repos[store.key("model", repo)]
    head = history["branches"]["main"]
    first_push = history["commits"][head]["parent"]
    files = history["commits"][head]["files"]
    assert {"model.safetensors", "config.json", "modeling_ivt.py", "processor_config.json", "tokenizer.json", "README.md"} <= set(files)
    assert files["model.safetensors"]["lfs"], "weights travel through the LFS upload route"

    output = tmp_path / "remote.pt"
    run_against(hub, tmp_path, LOAD_AND_EMBED.format(revisions={"main": None, "pinned": first_push}, repo=repo, output=str(output)))
    remote = torch.load(output, weights_only=True)
    first, second = _local_embeddings(folders[0]), _local_embeddings(folders[1])
    for key in ("text", "image"):
        torch.testing.assert_close(remote["main"][key], second[key])
        torch.testing.assert_close(remote["pinned"][key], first[key])
        assert not torch.allclose(first[key], second[key])

    card = store.read_blob(files["README.md"]["sha256"]).decode()
    assert "library_name: transformers" in card and "Limitations and risks" in card


def test_generated_benchmark_round_trip_and_restricted_benchmarks_are_refused(hub, tmp_path):
    from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark

    built = tmp_path / "drawn"
    local = ensure_generated_benchmark(
        built, GeneratorSettings(num_train_ids=4, num_val_ids=2, num_test_ids=2, images_per_id=2), num_workers=1
    )
    repo = "local-user/drawn-pedestrians-tiny"
    output = tmp_path / "rows.json"
    run_against(hub, tmp_path, textwrap.dedent(f"""
        import json
        from datasets import load_dataset
        from dataset_scripts.hub import push_benchmark_to_hub
        push_benchmark_to_hub({str(built)!r}, {repo!r})
        remote = load_dataset({repo!r})
        rows = {{split: [[r["person_id"], r["captions"], r["image"].size] for r in remote[split]] for split in remote}}
        json.dump(rows, open({str(output)!r}, "w"))
    """))
    rows = json.loads(output.read_text())
    assert set(rows) == set(local)
    for split in local:
        assert rows[split] == [[r["person_id"], r["captions"], list(r["image"].size)] for r in local[split]]
    store = hub.server.store
    files = store.repos[store.key("dataset", repo)]["commits"]
    head = store.repos[store.key("dataset", repo)]["branches"]["main"]
    card = store.read_blob(files[head]["files"]["README.md"]["sha256"]).decode()
    assert "license: apache-2.0" in card and "dataset_info" in card

    restricted = tmp_path / "cuhk"
    restricted.mkdir()
    (restricted / "README.md").write_text("---\npretty_name: CUHK-PEDES\nlicense: other\nlicense_name: research-only-on-request\n---\n# CUHK-PEDES\n")
    from dataset_scripts.hub import RestrictedDatasetError, push_benchmark_to_hub

    with pytest.raises(RestrictedDatasetError, match="never be redistributed"):
        push_benchmark_to_hub(restricted, "local-user/cuhk-pedes")
    assert store.key("dataset", "local-user/cuhk-pedes") not in store.repos


def test_irra_conversion_pushed_then_loaded_from_the_hub_gives_the_local_embeddings(hub, tmp_path):
    from tests.model.irra_reference import random_irra_checkpoint

    repo = "local-user/irra-converted"
    checkpoint = tmp_path / "best.pth"
    torch.save({"model": random_irra_checkpoint(depth=1, ddp=True), "epoch": 60}, checkpoint)
    folder = tmp_path / "irra-converted"
    run_against(hub, tmp_path, textwrap.dedent(f"""
        from modeling_ivt.convert_irra_checkpoint import main
        main(["--checkpoint", {str(checkpoint)!r}, "--output", {str(folder)!r}, "--license", "mit",
              "--source", "https://example.org/irra.zip", "--push-to-hub", {repo!r}])
    """))
    store = hub.server.store
    history = store.repos[store.key("model", repo)]
    files = history["commits"][history["branches"]["main"]]["files"]
    assert {"model.safetensors", "modeling_irra.py", "image_processing_irra.py", "tokenizer.json", "README.md"} <= set(files)
    card = store.read_blob(files["README.md"]["sha256"]).decode()
    assert "license: mit" in card and "https://example.org/irra.zip" in card and "- irra" in card

    output = tmp_path / "remote.pt"
    run_against(hub, tmp_path, LOAD_AND_EMBED.format(revisions={"main": None}, repo=repo, output=str(output)))
    remote = torch.load(output, weights_only=True)["main"]
    local = _local_embeddings(folder)
    for key in ("text", "image"):
        torch.testing.assert_close(remote[key], local[key])
