"""Gradio demo: type a description of a pedestrian and see the gallery ranked by the index's model (IVT or IRRA).

    python -m demo.app --index INDEX_DIR [--model FOLDER_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]

In a Hugging Face Space folder made by `python -m demo.build_space` it runs as `python app.py` and reads the same
settings from the environment: IVT_INDEX (default: `index` next to this file), IVT_MODEL (default: `model` next to
this file if present, else the model recorded in the index), IVT_TOP_K, IVT_BF16 (1: bfloat16 weights), GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import torch

from ivt_search import GalleryIndex, read_index_metadata
from modeling_ivt.cli import CommandParser
from modeling_ivt.loading import BF16_HELP, add_trust_remote_code_argument, load_model_and_processor

EXAMPLES = [
    "A woman in a red coat and black trousers, carrying a white handbag.",
    "A man with short black hair wearing a blue shirt, grey shorts and a backpack.",
]


HERE = Path(__file__).resolve().parent


def load_gallery_index(
    index_dir: str | os.PathLike, model: str | None = None, trust_remote_code: bool = False, bf16: bool = False
) -> GalleryIndex:
    """The index at `index_dir` with its model: `model`, else a `model` folder next to this file, else the one
    recorded in the index; a model's own code runs only with `trust_remote_code` (`--trust-remote-code`); `bf16`
    loads bfloat16 weights."""
    if not Path(index_dir).exists():
        raise FileNotFoundError(
            f"no gallery index at {index_dir}: build one with `python -m ivt_search index my-index --model MODEL "
            "--images PHOTOS`, then start the demo with `python -m demo.app --index my-index`"
        )
    if model is None and (HERE / "model" / "config.json").is_file():
        model = str(HERE / "model")
    model_name = model or read_index_metadata(index_dir)["model"]["name_or_path"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded, processor = load_model_and_processor(model_name, device, trust_remote_code=trust_remote_code, bf16=bf16)
    return GalleryIndex.open(index_dir, loaded, processor)


def _label(hit) -> str:
    person = "" if hit.person_id is None else f" · id {hit.person_id}"
    return f"#{hit.rank} · {hit.score:.3f}{person}"


def build_demo(index: GalleryIndex, top_k: int = 10) -> gr.Blocks:
    """The Blocks app: a description box, a top-k slider, a Search button and the ranked gallery."""

    def search(description: str, k: float):
        description = description.strip()
        if not description:
            raise gr.Error("Type a description of the person to find.")
        hits = index.search(description, top_k=int(k))[0]
        return [(index.load_image(hit.position), _label(hit)) for hit in hits]

    model_name = index.model.config.model_type.upper()
    with gr.Blocks(title=f"{model_name} person search") as demo:
        gr.Markdown(
            f"# Find a person by description\n{model_name} ranks {len(index)} gallery images by how well they match "
            f"your description (model: `{index.model_name}`)."
        )
        with gr.Row():
            description = gr.Textbox(
                label="Description", placeholder=EXAMPLES[0], lines=2, scale=4, elem_id="description"
            )
            k = gr.Slider(1, min(50, len(index)), value=min(top_k, len(index)), step=1, label="Top k", scale=1)
        button = gr.Button("Search", variant="primary", elem_id="search")
        results = gr.Gallery(label="Ranked gallery", columns=5, height="auto", object_fit="contain", elem_id="results")
        gr.Examples(EXAMPLES, inputs=description)
        button.click(search, inputs=[description, k], outputs=results)
        description.submit(search, inputs=[description, k], outputs=results)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m demo.app", description="Person search web demo.")
    parser.add_argument(
        "--index", default=os.environ.get("IVT_INDEX", str(HERE / "index")), help="a gallery index folder (ivt_search)"
    )
    parser.add_argument(
        "--model", default=os.environ.get("IVT_MODEL"), help="a saved IVT or IRRA-family folder or a Hub repository id"
    )
    parser.add_argument(
        "--top-k", type=int, default=int(os.environ.get("IVT_TOP_K", "10")), help="initial number of hits shown"
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to serve on")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port to serve on"
    )
    parser.add_argument("--bf16", action="store_true", default=os.environ.get("IVT_BF16") == "1", help=BF16_HELP)
    add_trust_remote_code_argument(parser)
    args = parser.parse_args(argv)
    try:
        index = load_gallery_index(args.index, args.model, args.trust_remote_code, args.bf16)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    demo = build_demo(index, top_k=args.top_k)
    demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
