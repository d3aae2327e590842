"""The text levels of multi-level alignment (MLA): from one training caption its sentence, one phrase and a few
words; and the released rules for counting and cutting a caption's words.

Word level: the generated benchmark stores the phrases of each image's visible attributes (`attributes` column), and
those are used as they are. Where a record has no attribute phrases (the real CUHK-PEDES release; the authors'
annotation file was never published) the phrases come from `attribute_phrases_from_caption`, a rule-based chunker:
the caption is cut at punctuation and at the connectives that introduce a garment or an item in pedestrian
descriptions ("and", "with", "wearing", "carrying", ...), leading articles and pronouns are stripped, and chunks of at
least two words are kept ("a woman wearing a red shirt and blue jeans" -> "red shirt", "blue jeans").
"""

from __future__ import annotations

import random
import re

MIN_CHUNK_CHARS = 5
CONNECTIVES = (
    r"\band\b|\bwith\b|\bwearing\b|\bwears\b|\bcarrying\b|\bcarries\b|\bholding\b|\bholds\b|\bhas\b|\bhave\b|"
    r"\bis\b|\bwho\b|\bwhile\b|\bover\b|\bon (?:her|his|the) (?:back|shoulder|head|feet)\b"
)
LEADING_WORDS = {"a", "an", "the", "he", "she", "his", "her", "this", "that", "they", "their", "also", "in", "of"}


def sentence_level(caption: str) -> str:
    """The whole caption, lower-cased."""
    return caption.strip().lower()


def _sentences(caption: str) -> list[str]:
    """The lower-cased caption cut at "." after stripping its end periods and brackets, as the released code does."""
    return caption.lower().strip(".").strip("[").strip("]").split(".")


def phrase_candidates(caption: str) -> list[str]:
    """
    The released phrase rule: per sentence, the longest comma chunk and the other chunks re-joined with "," (commas
    at the ends of the re-joined text removed); a candidate is kept when it is longer than 5 characters as it stands,
    and only then stripped of surrounding spaces (so " a hat" is kept as "a hat", and "grey trousers, " becomes
    "grey trousers,").
    """
    candidates = []
    for sentence in _sentences(caption):
        chunks = sentence.split(",")
        longest = max(range(len(chunks)), key=lambda index: len(chunks[index]))
        rest = (",".join(chunks[:longest]) + "," + ",".join(chunks[longest + 1 :])).strip(",")
        candidates.extend(text for text in (chunks[longest], rest) if len(text) > MIN_CHUNK_CHARS)
    return [text.strip(" ") for text in candidates]


def chunk_candidates(caption: str) -> list[str]:
    """
    The released word level of ICFG-PEDES and RSTPReid: every comma chunk of every sentence that is longer than 5
    characters as it stands, then stripped of surrounding spaces.
    """
    chunks = [chunk for sentence in _sentences(caption) for chunk in sentence.split(",")]
    return [chunk.strip(" ") for chunk in chunks if len(chunk) > MIN_CHUNK_CHARS]


def caption_word_starts(caption: str) -> list[int]:
    """
    Where each word of a caption starts, words counted as the released loaders count them: the caption split at
    spaces, a piece holding ".", "," or "?" split again at the first of them it holds (empty parts dropped); an empty
    piece between two spaces counts as a word.
    """
    starts, offset = [], 0
    for piece in caption.split(" "):
        separator = next((mark for mark in ".,?" if mark in piece), None)
        if separator is None:
            starts.append(offset)
        else:
            inner = offset
            for part in piece.split(separator):
                if part:
                    starts.append(inner)
                inner += len(part) + 1
        offset += len(piece) + 1
    return starts


def cut_caption(caption: str, max_words: int) -> str:
    """The caption up to (not including) its word number `max_words + 1` (the released ICFG-PEDES training cut)."""
    starts = caption_word_starts(caption)
    return caption if len(starts) <= max_words else caption[: starts[max_words]].rstrip(" ")


def attribute_phrases_from_caption(caption: str) -> list[str]:
    """Short attribute phrases cut out of a caption by the rule-based chunker described in the module docstring."""
    phrases = []
    for piece in re.split(r"[.,;:!?]|" + CONNECTIVES, caption.lower()):
        words = piece.split()
        while words and words[0] in LEADING_WORDS:
            words = words[1:]
        phrase = " ".join(words)
        if len(words) >= 2 and len(phrase) > MIN_CHUNK_CHARS:
            phrases.append(phrase)
    return phrases


def phrase_level(caption: str, rng: random.Random) -> str:
    """One phrase candidate chosen uniformly; the sentence level when the caption has none."""
    candidates = phrase_candidates(caption)
    return rng.choice(candidates) if candidates else sentence_level(caption)


def word_level(
    caption: str, attributes: list[str], rng: random.Random, max_phrases: int | None, mode: str
) -> str:
    """
    mode "attributes": k attribute phrases (the record's, else the chunker's) joined with ", ", k uniform in 1..the
    number of phrases as released (capped at `max_phrases` when given); mode "chunk": one comma chunk. Falls back to
    the phrase level when nothing qualifies (where the released code would fail).
    """
    if mode == "chunk":
        candidates = chunk_candidates(caption)
        return rng.choice(candidates) if candidates else phrase_level(caption, rng)
    phrases = [phrase.lower() for phrase in attributes] or attribute_phrases_from_caption(caption)
    if not phrases:
        return phrase_level(caption, rng)
    count = rng.randint(1, len(phrases) if max_phrases is None else min(max_phrases, len(phrases)))
    return ", ".join(rng.sample(phrases, count))
