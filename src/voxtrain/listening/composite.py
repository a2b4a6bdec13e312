"""One number for "how good does it sound": the proposed `composite` listening score.

Each score is rescaled so that 0 is a floor and 1 a ceiling, measured once with
bench/listening_scores.py on the demo voice:

- intelligibility, from the WER: 0 at 100 % (nothing understood: the untrained model), 1 at
  the piper teacher's WER on the held-out sentences (what pocketsphinx manages on a clean voice);
- naturalness, from each naturalness ear that was measured (DNSMOS OVRL, DNSMOS P.808,
  DistillMOS): 0 at the Griffin-Lim vocoder on the model's own mels, 1 at the piper teacher
  (bench/results/listening_scores_cpu.json for OVRL, listening_scores_three_ears_8.json for
  the other two);
- similarity: 0 at an untrained model, 1 at the piper teacher against the real clips' centroid.

composite = the mean of the three parts that were measured, naturalness being the mean of its
ears: one ear can be blind where the others hear (reconstruction-only vocoder fine-tuning left
OVRL where it was while P.808 and DistillMOS fell below Griffin-Lim's), and more ears must not
outweigh intelligibility and similarity. A failed scorer's score is left out, not counted as
0. It is not clipped: a voice above a ceiling scores above 1, and an early checkpoint below a
floor below 0, so it keeps ranking at both ends. CER, SIG and BAK are left out because they
move with WER and OVRL and would count the same thing twice.

The anchors are fixed numbers, not remeasured per run: the composite of two runs is then
comparable, and what they set is only the relative weight of the scores (a checkpoint's rank
within a run changes with the anchors only through that weight).
"""

from __future__ import annotations

# score -> (floor, ceiling); see the module docstring for what each anchor is.
ANCHORS: dict[str, tuple[float, float]] = {
    "wer": (1.0, 0.165),
    "dnsmos_ovrl": (2.18, 3.25),
    "dnsmos_p808": (3.20, 4.02),
    "distillmos": (1.89, 4.04),
    "similarity": (0.45, 0.946),
}
# The parts of the composite, each the mean of its measured scores.
PARTS: dict[str, tuple[str, ...]] = {
    "intelligibility": ("wer",),
    "naturalness": ("dnsmos_ovrl", "dnsmos_p808", "distillmos"),
    "similarity": ("similarity",),
}


def rescaled(scores: dict[str, float]) -> dict[str, float]:
    """Each anchored score as 0 (floor) .. 1 (ceiling)."""
    return {name: (scores[name] - lo) / (hi - lo) for name, (lo, hi) in ANCHORS.items() if name in scores}


def composite_score(scores: dict[str, float]) -> float | None:
    """The mean over intelligibility, naturalness and similarity of the rescaled scores that
    `scores` holds (higher is better); None when it holds none of them."""
    scaled = rescaled(scores)
    parts = [[scaled[n] for n in names if n in scaled] for names in PARTS.values()]
    means = [sum(p) / len(p) for p in parts if p]
    return sum(means) / len(means) if means else None
