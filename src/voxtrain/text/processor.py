"""The whole text front end in one call: normalize, phonemize, encode."""

from __future__ import annotations

from dataclasses import dataclass

from voxtrain.config import TextConfig
from voxtrain.text.normalize import clean_text, normalize_text
from voxtrain.text.phonemize import Phonemizer
from voxtrain.text.symbols import SymbolTable


@dataclass(frozen=True)
class ProcessedText:
    normalized: str
    phonemes: str
    ids: list[int]


class TextProcessor:
    """Turns raw transcripts into model input ids, batching the espeak calls.

    Number and abbreviation expansion is English; for other languages only the
    language-neutral clean-up runs and espeak reads digits in that language itself.
    """

    def __init__(self, cfg: TextConfig, symbols: SymbolTable | None = None) -> None:
        self.cfg = cfg
        self.symbols = symbols if symbols is not None else SymbolTable.default()
        self.phonemizer = Phonemizer.from_config(cfg)
        self._normalize = normalize_text if cfg.language.lower().startswith("en") else clean_text

    def process(self, texts: list[str]) -> list[ProcessedText]:
        if isinstance(texts, str):
            raise TypeError("TextProcessor.process takes a list of strings, not a single string")
        normalized = [self._normalize(t) for t in texts]
        phonemes = self.phonemizer.phonemize(normalized)
        return [
            ProcessedText(normalized=n, phonemes=p, ids=self.symbols.encode_utterance(p))
            for n, p in zip(normalized, phonemes, strict=True)
        ]
