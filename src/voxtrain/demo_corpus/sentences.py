"""The sentence lists make-corpus reads, their seeded selection, and the error every part raises."""

from __future__ import annotations

import random
from pathlib import Path

from voxtrain.errors import VoxtrainError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SENTENCES_PATH = RESOURCES / "sentences.txt"
HELDOUT_PATH = RESOURCES / "heldout_sentences.txt"


class CorpusError(VoxtrainError, RuntimeError):
    """The corpus cannot be made; the message says why and what to do."""


def load_sentences(path: Path = SENTENCES_PATH) -> list[str]:
    """Non-empty lines of a sentence file; a '|' would break the LJSpeech metadata columns."""
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = next((s for s in sentences if "|" in s), None)
    if bad is not None:
        raise CorpusError(f"{path}: sentences must not contain '|': {bad!r}")
    return sentences


def select_sentences(n_sentences: int, seed: int = 0, sentences: list[str] | None = None) -> list[str]:
    """The first n sentences of a seeded shuffle: the same seed always gives the same corpus."""
    pool = load_sentences() if sentences is None else list(sentences)
    if not 1 <= n_sentences <= len(pool):
        raise CorpusError(
            f"n_sentences={n_sentences} is out of range: the sentence list has {len(pool)} sentences "
            f"({SENTENCES_PATH}); ask for between 1 and {len(pool)}"
        )
    random.Random(seed).shuffle(pool)
    return pool[:n_sentences]
