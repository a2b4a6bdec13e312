"""Store-level files written once every shard is done: split, statistics, manifest,
rejected clips, symbols, and the completion marker last of all (paths: `StoreLayout`).

Everything here is a pure function of the shards' content (never of worker count,
timing, or which shards a resumed run reused), so an interrupted-and-resumed prepare
writes byte-identical files to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.artifacts.layout import StoreLayout
from voxtrain.artifacts.store import SHARD_ARRAYS, STORE_VERSION, file_sha256
from voxtrain.atomic import write_atomic, write_json_atomic
from voxtrain.config import Config

REJECTED_HEADER = "line\tid\treason\tdetail"


def split_ids(ids: list[str], val_size: int, seed: int) -> tuple[set[str], list[str]]:
    """Validation ids and warnings. Each id is ranked by a seeded hash of itself, so the
    split depends only on the set of kept ids, and adding or losing a clip moves at most
    that clip instead of reshuffling everything."""
    warnings = []
    n = len(ids)
    if n < 2:
        n_val = 0
        if n == 1:
            warnings.append("only 1 usable clip: no validation split, it is used for training")
    else:
        n_val = max(1, min(val_size, n // 2))
        if n_val != val_size:
            warnings.append(f"data.val_size {val_size} clamped to {n_val} (half of the {n} usable clips at most)")
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())
    return set(ranked[:n_val]), warnings


class _Moments:
    """Running count/sum/sum of squares/min/max in float64 (order fixed by the caller)."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, 0.0, 0.0
        self.lo, self.hi = float("inf"), float("-inf")

    def add(self, x: np.ndarray) -> None:
        if x.size:
            x64 = x.astype(np.float64)
            self.n += int(x.size)
            self.s += float(x64.sum())
            self.ss += float(np.square(x64).sum())
            self.lo, self.hi = min(self.lo, float(x64.min())), max(self.hi, float(x64.max()))

    def summary(self) -> tuple[float, float, float, float]:
        if not self.n:
            return 0.0, 1.0, 0.0, 0.0
        mean = self.s / self.n
        std = float(np.sqrt(max(self.ss / self.n - mean * mean, 0.0)))
        return mean, std if std > 0 else 1.0, self.lo, self.hi


def compute_stats(layout: StoreLayout, metas: list[dict[str, Any]], val: set[str]) -> dict[str, float]:
    """Pitch (frames with pitch > 0) and energy moments over the training split only, so
    validation clips stay unseen, plus durations."""
    pitch, energy = _Moments(), _Moments()
    seconds = {"train": 0.0, "val": 0.0}
    for meta in metas:
        train = [c for c in meta["clips"] if c["id"] not in val]
        for c in meta["clips"]:
            seconds["val" if c["id"] in val else "train"] += c["seconds"]
        if not train:
            continue
        p_all = np.load(layout.shard_array(meta["shard"], "pitch"), mmap_mode="r")
        e_all = np.load(layout.shard_array(meta["shard"], "energy"), mmap_mode="r")
        for c in train:
            sl = slice(c["frame_offset"], c["frame_offset"] + c["n_frames"])
            p = np.asarray(p_all[sl])
            pitch.add(p[p > 0])
            energy.add(np.asarray(e_all[sl]))
    p_mean, p_std, p_min, p_max = pitch.summary()
    e_mean, e_std, e_min, e_max = energy.summary()
    total = seconds["train"] + seconds["val"]
    return {
        "pitch_mean": p_mean,
        "pitch_std": p_std,
        "pitch_min": p_min,
        "pitch_max": p_max,
        "energy_mean": e_mean,
        "energy_std": e_std,
        "energy_min": e_min,
        "energy_max": e_max,
        "voiced_train_frames": pitch.n,
        "train_frames": energy.n,
        "hours": total / 3600.0,
        "train_hours": seconds["train"] / 3600.0,
        "val_hours": seconds["val"] / 3600.0,
    }


def _tsv_field(value: Any) -> str:
    return " ".join(str(value).replace("\t", " ").splitlines()) if value is not None else ""


def write_rejected(path: Path, metas: list[dict[str, Any]]) -> None:
    rows = sorted((r for m in metas for r in m["rejected"]), key=lambda r: r["line"])
    lines = [REJECTED_HEADER] + ["\t".join(_tsv_field(r[k]) for k in ("line", "id", "reason", "detail")) for r in rows]
    write_atomic(("\n".join(lines) + "\n").encode("utf-8"), path)


def shard_files(layout: StoreLayout, metas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every shard array, by file name, as each shard's .json recorded
    them when the arrays were written; COMPLETE carries them for FeatureStore to verify."""
    return {
        layout.shard_array(m["shard"], key).name: m["files"][key] for m in metas for key in SHARD_ARRAYS
    }


def finalize_store(
    layout: StoreLayout,
    metas: list[dict[str, Any]],
    config: Config,
    symbols: Any,
    feature_config: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write every store-level file; COMPLETE only when there is at least one clip.
    `notes` (what reading metadata.csv assumed) lead the warnings."""
    write_rejected(layout.rejected, metas)
    clips = [(m["shard"], c) for m in metas for c in m["clips"]]
    val, warnings = split_ids([c["id"] for _, c in clips], config.data.val_size, config.data.split_seed)
    warnings = list(notes) + warnings
    stats = compute_stats(layout, metas, val)
    if clips and stats["voiced_train_frames"] == 0:
        warnings.append("no voiced frame in the training clips: pitch statistics are placeholders (0, 1)")
    lines = []
    for index, (shard, c) in enumerate(clips):
        record = {
            "index": index,
            "id": c["id"],
            "shard": shard,
            "line": c["line"],
            "text": c["text"],
            "normalized": c["normalized"],
            "phonemes": c["phonemes"],
            "n_frames": c["n_frames"],
            "n_phonemes": c["n_phonemes"],
            "seconds": c["seconds"],
            "split": "val" if c["id"] in val else "train",
            "frame_offset": c["frame_offset"],
            "phoneme_offset": c["phoneme_offset"],
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_atomic("".join(line + "\n" for line in lines).encode("utf-8"), layout.manifest)
    write_json_atomic(layout.stats, stats)
    symbols.save(layout.symbols)
    summary = {
        "version": STORE_VERSION,
        "clips": len(clips),
        "train_clips": len(clips) - len(val),
        "val_clips": len(val),
        "rejected": sum(len(m["rejected"]) for m in metas),
        "hours": stats["hours"],
        "fingerprint": file_sha256(layout.manifest),
        "warnings": warnings,
        "shard_files": shard_files(layout, metas),
    }
    if clips:
        write_json_atomic(layout.complete, summary)
    return summary
