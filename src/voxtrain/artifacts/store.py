"""The on-disk feature store written by `voxtrain prepare` and read by training. Every path
of it is named in `voxtrain.artifacts.layout.StoreLayout`.

    OUT/
      config.json                    audio + text config of the features (written first)
      shards/shard_00003.mel.npy     float16 (sum_T, n_mels): the shard's kept clips, concatenated
      shards/shard_00003.pitch.npy   float32 (sum_T,)   Hz, unvoiced interpolated
      shards/shard_00003.energy.npy  float32 (sum_T,)
      shards/shard_00003.phonemes.npy int16 (sum_N,)
      shards/shard_00003.json        per clip offsets/lengths, rejected lines, each array's
                                     size and SHA-256; written LAST
      symbols.json  manifest.jsonl  stats.json  rejected.tsv
      COMPLETE                       written last of all: counts, manifest fingerprint,
                                     size and SHA-256 of every shard array

Concatenated arrays opened with mmap give O(1) random access without one file per
clip (13,000 small files are slow on network disks and in backups). Every file goes
to a temp name and is os.replace'd, so a crash leaves either the old file or none;
a shard's .json is its completion marker, which is what makes prepare resumable.

Integrity. A crash cannot leave half a file, but a disk, a copy or a hand can still damage
one after prepare finished. So `FeatureStore` refuses, naming the file, any shard array
whose size, .npy header or SHA-256 differs from what prepare recorded, and a manifest
whose clips do not tile the arrays exactly; prepare itself re-verifies a finished shard
before reusing it, so rerunning it repairs a damaged store by recomputing that shard only.
Stores of version 1 recorded no checksums: they open with sizes and headers checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.artifacts.layout import StoreLayout
from voxtrain.atomic import fsync_dir, write_atomic, write_json_atomic
from voxtrain.errors import VoxtrainError

# 2: shard .json and COMPLETE record each array's size and SHA-256. 1 (still read): sizes only.
STORE_VERSION = 2
SHARD_ARRAYS = {"mel": np.float16, "pitch": np.float32, "energy": np.float32, "phonemes": np.int16}
FIX_HINT = "run `voxtrain prepare CORPUS --out {root}` (it resumes where it stopped)"
DAMAGE_HINT = "rerun `voxtrain prepare CORPUS --out {root}`: it recomputes only the damaged shards"
# Offset and length fields of a manifest record, per array they index.
_EXTENTS = {"frames": ("frame_offset", "n_frames"), "phonemes": ("phoneme_offset", "n_phonemes")}

log = logging.getLogger(__name__)


class StoreError(VoxtrainError, RuntimeError):
    """A feature store is missing, incomplete or inconsistent; the message says how to fix it."""


def write_shard(layout: StoreLayout, index: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a shard's arrays, then its .json (the completion marker) last, recording each
    array file's size and SHA-256, hashed from the bytes in memory (no second read)."""
    files = {}
    for key, dtype in SHARD_ARRAYS.items():
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(arrays[key], dtype=dtype), allow_pickle=False)
        data = buffer.getbuffer()
        files[key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        write_atomic(data, layout.shard_array(index, key))
        del data  # a BytesIO cannot be freed while a view of it exists
    fsync_dir(layout.shards)
    write_json_atomic(layout.shard_meta(index), {**meta, "files": files})
    fsync_dir(layout.shards)


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, file size the header implies) of a .npy file; ValueError for a bad header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not one numpy.save writes for these arrays")
        return tuple(shape), dtype, f.tell() + int(np.prod(shape)) * dtype.itemsize


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    return h.hexdigest()


# SHA-256 of files this process already hashed, by (path, inode, size, mtime): `voxtrain train`
# opens the store twice (pre-flight, then the trainer), and the second open is free.
_HASHED: dict[tuple[str, int, int, int], str] = {}


def _sha256_once(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]


def array_problem(path: Path, key: str, rows: int, recorded: dict[str, Any] | None, width: int | None = None) -> str:
    """What is wrong with the shard array file `path` (array `key`, `rows` rows of `width`
    columns for the mel), or "" when it is what prepare wrote.

    Always checked: the size against the recorded one and against the .npy header, the
    dtype and the shape (a stat and a 128-byte read). With a recorded "sha256" also the
    content, which reads every byte (cost: see FeatureStore).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err})"
    if recorded is not None and size != recorded.get("bytes"):
        change = "truncated" if size < recorded.get("bytes", 0) else "grown"
        return f"{change}: {size} bytes, prepare wrote {recorded.get('bytes')}"
    try:
        shape, dtype, want = _npy_layout(path)
    except (OSError, ValueError) as err:
        return f"not a readable .npy array (damaged header: {err})"
    if size != want:
        return f"{'truncated' if size < want else 'trailing bytes'}: {size} bytes, its header describes {want}"
    if dtype != np.dtype(SHARD_ARRAYS[key]):
        return f"dtype {dtype}, prepare writes {np.dtype(SHARD_ARRAYS[key])}"
    want_shape = (rows, width) if key == "mel" else (rows,)
    if len(shape) != len(want_shape) or shape[0] != rows or (width is not None and shape != want_shape):
        return f"shape {shape}, but the manifest's clips of this shard need {want_shape}"
    if recorded is not None and recorded.get("sha256") and _sha256_once(path) != recorded["sha256"]:
        return "content differs from the SHA-256 recorded by prepare (damaged on disk, in a copy, or edited)"
    return ""


def read_complete_shard(layout: StoreLayout, index: int, signature: str) -> dict[str, Any] | None:
    """The shard's metadata when it was finished for exactly these inputs and its arrays
    are intact (sizes and checksums), else None: then prepare computes it again."""
    try:
        meta = json.loads(layout.shard_meta(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != STORE_VERSION or meta.get("signature") != signature:
        return None
    files = meta.get("files")
    if not isinstance(files, dict):
        return None
    for key in SHARD_ARRAYS:
        rows = meta.get("n_phonemes") if key == "phonemes" else meta.get("n_frames")
        if not isinstance(files.get(key), dict) or array_problem(
            layout.shard_array(index, key), key, rows, files[key]
        ):
            return None
    return meta


def _int_field(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is {value!r}, not a count")
    return value


def manifest_extents(records: list[dict[str, Any]], manifest: Path, hint: str) -> dict[int, dict[str, int]]:
    """Per shard, the frames and phonemes its clips span. prepare concatenates a shard's
    clips, so their ranges must tile [0, total) with no gap or overlap; anything else is a
    manifest that does not describe these shards (an edit, or a file from another store)."""
    by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for number, r in enumerate(records, start=1):
        try:
            by_shard[_int_field(r, "shard")].append(r)
            for offset, length in _EXTENTS.values():
                _int_field(r, offset)
                if _int_field(r, length) < 1:
                    raise ValueError(f"{length} is {r[length]}, every kept clip has at least 1")
        except ValueError as err:
            raise StoreError(f"{manifest}: line {number} (clip {r.get('id')!r}): {err}; {hint}") from None
    extents: dict[int, dict[str, int]] = {}
    for shard, rs in by_shard.items():
        extents[shard] = {}
        for what, (offset, length) in _EXTENTS.items():
            end = 0
            for r in sorted(rs, key=lambda r: r[offset]):
                if r[offset] != end:
                    raise StoreError(
                        f"{manifest}: clip {r.get('id')!r} has {offset} {r[offset]}, but the clips before it in "
                        f"shard {shard} end at {end}: the manifest does not describe the shard's arrays; {hint}"
                    )
                end += r[length]
            extents[shard][what] = end
    return extents


class FeatureStore:
    """Random access to a complete store. Shard arrays are memory-mapped lazily per
    process, so a store opened before DataLoader workers fork (or pickled to spawned
    ones) never shares a file handle or mapping across processes.

    Opening verifies the store (see the module docstring): manifest fingerprint, how the
    manifest's clips tile each shard, and every shard array's size, header and SHA-256.
    The checksums are verified in full at open, not lazily per shard at first read: the
    first epoch reads every byte anyway (so the read warms the page cache training then
    uses), a lazy check would run again in every DataLoader worker, and a damaged shard
    would stop training somewhere in its first epoch instead of before it starts.

    What the hashing costs is measured in docs/RUN_LAYOUT.md. A second open in the same
    process (pre-flight, then the trainer) re-hashes nothing unless a file's size or mtime
    changed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.layout = StoreLayout(self.root)
        hint = FIX_HINT.format(root=self.root)
        if not self.layout.complete.is_file():
            what = "does not exist" if not self.root.exists() else "is not a complete feature store"
            raise StoreError(f"{self.root} {what}; {hint}")
        configs = self._load(hint)
        self.audio_config: dict[str, Any] = configs["audio"]
        self.text_config: dict[str, Any] = configs.get("text", {})
        if len(self.records) != self.complete.get("clips"):
            raise StoreError(
                f"{self.root}: manifest has {len(self.records)} clips, COMPLETE says "
                f"{self.complete.get('clips')}; {hint}"
            )
        self.integrity = self._verify(DAMAGE_HINT.format(root=self.root))
        self._splits = {
            name: [i for i, r in enumerate(self.records) if r["split"] == name] for name in ("train", "val")
        }
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self._pid = os.getpid()

    def _load(self, hint: str) -> dict[str, Any]:
        """Read COMPLETE, the manifest (checked against its fingerprint), stats, symbols;
        returns config.json."""
        from voxtrain.text import SymbolTable

        try:
            self.complete = json.loads(self.layout.complete.read_text(encoding="utf-8"))
            manifest = self.layout.manifest
            self.fingerprint: str = self.complete["fingerprint"]
            if file_sha256(manifest) != self.fingerprint:
                raise StoreError(
                    f"{manifest} changed after prepare finished (its SHA-256 is not the fingerprint in "
                    f"{self.layout.complete}); {DAMAGE_HINT.format(root=self.root)}"
                )
            with open(manifest, encoding="utf-8") as f:
                self.records: list[dict[str, Any]] = [json.loads(line) for line in f if line.strip()]
            self.stats: dict[str, float] = json.loads(self.layout.stats.read_text(encoding="utf-8"))
            configs = json.loads(self.layout.config.read_text(encoding="utf-8"))
            self.symbols = SymbolTable.load(self.layout.symbols)
        except StoreError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise StoreError(f"{self.root}: unreadable store file ({err}); {hint}") from None
        return configs

    def _verify(self, hint: str) -> dict[str, Any]:
        """Check every shard array the manifest uses; returns what was checked, and its cost."""
        t0 = time.perf_counter()
        self._extents = manifest_extents(self.records, self.layout.manifest, hint)
        recorded = self.complete.get("shard_files")
        width = self.audio_config.get("n_mels")
        n_bytes = 0
        for shard, extent in sorted(self._extents.items()):
            for key in SHARD_ARRAYS:
                path = self.layout.shard_array(shard, key)
                entry = recorded.get(path.name) if isinstance(recorded, dict) else None
                if isinstance(recorded, dict) and not isinstance(entry, dict):
                    raise StoreError(f"{self.layout.complete} records no size or checksum for {path}; {hint}")
                rows = extent["phonemes" if key == "phonemes" else "frames"]
                problem = array_problem(path, key, rows, entry, width)
                if problem:
                    raise StoreError(f"{path}: {problem}; {hint}")
                n_bytes += path.stat().st_size
        if not isinstance(recorded, dict):
            log.warning(
                "%s was prepared before voxtrain recorded shard checksums: only file sizes and headers were "
                "checked; rerun `voxtrain prepare CORPUS --out %s` to record them", self.root, self.root
            )
        checked = "sha256" if isinstance(recorded, dict) else "sizes"
        return {"checked": checked, "bytes": n_bytes, "seconds": time.perf_counter() - t0}

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

    def symbol_clips(self, split: str = "train") -> dict[str, int]:
        """How many clips of a split use each phoneme symbol (from the manifest's phonemes)."""
        counts: dict[str, int] = {}
        for i in self.split_indices(split):
            for symbol in set(self.records[i].get("phonemes", "")):
                counts[symbol] = counts.get(symbol, 0) + 1
        return dict(sorted(counts.items()))

    def n_frames(self, i: int) -> int:
        return int(self.records[i]["n_frames"])

    def _arrays(self, shard: int) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():  # forked after opening: map afresh in this process
            self._open, self._pid = {}, os.getpid()
        arrays = self._open.get(shard)
        if arrays is None:
            arrays = {k: self._map(shard, k) for k in SHARD_ARRAYS}
            self._open[shard] = arrays
        return arrays

    def _map(self, shard: int, key: str) -> np.ndarray:
        # Verified at open; checked again here (cheaply) because a file replaced since then
        # would otherwise give short slices, silently.
        path = self.layout.shard_array(shard, key)
        rows = self._extents[shard]["phonemes" if key == "phonemes" else "frames"]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise StoreError(f"{path}: cannot be read ({err}); {DAMAGE_HINT.format(root=self.root)}") from None
        if array.dtype != SHARD_ARRAYS[key] or not array.shape or array.shape[0] != rows:
            raise StoreError(
                f"{path}: changed since the store was opened ({array.dtype} {array.shape}, expected {rows} rows "
                f"of {np.dtype(SHARD_ARRAYS[key])}); {DAMAGE_HINT.format(root=self.root)}"
            )
        return array

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
