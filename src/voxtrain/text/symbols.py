"""Character-level phoneme inventory: the mapping between IPA strings and model input ids.

A trained model's embedding rows are indexed by these ids, so a table's order is part of the
model: it is saved next to every feature store and checkpoint, and the default order below
must only ever be extended at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from voxtrain.atomic import write_text_atomic

PAD = "_"
# U+FFFD REPLACEMENT CHARACTER: decodes visibly and never occurs in phonemizer output.
UNK = "\ufffd"
# Utterance boundaries: they take the leading and trailing silence (like piper's ^ and $),
# so the aligner never has to smear it over the first and last phonemes.
BOS = "^"
EOS = "$"

_PUNCTUATION = "!'(),-.:;?\"[]{}¡¿—…«»“”"
_PROSODY = "ˈˌːˑ"
_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Every symbol espeak-ng en-us was seen to emit over ~146k dictionary and random words,
# then the rest of the IPA chart so other English voices (and most other languages) need
# no new ids: vowels, pulmonic and non-pulmonic consonants, ligatures espeak may use.
_IPA_VOWELS = "ɪʊəɛæɑɔʌɚɝɜɐᵻᵿɨʉɯʏøɘɵɤœɞɶɒɷ"
_IPA_CONSONANTS = (
    "ɹɾʔŋθðʃʒɡɬɫʲ"  # seen from espeak en-us (with the ascii letters above)
    "ʈɖɟɢɱɳɲɴʙʀⱱɽɸβʂʐçʝɣχʁħʕɦɮʋɻɰɭʎʟʍɥʜʢʡɕʑɺɧ"
    "ʘǀǃǂǁɓɗʄɠʛ"
    "ʧʤʦʣʨʥ"
)
_IPA_MODIFIERS = "ʰʷˠˤⁿˡʼ˞\u0303\u0329\u032f\u032a\u0325\u031a\u0361\u0308\u0306\u0330\u0324\u031f\u0320‿↑↓"


def _default_symbols() -> list[str]:
    seen: dict[str, None] = {PAD: None, UNK: None, " ": None}
    for group in (_PUNCTUATION, _PROSODY, _ASCII_LETTERS, _IPA_VOWELS, _IPA_CONSONANTS, _IPA_MODIFIERS):
        for ch in group:
            seen.setdefault(ch, None)
    # Appended last: ids of every earlier symbol stay what they were in older tables.
    seen.setdefault(BOS, None)
    seen.setdefault(EOS, None)
    return list(seen)


class SymbolTable:
    """Maps single characters to ids; id 0 is padding, id 1 stands for any unknown character."""

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        if len(symbols) < 2 or symbols[0] != PAD or symbols[1] != UNK:
            raise ValueError(f"a symbol table must start with pad {PAD!r} and unk {UNK!r}")
        bad = [s for s in symbols if not isinstance(s, str) or len(s) != 1]
        if bad:
            raise ValueError(f"symbols must be single characters, got {bad[:5]!r}")
        if len(set(symbols)) != len(symbols):
            dupes = sorted({s for s in symbols if symbols.count(s) > 1})
            raise ValueError(f"duplicate symbols: {dupes!r}")
        self._symbols: tuple[str, ...] = tuple(symbols)
        self._ids = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def default(cls) -> SymbolTable:
        """The built-in inventory: espeak-ng English output plus a broad IPA set."""
        return cls(_default_symbols())

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int | None:
        return self._ids.get(BOS)

    @property
    def eos_id(self) -> int | None:
        return self._ids.get(EOS)

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids and symbol not in (PAD, UNK, BOS, EOS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolTable) and self._symbols == other._symbols

    def __hash__(self) -> int:
        return hash(self._symbols)

    def __repr__(self) -> str:
        return f"SymbolTable({len(self)} symbols)"

    def encode(self, phonemes: str) -> list[int]:
        """Ids of each character; unknown characters (and a literal pad char) become unk."""
        get, unk = self._ids.get, self.unk_id
        # Real text must never produce the pad id, or it would be masked out as padding.
        return [unk if ch == PAD else get(ch, unk) for ch in phonemes]

    def encode_utterance(self, phonemes: str) -> list[int]:
        """Model input of one utterance: boundary symbols around the phoneme ids (when this
        table has them: tables saved before they existed encode without)."""
        ids = self.encode(phonemes)
        if self.bos_id is None or self.eos_id is None:
            return ids
        return [self.bos_id, *ids, self.eos_id]

    def unknown(self, phonemes: str) -> list[str]:
        """The distinct characters `encode` would map to unk, in order of first appearance."""
        found: dict[str, None] = {}
        for ch in phonemes:
            if ch not in self:
                found.setdefault(ch, None)
        return list(found)

    def decode(self, ids: Iterable[int]) -> str:
        """Characters of the ids, dropping padding; accepts ints, numpy or torch integers."""
        out = []
        for raw in ids:
            i = int(raw)
            if not 0 <= i < len(self._symbols):
                raise ValueError(f"id {i} is outside this table (0..{len(self._symbols) - 1})")
            if i != self.pad_id:
                out.append(self._symbols[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        symbols = list(self._symbols)
        return {"format": "voxtrain-symbols", "version": 1, "pad": PAD, "unk": UNK, "symbols": symbols}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolTable:
        if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
            raise ValueError("not a symbol table: expected a mapping with a 'symbols' list")
        return cls(data["symbols"])

    def save(self, path: str | Path) -> None:
        # ensure_ascii=False keeps the IPA readable when someone opens the file.
        write_text_atomic(Path(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SymbolTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read symbol table {path}: {err}") from None
        return cls.from_dict(data)
