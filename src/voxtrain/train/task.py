"""The contract between the run harness (`train/engine.py`) and what it trains.

The harness owns everything a run is: the lock, resume, checkpoints and their disk guard,
the best export's disk rule, signals, stop rules, exit codes, the out-of-memory retry, the
non-finite skip, precision and Accelerate. A task owns only what is its own: its models and
optimizers, its data order, one optimizer step, its validation, and what its best export
and its checkpoint record about its inputs. The acoustic model and the HiFi-GAN vocoder are
two tasks; a critic is one more module and one more optimizer slot in a task's step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from accelerate import Accelerator

    from voxtrain.artifacts.checkpoint_format import TrainingState
    from voxtrain.artifacts.checkpoints import CheckpointManager
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.recorder import RunRecorder
    from voxtrain.config import Config
    from voxtrain.train.stopping import StopRules


@dataclass
class LoopSettings:
    """The loop's cadence, from the task's config section (named for the advice in messages)."""

    section: str  # "training" | "vocoder_training"
    max_steps: int
    log_every: int
    validate_every: int
    save_every: int
    max_nonfinite_steps: int
    grad_accum: int = 1
    # Validate the untouched model before the first step and at max_steps: a fine-tune whose
    # best may be where it started needs that baseline.
    validate_at_ends: bool = False


@dataclass
class OptimizerSlot:
    """One optimizer of a step, with its own schedule and gradient clip. The checkpoint keeps
    its state under its slot name; its LR is a pure function of the step, so it has none."""

    optimizer: torch.optim.Optimizer  # as Accelerate prepared it
    lr: Callable[[int], float]  # LR of the n-th optimizer step, 1-based
    clip: float  # max global gradient norm; 0 measures the norm without clipping


@dataclass
class StepResult:
    losses: dict[str, Tensor]  # mean over the step's micro-batches (and processes), on the device
    grad_norm: Tensor
    frames: int  # real frames in this process's micro-batches
    padded: int  # frames including padding
    applied: bool  # False: non-finite loss or gradient, the optimizer step was skipped
    lr: float = 0.0


@dataclass
class Validation:
    """One validation's outcome: what the stop rules see, and whether it may become the best."""

    val_mel: float | None
    scores: dict[str, float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    may_be_best: bool = True


@dataclass
class RunContext:
    """What the harness hands a task's opener: the run it holds, and the checkpoint it resumes."""

    run: RunDir
    accelerator: Accelerator
    precision: str
    is_main: bool
    latest: tuple[TrainingState, Path] | None
    # Checkpoints that failed to load while looking for one to resume: (step, path, why).
    corrupt: list[tuple[int, Path, str]] = field(default_factory=list)

    @property
    def resume_state(self) -> TrainingState | None:
        return self.latest[0] if self.latest is not None else None


class MicroBatch(Protocol):
    """A host-side batch the harness can place, count and, after an out-of-memory, split."""

    def __len__(self) -> int: ...
    def to(self, device: torch.device, non_blocking: bool = False) -> Any: ...
    def split(self, parts: int) -> list[Any]: ...
    def frame_counts(self) -> tuple[int, int]: ...


class Task(Protocol):
    config: Config
    mode: str  # the checkpoint's and run.json's mode
    description: str  # "STARTING ...", "RESUMING ... from PATH (step N)"
    loop: LoopSettings
    stop_rules: StopRules
    model: torch.nn.Module  # bare (not a DDP wrapper): its weights are the checkpoint's `model`
    critics: dict[str, torch.nn.Module]
    slots: dict[str, OptimizerSlot]  # `model` first, then one per critic
    symbols: dict
    dataset_fingerprint: str | None
    run_facts: dict[str, Any]  # what run.json records about the inputs

    def batches(self, epoch: int, batch_in_epoch: int) -> Iterator[tuple[int, int, MicroBatch]]:
        """Endless (epoch, batches consumed in the epoch, micro-batch) from a saved position."""

    def step(self, micro_batches: list[MicroBatch], step: int) -> StepResult:
        """Optimizer step number `step + 1` over the micro-batches, every slot of it."""

    def attach(self, recorder: RunRecorder | None) -> None:
        """The run's recorder (None on ranks other than 0), once it exists."""

    def validate(self, step: int) -> Validation | None:
        """Rank 0 only; None when there is nothing to validate on."""

    def export_best(self, ckpt: CheckpointManager, validation: Validation) -> None:
        """Write the new best's inference files through `ckpt.export_guarded`."""

    def facts(self) -> dict[str, Any]:
        """What the checkpoint records about the task's inputs (checkpoint_format.FACT_KEYS)."""

    def announce(self) -> dict[str, Any]:
        """Log what is trained; the `start` event's task-specific fields."""

    def advice(self, trouble: str) -> str:
        """What to change after `out_of_memory` or `nonfinite` stopped the run."""
