"""The metrics a run records that targets, early stop and the best checkpoint may name, and
which way each one improves. Import-light on purpose (no pydantic): `voxtrain status` uses it.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["below", "above"]
Scorer = Literal["asr", "dnsmos", "speaker"]

# Listening scores: the scorer that logs each one, and which way is better. `composite`
# is computed by the trainer from whichever of the others were measured.
SCORE_METRICS: dict[str, tuple[Scorer | None, Direction]] = {
    "wer": ("asr", "below"),
    "cer": ("asr", "below"),
    "dnsmos_ovrl": ("dnsmos", "above"),
    "dnsmos_sig": ("dnsmos", "above"),
    "dnsmos_bak": ("dnsmos", "above"),
    "similarity": ("speaker", "above"),
    "composite": (None, "above"),
}
# Validation losses, as `val_<term>`: the `loss_<term>` fields of validation records.
VALIDATION_TERMS = ("mel", "duration", "pitch", "energy", "forward_sum", "binarization", "total")


def metric_names() -> list[str]:
    return [f"val_{t}" for t in VALIDATION_TERMS] + list(SCORE_METRICS)


def metric_direction(metric: str) -> Direction:
    """Which way `metric` improves; ValueError naming the known metrics for any other name."""
    if metric.startswith("val_") and metric.removeprefix("val_") in VALIDATION_TERMS:
        return "below"
    if metric in SCORE_METRICS:
        return SCORE_METRICS[metric][1]
    raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(metric_names())}")


def metric_scorer(metric: str) -> Scorer | None:
    """The listening scorer that logs `metric` (None for validation losses and `composite`)."""
    return SCORE_METRICS[metric][0] if metric in SCORE_METRICS else None
