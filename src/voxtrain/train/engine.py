"""The training loop: one explicit loop on Accelerate, readable in one sitting.

A "step" is always an optimizer step. The loop stops at a stage target (`until_step`),
at max_steps, on SIGTERM/SIGINT (after finishing the step and saving) or after too many
consecutive non-finite steps (after saving the last good state).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from voxtrain.config import Config
from voxtrain.data.loader import BucketBatchSampler, FeatureDataset, collate
from voxtrain.data.store import FeatureStore
from voxtrain.malloc import retain_freed_memory
from voxtrain.model import FastSpeech2, FastSpeech2Loss
from voxtrain.ops.metrics import MetricsWriter
from voxtrain.ops.process import RunLock
from voxtrain.ops.rundir import RunDir
from voxtrain.precision import resolve_precision
from voxtrain.train.checkpoints import CheckpointManager
from voxtrain.train.optim import make_optimizer
from voxtrain.train.session import RunSession, match_weights, prepare_session
from voxtrain.train.signals import StopRequest
from voxtrain.train.state import capture_rng, lr_at, restore_rng, seed_everything
from voxtrain.train.validation import Validator

log = logging.getLogger("voxtrain.train")

EXIT_OK, EXIT_NONFINITE = 0, 3


@dataclass
class TrainOptions:
    run_dir: Path
    features: Path
    config: Config
    until_step: int | None = None
    init_from: Path | None = None
    skip_mismatched: bool = False


@dataclass
class TrainResult:
    exit_code: int
    step: int
    reason: str


def make_accelerator(precision: str):
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


def _own_process_group(_worker_id: int) -> None:
    """Move a loader worker out of the trainer's process group. A group-wide SIGTERM/SIGINT
    (torchrun forwards signals with killpg; Ctrl-C signals the foreground group) would
    otherwise kill the workers and crash the trainer before it saves. Ignoring the signals
    instead would hang the exit: multiprocessing stops daemon workers with SIGTERM."""
    os.setpgid(0, 0)


def _quiet_other_ranks(is_main: bool) -> None:
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


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts
        retain_freed_memory()
        self.accelerator, self.precision = make_accelerator(opts.config.training.precision)
        acc = self.accelerator
        self.is_main = acc.is_main_process
        _quiet_other_ranks(self.is_main)
        self.run = RunDir(opts.run_dir)
        # Only rank 0 writes to the run directory, so only it needs to hold the run's lock.
        self.lock = RunLock(self.run, log.warning).acquire() if self.is_main else None
        self.store = FeatureStore(opts.features)
        # The session decides fresh / resume / fine-tune and the effective config.
        self.session: RunSession = prepare_session(opts, self.store, self.run, write=self.is_main)
        self.cfg = self.session.config
        tcfg = self.cfg.training
        seed_everything(tcfg.seed)
        self.model = FastSpeech2(self.cfg.model, len(self.store.symbols), self.cfg.audio.n_mels)
        if self.session.init_weights is not None:
            weights = match_weights(
                self.model.state_dict(), self.session.init_weights, opts.skip_mismatched, self.session.init_from
            )
            self.model.load_state_dict(weights)
        self.loss_fn = FastSpeech2Loss(tcfg, self.cfg.model.aligner)
        optimizer = make_optimizer(self.model.parameters(), tcfg, acc.device)
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.train_set = FeatureDataset(self.store, self.store.split_indices("train"))
        self.sampler = BucketBatchSampler(
            [self.train_set.n_frames(i) for i in range(len(self.train_set))],
            batch_size=tcfg.batch_size, batch_frames=tcfg.batch_frames, seed=tcfg.seed,
            rank=acc.process_index, world_size=acc.num_processes,
        )
        workers = self.cfg.data.num_workers
        self.loader = DataLoader(
            self.train_set, batch_sampler=self.sampler, collate_fn=collate, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator(),  # never draws from the global RNG
            worker_init_fn=_own_process_group,
        )
        self.metrics = MetricsWriter(self.run.metrics) if self.is_main else None
        self.ckpt = CheckpointManager(self.run, self.cfg.checkpoint, on_event=self._event, log=log.warning)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.nonfinite_total, self.history = 0, []
        if self.session.resume_state is not None:
            self._restore(self.session.resume_state)
        self.validator = Validator(self) if self.is_main else None
        self.stop = StopRequest()

    # -- events and state ----------------------------------------------------------------
    def _event(self, event: dict) -> None:
        if self.metrics is not None:
            self.metrics.write("event", step=event.pop("step", self.step), **event)

    def _restore(self, state: dict) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.nonfinite_total = state.get("nonfinite_skipped", 0)
        self.history = list(state.get("history", []))
        self.ckpt.best_step, self.ckpt.best_loss = state.get("best_step"), state.get("best_loss")
        # Every rank is seeded alike and consumes its RNG alike, so rank 0's saved state is
        # every rank's state: restoring it everywhere reproduces the unbroken run.
        restore_rng(state["rng"])

    def training_state(self) -> dict:
        acc = self.accelerator
        return {
            "format": 1,
            "model": acc.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": capture_rng(),
            "config": self.cfg.to_dict(),
            "symbols": self.store.symbols.to_dict(),
            "best_step": self.ckpt.best_step,
            "best_loss": self.ckpt.best_loss,
            "history": self.history[-200:],
            "nonfinite_skipped": self.nonfinite_total,
            "mode": self.session.mode,
            "dataset_fingerprint": self.store.fingerprint,
            "time": time.time(),
            "versions": self.session.versions,
        }

    def save(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main and self._last_saved != self.step:
            if self.ckpt.save(self.training_state(), self.step) is not None:
                self._last_saved = self.step
        self.accelerator.wait_for_everyone()

    # -- data --------------------------------------------------------------------------
    def micro_batches(self) -> Iterator[tuple[int, int, dict]]:
        """Endless (epoch, batches consumed in epoch, batch), starting at the saved position."""
        epoch, start = self.epoch, self.batch_in_epoch
        while True:
            self.sampler.set_epoch(epoch, start)
            if start >= self.sampler.batches_per_epoch():
                epoch, start = epoch + 1, 0
                continue
            for i, batch in enumerate(self.loader, start=start + 1):
                yield epoch, i, batch
            epoch, start = epoch + 1, 0

    def _to_device(self, batch: dict) -> dict:
        dev = self.accelerator.device
        return {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    # -- the loop ----------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        flag = self.stop.requested
        if self.accelerator.num_processes > 1:
            t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
            flag = bool(self.accelerator.reduce(t, reduction="sum").item() > 0)
        return flag

    def _reduce_step(self, parts: dict[str, float], frames: int, padded: int) -> tuple[dict[str, float], int, int]:
        """Global-batch losses and frame counts. Logged losses then describe the whole step,
        and every rank sees the same (possibly non-finite) loss, so all skip or step together."""
        names = sorted(parts)
        t = torch.tensor([parts[k] for k in names] + [frames, padded], dtype=torch.float64,
                         device=self.accelerator.device)
        t = self.accelerator.reduce(t, reduction="sum")
        n = self.accelerator.num_processes
        means = {k: float(v) / n for k, v in zip(names, t[: len(names)].tolist(), strict=True)}
        return means, int(t[-2].item()), int(t[-1].item())

    def train(self) -> TrainResult:
        tcfg, acc = self.cfg.training, self.accelerator
        target = min(self.opts.until_step or tcfg.max_steps, tcfg.max_steps)
        self._last_saved = self.step if self.session.resume_state is not None else -1
        self._announce(target)
        if self.step >= target:
            return TrainResult(EXIT_OK, self.step, f"already at step {self.step} >= target {target}")
        self.stop.install()
        batches = self.micro_batches()
        window = _Window()
        consecutive_bad = 0
        reason, code = f"reached target step {target}", EXIT_OK
        try:
            while self.step < target:
                if self._stop_requested():
                    reason = f"stopped by {self.stop.signal_name or 'signal on another rank'}"
                    break
                t0 = time.perf_counter()
                parts_sum: dict[str, float] = {}
                frames = padded = 0
                for k in range(tcfg.grad_accum):
                    epoch, pos, batch = next(batches)
                    batch = self._to_device(batch)
                    sync = k == tcfg.grad_accum - 1 or acc.num_processes == 1
                    with contextlib.nullcontext() if sync else acc.no_sync(self.model), acc.autocast():
                        out = self.model(
                            batch["phonemes"], batch["phoneme_lens"], batch["mels"], batch["mel_lens"],
                            batch["pitch"], batch["energy"],
                        )
                        loss, parts = self.loss_fn(out, batch, self.step)
                    acc.backward(loss / tcfg.grad_accum)
                    for name, value in parts.items():
                        parts_sum[name] = parts_sum.get(name, 0.0) + float(value) / tcfg.grad_accum
                    frames += int(batch["mel_lens"].sum())
                    padded += int(batch["mel_lens"].max()) * len(batch["mel_lens"])
                if acc.num_processes > 1:
                    parts_sum, frames, padded = self._reduce_step(parts_sum, frames, padded)
                clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
                grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), clip))
                finite = math.isfinite(parts_sum.get("total", 0.0))
                if self.precision != "fp16":  # fp16's scaler owns overflowing gradients
                    finite = finite and math.isfinite(grad_norm)
                if not finite:
                    self.optimizer.zero_grad(set_to_none=True)
                    self.nonfinite_total += 1
                    consecutive_bad += 1
                    self.epoch, self.batch_in_epoch = epoch, pos
                    self._event({"event": "nonfinite_skip", "loss": parts_sum.get("total"),
                                 "grad_norm": grad_norm, "consecutive": consecutive_bad})
                    log.warning("non-finite loss/gradient at step %d: step skipped (%d in a row)",
                                self.step + 1, consecutive_bad)
                    if consecutive_bad >= tcfg.max_nonfinite_steps:
                        reason, code = self._nonfinite_message(consecutive_bad), EXIT_NONFINITE
                        break
                    continue
                consecutive_bad = 0
                lr = lr_at(self.step + 1, tcfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.epoch, self.batch_in_epoch = epoch, pos
                window.add(parts_sum, frames, padded, time.perf_counter() - t0)
                if self.step % tcfg.log_every == 0 or self.step == target:
                    self._log_train(window, lr, grad_norm, target)
                    window = _Window()
                if self.step % tcfg.validate_every == 0:
                    self._validate()
                if self.step % tcfg.save_every == 0:
                    self.save()
        finally:
            self.stop.uninstall()
        self.save()
        if self.metrics is not None:
            self.metrics.write("event", event="stop", step=self.step, reason=reason, exit_code=code)
        log.info("%s at step %d", reason, self.step)
        acc.end_training()
        return TrainResult(code, self.step, reason)

    def _nonfinite_message(self, n: int) -> str:
        return (
            f"{n} consecutive steps had a non-finite loss or gradient; saved the last good weights "
            f"(step {self.step}) and stopped. Try a lower training.lr, training.precision=fp32, a "
            f"smaller training.grad_clip, or check the data (voxtrain prepare's rejected.tsv)."
        )

    def _validate(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.validator is not None:
            with torch.random.fork_rng(devices=[]):  # validation never shifts the training RNG
                val = self.validator.run(self.step)
            if val is not None:
                self.history.append([self.step, val["mel"]])
                if self.ckpt.update_best(self.step, val["mel"]):
                    self.validator.export_best()
        self.accelerator.wait_for_everyone()

    def _log_train(self, window: _Window, lr: float, grad_norm: float, target: int) -> None:
        if self.metrics is None:
            return
        means = window.means()
        record = self.metrics.write(
            "train", step=self.step, epoch=self.epoch, lr=lr, grad_norm=grad_norm,
            frames_per_s=window.frames / window.seconds, steps_per_s=window.steps / window.seconds,
            padding_fraction=1 - window.frames / max(window.padded, 1),
            target_step=target, max_steps=self.cfg.training.max_steps,
            nonfinite_skipped=self.nonfinite_total, **{f"loss_{k}": v for k, v in means.items()},
        )
        if self.validator is not None:
            self.validator.scalars(record)
        log.info(
            "step %d/%d | loss %.4f (mel %.4f) | lr %.2e | grad %.2f | %.2f steps/s | %.0f frames/s",
            self.step, target, means.get("total", float("nan")), means.get("mel", float("nan")), lr,
            grad_norm, record["steps_per_s"], record["frames_per_s"],
        )

    def _announce(self, target: int) -> None:
        s = self.session
        n_params = sum(p.numel() for p in self.accelerator.unwrap_model(self.model).parameters())
        log.info("%s | run %s | %s", s.describe(), self.run.root, s.versions_line())
        log.info(
            "model: %.2f M parameters | precision %s | device %s x %d | train %d clips, %d batches/epoch",
            n_params / 1e6, self.precision, self.accelerator.device, self.accelerator.num_processes,
            len(self.train_set), self.sampler.batches_per_epoch(),
        )
        log.info("step %d -> target %d (max_steps %d)", self.step, target, self.cfg.training.max_steps)
        if self.metrics is not None:
            self.metrics.write(
                "event", event="start", step=self.step, mode=s.mode, target_step=target,
                max_steps=self.cfg.training.max_steps, parameters=n_params, precision=self.precision,
                processes=self.accelerator.num_processes, resumed_from=s.resumed_from, init_from=s.init_from,
            )


class _Window:
    """Sums over the steps between two log records."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps, self.frames, self.padded, self.seconds = 0, 0, 0, 1e-9

    def add(self, parts: dict[str, float], frames: int, padded: int, seconds: float) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.frames += frames
        self.padded += padded
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def train(opts: TrainOptions) -> TrainResult:
    trainer = Trainer(opts)
    try:
        return trainer.train()
    finally:
        if trainer.lock is not None:
            trainer.lock.release()
