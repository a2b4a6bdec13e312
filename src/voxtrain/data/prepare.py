"""`voxtrain prepare`: an LJSpeech-format corpus -> a resumable feature store.

Steps: check the folder, parse metadata.csv line by line (bad lines become rejections),
compute features shard by shard in a process pool (finished shards of an interrupted
run are reused), split train/val, then write statistics, the manifest, the rejected
clips and finally the completion marker. Paths: `StoreLayout`; contents: store.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.layout import StoreLayout
from voxtrain.artifacts.lock import exclusive_lock
from voxtrain.artifacts.store import STORE_VERSION, read_complete_shard
from voxtrain.atomic import remove_temp_files, write_json_atomic
from voxtrain.config import Config
from voxtrain.data.finalize import finalize_store
from voxtrain.data.metadata import Entry, PrepareError, check_corpus_dir, read_metadata
from voxtrain.data.pool import ShardJob, progress_bar, run_jobs
from voxtrain.text import SymbolTable

__all__ = ["PrepareError", "PrepareReport", "prepare_corpus"]


@dataclass
class PrepareReport:
    kept: int
    rejected_by_reason: dict[str, int]
    hours: float
    seconds_wall: float
    out_dir: Path
    n_train: int = 0
    n_val: int = 0
    shards_total: int = 0
    shards_reused: int = 0
    fingerprint: str = ""
    rejected_path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def summary(self) -> str:
        """A few human lines for the command line."""
        lines = [
            f"kept {self.kept} clips ({self.hours:.2f} h; {self.n_train} train, {self.n_val} val) "
            f"in {self.seconds_wall:.1f} s -> {self.out_dir}",
        ]
        if self.shards_reused:
            lines.append(f"reused {self.shards_reused} of {self.shards_total} shards from an earlier run")
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in self.rejected_by_reason.items())
            lines.append(f"rejected {self.rejected} ({reasons}): see {self.rejected_path}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["rejected_path"] = str(self.rejected_path) if self.rejected_path else None
        return d


def _feature_config(config: Config) -> dict[str, Any]:
    return {"audio": config.audio.model_dump(mode="json"), "text": config.text.model_dump(mode="json")}


def _check_out_config(layout: StoreLayout, wanted: dict[str, Any]) -> None:
    """Refuse to add features computed with other settings to an existing store."""
    path = layout.config
    if not path.is_file():
        write_json_atomic(path, wanted)
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        stored = None
    if stored == wanted:
        return
    diffs = []
    for section in ("audio", "text"):
        old, new = (stored or {}).get(section, {}), wanted[section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(f"{section}.{key}: {old.get(key)!r} (stored) vs {new.get(key)!r} (now)")
    raise PrepareError(
        f"{layout.root} holds features made with different settings, refusing to mix them:\n  "
        + "\n  ".join(diffs or [f"unreadable {path.name}"])
        + f"\nUse another --out folder, or delete {layout.root} to start over."
    )


@contextlib.contextmanager
def _store_lock(layout: StoreLayout) -> Iterator[None]:
    """One writer per store: a second prepare into the same folder fails instead of racing.

    A POSIX lock, like the run lock: it belongs to this process alone, so forked workers never
    hold it (a killed prepare frees the store at once) and have nothing to give up. Closing
    any descriptor of the lock file in this process drops the lock, so nothing else here
    opens it while it is held.
    """
    lock = exclusive_lock(layout.prepare_lock)
    if lock is None:
        raise PrepareError(f"another `voxtrain prepare` is writing to {layout.root}; wait for it to finish")
    try:
        yield
    finally:
        lock.close()


def _signature(entries: tuple[Entry, ...], wavs_dir: Path, settings: str) -> str:
    """What a shard's content depends on; a finished shard is reused only if this matches."""
    h = hashlib.sha256(settings.encode("utf-8"))
    for e in entries:
        h.update(f"\n{e.line}|{e.reason}|".encode())
        h.update(e.raw)
        if e.audio:
            try:
                st = (wavs_dir / e.audio).stat()
                h.update(f"|{e.audio}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"|gone")
    return h.hexdigest()


def prepare_corpus(
    corpus_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Validate a corpus and write its feature store to out_dir (resuming a stopped run).

    Raises PrepareError only when the corpus folder or the layout of its metadata.csv is
    wrong, out_dir holds features of other settings, or no clip is usable; every other
    problem is one rejected clip.
    """
    t0 = time.monotonic()
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    check_corpus_dir(corpus_dir)
    # Read before out_dir is touched: a refused metadata.csv must leave an existing store whole.
    metadata = read_metadata(corpus_dir)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    layout, wavs_dir = StoreLayout(out_dir), corpus_dir / "wavs"
    layout.shards.mkdir(parents=True, exist_ok=True)
    with _store_lock(layout):
        feature_config = _feature_config(config)
        _check_out_config(layout, feature_config)  # before touching anything of a store we refuse
        # Until the new completion marker is written the store is being rebuilt, not complete.
        layout.complete.unlink(missing_ok=True)
        remove_temp_files(layout.root)
        remove_temp_files(layout.shards)
        symbols, settings = _symbols_and_settings(feature_config)
        plan = _plan_shards(metadata.entries, wavs_dir, layout, config.data.shard_size, settings)
        bar = progress_bar(progress)
        run_jobs(plan.jobs, layout, wavs_dir, config, symbols, workers, bar, plan.reused_entries)
        metas = _shard_metas(plan, layout)
        summary = finalize_store(layout, metas, config, symbols, feature_config, metadata.warnings)
    return _build_report(summary, metas, plan, corpus_dir, layout, t0)


def _symbols_and_settings(feature_config: dict[str, Any]) -> tuple[SymbolTable, str]:
    """The phoneme symbols, and every setting that shard contents depend on (as one string)."""
    symbols = SymbolTable.default()
    if len(symbols) > 32767:
        raise PrepareError(f"symbol table of {len(symbols)} symbols does not fit the int16 phoneme arrays")
    settings = json.dumps(
        {"version": STORE_VERSION, "features": feature_config, "symbols": symbols.to_dict()},
        sort_keys=True,
    )
    return symbols, settings


@dataclass
class _ShardPlan:
    n_shards: int
    jobs: list[ShardJob]  # shards to compute
    reused: dict[int, dict[str, Any]]  # shard index -> metadata of a finished shard kept from an earlier run
    reused_entries: int


def _plan_shards(entries: list[Entry], wavs_dir: Path, layout: StoreLayout, size: int, settings: str) -> _ShardPlan:
    """Cut the entries into shards; a shard an earlier run finished with the same signature is
    reused, every other one becomes a job (and its stale files go)."""
    n_shards = (len(entries) + size - 1) // size
    plan = _ShardPlan(n_shards, [], {}, 0)
    for k in range(n_shards):
        shard_entries = tuple(entries[k * size : (k + 1) * size])
        sig = _signature(shard_entries, wavs_dir, settings)
        meta = read_complete_shard(layout, k, sig)
        if meta is not None:
            plan.reused[k] = meta
            plan.reused_entries += len(shard_entries)
        else:
            layout.shard_meta(k).unlink(missing_ok=True)
            plan.jobs.append(ShardJob(k, sig, shard_entries))
    _remove_stale_shards(layout, n_shards)
    return plan


def _shard_metas(plan: _ShardPlan, layout: StoreLayout) -> list[dict[str, Any]]:
    """Metadata of every shard in order, the computed ones read back from disk."""
    metas = dict(plan.reused)
    for job in plan.jobs:
        metas[job.index] = read_complete_shard(layout, job.index, job.signature)
        if metas[job.index] is None:
            raise RuntimeError(f"shard {job.index} was not written completely; rerun prepare to resume")
    return [metas[k] for k in range(plan.n_shards)]


def _build_report(
    summary: dict[str, Any], metas: list[dict[str, Any]], plan: _ShardPlan, corpus_dir: Path, layout: StoreLayout,
    t0: float,
) -> PrepareReport:
    rejected_by_reason = dict(sorted(Counter(r["reason"] for m in metas for r in m["rejected"]).items()))
    if summary["clips"] == 0:
        counts = ", ".join(f"{k}: {v}" for k, v in rejected_by_reason.items()) or "metadata.csv has no entries"
        raise PrepareError(f"no usable clip in {corpus_dir} ({counts}); every line and why: {layout.rejected}")
    return PrepareReport(
        kept=summary["clips"],
        rejected_by_reason=rejected_by_reason,
        hours=summary["hours"],
        seconds_wall=time.monotonic() - t0,
        out_dir=layout.root,
        n_train=summary["train_clips"],
        n_val=summary["val_clips"],
        shards_total=plan.n_shards,
        shards_reused=plan.n_shards - len(plan.jobs),
        fingerprint=summary["fingerprint"],
        rejected_path=layout.rejected,
        warnings=summary["warnings"],
    )


def _remove_stale_shards(layout: StoreLayout, n_shards: int) -> None:
    """Shards past the end of a metadata.csv that shrank are not part of this store."""
    for index, path in layout.shard_files():
        if index >= n_shards:
            path.unlink(missing_ok=True)
