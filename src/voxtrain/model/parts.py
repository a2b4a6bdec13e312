"""The named parts of FastSpeech2 that a fine-tune can freeze, and the symbol-table remap of
its embedding when a fine-tune's data brings symbols the base never trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
from torch import nn

from voxtrain.config.sections import FreezablePart
from voxtrain.text.symbols import SymbolTable

# Module-name prefixes of each part. The mel head (and its mixture) belongs to the decoder: freezing
# one without the other would let a fixed decoder's output be re-projected, which is a new decoder.
PART_MODULES: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding",),
    "encoder": ("encoder",),
    "aligner": ("aligner",),
    "variance_adaptor": ("duration_predictor", "pitch_predictor", "energy_predictor",
                         "pitch_embedding", "energy_embedding"),
    "decoder": ("decoder", "mel_head", "mel_mixture"),
    "postnet": ("postnet",),
}
assert set(PART_MODULES) == set(get_args(FreezablePart)), "config's FreezablePart and PART_MODULES disagree"

EMBEDDING_WEIGHT = "embedding.weight"


def part_of(parameter_name: str) -> str | None:
    """The part a parameter belongs to, by its module path."""
    head = parameter_name.split(".", 1)[0]
    return next((part for part, modules in PART_MODULES.items() if head in modules), None)


@dataclass(frozen=True)
class FreezeSummary:
    frozen_parts: tuple[str, ...]
    trainable: int
    total: int

    def describe(self) -> str:
        kept = f"frozen: {', '.join(self.frozen_parts)}" if self.frozen_parts else "nothing frozen"
        return f"{self.trainable / 1e6:.2f} M of {self.total / 1e6:.2f} M parameters train ({kept})"


def freeze_parts(model: nn.Module, parts: list[str] | tuple[str, ...]) -> FreezeSummary:
    """Turn off gradients of every parameter in `parts`; the rest train."""
    unknown = sorted(set(parts) - set(PART_MODULES))
    if unknown:
        raise ValueError(f"unknown model parts {unknown}; choose from {', '.join(PART_MODULES)}")
    trainable = total = 0
    for name, param in model.named_parameters():
        param.requires_grad_(part_of(name) not in parts)
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return FreezeSummary(tuple(p for p in PART_MODULES if p in parts), trainable, total)


def remap_embedding(base_weight: torch.Tensor, base_table: SymbolTable, new_table: SymbolTable,
                    fresh_weight: torch.Tensor, fresh_symbols: set[str] | frozenset[str] = frozenset(),
                    ) -> tuple[torch.Tensor, list[str]]:
    """Embedding rows for `new_table`'s ids: each symbol the base's table has keeps the base's
    row (found by symbol, never by id); the others, and `fresh_symbols` (rows the base never
    trained), take `fresh_weight`'s row. Returns the weight and the symbols given fresh rows."""
    if fresh_weight.shape[0] != len(new_table) or base_weight.shape[0] != len(base_table):
        raise ValueError("embedding rows and symbol tables disagree in length")
    out = fresh_weight.clone()
    base_ids = {symbol: i for i, symbol in enumerate(base_table.symbols)}
    fresh = []
    for new_id, symbol in enumerate(new_table.symbols):
        if symbol in base_ids and symbol not in fresh_symbols:
            out[new_id] = base_weight[base_ids[symbol]]
        else:
            fresh.append(symbol)
    return out, fresh
