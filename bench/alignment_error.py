"""Objective checks of a trained voice's alignment, for bench/quality.py: its learned and predicted
durations against piper's per-phoneme durations. The listening scores (ASR word error rate,
DNSMOS, speaker similarity) are in `voxtrain.listening`."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_reference_durations(alignments: Path, boundaries: bool = True) -> dict[str, tuple[list[str], list[int]]]:
    """piper's per-phoneme durations (alignments.jsonl of `make-corpus --voice piper`).

    piper's sentence-boundary tokens ``^`` and ``$`` hold the leading and trailing silence,
    as voxtrain's own boundary symbols do. For a model without them (`boundaries=False`)
    their frames go to the first and last phoneme: the frames its aligner must give those.
    """
    import json

    out = {}
    for line in Path(alignments).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        phonemes, durations = list(rec["phonemes"]), list(rec["durations"])
        if not boundaries and phonemes and phonemes[0] == "^":
            durations[1] += durations[0]
            phonemes, durations = phonemes[1:], durations[1:]
        if not boundaries and phonemes and phonemes[-1] == "$":
            durations[-2] += durations[-1]
            phonemes, durations = phonemes[:-1], durations[:-1]
        out[rec["id"]] = (phonemes, durations)
    return out


STRESS_MARKS = "ˈˌ"
LENGTH_MARKS = "ːˑ"


def merge_marks(tokens: list[str], durations: np.ndarray) -> np.ndarray:
    """Durations per phoneme: a stress mark is not a sound of its own, so its frames join the
    phoneme it precedes, and a length mark's join the phoneme it follows. Character-level
    models (ours, piper) give these marks durations, and where exactly the two put a boundary
    between a mark and its vowel says nothing about alignment quality."""
    merged: list[float] = []
    carry = 0.0
    for tok, d in zip(tokens, durations):
        if tok in STRESS_MARKS:
            carry += d
        elif tok in LENGTH_MARKS and merged:
            merged[-1] += d
        else:
            merged.append(d + carry)
            carry = 0.0
    if carry and merged:
        merged[-1] += carry
    return np.asarray(merged, dtype=np.float64)


def duration_errors(model, store, indices: list[int], reference: dict) -> dict:
    """Mean absolute error (frames per phoneme) of the learned alignment (MAS over the aligner's
    attention, teacher-forced) and of the duration predictor, against reference durations.
    `learned_alignment_token_mae_frames` is the same before merging stress and length marks."""
    import torch

    from voxtrain.data.loader import FeatureDataset, collate

    dataset = FeatureDataset(store, indices)
    token_err, learned_err, predicted_err, compared, skipped = [], [], [], 0, 0
    model.eval()
    for i in range(len(dataset)):
        item = dataset[i]
        ref = reference.get(item["id"])
        symbols = store.symbols.decode(item["phonemes"].tolist())
        if ref is None or "".join(ref[0]) != symbols:
            skipped += 1
            continue
        batch = collate([item])
        with torch.no_grad():
            out = model(batch)
            pred = model.infer(batch.phonemes)["durations"][0]
        tokens = list(symbols)
        target = np.asarray(ref[1], dtype=np.float64)
        learned = out["duration_target"][0].double().numpy()
        predicted = pred.double().numpy()
        token_err.append(np.abs(learned - target))
        learned_err.append(np.abs(merge_marks(tokens, learned) - merge_marks(tokens, target)))
        predicted_err.append(np.abs(merge_marks(tokens, predicted) - merge_marks(tokens, target)))
        compared += 1
    if not compared:
        return {"clips": 0, "skipped": skipped}
    learned_all, predicted_all = np.concatenate(learned_err), np.concatenate(predicted_err)
    tokens_all = np.concatenate(token_err)
    return {
        "clips": compared,
        "phonemes": int(learned_all.size),
        "skipped": skipped,
        "learned_alignment_mae_frames": float(learned_all.mean()),
        "learned_alignment_median_abs_frames": float(np.median(learned_all)),
        "learned_alignment_token_mae_frames": float(tokens_all.mean()),
        "predicted_duration_mae_frames": float(predicted_all.mean()),
    }
