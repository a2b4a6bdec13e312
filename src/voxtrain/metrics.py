"""The metrics a run records, in one place: every listening score (its name, the scorer that
measures it, which way it improves, its column header), the validation losses, and so the
names that targets, early stop and the best checkpoint may use. A new score is one `Score`
row below (and, for a new scorer, its name in `Scorer` and its code in `voxtrain.listening`).

Import-light on purpose (no pydantic): `voxtrain status` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Direction = Literal["below", "above"]
# The listening scorers, in the order they run and their scores are listed.
Scorer = Literal["asr", "dnsmos", "distillmos", "speaker"]
SCORERS: tuple[Scorer, ...] = get_args(Scorer)


@dataclass(frozen=True)
class Score:
    """A listening score: the field of eval records (and of `voxtrain evaluate`'s rows) it is."""

    name: str
    scorer: Scorer | None  # None: computed by the trainer from the others (composite)
    direction: Direction  # which way is better
    header: str  # its column in the checkpoint listing, where space is short
    listed: bool = True  # shown in the checkpoint listing (CER, SIG, BAK move with WER, OVRL)


_SCORES = (
    Score("wer", "asr", "below", "wer"),
    Score("cer", "asr", "below", "cer", listed=False),
    Score("dnsmos_ovrl", "dnsmos", "above", "ovrl"),
    Score("dnsmos_sig", "dnsmos", "above", "sig", listed=False),
    Score("dnsmos_bak", "dnsmos", "above", "bak", listed=False),
    Score("dnsmos_p808", "dnsmos", "above", "p808"),
    Score("distillmos", "distillmos", "above", "distill"),
    Score("similarity", "speaker", "above", "sim"),
    Score("composite", None, "above", "composite"),
)
# Every listening score by name, in display order.
SCORES: dict[str, Score] = {s.name: s for s in _SCORES}
# The scores a scorer measures (every one but composite), in display order.
MEASURED: tuple[str, ...] = tuple(s.name for s in _SCORES if s.scorer is not None)
# Validation losses, as `val_<term>`: the `loss_<term>` fields of validation records.
VALIDATION_TERMS = ("mel", "duration", "pitch", "energy", "forward_sum", "binarization", "total")


def produces(scorer: str) -> tuple[str, ...]:
    """The scores `scorer` measures, in display order."""
    return tuple(s.name for s in _SCORES if s.scorer == scorer)


def scorer_summary() -> str:
    """Each scorer with its scores in words, e.g. "asr (wer, cer), ..." (for help texts)."""
    return ", ".join(f"{scorer} ({', '.join(produces(scorer))})" for scorer in SCORERS)


def metric_names() -> list[str]:
    return [f"val_{t}" for t in VALIDATION_TERMS] + list(SCORES)


def metric_direction(metric: str) -> Direction:
    """Which way `metric` improves; ValueError naming the known metrics for any other name."""
    if metric.startswith("val_") and metric.removeprefix("val_") in VALIDATION_TERMS:
        return "below"
    if metric in SCORES:
        return SCORES[metric].direction
    raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(metric_names())}")


def metric_scorer(metric: str) -> Scorer | None:
    """The listening scorer that logs `metric` (None for validation losses and `composite`)."""
    return SCORES[metric].scorer if metric in SCORES else None
