"""The sentences a voice is asked to say for its listening scores: voxtrain's held-out list
(heldout.txt, never in the demo corpus) or a file of one's own."""

from __future__ import annotations

from pathlib import Path

from voxtrain.errors import VoxtrainError

HELDOUT_PATH = Path(__file__).with_name("heldout.txt")


class SentenceError(VoxtrainError, ValueError):
    """A sentence file cannot be used; the message names the file, the line and the fix."""


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SentenceError(f"{path}: cannot read the sentence file ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SentenceError(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    sentences = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not any(ch.isalnum() for ch in line):
            raise SentenceError(f"{path}: line {number} ({line!r}) has no word to say; remove it or write a sentence")
        sentences.append(line)
    if not sentences:
        raise SentenceError(f"{path}: no sentences (one per line; lines starting with '#' are comments)")
    return sentences


def default_sentences() -> list[str]:
    """voxtrain's held-out sentences: varied, 6 to 20 words, none in the demo corpus."""
    return read_sentences(HELDOUT_PATH)
