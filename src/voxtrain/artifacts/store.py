"""The on-disk feature store written by `voxtrain prepare` and read by training.

    OUT/
      config.json                    audio + text config of the features (written first)
      shards/shard_00003.mel.npy     float16 (sum_T, n_mels): the shard's kept clips, concatenated
      shards/shard_00003.pitch.npy   float32 (sum_T,)   Hz, unvoiced interpolated
      shards/shard_00003.energy.npy  float32 (sum_T,)
      shards/shard_00003.phonemes.npy int16 (sum_N,)
      shards/shard_00003.json        per clip offsets/lengths + rejected lines; written LAST
      symbols.json  manifest.jsonl  stats.json  rejected.tsv
      COMPLETE                       written last of all: counts + fingerprint

Concatenated arrays opened with mmap give O(1) random access without one file per
clip (13,000 small files are slow on network disks and in backups). Every file goes
to a temp name and is os.replace'd, so a crash leaves either the old file or none;
a shard's .json is its completion marker, which is what makes prepare resumable.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.atomic import fsync_dir, save_npy_atomic, write_json_atomic

STORE_VERSION = 1
SHARD_ARRAYS = {"mel": np.float16, "pitch": np.float32, "energy": np.float32, "phonemes": np.int16}
FIX_HINT = "run `voxtrain prepare CORPUS --out {root}` (it resumes where it stopped)"


class StoreError(RuntimeError):
    """A feature store is missing, incomplete or inconsistent; the message says how to fix it."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def shard_array_path(shards_dir: Path, index: int, key: str) -> Path:
    return shards_dir / f"{shard_name(index)}.{key}.npy"


def shard_json_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"{shard_name(index)}.json"


def write_shard(shards_dir: Path, index: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a shard's arrays, then its .json (the completion marker) last."""
    for key, dtype in SHARD_ARRAYS.items():
        save_npy_atomic(shard_array_path(shards_dir, index, key), np.ascontiguousarray(arrays[key], dtype=dtype))
    fsync_dir(shards_dir)
    write_json_atomic(shard_json_path(shards_dir, index), meta)
    fsync_dir(shards_dir)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            expected = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
        return tuple(shape) if path.stat().st_size == expected else None
    except (OSError, ValueError):
        return None


def read_complete_shard(shards_dir: Path, index: int, signature: str) -> dict[str, Any] | None:
    """The shard's metadata when it was finished for exactly these inputs, else None."""
    try:
        meta = json.loads(shard_json_path(shards_dir, index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != STORE_VERSION or meta.get("signature") != signature:
        return None
    n_frames, n_phonemes = meta.get("n_frames"), meta.get("n_phonemes")
    for key in SHARD_ARRAYS:
        shape = _npy_shape(shard_array_path(shards_dir, index, key))
        want = n_phonemes if key == "phonemes" else n_frames
        if shape is None or not shape or shape[0] != want:
            return None
    return meta


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureStore:
    """Random access to a complete store. Shard arrays are memory-mapped lazily per
    process, so a store opened before DataLoader workers fork (or pickled to spawned
    ones) never shares a file handle or mapping across processes."""

    def __init__(self, root: str | Path) -> None:
        from voxtrain.text import SymbolTable

        self.root = Path(root)
        hint = FIX_HINT.format(root=self.root)
        marker = self.root / "COMPLETE"
        if not marker.is_file():
            what = "does not exist" if not self.root.exists() else "is not a complete feature store"
            raise StoreError(f"{self.root} {what}; {hint}")
        try:
            self.complete = json.loads(marker.read_text(encoding="utf-8"))
            manifest = self.root / "manifest.jsonl"
            self.fingerprint: str = self.complete["fingerprint"]
            if file_sha256(manifest) != self.fingerprint:
                raise StoreError(f"{manifest} changed after prepare finished (fingerprint mismatch); {hint}")
            with open(manifest, encoding="utf-8") as f:
                self.records: list[dict[str, Any]] = [json.loads(line) for line in f if line.strip()]
            self.stats: dict[str, float] = json.loads((self.root / "stats.json").read_text(encoding="utf-8"))
            configs = json.loads((self.root / "config.json").read_text(encoding="utf-8"))
            self.symbols = SymbolTable.load(self.root / "symbols.json")
        except StoreError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise StoreError(f"{self.root}: unreadable store file ({err}); {hint}") from None
        self.audio_config: dict[str, Any] = configs["audio"]
        self.text_config: dict[str, Any] = configs.get("text", {})
        if len(self.records) != self.complete.get("clips"):
            raise StoreError(
                f"{self.root}: manifest has {len(self.records)} clips, COMPLETE says "
                f"{self.complete.get('clips')}; {hint}"
            )
        self._shards_dir = self.root / "shards"
        for shard in sorted({r["shard"] for r in self.records}):
            for key in SHARD_ARRAYS:
                if not shard_array_path(self._shards_dir, shard, key).is_file():
                    raise StoreError(f"missing {shard_array_path(self._shards_dir, shard, key)}; {hint}")
        self._splits = {
            name: [i for i, r in enumerate(self.records) if r["split"] == name] for name in ("train", "val")
        }
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def split_indices(self, split: str) -> list[int]:
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return list(self._splits[split])

    def n_frames(self, i: int) -> int:
        return int(self.records[i]["n_frames"])

    def _arrays(self, shard: int) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():  # forked after opening: map afresh in this process
            self._open, self._pid = {}, os.getpid()
        arrays = self._open.get(shard)
        if arrays is None:
            arrays = {k: np.load(shard_array_path(self._shards_dir, shard, k), mmap_mode="r") for k in SHARD_ARRAYS}
            self._open[shard] = arrays
        return arrays

    def item(self, i: int) -> dict[str, Any]:
        """One clip: id, phoneme_ids int64 (N,), mel f32 (T, n_mels), pitch f32 (T,), energy f32 (T,)."""
        r = self.records[i]
        a = self._arrays(r["shard"])
        f0, nf = r["frame_offset"], r["n_frames"]
        p0, n_p = r["phoneme_offset"], r["n_phonemes"]
        return {
            "id": r["id"],
            # np.array copies: callers get writable arrays, never views of the read-only mapping.
            "phoneme_ids": np.array(a["phonemes"][p0 : p0 + n_p], dtype=np.int64),
            "mel": np.array(a["mel"][f0 : f0 + nf], dtype=np.float32),
            "pitch": np.array(a["pitch"][f0 : f0 + nf], dtype=np.float32),
            "energy": np.array(a["energy"][f0 : f0 + nf], dtype=np.float32),
        }

    __getitem__ = item
