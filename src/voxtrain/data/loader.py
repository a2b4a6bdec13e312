"""Training batches: dataset over a feature store, length-bucketed batch sampler, collate.

The sampler's order is a pure function of (seed, epoch), and the loop tells it where to
start inside an epoch, so a resumed run sees exactly the batches an unbroken run would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from voxtrain.artifacts.store import FeatureStore
from voxtrain.model.batch import Batch


class FeatureDataset(Dataset):
    """Items of one split with pitch and energy z-normalized by the store's statistics."""

    def __init__(self, store: FeatureStore, indices: Sequence[int]):
        self.store = store
        self.indices = list(indices)
        stats = store.stats
        self._pitch = (float(stats["pitch_mean"]), max(float(stats["pitch_std"]), 1e-5))
        self._energy = (float(stats["energy_mean"]), max(float(stats["energy_std"]), 1e-5))

    def __len__(self) -> int:
        return len(self.indices)

    def n_frames(self, i: int) -> int:
        return self.store.n_frames(self.indices[i])

    def __getitem__(self, i: int) -> dict:
        item = self.store.item(self.indices[i])
        pitch = (item["pitch"] - self._pitch[0]) / self._pitch[1]
        energy = (item["energy"] - self._energy[0]) / self._energy[1]
        return {
            "id": item["id"],
            "phonemes": torch.from_numpy(np.asarray(item["phoneme_ids"], dtype=np.int64)),
            "mel": torch.from_numpy(np.ascontiguousarray(item["mel"], dtype=np.float32)),
            "pitch": torch.from_numpy(np.asarray(pitch, dtype=np.float32)),
            "energy": torch.from_numpy(np.asarray(energy, dtype=np.float32)),
        }


def collate(items: list[dict]) -> Batch:
    """Pad a list of items into a batch; padding is zeros and is masked by the lengths."""
    phoneme_lens = torch.tensor([len(x["phonemes"]) for x in items], dtype=torch.long)
    mel_lens = torch.tensor([x["mel"].shape[0] for x in items], dtype=torch.long)
    b, n_max, t_max = len(items), int(phoneme_lens.max()), int(mel_lens.max())
    n_mels = items[0]["mel"].shape[1]
    phonemes = torch.zeros(b, n_max, dtype=torch.long)
    mels = torch.zeros(b, t_max, n_mels)
    pitch = torch.zeros(b, t_max)
    energy = torch.zeros(b, t_max)
    for i, x in enumerate(items):
        n, t = len(x["phonemes"]), x["mel"].shape[0]
        phonemes[i, :n] = x["phonemes"]
        mels[i, :t] = x["mel"]
        pitch[i, :t] = x["pitch"]
        energy[i, :t] = x["energy"]
    return Batch(phonemes, phoneme_lens, mels, mel_lens, pitch, energy, ids=[x["id"] for x in items])


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Seeded, length-bucketed batches, sharded across processes.

    Each epoch: shuffle (seeded by seed + epoch), cut into pools of `pool_batches` batches,
    sort each pool by length so a batch holds similar lengths (little padding), form
    batches by count (`batch_size`) or by total frames (`batch_frames`), then shuffle the
    batch order. Every process sees the same list and takes every world_size-th batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        batch_frames: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool_batches: int = 50,
    ):
        if not lengths:
            raise ValueError("cannot batch an empty dataset")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.batch_frames = batch_frames
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and the first (per-process) batch index to yield."""
        self.epoch = epoch
        self.start = start

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        per_pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for p in range(0, len(order), per_pool):
            pool = sorted(order[p : p + per_pool], key=lambda i: self.lengths[i])
            batches.extend(self._cut(pool))
        rng.shuffle(batches)
        # Every process must get the same number of batches or DDP hangs at the tail.
        usable = len(batches) - len(batches) % self.world_size if len(batches) >= self.world_size else 0
        if usable == 0:
            batches = [batches[i % len(batches)] for i in range(self.world_size)]
            usable = self.world_size
        return batches[:usable]

    def _cut(self, pool: list[int]) -> list[list[int]]:
        if self.batch_frames <= 0:
            return [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        out, current, longest = [], [], 0
        for i in pool:
            if current and max(longest, self.lengths[i]) * (len(current) + 1) > self.batch_frames:
                out.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, self.lengths[i])
        if current:
            out.append(current)
        return out

    def batches_per_epoch(self) -> int:
        return len(self._batches(self.epoch)) // self.world_size

    def __len__(self) -> int:
        return max(self.batches_per_epoch() - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._batches(self.epoch)[self.rank :: self.world_size]
        yield from mine[self.start :]

