"""Checkpoints that never corrupt and never fill the disk (DESIGN.md section 4).

A save serialises the state in memory first, so its exact size is known before a byte
touches the disk; it is written to a temporary name in the same directory, fsynced,
renamed over the final name and the directory fsynced. Loading uses weights_only=True
everywhere, so a checkpoint received from someone else can never run code.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxtrain.atomic import write_atomic
from voxtrain.config import CheckpointConfig
from voxtrain.ops.rundir import RunDir, export_sidecar

REQUIRED_KEYS = ("model", "optimizer", "step", "epoch", "batch_in_epoch", "rng", "config", "symbols")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or is not a voxtrain checkpoint."""


def serialize(state: dict) -> memoryview:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()


def load_state(path: Path, mmap: bool = False) -> dict:
    """Load a checkpoint safely; raises CheckpointError naming the file and the reason."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        why = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects beyond tensors and plain data "
            f"(a pickle that could run code). Only load checkpoints you trust, re-exported with "
            f"`voxtrain export`. Detail: {why}"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/zipfile errors for damaged files
        raise CheckpointError(f"{path}: unreadable or truncated ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a voxtrain checkpoint (top level is {type(state).__name__})")
    return state


def validate_training_state(state: dict, path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a resumable voxtrain checkpoint; missing {', '.join(missing)}")


@dataclass
class CheckpointInfo:
    step: int
    path: Path
    size: int
    mtime: float
    valid: bool
    error: str = ""
    best: bool = False


class CheckpointManager:
    """Rotation (keep_last + best), disk guard and recovery for one run directory."""

    def __init__(
        self,
        run: RunDir,
        cfg: CheckpointConfig,
        on_event: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.run = run
        self.cfg = cfg
        self.on_event = on_event or (lambda event: None)
        self.log = log
        self.best_step: int | None = None
        self.best_loss: float | None = None

    # -- saving -------------------------------------------------------------------------
    def save(self, state: dict, step: int) -> Path | None:
        """Save a checkpoint; returns its path, or None when it was skipped for lack of space.

        VOXTRAIN_TEST_SLOW_WRITE_S slows the write of checkpoints only (tests kill mid-save)."""
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.run.checkpoint(step)
        data = serialize(state)
        need = len(data) + int(self.cfg.disk_margin_mb * 2**20)
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
        self.on_event({"event": "checkpoint_saved", "step": step, "path": str(path), "bytes": len(data)})
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
        self.on_event({"event": "checkpoint_skipped", "step": step, "reason": why, "bytes": size, "free": free})
        return None

    def _candidates(self, exclude: Path | None = None) -> list[tuple[int, Path]]:
        """Rotation checkpoints that may be deleted: never the newest valid one, never best."""
        files = [(s, p) for s, p in self.run.checkpoint_files() if p != exclude]
        newest_valid = next((p for _, p in reversed(files) if self.is_valid(p)), None)
        return [(s, p) for s, p in files if p != newest_valid and s != self.best_step]

    def _prune_one(self, exclude: Path | None = None) -> bool:
        candidates = self._candidates(exclude)
        if not candidates:
            return False
        step, path = candidates[0]
        path.unlink(missing_ok=True)
        self.log(f"deleted checkpoint {path.name} to make room for a new save")
        self.on_event({"event": "checkpoint_pruned", "step": step, "path": str(path), "reason": "disk space"})
        return True

    def _make_room(self, need: int, exclude: Path) -> None:
        while shutil.disk_usage(self.run.checkpoints).free < need and self._prune_one(exclude):
            pass

    def rotate(self) -> None:
        files = self.run.checkpoint_files()
        keep = {p for _, p in files[-self.cfg.keep_last :]}
        for step, path in files:
            if path in keep or (self.cfg.keep_best and step == self.best_step):
                continue
            path.unlink(missing_ok=True)
            self.on_event({"event": "checkpoint_pruned", "step": step, "path": str(path), "reason": "rotation"})

    # -- best model ---------------------------------------------------------------------
    def update_best(self, step: int, val_mel_loss: float) -> bool:
        if self.best_loss is not None and val_mel_loss >= self.best_loss:
            return False
        self.best_step, self.best_loss = step, float(val_mel_loss)
        return True

    # -- loading ------------------------------------------------------------------------
    @staticmethod
    def is_valid(path: Path) -> bool:
        try:
            validate_training_state(load_state(path, mmap=True), path)
            return True
        except CheckpointError:
            return False

    def load_latest(self) -> tuple[dict, Path] | None:
        """The newest checkpoint that loads and validates; corrupt ones are reported, kept on disk."""
        for step, path in reversed(self.run.checkpoint_files()):
            try:
                state = load_state(path)
                validate_training_state(state, path)
            except CheckpointError as err:
                self.log(f"WARNING: skipping corrupt checkpoint {path.name} (left on disk for inspection): {err}")
                self.on_event({"event": "checkpoint_corrupt", "step": step, "path": str(path), "error": str(err)})
                continue
            self.best_step = state.get("best_step")
            self.best_loss = state.get("best_loss")
            return state, path
        return None

    def list(self) -> list[CheckpointInfo]:
        infos = []
        for step, path in self.run.checkpoint_files():
            st = path.stat()
            info = CheckpointInfo(step=step, path=path, size=st.st_size, mtime=st.st_mtime, valid=True)
            try:
                state = load_state(path, mmap=True)
                validate_training_state(state, path)
                if state.get("best_step") is not None:
                    self.best_step = state["best_step"]
            except CheckpointError as err:
                info.valid, info.error = False, str(err)
            infos.append(info)
        for info in infos:
            info.best = info.step == self.best_step
        return infos


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Model weights and their metadata (config, symbols, step) from a training checkpoint
    (.pt) or an inference export (.safetensors + .json sidecar); both load without pickle code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sidecar = export_sidecar(path)
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        return {k: v.float() for k, v in load_file(path).items()}, meta
    state = load_state(path)
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise CheckpointError(f"{path}: holds no model weights (keys: {', '.join(list(state)[:8])})")
    return weights, state


def export_weights(
    model_state: dict[str, torch.Tensor], meta: dict[str, Any], out: Path, fp16: bool = False
) -> Path:
    """Inference export: safetensors weights + a JSON sidecar (config, symbols, provenance)."""
    from safetensors.torch import save as save_safetensors

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model_state.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if fp16 and v.is_floating_point() else v).contiguous()
    write_atomic(save_safetensors(tensors), out)
    sidecar = dict(meta, dtype="float16" if fp16 else "float32", weights=out.name)
    write_atomic(json.dumps(sidecar, indent=1).encode("utf-8"), export_sidecar(out))
    return out
