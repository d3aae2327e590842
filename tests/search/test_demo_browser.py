"""The Gradio demo, for real: served on 127.0.0.1 and driven by headless Chromium."""

import shutil
from pathlib import Path

import pytest

from ivt_search import GalleryIndex
from tests.search.conftest import MODEL_TYPES
from tests.search.test_index import load

pytest.importorskip("gradio", reason="the demo needs the optional extra: pip install -e '.[demo]'")
pytest.importorskip("playwright", reason="the browser test needs playwright: pip install -e '.[demo]'")

from demo.build_space import build_space
from demo.screenshot import capture_search, find_chromium, running_demo

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.parametrize("model_dir", MODEL_TYPES, indirect=True)
def test_space_folder_serves_the_demo_and_shows_ranked_results_in_a_browser(model_dir, benchmark_dir, tmp_path):
    """The Space folder runs on its own (its copies of the packages, model, index and gallery), like on the Hub."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    model, processor = load(model_dir)
    index = GalleryIndex(model, processor)
    index.add_split(benchmark_dir, "test")
    index.save(tmp_path / "index")
    space = build_space(tmp_path / "index", tmp_path / "space")
    assert (space / "README.md").read_text().startswith("---\ntitle:")
    shutil.rmtree(tmp_path / "index")

    query = "a woman in a red coat with a white handbag"
    screenshot = ARTIFACTS / ("demo_browser_test.png" if model_dir.name == "tiny-ivt" else f"demo_browser_{model_dir.name}.png")
    with running_demo(app_dir=space) as url:
        shown, text = capture_search(url, query, screenshot, chromium)
    hits = index.search(query, top_k=10)[0]
    assert shown == len(hits) == min(10, len(index)), "every hit of the default top-k appears on the page"
    labels = [f"#{hit.rank} · {hit.score:.3f} · id {hit.person_id}" for hit in hits]
    positions = [text.find(label) for label in labels]
    assert -1 not in positions and positions == sorted(positions), f"ranked labels {labels} not in order in {text!r}"
    assert screenshot.stat().st_size > 10_000
