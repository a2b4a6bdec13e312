"""Process-level set-up of a trainer: Accelerate, loader workers, per-rank logging, log windows."""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

from voxtrain.precision import resolve_precision


def make_accelerator(precision: str):
    """An Accelerator for the resolved precision, and that precision ("fp32", "bf16", "fp16")."""
    from accelerate import Accelerator

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = resolve_precision(precision, device)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[resolved]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # Without cpu=True Accelerate only builds a process group on an accelerator: torchrun
    # workers on a CPU-only host would each train alone, all believing they are rank 0.
    acc = Accelerator(mixed_precision=mixed, cpu=device.type == "cpu" and world > 1)
    if acc.num_processes != world:
        raise RuntimeError(f"WORLD_SIZE is {world} but Accelerate set up {acc.num_processes} process(es); "
                           "launch with `accelerate launch --multi_gpu --num_processes N` or torchrun")
    return acc, resolved


def own_process_group(_worker_id: int) -> None:
    """Move a loader worker out of the trainer's process group. A group-wide SIGTERM/SIGINT
    (torchrun forwards signals with killpg; Ctrl-C signals the foreground group) would
    otherwise kill the workers and crash the trainer before it saves. Ignoring the signals
    instead would hang the exit: multiprocessing stops daemon workers with SIGTERM."""
    os.setpgid(0, 0)


def quiet_other_ranks(is_main: bool) -> None:
    """Rank 0 owns the run's log file; other ranks keep only warnings on their console."""
    if is_main:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setLevel(logging.WARNING)


class LogWindow:
    """Sums over the steps between two log records. Loss terms are summed as device tensors
    and read back once, when the window is logged."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps, self.frames, self.padded, self.seconds = 0, 0, 0, 1e-9

    def add(self, losses: dict[str, Tensor], frames: int, padded: int, seconds: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v.detach() if k in self.sums else v.detach()
        self.steps += 1
        self.frames += frames
        self.padded += padded
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        names = sorted(self.sums)
        if not names:
            return {}
        values = torch.stack([self.sums[k].double() for k in names]).cpu().tolist()  # the one sync
        return {k: v / max(self.steps, 1) for k, v in zip(names, values, strict=True)}
