"""Objective checks of a trained voice (optional extra `eval`): ASR word error rate with
pocketsphinx (ships its English model, runs offline) and jiwer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from voxtrain.audio import load_audio
from voxtrain.text import normalize_text

ASR_SAMPLE_RATE = 16000


class ASR:
    """Offline English recognizer; one decoder reused for every file."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Config, Decoder
        except ImportError as err:
            raise RuntimeError("word error rate needs the eval extra: pip install 'voxtrain[eval]'") from err
        config = Config()
        config["loglevel"] = "FATAL"
        self.decoder = Decoder(config)

    def transcribe(self, wav: Path) -> str:
        audio = load_audio(wav, ASR_SAMPLE_RATE)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def words_for_wer(text: str) -> str:
    """Spoken-form words: numbers expanded, lower case, punctuation dropped."""
    text = normalize_text(text).lower().replace("-", " ")
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    refs = [words_for_wer(r) for r in references]
    hyps = [words_for_wer(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
