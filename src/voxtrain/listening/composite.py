"""One number for "how good does it sound": the proposed `composite` listening score.

Each of three scores is rescaled so that 0 is a floor and 1 a ceiling, measured once with
bench/listening_scores.py on the demo voice (bench/results/listening_scores_cpu.json):

- intelligibility, from the WER: 0 at 100 % (nothing understood: the untrained model), 1 at
  the piper teacher's WER on the held-out sentences (what pocketsphinx manages on a clean voice);
- naturalness, from DNSMOS OVRL: 0 at the Griffin-Lim vocoder on the model's own mels, 1 at the
  piper teacher (the real demo recordings score the same);
- similarity: 0 at an untrained model, 1 at the piper teacher against the real clips' centroid.

composite = the mean of the rescaled scores that were measured (a failed scorer's score is
left out, not counted as 0). It is not clipped: a voice above a ceiling scores above 1, and an
early checkpoint below a floor below 0, so it keeps ranking at both ends. CER, SIG and BAK
are left out because they move with WER and OVRL and would count the same thing twice.

The anchors are fixed numbers, not remeasured per run: the composite of two runs is then
comparable, and what they set is only the relative weight of the three scores (a
checkpoint's rank within a run changes with the anchors only through that weight).
"""

from __future__ import annotations

# score -> (floor, ceiling); see the module docstring for what each anchor is.
ANCHORS: dict[str, tuple[float, float]] = {
    "wer": (1.0, 0.165),
    "dnsmos_ovrl": (2.18, 3.25),
    "similarity": (0.45, 0.946),
}


def rescaled(scores: dict[str, float]) -> dict[str, float]:
    """Each anchored score as 0 (floor) .. 1 (ceiling)."""
    return {name: (scores[name] - lo) / (hi - lo) for name, (lo, hi) in ANCHORS.items() if name in scores}


def composite_score(scores: dict[str, float]) -> float | None:
    """The mean of the rescaled WER, DNSMOS OVRL and similarity that `scores` holds (higher is
    better); None when it holds none of them."""
    parts = rescaled(scores)
    return sum(parts.values()) / len(parts) if parts else None
