"""Intelligibility: what pocketsphinx (its bundled US English model, offline) hears, scored
against the text that was meant, as word and character error rates (jiwer).

Both texts go through `words_for_wer` first (numbers spelled out, lower case, no punctuation),
so a voice is not charged for "12" read as "twelve"; the CER is over those same strings,
spaces included. Rates are corpus-level (all errors over all reference words or characters),
the usual convention, so a short sentence does not weigh as much as a long one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxtrain.audio import load_audio
from voxtrain.listening.common import SCORER_RATE, check_installed, require, to_scorer_rate
from voxtrain.text import normalize_text

ASR_SAMPLE_RATE = SCORER_RATE


def words_for_wer(text: str) -> str:
    """Spoken-form words: numbers expanded, lower case, punctuation dropped."""
    text = normalize_text(text).lower().replace("-", " ")
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


class ASR:
    """Offline English recognizer; one decoder reused for every clip."""

    def __init__(self) -> None:
        check_installed("jiwer", "ASR")
        pocketsphinx = require("pocketsphinx", "ASR")
        config = pocketsphinx.Config()
        config["loglevel"] = "FATAL"
        self.decoder = pocketsphinx.Decoder(config)

    def transcribe(self, audio: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> str:
        """The words heard in a mono float waveform."""
        if sample_rate != ASR_SAMPLE_RATE:
            audio = to_scorer_rate(audio, sample_rate)
        if len(audio) == 0:  # pocketsphinx cannot take an empty buffer; nothing said, nothing heard
            return ""
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def transcribe_file(self, wav: Path) -> str:
        return self.transcribe(load_audio(wav, ASR_SAMPLE_RATE))


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of one clip's transcript against its text, in words and characters."""

    word_errors: int
    words: int
    char_errors: int
    chars: int

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)


def error_counts(reference: str, hypothesis: str) -> ErrorCounts:
    import jiwer

    ref, hyp = words_for_wer(reference), words_for_wer(hypothesis)
    if not ref:
        raise ValueError(f"the text {reference!r} has no words to recognize")
    w = jiwer.process_words(ref, hyp)
    c = jiwer.process_characters(ref, hyp)
    return ErrorCounts(w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions,
                       c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)


def pooled_rates(counts: list[ErrorCounts]) -> tuple[float, float]:
    """(WER, CER) of several clips together: all errors over all reference words / characters."""
    words = sum(c.words for c in counts)
    chars = sum(c.chars for c in counts)
    return sum(c.word_errors for c in counts) / max(words, 1), sum(c.char_errors for c in counts) / max(chars, 1)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER of transcripts against their texts."""
    return pooled_rates([error_counts(r, h) for r, h in zip(references, hypotheses, strict=True)])[0]


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level CER over the same normalized strings as the WER."""
    return pooled_rates([error_counts(r, h) for r, h in zip(references, hypotheses, strict=True)])[1]
