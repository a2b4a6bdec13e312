"""The training pairs of a vocoder fine-tune: (teacher-forced mel, real audio) per clip.

Why the acoustic model's own mels, not the store's real ones: a vocoder trained on real mels
renders the slightly smoothed mels an acoustic model predicts with a metallic buzz, worse on a
voice it never heard. Fed the fine-tuned acoustic model's teacher-forced mels (ground-truth
durations, pitch and energy, so every frame still lines up with the real audio) and asked
for the real audio, the generator learns to undo exactly the errors it will meet at synthesis.

The pairs are computed once per run, in eval mode, and kept in RUN/vocoder_data as two
concatenated float32 arrays (memory-mapped, so a large corpus is never all in memory) and
index.json, written last, which names what they were made from. A resume reads the same
bytes, so its steps see exactly the data of an unbroken run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.store import FeatureStore
from voxtrain.atomic import fsync_dir, temp_path, write_json_atomic
from voxtrain.audio.features import LOG_CLAMP
from voxtrain.config import AudioConfig
from voxtrain.data.loader import FeatureDataset
from voxtrain.inference.loader import AcousticModel
from voxtrain.vocoder_training.sources import real_audio, teacher_forced_mel

log = logging.getLogger("voxtrain.vocoder_training")

PAIRS_VERSION = 1
# The log-mel of silence in the store's convention: what a segment past a clip's end holds.
SILENT_MEL = float(np.log(LOG_CLAMP))


def pairs_signature(store: FeatureStore, acoustic: AcousticModel) -> dict[str, Any]:
    """What the pairs depend on: the store's content and the acoustic checkpoint's bytes."""
    return {"version": PAIRS_VERSION, "store_fingerprint": store.fingerprint, "acoustic_sha256": acoustic.sha256}


class PairSet:
    """Read access to a run's pairs; clip i is clip i of the feature store."""

    def __init__(self, run: RunDir) -> None:
        index = json.loads(run.vocoder_index.read_text(encoding="utf-8"))
        self.signature: dict[str, Any] = index["signature"]
        self.hop: int = int(index["hop_length"])
        self.clips: list[dict[str, Any]] = index["clips"]
        self.mels = np.load(run.vocoder_mels, mmap_mode="r")
        self.audio = np.load(run.vocoder_audio, mmap_mode="r")
        self.n_mels = int(self.mels.shape[1])
        frames = sum(c["n_frames"] for c in self.clips)
        if self.mels.shape[0] != frames or self.audio.shape[0] != frames * self.hop:
            raise ValueError(f"{run.vocoder_data}: arrays of {self.mels.shape[0]} frames / {self.audio.shape[0]} "
                             f"samples, index.json describes {frames} frames")

    def split(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.clips) if c["split"] == name]

    def n_frames(self, i: int) -> int:
        return int(self.clips[i]["n_frames"])

    def clip(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced mel (T, n_mels) and real audio (T * hop,) of a whole clip."""
        f0, n = self.clips[i]["frame_offset"], self.n_frames(i)
        return np.array(self.mels[f0 : f0 + n]), np.array(self.audio[f0 * self.hop : (f0 + n) * self.hop])

    def segment(self, i: int, start: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """`frames` frames from `start` and their audio; silence past the clip's end."""
        f0, n, hop = self.clips[i]["frame_offset"], self.n_frames(i), self.hop
        take = max(0, min(frames, n - start))
        mel = np.full((frames, self.n_mels), SILENT_MEL, dtype=np.float32)
        wav = np.zeros(frames * hop, dtype=np.float32)
        mel[:take] = self.mels[f0 + start : f0 + start + take]
        wav[: take * hop] = self.audio[(f0 + start) * hop : (f0 + start + take) * hop]
        return mel, wav

    def batch(self, picks: Sequence[tuple[int, int]], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip, start) picks -> mels (B, n_mels, frames) and audio (B, frames * hop)."""
        parts = [self.segment(i, start, frames) for i, start in picks]
        mels = torch.from_numpy(np.stack([m.T for m, _ in parts]))
        return mels, torch.from_numpy(np.stack([w for _, w in parts]))


def open_pairs(run: RunDir, store: FeatureStore, acoustic: AcousticModel, audio_files: list[Path],
               audio: AudioConfig) -> PairSet:
    """The run's pairs, made now unless the run already holds them for the same inputs."""
    signature = pairs_signature(store, acoustic)
    if run.vocoder_index.is_file():
        try:
            pairs = PairSet(run)
            if pairs.signature == signature:
                return pairs
            log.info("%s was made from another store or acoustic checkpoint: making the pairs again",
                     run.vocoder_data)
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s is unreadable (%s): making the pairs again", run.vocoder_data, err)
    build_pairs(run, store, acoustic, audio_files, audio, signature)
    return PairSet(run)


def build_pairs(run: RunDir, store: FeatureStore, acoustic: AcousticModel, audio_files: list[Path],
                audio: AudioConfig, signature: dict[str, Any]) -> None:
    """Write the pairs of every clip: the real audio first (so a corpus that does not match
    the store is refused before the slower model pass), then the teacher-forced mels."""
    run.vocoder_data.mkdir(parents=True, exist_ok=True)
    run.vocoder_index.unlink(missing_ok=True)  # the arrays change below: the old index no longer holds
    hop, n_mels = audio.hop_length, audio.n_mels
    offsets = np.cumsum([0] + [int(r["n_frames"]) for r in store.records]).tolist()
    total = offsets[-1]
    log.info("making the vocoder's training pairs of %d clips (%d frames) in %s", len(store), total, run.vocoder_data)

    def fill_audio(out: np.ndarray) -> None:
        for i, (record, path) in enumerate(zip(store.records, audio_files, strict=True)):
            out[offsets[i] * hop : offsets[i + 1] * hop] = real_audio(path, audio, record, store.item(i)["mel"])

    def fill_mels(out: np.ndarray) -> None:
        dataset = FeatureDataset(store, range(len(store)))
        for i in range(len(store)):
            out[offsets[i] : offsets[i + 1]] = teacher_forced_mel(acoustic.model, dataset[i])

    _write_array(run.vocoder_audio, (total * hop,), fill_audio)
    _write_array(run.vocoder_mels, (total, n_mels), fill_mels)
    clips = [{"id": r["id"], "split": r["split"], "n_frames": int(r["n_frames"]), "frame_offset": offsets[i]}
             for i, r in enumerate(store.records)]
    write_json_atomic(run.vocoder_index, {
        "signature": signature, "hop_length": hop, "store": str(store.root),
        "acoustic_checkpoint": str(acoustic.path), "clips": clips,
    })


def _write_array(path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> None:
    """A float32 .npy filled in place through a memory map under a temporary name, then
    renamed: a crash leaves the old file or none, never a half-filled one under the name."""
    tmp = temp_path(path)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        fill(out)
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
