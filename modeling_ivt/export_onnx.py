"""Export a saved IVT or IRRA-family model as two ONNX graphs, one per tower, for serving with onnxruntime (no
PyTorch needed there).

    python -m modeling_ivt.export_onnx --model outputs/ivt-drawn-pedestrians/best --output outputs/ivt-onnx

The output folder holds `image_encoder.onnx` (`pixel_values` (batch, 3, H, W) -> `image_embeds` (batch, D)),
`text_encoder.onnx` (`input_ids`, `attention_mask` (batch, tokens) -> `text_embeds` (batch, D)), both with a dynamic
batch (and text length), and the model's processor, which turns images and captions into those inputs. The embeddings
are L2-normalised, as `IVTModel(...)` returns them, so a caption's scores are a dot product with the gallery's.
Every export is run once with onnxruntime on the example inputs and compared with PyTorch before it is kept.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .cli import CommandParser
from .loading import add_trust_remote_code_argument, load_model_and_processor
from .safe_io import atomic_output, check_replaceable

logger = logging.getLogger(__name__)

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
EXPORT_FILE = "onnx_export.json"
TOLERANCE = 1e-4


class ImageEncoder(nn.Module):
    """The image tower of a dual encoder (IVT or IRRA): pixel values to L2-normalised image embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.get_image_features(pixel_values).pooler_output, dim=-1)


class TextEncoder(nn.Module):
    """The text tower of a dual encoder (IVT or IRRA): token ids and padding mask to L2-normalised text embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.get_text_features(input_ids, attention_mask).pooler_output, dim=-1)


def _example_inputs(model, processor) -> tuple[dict, dict]:
    """A batch of two images and two captions of different lengths (so the export sees padding)."""
    size = processor.image_processor.size
    height, width = size["height"], size["width"]
    images = [Image.new("RGB", (width, height), (200, 40, 40)), Image.new("RGB", (width // 2, height), (30, 60, 190))]
    captions = ["a woman in a red coat", "a man with short black hair wearing a blue shirt, grey shorts and a backpack"]
    text = processor(text=captions)
    return {"pixel_values": processor(images=images)["pixel_values"]}, {
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
    }


def _export(module: nn.Module, inputs: dict, dynamic_shapes: dict, output_name: str, path: Path, opset: int):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        program = torch.onnx.export(
            module,
            args=(),
            kwargs=inputs,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=list(inputs),
            output_names=[output_name],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(str(path))


def max_abs_difference(path: Path, module: nn.Module, inputs: dict) -> float:
    """Largest |onnxruntime - PyTorch| over the embeddings of `inputs`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    with torch.no_grad():
        expected = module(**inputs)
    return float((torch.from_numpy(onnx_output) - expected).abs().max())


def export_onnx(model, processor, output_dir: str | Path, opset: int = 18) -> dict:
    """
    Write both towers of `model` (an `IVTModel` or `IRRAModel`) and `processor` to `output_dir` (replaced as a whole); returns the
    report also saved as `onnx_export.json`: the graphs, their inputs and outputs and the measured differences.
    """
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError('ONNX export needs onnx, onnxscript and onnxruntime: pip install "ivt-hf[onnx]"') from error
    model = model.float().eval()
    image_inputs, text_inputs = _example_inputs(model, processor)
    batch = torch.export.Dim("batch", min=1, max=4096)
    text_config = getattr(model.config, "text_config", model.config)
    tokens = torch.export.Dim("tokens", min=2, max=text_config.max_position_embeddings)
    towers = [
        (ImageEncoder(model).eval(), image_inputs, {"pixel_values": {0: batch}}, "image_embeds", IMAGE_FILE),
        (
            TextEncoder(model).eval(),
            text_inputs,
            {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}},
            "text_embeds",
            TEXT_FILE,
        ),
    ]
    report = {"opset": opset, "graphs": {}}
    with atomic_output(output_dir, directory=True) as staged:
        for module, inputs, dynamic_shapes, output_name, file_name in towers:
            _export(module, inputs, dynamic_shapes, output_name, staged / file_name, opset)
            difference = max_abs_difference(staged / file_name, module, inputs)
            if difference > TOLERANCE:
                raise RuntimeError(
                    f"{file_name}: onnxruntime differs from PyTorch by {difference:.2e} (> {TOLERANCE}) on the example "
                    "inputs; the export is not kept"
                )
            report["graphs"][file_name] = {
                "inputs": list(inputs),
                "output": output_name,
                "max_abs_difference": difference,
            }
            logger.info("%s: max |onnxruntime - torch| = %.2e", file_name, difference)
        processor.save_pretrained(staged)
        (staged / EXPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m modeling_ivt.export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved IVT folder or a Hub repository id")
    parser.add_argument("--output", required=True, type=Path, help="folder for the two graphs and the processor")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    parser.add_argument("--overwrite", action="store_true", help="replace an output folder this command wrote")
    add_trust_remote_code_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The exporter warns once per torchvision operator it cannot register; no IVT or IRRA graph uses them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        if args.output.exists() and not args.overwrite:
            raise FileExistsError(f"{args.output} exists: pass --overwrite to replace it, or choose another --output")
        check_replaceable(args.output, EXPORT_FILE, inputs=[args.model], what="--output")
        model, processor = load_model_and_processor(args.model, trust_remote_code=args.trust_remote_code)
        report = export_onnx(model, processor, args.output, opset=args.opset)
    except (FileExistsError, OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for file_name, graph in report["graphs"].items():
        print(f"{args.output / file_name}: max |onnxruntime - torch| = {graph['max_abs_difference']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
