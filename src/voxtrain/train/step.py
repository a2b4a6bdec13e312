"""One optimizer step: the engine runs it, and bench/train_throughput.py times this very code.

A step is forward + loss + backward over `grad_accum` micro-batches, one global gradient
clip, then either the optimizer step or, when the loss or gradient is not finite, a skip
that leaves the weights as they were. Loss terms stay on the device as tensors: the only
host sync per step is the finiteness check the skip decision needs (on a GPU every
`float()` would be one more); the engine syncs the summed terms only when it logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from voxtrain.train.task import MicroBatch, OptimizerSlot, StepResult

# objective(model, device batch, step) -> (loss to minimise, named loss terms)
Objective = Callable[[torch.nn.Module, Any, int], tuple[Tensor, dict[str, Tensor]]]


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError on CPU)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _simulate_out_of_memory(padded_frames: int) -> None:
    """VOXTRAIN_TEST_OOM_ABOVE_FRAMES=N makes a micro-batch of more than N padded frames fail
    as CUDA's out-of-memory does. A real CPU allocation failure cannot be provoked here
    without breaking everything else in the process (thread stacks, oneDNN scratch space),
    so tests of the recovery path use this; nothing else sets it."""
    limit = int(os.environ.get("VOXTRAIN_TEST_OOM_ABOVE_FRAMES", "0") or 0)
    if limit and padded_frames > limit:
        raise torch.OutOfMemoryError(
            f"simulated: {padded_frames} padded frames > {limit} (VOXTRAIN_TEST_OOM_ABOVE_FRAMES)")


def train_step(
    model: torch.nn.Module,
    objective: Objective,
    slot: OptimizerSlot,
    accelerator,
    micro_batches: list[MicroBatch],
    step: int,
    check_grad_norm: bool = True,
) -> StepResult:
    """Run optimizer step number `step + 1` of one slot over host-side micro-batches.

    `accelerator` is an accelerate.Accelerator: it places the batches, applies autocast and
    the gradient scaler, and defers the DDP gradient sync to the last micro-batch. A task
    with critics calls this once per slot, each with its own model and objective.
    `check_grad_norm=False` for fp16, whose scaler itself skips steps with overflowing gradients.
    """
    optimizer, lr = slot.optimizer, slot.lr(step + 1)
    # Gradients left on this slot's parameters by another slot's backward (a generator's loss
    # flows through its critic) must not leak into this step: a resume would not have them.
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, Tensor] = {}
    frames = padded = 0
    for k, host_batch in enumerate(micro_batches):
        real, total = host_batch.frame_counts()  # counted on the host copy: no device sync
        _simulate_out_of_memory(total)
        frames, padded = frames + real, padded + total
        batch = host_batch.to(accelerator.device, non_blocking=True)
        sync = k == n - 1 or accelerator.num_processes == 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
            loss, parts = objective(model, batch, step)
        accelerator.backward(loss / n)
        for name, value in parts.items():
            sums[name] = sums[name] + value / n if name in sums else value / n
    if accelerator.num_processes > 1:
        # Every rank must see the same loss so that all skip or all step together.
        names = sorted(sums)
        reduced = accelerator.reduce(torch.stack([sums[k].float() for k in names]), reduction="mean")
        sums = dict(zip(names, reduced.unbind(), strict=True))
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), slot.clip if slot.clip > 0 else float("inf"))
    grad_norm = torch.as_tensor(grad_norm, device=accelerator.device)
    finite = torch.isfinite(sums["total"])
    if check_grad_norm:
        finite = finite & torch.isfinite(grad_norm)
    applied = bool(finite.item())
    if applied:
        for group in optimizer.param_groups:
            # A group may run at a fixed ratio to the slot's schedule (a joint fine-tune's
            # acoustic model beside its generator).
            group["lr"] = lr * group.get("lr_scale", 1.0)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, grad_norm.detach(), frames, padded, applied, lr)


def adversarial_step(
    generator: torch.nn.Module,
    objective: Objective,
    critic: torch.nn.Module | None,
    critic_objective: Objective | None,
    slots: dict[str, OptimizerSlot],
    accelerator,
    micro_batches: list[MicroBatch],
    step: int,
    check_grad_norm: bool = True,
) -> StepResult:
    """A generator's step, then (with a critic) the critic's on what the generator just made:
    the objective keeps its output, so the generator runs once. A skipped generator step skips
    the critic's too, so a skip leaves every weight as it was; a non-finite critic step is
    skipped alone."""
    result = train_step(generator, objective, slots["model"], accelerator, micro_batches, step, check_grad_norm)
    if critic is not None and critic_objective is not None and result.applied:
        judged = train_step(critic, critic_objective, slots["critic"], accelerator, micro_batches, step,
                            check_grad_norm)
        result.losses |= {"critic": judged.losses["critic"]}
    return result
