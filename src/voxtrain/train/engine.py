"""The run harness: one explicit training loop on Accelerate for every task, readable in one sitting.

A "step" is always an optimizer step. The loop stops at a stage target (`until_step`), at
max_steps, at a wall-clock deadline (`stop_at`: after finishing the step, validating it unless
it just was, and saving, so a stage cut short by its time budget keeps its work), when the
targets hold or the early stop fires (after saving), on SIGTERM/SIGINT (after finishing the
step and saving), after too many consecutive non-finite steps (after saving the last good
state), or when even single clips do not fit in memory. What trains is a task
(`train/task.py`): the acoustic model (`train/acoustic.py`) and the HiFi-GAN vocoder
(`vocoder_training/task.py`) run through this same loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from voxtrain.artifacts.best import BestTracker
from voxtrain.artifacts.checkpoint_format import TrainingState
from voxtrain.artifacts.checkpoints import CheckpointManager
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import RunLock
from voxtrain.artifacts.metrics_format import Event
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.run_info import record_session
from voxtrain.atomic import remove_temp_files, write_text_atomic
from voxtrain.config import Config
from voxtrain.malloc import retain_freed_memory
from voxtrain.report import refresh_report
from voxtrain.train.runtime import LogWindow, make_accelerator, quiet_other_ranks
from voxtrain.train.signals import StopRequest
from voxtrain.train.state import capture_rng, restore_rng
from voxtrain.train.step import is_out_of_memory
from voxtrain.train.stopping import StopDecision
from voxtrain.train.task import MicroBatch, RunContext, StepResult, Task, Validation
from voxtrain.versions import library_versions, versions_line

log = logging.getLogger("voxtrain.train")

EXIT_OK, EXIT_NONFINITE, EXIT_NO_CHECKPOINT, EXIT_OUT_OF_MEMORY = 0, 3, 4, 5


@dataclass
class TrainResult:
    exit_code: int
    step: int
    reason: str
    best_step: int | None = None
    best_val_mel: float | None = None


class TaskOpener(Protocol):
    """Builds a task once the harness holds the run and knows the checkpoint it resumes."""

    config: Config  # as asked; the task's own config may differ (a resume takes the checkpoint's model)
    precision: str

    def open(self, ctx: RunContext) -> Task: ...


class Engine:
    def __init__(self, opener: TaskOpener, run_dir: Path, until_step: int | None = None,
                 stop_at: float | None = None):
        retain_freed_memory()
        self.accelerator, self.precision = make_accelerator(opener.precision)
        self.is_main = self.accelerator.is_main_process
        quiet_other_ranks(self.is_main)
        self.run, self.until_step, self.stop_at = RunDir(run_dir), until_step, stop_at
        # Only rank 0 writes to the run directory, so only it needs to hold the run's lock.
        self.lock = RunLock(self.run, log.warning).acquire() if self.is_main else None
        self.recorder: RunRecorder | None = None
        try:
            self._open(opener)
        except BaseException:
            self.close()
            raise

    def _open(self, opener: TaskOpener) -> None:
        if self.is_main:
            self.run.create()
            for stale in remove_temp_files(self.run.checkpoints):
                log.warning("removed %s left by an interrupted save", stale.name)
        finder = CheckpointManager(self.run, opener.config.checkpoint, log=log.warning)
        latest = finder.load_latest()
        self.task = opener.open(RunContext(self.run, self.accelerator, self.precision, self.is_main, latest,
                                           finder.corrupt))
        self.cfg, self.loop, self.stop_rules = self.task.config, self.task.loop, self.task.stop_rules
        self.resumed, self.resumed_from = latest if latest is not None else (None, None)
        self.versions = library_versions()
        if self.is_main:
            write_text_atomic(self.run.config, self.cfg.to_yaml())
            record_session(self.run, self.task.mode, self.resumed.step if self.resumed else 0,
                           self.task.description, self.versions, **self.task.run_facts)
            self.recorder = RunRecorder(self.run, self.resumed.step if self.resumed else None, config=self.cfg,
                                        log=log.warning)
        self.task.attach(self.recorder)
        self.ckpt = CheckpointManager(self.run, self.cfg.checkpoint, on_event=self._event, log=log.warning)
        self.corrupt = finder.corrupt
        self.step, self.epoch, self.batch_in_epoch, self.nonfinite_total = 0, 0, 0, 0
        if self.resumed is not None:
            self._restore(self.resumed)
        self.stop = StopRequest()

    # -- events and state ----------------------------------------------------------------
    def _event(self, name: str, step: int | None = None, **fields) -> None:
        if self.recorder is not None:
            self.recorder.event(name, self.step if step is None else step, **fields)

    def _restore(self, state: TrainingState) -> None:
        task = self.task
        task.model.load_state_dict(state.model)
        for name, critic in task.critics.items():
            if name not in state.critics:  # the config added a critic since the checkpoint
                log.warning("the checkpoint holds no %s: it starts fresh (and warms up again)", name)
                continue
            critic.load_state_dict(state.critics[name])
        for name in set(state.critics) - set(task.critics):
            log.warning("the checkpoint's %s is not used: this run's config trains without it", name)
        for name, slot in task.slots.items():
            if name in state.optimizers:
                slot.optimizer.load_state_dict(state.optimizers[name])
        if state.scaler is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state.scaler)
        self.step, self.epoch, self.batch_in_epoch = state.step, state.epoch, state.batch_in_epoch
        self.nonfinite_total = state.nonfinite_skipped
        self.ckpt.best = BestTracker.from_state(state.best, self.ckpt.best.metric, self.ckpt.best.direction)
        self.stop_rules.restore(state.stop_rules)
        # Every rank is seeded alike and consumes its RNG alike, so rank 0's saved state is
        # every rank's state: restoring it everywhere reproduces the unbroken run.
        restore_rng(state.rng)

    def training_state(self) -> TrainingState:
        task, scaler = self.task, self.accelerator.scaler
        return TrainingState(
            mode=task.mode, model=task.model.state_dict(),
            critics={name: critic.state_dict() for name, critic in task.critics.items()},
            optimizers={name: slot.optimizer.state_dict() for name, slot in task.slots.items()},
            scaler=scaler.state_dict() if scaler is not None else None,
            step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, rng=capture_rng(),
            config=self.cfg.to_dict(), symbols=task.symbols, best=self.ckpt.best.state(),
            stop_rules=self.stop_rules.state(), nonfinite_skipped=self.nonfinite_total,
            dataset_fingerprint=task.dataset_fingerprint, versions=self.versions, facts=task.facts(),
        )

    def save(self) -> bool:
        """Save a checkpoint of this step (rank 0); False when the run still has none on disk
        after too many saves in a row were skipped for lack of space (every rank agrees)."""
        self.accelerator.wait_for_everyone()
        if self.is_main and self._last_saved != self.step:
            if self.ckpt.save(self.training_state().to_dict(), self.step) is not None:
                self._last_saved, self._skipped_saves = self.step, 0
            else:
                self._skipped_saves += 1
        hopeless = self._skipped_saves >= self.cfg.checkpoint.max_skipped_without_checkpoint and \
            not self.run.checkpoint_files()
        self.accelerator.wait_for_everyone()
        return not self._any_rank(hopeless)

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on one: all of them leave the loop at the same step."""
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    # -- the loop ----------------------------------------------------------------------
    def train(self) -> TrainResult:
        target = min(self.until_step or self.loop.max_steps, self.loop.max_steps)
        self._last_saved = self.step if self.resumed is not None else -1
        self._stop_cause: str | None = None
        self._skipped_saves = 0
        self._announce(target)
        for step, path, why in self.corrupt:  # found before the recorder existed
            self._event(Event.CHECKPOINT_CORRUPT, step, path=str(path), error=why)
        if self.step >= target:
            return self._result(EXIT_OK, f"already at step {self.step} >= target {target}")
        self.stop.install()
        try:
            if self.loop.validate_at_ends and self.resumed is None:
                self._validate()  # the untouched model: the baseline every later validation is read against
            reason, code = self._loop(target)
            # Still under the stop handler: a second signal during this save must exit at once
            # (the handler left the kernel's default action), not raise KeyboardInterrupt in Python.
            self.save()
        finally:
            self.stop.uninstall()
        self._event(Event.STOP, reason=reason, exit_code=code, cause=self._stop_cause)
        log.info("%s at step %d", reason, self.step)
        self.accelerator.end_training()
        return self._result(code, reason)

    def _loop(self, target: int) -> tuple[str, int]:
        """Optimizer steps until the target, a stop request or too many non-finite steps."""
        loop = self.loop
        batches = self.task.batches(self.epoch, self.batch_in_epoch)
        window, consecutive_bad = LogWindow(), 0
        while self.step < target:
            if self._any_rank(self.stop.requested):
                self._stop_cause = "signal"
                return f"stopped by {self.stop.signal_name or 'signal on another rank'}", EXIT_OK
            t0 = time.perf_counter()
            drawn = [next(batches) for _ in range(loop.grad_accum)]
            result = self._step([batch for _, _, batch in drawn])
            if result is None:
                return self._out_of_memory_message([batch for _, _, batch in drawn]), EXIT_OUT_OF_MEMORY
            self.epoch, self.batch_in_epoch = drawn[-1][0], drawn[-1][1]
            if not result.applied:
                self.nonfinite_total += 1
                consecutive_bad += 1
                self._event(Event.NONFINITE_SKIP, self.step, loss=float(result.losses["total"]),
                            grad_norm=float(result.grad_norm), consecutive=consecutive_bad)
                log.warning("non-finite loss/gradient at step %d: step skipped (%d in a row)",
                            self.step + 1, consecutive_bad)
                if consecutive_bad >= loop.max_nonfinite_steps:
                    return self._nonfinite_message(consecutive_bad), EXIT_NONFINITE
                continue
            consecutive_bad = 0
            self.step += 1
            window.add(result.losses, result.frames, result.padded, time.perf_counter() - t0)
            if self.step % loop.log_every == 0 or self.step == target:
                self._log_train(window, result, target)
                window = LogWindow()
            due = self.step % loop.validate_every == 0 or (loop.validate_at_ends and self.step == loop.max_steps)
            if due and (decision := self._validate()) is not None:
                self._stop_cause = decision.cause
                return decision.reason, EXIT_OK
            if self.step % loop.save_every == 0 and not self.save():
                return self._no_checkpoint_message(), EXIT_NO_CHECKPOINT
            if self.step < target and self._any_rank(self.stop_at is not None and time.time() >= self.stop_at):
                return self._out_of_time(due)
        return f"reached target step {target}", EXIT_OK

    def _out_of_time(self, validated: bool) -> tuple[str, int]:
        """The deadline passed: the last step is validated (a stage stopped before its first
        validation would otherwise leave no best), then the loop ends and the run saves."""
        self._stop_cause = "time_budget"
        if not validated and (decision := self._validate()) is not None:
            self._stop_cause = decision.cause
            return decision.reason, EXIT_OK
        return f"stopped at its time budget (step {self.step})", EXIT_OK

    def _step(self, micro_batches: list[MicroBatch]) -> StepResult | None:
        """One optimizer step. When a batch does not fit in memory, the step is redone with each
        micro-batch split in two, then four..., so it stays one optimizer step over the same
        clips; None when even single clips do not fit (or with several processes, where one
        rank retrying alone would leave the others waiting in the gradient all-reduce)."""
        while True:
            try:
                return self.task.step(micro_batches, self.step)
            except (RuntimeError, torch.OutOfMemoryError) as err:
                if not is_out_of_memory(err):
                    raise
                for slot in self.task.slots.values():  # the failed attempt's partial gradients
                    slot.optimizer.zero_grad(set_to_none=True)
                if self.accelerator.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.accelerator.num_processes > 1 or all(len(b) == 1 for b in micro_batches):
                    log.error("out of memory at step %d: %s", self.step + 1, str(err).splitlines()[0])
                    return None
                micro_batches = [part for b in micro_batches for part in b.split(2)]
                log.warning("out of memory at step %d: retrying the step as %d smaller micro-batches (the "
                            "same clips, still one optimizer step); %s", self.step + 1, len(micro_batches),
                            self.task.advice("out_of_memory_retry"))
                self._event(Event.OUT_OF_MEMORY_RETRY, self.step, micro_batches=len(micro_batches))

    def _out_of_memory_message(self, micro_batches: list[MicroBatch]) -> str:
        padded = max(b.frame_counts()[1] for b in micro_batches)
        return (
            f"out of memory at step {self.step + 1} on {self.accelerator.device}: a micro-batch of up to "
            f"{max(len(b) for b in micro_batches)} clips ({padded} padded frames) does not fit. Saved the last "
            f"good weights (step {self.step}) and stopped. {self.task.advice('out_of_memory')}"
        )

    def _nonfinite_message(self, n: int) -> str:
        return (
            f"{n} consecutive steps had a non-finite loss or gradient; saved the last good weights "
            f"(step {self.step}) and stopped. {self.task.advice('nonfinite')}"
        )

    def _no_checkpoint_message(self) -> str:
        ck = self.cfg.checkpoint
        return (
            f"{self._skipped_saves} checkpoint saves in a row were skipped for lack of disk space and the run has "
            f"no checkpoint at all in {self.run.checkpoints}: stopped at step {self.step} rather than train on "
            f"with nothing to resume from. Free disk space, lower checkpoint.disk_margin_mb ({ck.disk_margin_mb:g} "
            f"MB) or checkpoint.keep_last ({ck.keep_last}), or use a --run on a larger disk."
        )

    def _validate(self) -> StopDecision | None:
        """The task's validation, the best checkpoint and the stop rules; the decision to end
        the run here, which every rank gets."""
        self.accelerator.wait_for_everyone()
        decision = None
        if self.is_main:
            with torch.random.fork_rng(devices=[]):  # validation never shifts the training RNG
                validation = self.task.validate(self.step)
            if validation is not None:
                self._update_best(validation)
                decision = self.stop_rules.observe(validation.metrics)
            refresh_report(self.run, log.warning)
        self.accelerator.wait_for_everyone()
        if not self._any_rank(decision is not None):
            return None
        return decision or StopDecision("stop_rules", "stopped by rank 0's stop rules")

    def _update_best(self, v: Validation) -> None:
        if v.may_be_best and v.val_mel is not None and self.ckpt.best.consider(self.step, v.val_mel, v.scores):
            self.task.export_best(self.ckpt, v)

    def _log_train(self, window: LogWindow, last: StepResult, target: int) -> None:
        means = window.means()
        frames, padded = window.frames, window.padded
        if self.accelerator.num_processes > 1:  # frames of every rank: the global batch's speed
            counts = torch.tensor([frames, padded], dtype=torch.float64, device=self.accelerator.device)
            frames, padded = (int(v) for v in self.accelerator.reduce(counts, reduction="sum").tolist())
        if self.recorder is None:
            return
        grad_norm = float(last.grad_norm)
        record = self.recorder.train(
            self.step, epoch=self.epoch, lr=last.lr, grad_norm=grad_norm,
            frames_per_s=frames / window.seconds, steps_per_s=window.steps / window.seconds,
            padding_fraction=1 - frames / max(padded, 1), target_step=target, max_steps=self.loop.max_steps,
            nonfinite_skipped=self.nonfinite_total, **{f"loss_{k}": v for k, v in means.items()},
            **self._device_memory(),
        )
        log.info(
            "step %d/%d | loss %.4f (mel %.4f) | lr %.2e | grad %.2f | %.2f steps/s | %.0f frames/s",
            self.step, target, means.get("total", float("nan")), means.get("mel", float("nan")), last.lr,
            grad_norm, record["steps_per_s"], record["frames_per_s"],
        )

    def _device_memory(self) -> dict[str, int]:
        """GPU memory in bytes (what the caching allocator holds, and the peak since the last
        record): the figures to read before raising batch_size, or after an out-of-memory."""
        device = self.accelerator.device
        if device.type != "cuda":
            return {}
        facts = {"cuda_allocated": torch.cuda.memory_allocated(device),
                 "cuda_reserved": torch.cuda.memory_reserved(device),
                 "cuda_peak_allocated": torch.cuda.max_memory_allocated(device)}
        torch.cuda.reset_peak_memory_stats(device)
        return facts

    def _announce(self, target: int) -> None:
        acc, task = self.accelerator, self.task
        log.info("%s | run %s | %s", task.description, self.run.root, versions_line(self.versions))
        fields = task.announce()
        log.info("precision %s | device %s x %d | step %d -> target %d (max_steps %d)", self.precision,
                 acc.device, acc.num_processes, self.step, target, self.loop.max_steps)
        self._event(Event.START, mode=task.mode, target_step=target, max_steps=self.loop.max_steps,
                    precision=self.precision, processes=acc.num_processes,
                    resumed_from=str(self.resumed_from) if self.resumed_from else None, **fields)

    def _result(self, code: int, reason: str) -> TrainResult:
        return TrainResult(code, self.step, reason, self.ckpt.best.step, self.ckpt.best.val_mel)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.lock is not None:
            self.lock.release()


def run_task(opener: TaskOpener, run_dir: Path, until_step: int | None = None,
             stop_at: float | None = None) -> TrainResult:
    """Train what `opener` builds in `run_dir` (fresh or resumed) until its target or the
    wall-clock time `stop_at` (time.time()), and release the run at the end."""
    engine = Engine(opener, run_dir, until_step, stop_at)
    try:
        return engine.train()
    finally:
        engine.close()
