"""Checkpoints that never corrupt and never fill the disk, and the one listing of them.

What a checkpoint holds is `checkpoint_format`'s; this module writes, rotates, guards and
finds them. A save serialises the state in memory first, so its exact size is known before a byte
touches the disk; it goes through `write_atomic` (temp name, fsync, rename, directory
fsync). Loading uses weights_only=True everywhere, so a checkpoint received from someone
else can never run code. torch is imported only where a checkpoint is really read or
written: `voxtrain status` lists checkpoints without it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.best import BestTracker, best_from_records, run_best_by
from voxtrain.artifacts.checkpoint_format import (
    CheckpointError,
    TrainingState,
    load_state,
    serialize,
    verify_checkpoint,
)
from voxtrain.artifacts.disk import save_needs
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import Event, number, read_metrics, step_of
from voxtrain.artifacts.weights import export_weights, weights_bytes
from voxtrain.atomic import write_atomic

if TYPE_CHECKING:
    from voxtrain.config import CheckpointConfig

@dataclass
class CheckpointInfo:
    step: int
    path: Path
    size: int
    mtime: float
    valid: bool | None  # None: not opened (listing without verify) and not reported corrupt
    error: str = ""
    best: bool = False


def list_checkpoints(run: RunDir, records: list[dict] | None = None, verify: bool = False) -> list[CheckpointInfo]:
    """Every rotation checkpoint of a run, oldest first: size, time, validity and which is best.

    The one listing behind `status`, `monitor`, `checkpoints` and pre-flight. Temporary files
    of unfinished saves are never listed. `verify` opens each file (weights_only, memory-mapped)
    to check it; without it a checkpoint counts as corrupt only when the trainer reported it so
    (after the file was written). `records` are the run's metrics (read here when None).
    """
    records = read_metrics(run.metrics) if records is None else records
    best_step = best_from_records(records, *run_best_by(run.config)).step
    corrupt = [e for e in records if e.get("type") == "event" and e.get("event") == Event.CHECKPOINT_CORRUPT]
    infos = []
    for step, path in run.checkpoint_files():
        try:
            st = path.stat()
        except OSError:  # rotated away between listing and stat
            continue
        info = CheckpointInfo(step, path, st.st_size, st.st_mtime, valid=None, best=step == best_step)
        if verify:
            info.error = verify_checkpoint(path)
            info.valid = not info.error
        else:
            reports = [e for e in corrupt if step_of(e) == step and (number(e.get("time")) or 0) + 1 >= st.st_mtime]
            if reports:
                info.valid, info.error = False, str(reports[-1].get("error", "reported corrupt by the trainer"))
        infos.append(info)
    return infos


class CheckpointManager:
    """Rotation (keep_last + best), disk guard and recovery for one run directory."""

    def __init__(
        self,
        run: RunDir,
        cfg: CheckpointConfig,
        on_event: Callable[..., None] | None = None,
        log: Callable[[str], None] = print,
    ):
        """on_event(name, step, **fields) receives every checkpoint event (see records.Event)."""
        self.run = run
        self.cfg = cfg
        self.on_event = on_event or (lambda name, step, **fields: None)
        self.log = log
        from voxtrain.metrics import metric_direction

        self.best = BestTracker(cfg.best_by, metric_direction(cfg.best_by))
        self.corrupt: list[tuple[int, Path, str]] = []  # (step, path, why) found by load_latest

    # -- saving -------------------------------------------------------------------------
    def save(self, state: dict, step: int) -> Path | None:
        """Save a checkpoint; returns its path, or None when it was skipped for lack of space.

        VOXTRAIN_TEST_SLOW_WRITE_S slows the write of checkpoints only (tests kill mid-save)."""
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.run.checkpoint(step)
        data = serialize(state)
        need = save_needs(len(data), self.cfg.disk_margin_mb)
        self._make_room(need, exclude=path)
        if shutil.disk_usage(self.run.checkpoints).free < need:
            return self._skip(step, len(data), "not enough free disk space")
        for attempt in (1, 2):
            try:
                write_atomic(data, path, slow=float(os.environ.get("VOXTRAIN_TEST_SLOW_WRITE_S", "0") or 0))
                break
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                self.log(f"checkpoint step {step}: disk full while writing (attempt {attempt}); pruning")
                if attempt == 2 or not self._prune_one(exclude=path):
                    return self._skip(step, len(data), "disk full (ENOSPC) while writing")
        self.on_event(Event.CHECKPOINT_SAVED, step, path=str(path), bytes=len(data))
        self.rotate()
        return path

    def _skip(self, step: int, size: int, why: str) -> None:
        free = shutil.disk_usage(self.run.checkpoints).free
        msg = (
            f"WARNING: checkpoint at step {step} SKIPPED: {why} (needs {size / 2**20:.1f} MB + "
            f"{self.cfg.disk_margin_mb:.0f} MB margin, {free / 2**20:.1f} MB free). Training goes on; "
            f"free disk space or lower checkpoint.keep_last."
        )
        self.log(msg)
        self.on_event(Event.CHECKPOINT_SKIPPED, step, reason=why, bytes=size, free=free)
        return None

    def _candidates(self, exclude: Path | None = None) -> list[tuple[int, Path]]:
        """Rotation checkpoints that may be deleted: never the newest valid one, never best."""
        files = [(s, p) for s, p in self.run.checkpoint_files() if p != exclude]
        newest_valid = next((p for _, p in reversed(files) if not verify_checkpoint(p)), None)
        return [(s, p) for s, p in files if p != newest_valid and s != self.best.step]

    def _prune_one(self, exclude: Path | None = None) -> bool:
        candidates = self._candidates(exclude)
        if not candidates:
            return False
        step, path = candidates[0]
        path.unlink(missing_ok=True)
        self.log(f"deleted checkpoint {path.name} to make room for a new save")
        self.on_event(Event.CHECKPOINT_PRUNED, step, path=str(path), reason="disk space")
        return True

    def _make_room(self, need: int, exclude: Path) -> None:
        while shutil.disk_usage(self.run.checkpoints).free < need and self._prune_one(exclude):
            pass

    def rotate(self) -> None:
        files = self.run.checkpoint_files()
        keep = {p for _, p in files[-self.cfg.keep_last :]}
        for step, path in files:
            if path in keep or (self.cfg.keep_best and step == self.best.step):
                continue
            path.unlink(missing_ok=True)
            self.on_event(Event.CHECKPOINT_PRUNED, step, path=str(path), reason="rotation")

    # -- best model export ----------------------------------------------------------------
    def export_guarded(self, size: int, write: Callable[[], None], **fields: Any) -> bool:
        """Run `write` (an atomic export of about `size` bytes) under the same disk rule as a
        save: skipped with an event when the disk cannot hold it or fills while writing."""
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.run.checkpoints).free
        if free < save_needs(size, self.cfg.disk_margin_mb):
            self.log(f"WARNING: best-model export skipped: not enough disk space ({free >> 20} MB free)")
            self.on_event(Event.EXPORT_SKIPPED, self.best.step, reason="not enough free disk space", bytes=size)
            return False
        try:
            write()
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            self.on_event(Event.EXPORT_SKIPPED, self.best.step, reason="disk full (ENOSPC) while writing", bytes=size)
            return False
        self.on_event(Event.BEST_EXPORTED, self.best.step, val_mel_loss=self.best.val_mel, best_by=self.best.metric,
                      value=self.best.value, path=str(self.run.best_export), **fields)
        return True

    def export_best(self, model_state: dict, meta: dict[str, Any]) -> Path | None:
        """Write the best model's inference export, under the same disk rule as a save."""
        written = self.export_guarded(weights_bytes(model_state),
                                      lambda: export_weights(model_state, meta, self.run.best_export))
        return self.run.best_export if written else None

    # -- loading ------------------------------------------------------------------------
    def load_latest(self) -> tuple[TrainingState, Path] | None:
        """The newest checkpoint that loads and validates; corrupt ones are reported, kept on disk."""
        for step, path in reversed(self.run.checkpoint_files()):
            try:
                state = TrainingState.from_dict(load_state(path), path)
            except CheckpointError as err:
                self.log(f"WARNING: skipping corrupt checkpoint {path.name} (left on disk for inspection): {err}")
                self.corrupt.append((step, path, str(err)))
                self.on_event(Event.CHECKPOINT_CORRUPT, step, path=str(path), error=str(err))
                continue
            self.best = BestTracker.from_state(state.best, self.best.metric, self.best.direction)
            return state, path
        return None
