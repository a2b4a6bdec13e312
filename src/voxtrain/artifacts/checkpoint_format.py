"""The checkpoint format, in one place: what a training checkpoint holds, its version, and
how it is turned into bytes and back.

Every trainer writes `TrainingState.to_dict()` and reads `TrainingState.from_dict()`; the
table in docs/CHECKPOINTS.md is checked against `KEYS` by a test. Format 1 (voxtrain before
the run harness) had one optimizer under `optimizer`/`scaler` and the best as
`best_step`/`best_loss`: `from_dict` still reads it, so old runs resume.

torch is imported only where a checkpoint is really read or written: `voxtrain status`
lists checkpoints without it.
"""

from __future__ import annotations

import io
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.errors import VoxtrainError

FORMAT = 2
# The optimizer slot that trains `model`; a critic's slot is named after its critic.
MODEL_SLOT = "model"

# Every top-level key of a checkpoint, and what it holds (docs/CHECKPOINTS.md shows this table).
KEYS: dict[str, str] = {
    "format": "format version (2; format 1 still loads)",
    "mode": "`train`, `finetune` or `vocoder`: which task trained it",
    "model": "the trained model's state dict (the acoustic model, or the HiFi-GAN generator)",
    "critics": "each critic's state dict by name (empty when the task has none)",
    "optimizers": "each optimizer's state dict by slot: `model`, then one per critic",
    "scaler": "Accelerate's fp16 gradient scaler (one for every optimizer it prepared), or `None`",
    "step": "optimizer steps done (never micro-batches)",
    "epoch": "the data order's epoch",
    "batch_in_epoch": "the next batch of the epoch to draw",
    "rng": "every RNG the loop uses: torch CPU, CUDA, NumPy, Python",
    "config": "the run's resolved config",
    "symbols": "the symbol table",
    "best": "the best validation so far: metric, step, value, val_mel",
    "stop_rules": "the targets' and the early stop's counters",
    "nonfinite_skipped": "steps skipped for a non-finite loss or gradient",
    "dataset_fingerprint": "the feature store's fingerprint",
    "time": "when it was saved (seconds since the epoch)",
    "versions": "voxtrain, torch, accelerate and Python versions",
    "facts": "what the task records about its inputs (below), each also at the top level",
}
# The task facts (`facts`), each also written at the top level, where an export and a
# fine-tune read them from a checkpoint as from an export's sidecar.
FACT_KEYS: dict[str, str] = {
    "symbol_clips": "acoustic: clips per symbol of all the data behind the weights",
    "speaker_stats": "acoustic: the speaker's pitch and energy statistics",
    "acoustic_checkpoint": "vocoder: the acoustic checkpoint whose mels it learns",
    "corpus": "vocoder: the corpus folder of the real audio",
    "features": "vocoder: the feature store",
    "pairs_signature": "vocoder: the content hash of its inputs (a resume must match it)",
    "start_generator": "vocoder: the bundled generator it started from, `ljspeech` or `universal`",
    "joint": "vocoder: whether the acoustic model trained with the generator (then `model` holds both)",
}
# Without these a file is not a resumable checkpoint (format 1 spelled `optimizers` as `optimizer`).
REQUIRED = ("model", "step", "epoch", "batch_in_epoch", "rng", "config", "symbols")


class CheckpointError(VoxtrainError, RuntimeError):
    """A checkpoint could not be read or is not a voxtrain checkpoint."""


@dataclass
class TrainingState:
    """One checkpoint, typed. Tensors stay as they are; the rest is plain data."""

    mode: str
    model: dict
    optimizers: dict[str, dict]
    step: int
    epoch: int
    batch_in_epoch: int
    rng: dict
    config: dict
    symbols: dict
    critics: dict[str, dict] = field(default_factory=dict)
    scaler: dict | None = None
    best: dict[str, Any] = field(default_factory=dict)
    stop_rules: dict[str, Any] = field(default_factory=dict)
    nonfinite_skipped: int = 0
    dataset_fingerprint: str | None = None
    time: float = field(default_factory=time.time)
    versions: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in KEYS}
        return {**self.facts, **out}

    @classmethod
    def from_dict(cls, state: dict[str, Any], path: Path | str = "checkpoint") -> TrainingState:
        """A loaded checkpoint of any format; CheckpointError naming what is missing."""
        missing = [k for k in REQUIRED if k not in state]
        if "optimizers" not in state and "optimizer" not in state:
            missing.append("optimizers")
        if missing:
            raise CheckpointError(f"{path}: not a resumable voxtrain checkpoint; missing {', '.join(missing)}")
        if int(state.get("format", 1)) < 2:
            return cls._from_format_1(state)
        return cls(**{k: state[k] for k in KEYS if k in state})

    @classmethod
    def _from_format_1(cls, state: dict[str, Any]) -> TrainingState:
        best = state.get("best")
        if not isinstance(best, dict):  # before checkpoint.best_by: the step and its mel loss
            best = {"metric": "val_mel", "step": state.get("best_step"), "value": state.get("best_loss"),
                    "val_mel": state.get("best_loss")}
        facts = {k: state[k] for k in FACT_KEYS if k in state}
        return cls(
            mode=state.get("mode", "train"), model=state["model"], optimizers={MODEL_SLOT: state["optimizer"]},
            step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"], rng=state["rng"],
            config=state["config"], symbols=state["symbols"], scaler=state.get("scaler"), best=best,
            stop_rules=state.get("stop_rules") or {}, nonfinite_skipped=int(state.get("nonfinite_skipped", 0)),
            dataset_fingerprint=state.get("dataset_fingerprint"), time=float(state.get("time", 0.0)),
            versions=state.get("versions") or {}, facts=facts, format=1,
        )


def serialize(state: dict) -> memoryview:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()


def load_state(path: Path, mmap: bool = False) -> dict:
    """Load a checkpoint safely (weights_only: it can never run code); raises CheckpointError
    naming the file and the reason."""
    import torch

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
    TrainingState.from_dict(state, path)


def verify_checkpoint(path: Path) -> str:
    """"" when the checkpoint loads and holds a resumable state, else why not."""
    try:
        validate_training_state(load_state(path, mmap=True), path)
    except CheckpointError as err:
        return str(err)
    return ""
