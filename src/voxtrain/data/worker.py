"""What a prepare worker process does: turn metadata entries into features.

Runs in a pool process. A clip that cannot be used becomes a rejection with a reason
code; only a bug or a crash of a native library fails the run (and the rerun resumes).
"""

from __future__ import annotations

import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.artifacts.store import SHARD_ARRAYS, STORE_VERSION

# Imported here, in the parent, so that forked workers start with torch, pyworld and
# phonemizer already loaded instead of each paying seconds to import them.
from voxtrain.audio import AudioError, extract_features, load_audio, trim_silence
from voxtrain.config import Config
from voxtrain.data.metadata import Entry
from voxtrain.text import SymbolTable, TextProcessor

# Below this peak amplitude (-80 dBFS) a file is digital silence or a dead microphone.
SILENT_PEAK = 1e-4
# Stress marks are letters to unicodedata but carry no sound on their own.
_NON_PHONES = frozenset("ˈˌ")


@dataclass(frozen=True)
class ChunkTask:
    """A few candidate clips of one shard: the unit of work of the pool. Smaller than a
    shard so that every worker has work even when the corpus fits in one shard; the
    parent assembles and writes each shard, so chunking never changes what is stored."""

    shard: int
    entries: tuple[Entry, ...]
    wavs_dir: str


_state: dict[str, Any] = {}


def _exit_when_orphaned(parent: int) -> None:
    # A killed `voxtrain prepare` must not leave workers behind, computing for nobody.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


def init_worker(config: dict[str, Any], symbols: dict[str, Any]) -> None:
    """Pool initializer: one thread, one text processor per process, parent watchdog.

    The store lock needs nothing here: it is a POSIX lock, which a forked child never holds,
    so a killed parent frees the store whatever its workers do."""
    import signal

    import torch

    # Ctrl-C goes to the whole process group; the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Several workers already use every core: intra-op threads would only oversubscribe,
    # and one thread keeps a forked child out of the parent's OpenMP pool. It also makes
    # results independent of how many workers run.
    torch.set_num_threads(1)
    cfg = Config.model_validate(config)
    _state.update(
        cfg=cfg,
        processor=TextProcessor(cfg.text, SymbolTable.from_dict(symbols)),
    )
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def has_phones(phonemes: str) -> bool:
    """True when the IPA string holds at least one sound, not only punctuation/stress/space."""
    return any(unicodedata.category(c).startswith("L") and c not in _NON_PHONES for c in phonemes)


def _clean(detail: str, path: Path) -> str:
    # Details land in a TSV: no tabs or newlines, and no absolute corpus path repeated on every line.
    detail = detail.replace(f"{path}: ", "").replace(str(path), path.name)
    return " ".join(detail.split())


def clip_features(path: Path, cfg: Config) -> tuple[str, str, dict[str, np.ndarray] | None, float]:
    """(reason, detail, features, seconds); reason is "" when the clip is usable."""
    a = cfg.audio
    try:
        wav = load_audio(path, a.sample_rate)
    except AudioError as err:
        reason = {"empty_audio": "silent_audio"}.get(err.reason, err.reason)
        if reason not in ("unreadable_audio", "nonfinite_samples", "silent_audio"):
            reason = "unreadable_audio"
        return reason, _clean(err.detail, path), None, 0.0
    except Exception as err:  # a decoder library raising something unexpected is still one bad file
        return "unreadable_audio", _clean(f"{type(err).__name__}: {err}", path), None, 0.0
    if not np.isfinite(wav).all():
        return "nonfinite_samples", f"{int((~np.isfinite(wav)).sum())} NaN/Inf samples", None, 0.0
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak < SILENT_PEAK:
        return "silent_audio", f"peak amplitude {peak:.2e} is below {SILENT_PEAK:g}", None, 0.0
    if a.trim_silence:
        wav = trim_silence(wav, a)
        if len(wav) == 0:
            return "silent_audio", "nothing left after trimming silence", None, 0.0
    seconds = len(wav) / a.sample_rate
    if seconds < a.min_seconds:
        return "too_short", f"{seconds:.3f} s after trimming < min_seconds {a.min_seconds:g}", None, seconds
    if seconds > a.max_seconds:
        return "too_long", f"{seconds:.3f} s after trimming > max_seconds {a.max_seconds:g}", None, seconds
    try:
        feats = extract_features(wav, a)
    except AudioError as err:  # only raised for clips shorter than one STFT frame
        return "too_short", _clean(err.detail, path), None, seconds
    return "", "", feats, seconds


def process_chunk(task: ChunkTask) -> list[dict[str, Any]]:
    """Features of a few clips of one shard, one result per entry in order: either a
    rejection (line, id, reason, detail) or a clip (its metadata and its arrays)."""
    cfg: Config = _state["cfg"]
    processor = _state["processor"]
    wavs_dir = Path(task.wavs_dir)
    processed = processor.process([e.source_text for e in task.entries])
    results: list[dict[str, Any]] = []
    for e, p in zip(task.entries, processed, strict=True):
        if not p.ids or not has_phones(p.phonemes):
            reason, detail, feats, seconds = "no_phonemes", f"text phonemizes to {p.phonemes!r}", None, 0.0
        else:
            reason, detail, feats, seconds = clip_features(wavs_dir / e.audio, cfg)
        if not reason and len(p.ids) > len(feats["mel"]):
            # Every phoneme needs at least one frame, or the aligner must skip some of them.
            reason = "text_too_long"
            detail = f"{len(p.ids)} phoneme symbols for {len(feats['mel'])} mel frames: text and audio do not match"
        if reason:
            results.append({"line": e.line, "id": e.id, "reason": reason, "detail": detail})
            continue
        clip = {
            "line": e.line,
            "id": e.id,
            "text": e.text,
            "normalized": p.normalized,
            "phonemes": p.phonemes,
            "seconds": round(seconds, 6),
        }
        arrays = {
            # float16 here halves what travels back to the parent; it is the storage type anyway.
            "mel": feats["mel"].astype(np.float16),
            "pitch": feats["pitch"].astype(np.float32),
            "energy": feats["energy"].astype(np.float32),
            "phonemes": np.asarray(p.ids, dtype=np.int16),
        }
        results.append({"line": e.line, "id": e.id, "clip": clip, "arrays": arrays})
    return results


def assemble_shard(
    index: int, signature: str, entries: tuple[Entry, ...], results: dict[int, dict[str, Any]], n_mels: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A shard's concatenated arrays and metadata, in metadata order whatever order the
    workers finished in. `results` maps line number -> process_chunk result."""
    clips: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    parts: dict[str, list[np.ndarray]] = {key: [] for key in SHARD_ARRAYS}
    n_frames = n_phonemes = 0
    for e in entries:
        r = results.get(e.line) if not e.rejected else None
        if r is None or "clip" not in r:
            src = r if r is not None else {"line": e.line, "id": e.id, "reason": e.reason, "detail": e.detail}
            rejected.append({k: src[k] for k in ("line", "id", "reason", "detail")})
            continue
        t, n = int(r["arrays"]["mel"].shape[0]), int(r["arrays"]["phonemes"].shape[0])
        clip = dict(r["clip"])
        clip.update(frame_offset=n_frames, n_frames=t, phoneme_offset=n_phonemes, n_phonemes=n)
        clips.append(clip)
        for key in SHARD_ARRAYS:
            parts[key].append(r["arrays"][key])
        n_frames += t
        n_phonemes += n
    empty = {
        "mel": np.zeros((0, n_mels)),
        "pitch": np.zeros(0),
        "energy": np.zeros(0),
        "phonemes": np.zeros(0),
    }
    arrays = {
        key: np.concatenate(parts[key]).astype(dtype, copy=False) if parts[key] else empty[key].astype(dtype)
        for key, dtype in SHARD_ARRAYS.items()
    }
    meta = {
        "version": STORE_VERSION,
        "shard": index,
        "signature": signature,
        "n_entries": len(entries),
        "n_frames": n_frames,
        "n_phonemes": n_phonemes,
        "clips": clips,
        "rejected": rejected,
    }
    return arrays, meta
