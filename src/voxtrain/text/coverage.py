"""Which symbols a fine-tune's new data uses that its base never learned.

A base model's embedding row for a symbol is only meaningful if the base's training data
used that symbol: the default table holds the whole IPA chart, most of which an English
base never saw. So "missing" means absent from the base's table, or, where the base
recorded which symbols its data used, never trained.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from voxtrain.text.symbols import BOS, EOS, PAD, UNK, SymbolTable


@dataclass(frozen=True)
class MissingSymbol:
    symbol: str
    clips: int  # clips of the new data that use it
    in_base_table: bool  # False: the base's table lacks it; True: it has a row the base never trained

    def describe(self) -> str:
        name = unicodedata.name(self.symbol, "unnamed")
        why = "never trained by the base" if self.in_base_table else "not in the base's symbol table"
        return f"{self.symbol!r} (U+{ord(self.symbol):04X} {name}): {self.clips} clip(s), {why}"


def missing_symbols(base_table: SymbolTable, base_clips: dict[str, int] | None,
                    new_clips: dict[str, int]) -> list[MissingSymbol]:
    """The new data's symbols the base cannot have learned, most used first.

    `base_clips` is the base's own per-symbol clip count (None for checkpoints that did not
    record it: then only the table is checked)."""
    found = []
    for symbol, clips in new_clips.items():
        if symbol in (PAD, UNK, BOS, EOS) or clips <= 0:
            continue
        in_table = symbol in base_table.symbols
        if not in_table or (base_clips is not None and base_clips.get(symbol, 0) == 0):
            found.append(MissingSymbol(symbol, clips, in_table))
    return sorted(found, key=lambda m: (-m.clips, m.symbol))


def merged_clip_counts(*counts: dict[str, int] | None) -> dict[str, int]:
    """Per-symbol clip counts of several datasets together (a fine-tune knows its base's too)."""
    out: dict[str, int] = {}
    for table in counts:
        for symbol, n in (table or {}).items():
            out[symbol] = out.get(symbol, 0) + int(n)
    return dict(sorted(out.items()))
