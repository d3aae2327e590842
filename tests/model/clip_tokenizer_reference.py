"""
An independent transcription of OpenAI CLIP's simple tokenizer as IRRA uses it, written from the algorithm's
description (byte-level alphabet, greedy lowest-rank merges, CLIP's cleaning and word pattern, `<|mask|>` in place of
the last merge's entry), so that the package's tokenizer, built on transformers' `CLIPTokenizer`, is checked against
something that does not share its code.
"""

import gzip
import html

import ftfy
import regex

WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|mask\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
SPECIAL = ("<|mask|>", "<|startoftext|>", "<|endoftext|>")


def byte_alphabet() -> dict[int, str]:
    """Bytes that print as themselves keep their character; the others take 256, 257, ... in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            alphabet[byte] = chr(byte)
        else:
            alphabet[byte] = chr(0x100 + extra)
            extra += 1
    return alphabet


class ReferenceTokenizer:
    def __init__(self, vocabulary_file):
        lines = gzip.open(vocabulary_file).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        self.alphabet = byte_alphabet()
        keep_order = sorted(self.alphabet, key=lambda b: (self.alphabet[b] >= chr(0x100), b))
        symbols = [self.alphabet[b] for b in keep_order]
        vocab = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
        vocab = vocab[:-1] + list(SPECIAL)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.rank = {pair: i for i, pair in enumerate(merges)}

    def word_pieces(self, word: str) -> list[str]:
        if word in SPECIAL:
            return [word]
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            ranked = [(self.rank.get(pair, float("inf")), pair) for pair in zip(pieces, pieces[1:])]
            best_rank, best = min(ranked)
            if best_rank == float("inf"):
                break
            merged, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        return pieces

    def encode(self, caption: str, length: int = 77) -> list[int]:
        text = html.unescape(html.unescape(ftfy.fix_text(caption))).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for word in WORD_PATTERN.findall(text):
            word = word if word in SPECIAL else "".join(self.alphabet[b] for b in word.encode("utf-8"))
            ids += [self.ids[piece] for piece in self.word_pieces(word)]
        ids = [self.ids["<|startoftext|>"]] + ids + [self.ids["<|endoftext|>"]]
        if len(ids) > length:
            ids = ids[: length - 1] + [self.ids["<|endoftext|>"]]
        return ids + [0] * (length - len(ids))
