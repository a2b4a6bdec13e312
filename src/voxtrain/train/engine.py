"""The training loop: one explicit loop on Accelerate, readable in one sitting.

A "step" is always an optimizer step. The loop stops at a stage target (`until_step`),
at max_steps, when the targets hold or the early stop fires (training.targets,
training.early_stop: after saving), on SIGTERM/SIGINT (after finishing the step and saving)
or after too many consecutive non-finite steps (after saving the last good state).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from voxtrain.artifacts.checkpoints import BestTracker, CheckpointManager
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import RunLock
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.records import Event
from voxtrain.artifacts.store import FeatureStore
from voxtrain.artifacts.weights import export_metadata
from voxtrain.data.loader import BucketBatchSampler, FeatureDataset, collate
from voxtrain.malloc import retain_freed_memory
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss
from voxtrain.report import refresh_report
from voxtrain.train.finetune import freeze_for_finetune, load_base_weights, trainable_parameters, voice_facts
from voxtrain.train.listening import ListeningEvaluator
from voxtrain.train.optim import make_optimizer
from voxtrain.train.runtime import LogWindow, make_accelerator, own_process_group, quiet_other_ranks
from voxtrain.train.session import RunSession, TrainOptions, prepare_session
from voxtrain.train.signals import StopRequest
from voxtrain.train.state import capture_rng, lr_at, restore_rng, seed_everything
from voxtrain.train.step import StepResult, is_out_of_memory, train_step
from voxtrain.train.stopping import StopDecision, StopRules
from voxtrain.train.validation import Validator

log = logging.getLogger("voxtrain.train")

EXIT_OK, EXIT_NONFINITE, EXIT_NO_CHECKPOINT, EXIT_OUT_OF_MEMORY = 0, 3, 4, 5


@dataclass
class TrainResult:
    exit_code: int
    step: int
    reason: str


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts
        retain_freed_memory()
        self.accelerator, self.precision = make_accelerator(opts.config.training.precision)
        acc = self.accelerator
        self.is_main = acc.is_main_process
        quiet_other_ranks(self.is_main)
        self.run = RunDir(opts.run_dir)
        # Only rank 0 writes to the run directory, so only it needs to hold the run's lock.
        self.lock = RunLock(self.run, log.warning).acquire() if self.is_main else None
        self.store = FeatureStore(opts.features)
        # The session decides fresh / resume / fine-tune and the effective config.
        self.session: RunSession = prepare_session(opts, self.store, self.run, write=self.is_main)
        self.cfg = self.session.config
        seed_everything(self.cfg.training.seed)
        self._build_model()
        self._build_loader()
        resume = self.session.resume_state
        self.recorder = RunRecorder(self.run, resume["step"] if resume else None, config=self.cfg,
                                    log=log.warning) if self.is_main else None
        self.ckpt = CheckpointManager(self.run, self.cfg.checkpoint, on_event=self._event, log=log.warning)
        self.step, self.epoch, self.batch_in_epoch, self.nonfinite_total = 0, 0, 0, 0
        self.stop_rules = StopRules.from_config(self.cfg.training)
        if resume is not None:
            self._restore(resume)
        self.validator = Validator(
            self.bare_model, self.loss_fn, self.store, self.cfg, self.recorder, self.run, acc.device, acc.autocast,
        ) if self.is_main else None
        self.listener = ListeningEvaluator(self.cfg, self.store, self.validator.synthesizer, self.recorder,
                                           self.run) if self.is_main else None
        self.stop = StopRequest()

    def _build_model(self) -> None:
        model = FastSpeech2(self.cfg.model, len(self.store.symbols), self.cfg.audio.n_mels)
        if self.session.init_weights is not None:
            load_base_weights(model, self.session, self.store, self.opts.skip_mismatched)
        self.freeze = freeze_for_finetune(model, self.session)
        self.loss_fn = FastSpeech2Loss(self.cfg.training, self.cfg.model.aligner)
        optimizer = make_optimizer(trainable_parameters(model), self.cfg.training, self.accelerator.device)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.bare_model: FastSpeech2 = self.accelerator.unwrap_model(self.model)

    def _build_loader(self) -> None:
        tcfg, acc = self.cfg.training, self.accelerator
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
            worker_init_fn=own_process_group, pin_memory=acc.device.type == "cuda",
        )

    # -- events and state ----------------------------------------------------------------
    def _event(self, name: str, step: int | None = None, **fields) -> None:
        if self.recorder is not None:
            self.recorder.event(name, self.step if step is None else step, **fields)

    def _restore(self, state: dict) -> None:
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.nonfinite_total = state.get("nonfinite_skipped", 0)
        self.ckpt.best = BestTracker.from_state(state, self.ckpt.best.metric, self.ckpt.best.direction)
        self.stop_rules.restore(state.get("stop_rules"))
        # Every rank is seeded alike and consumes its RNG alike, so rank 0's saved state is
        # every rank's state: restoring it everywhere reproduces the unbroken run.
        restore_rng(state["rng"])

    def training_state(self) -> dict:
        acc = self.accelerator
        return {
            "format": 1,
            "model": self.bare_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": capture_rng(),
            "config": self.cfg.to_dict(),
            "symbols": self.store.symbols.to_dict(),
            "best_step": self.ckpt.best.step,
            "best_loss": self.ckpt.best.val_mel,
            "best": self.ckpt.best.state(),
            "stop_rules": self.stop_rules.state(),
            "nonfinite_skipped": self.nonfinite_total,
            "mode": self.session.mode,
            "dataset_fingerprint": self.store.fingerprint,
            "time": time.time(),
            "versions": self.session.versions,
            **voice_facts(self.session, self.store),
        }

    def save(self) -> bool:
        """Save a checkpoint of this step (rank 0); False when the run still has none on disk
        after too many saves in a row were skipped for lack of space (every rank agrees)."""
        self.accelerator.wait_for_everyone()
        if self.is_main and self._last_saved != self.step:
            if self.ckpt.save(self.training_state(), self.step) is not None:
                self._last_saved, self._skipped_saves = self.step, 0
            else:
                self._skipped_saves += 1
        hopeless = self._skipped_saves >= self.cfg.checkpoint.max_skipped_without_checkpoint and \
            not self.run.checkpoint_files()
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([1.0 if hopeless else 0.0], device=self.accelerator.device)
            hopeless = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        self.accelerator.wait_for_everyone()
        return not hopeless

    # -- data --------------------------------------------------------------------------
    def micro_batches(self) -> Iterator[tuple[int, int, Batch]]:
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

    # -- the loop ----------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        flag = self.stop.requested
        if self.accelerator.num_processes > 1:
            t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
            flag = bool(self.accelerator.reduce(t, reduction="sum").item() > 0)
        return flag

    def train(self) -> TrainResult:
        tcfg = self.cfg.training
        target = min(self.opts.until_step or tcfg.max_steps, tcfg.max_steps)
        self._last_saved = self.step if self.session.resume_state is not None else -1
        self._stop_cause: str | None = None
        self._skipped_saves = 0
        self._announce(target)
        for step, path, why in self.session.corrupt_checkpoints:  # found before the recorder existed
            self._event(Event.CHECKPOINT_CORRUPT, step, path=str(path), error=why)
        if self.step >= target:
            return TrainResult(EXIT_OK, self.step, f"already at step {self.step} >= target {target}")
        self.stop.install()
        try:
            reason, code = self._loop(target)
            # Still under the stop handler: a second signal during this save must exit at once
            # (the handler left the kernel's default action), not raise KeyboardInterrupt in Python.
            self.save()
        finally:
            self.stop.uninstall()
        self._event(Event.STOP, reason=reason, exit_code=code, cause=self._stop_cause)
        log.info("%s at step %d", reason, self.step)
        self.accelerator.end_training()
        return TrainResult(code, self.step, reason)

    def _loop(self, target: int) -> tuple[str, int]:
        """Optimizer steps until the target, a stop request or too many non-finite steps."""
        tcfg = self.cfg.training
        batches = self.micro_batches()
        window, consecutive_bad = LogWindow(), 0
        while self.step < target:
            if self._stop_requested():
                return f"stopped by {self.stop.signal_name or 'signal on another rank'}", EXIT_OK
            t0 = time.perf_counter()
            drawn = [next(batches) for _ in range(tcfg.grad_accum)]
            lr = lr_at(self.step + 1, tcfg)
            result = self._step([batch for _, _, batch in drawn], lr)
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
                if consecutive_bad >= tcfg.max_nonfinite_steps:
                    return self._nonfinite_message(consecutive_bad), EXIT_NONFINITE
                continue
            consecutive_bad = 0
            self.step += 1
            window.add(result.losses, result.frames, result.padded, time.perf_counter() - t0)
            if self.step % tcfg.log_every == 0 or self.step == target:
                self._log_train(window, lr, float(result.grad_norm), target)
                window = LogWindow()
            if self.step % tcfg.validate_every == 0 and (decision := self._validate()) is not None:
                self._stop_cause = decision.cause
                return decision.reason, EXIT_OK
            if self.step % tcfg.save_every == 0 and not self.save():
                return self._no_checkpoint_message(), EXIT_NO_CHECKPOINT
        return f"reached target step {target}", EXIT_OK

    def _no_checkpoint_message(self) -> str:
        ck = self.cfg.checkpoint
        return (
            f"{self._skipped_saves} checkpoint saves in a row were skipped for lack of disk space and the run has "
            f"no checkpoint at all in {self.run.checkpoints}: stopped at step {self.step} rather than train on "
            f"with nothing to resume from. Free disk space, lower checkpoint.disk_margin_mb ({ck.disk_margin_mb:g} "
            f"MB) or checkpoint.keep_last ({ck.keep_last}), or use a --run on a larger disk."
        )

    def _step(self, micro_batches: list[Batch], lr: float) -> StepResult | None:
        """One optimizer step. When a batch does not fit in memory, the step is redone with each
        micro-batch split in two, then four..., so it stays one optimizer step over the same
        clips; None when even single clips do not fit (or with several processes, where one
        rank retrying alone would leave the others waiting in the gradient all-reduce)."""
        tcfg = self.cfg.training
        while True:
            try:
                return train_step(self.model, self.loss_fn, self.optimizer, self.accelerator, micro_batches,
                                  self.step, lr, tcfg.grad_clip,
                                  check_grad_norm=self.precision != "fp16")  # fp16's scaler owns overflows
            except (RuntimeError, torch.OutOfMemoryError) as err:
                if not is_out_of_memory(err):
                    raise
                self.optimizer.zero_grad(set_to_none=True)  # the failed attempt's partial gradients
                if self.accelerator.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.accelerator.num_processes > 1 or all(len(b) == 1 for b in micro_batches):
                    log.error("out of memory at step %d: %s", self.step + 1, str(err).splitlines()[0])
                    return None
                micro_batches = [part for b in micro_batches for part in b.split(2)]
                log.warning("out of memory at step %d: retrying the step as %d smaller micro-batches (the "
                            "same clips, still one optimizer step); lower training.batch_size or set "
                            "training.batch_frames to avoid the retries", self.step + 1, len(micro_batches))
                self._event(Event.OUT_OF_MEMORY_RETRY, self.step, micro_batches=len(micro_batches))

    def _out_of_memory_message(self, micro_batches: list[Batch]) -> str:
        t = self.cfg.training
        padded = max(b.frame_counts()[1] for b in micro_batches)
        return (
            f"out of memory at step {self.step + 1} on {self.accelerator.device}: a micro-batch of up to "
            f"{max(len(b) for b in micro_batches)} clips ({padded} padded mel frames) does not fit. Saved the last "
            f"good weights (step {self.step}) and stopped. Lower training.batch_size ({t.batch_size}) or set "
            f"training.batch_frames ({t.batch_frames or 'off'}) and raise training.grad_accum ({t.grad_accum}) to "
            f"keep the global batch; data.num_workers and shorter audio.max_seconds also help."
        )

    def _nonfinite_message(self, n: int) -> str:
        return (
            f"{n} consecutive steps had a non-finite loss or gradient; saved the last good weights "
            f"(step {self.step}) and stopped. Try a lower training.lr, training.precision=fp32, a "
            f"smaller training.grad_clip, or check the data (voxtrain prepare's rejected.tsv)."
        )

    def _validate(self) -> StopDecision | None:
        """Validation, listening scores when due, the best checkpoint, and the stop rules; the
        decision to end the run here, which every rank gets."""
        self.accelerator.wait_for_everyone()
        decision = None
        if self.validator is not None:
            with torch.random.fork_rng(devices=[]):  # validation never shifts the training RNG
                val = self.validator.run_validation(self.step)
                scores = self.listener.evaluate(self.step)
            if val is not None and (scores is not None or not self.listener.available):
                self._update_best(val, scores)
            measured = {f"val_{k}": v for k, v in (val or {}).items()} | (scores or {})
            decision = self.stop_rules.observe(measured)
            refresh_report(self.run, log.warning)
        self.accelerator.wait_for_everyone()
        return self._agree(decision)

    def _update_best(self, val: dict[str, float], scores: dict[str, float] | None) -> None:
        if self.ckpt.best.consider(self.step, val["mel"], scores):
            meta = export_metadata(self.cfg.to_dict(), self.store.symbols.to_dict(), self.step,
                                   val_mel_loss=val["mel"], scores=scores or None,
                                   **voice_facts(self.session, self.store))
            self.ckpt.export_best(self.bare_model.state_dict(), meta)

    def _agree(self, decision: StopDecision | None) -> StopDecision | None:
        """Rank 0's stop decision on every rank, so all of them leave the loop at the same step."""
        if self.accelerator.num_processes == 1:
            return decision
        flag = torch.tensor([1.0 if decision is not None else 0.0], device=self.accelerator.device)
        if self.accelerator.reduce(flag, reduction="sum").item() == 0:
            return None
        return decision or StopDecision("stop_rules", "stopped by rank 0's stop rules")

    def _log_train(self, window: LogWindow, lr: float, grad_norm: float, target: int) -> None:
        means = window.means()
        frames, padded = window.frames, window.padded
        if self.accelerator.num_processes > 1:  # frames of every rank: the global batch's speed
            counts = torch.tensor([frames, padded], dtype=torch.float64, device=self.accelerator.device)
            frames, padded = (int(v) for v in self.accelerator.reduce(counts, reduction="sum").tolist())
        if self.recorder is None:
            return
        record = self.recorder.train(
            self.step, epoch=self.epoch, lr=lr, grad_norm=grad_norm,
            frames_per_s=frames / window.seconds, steps_per_s=window.steps / window.seconds,
            padding_fraction=1 - frames / max(padded, 1), target_step=target, max_steps=self.cfg.training.max_steps,
            nonfinite_skipped=self.nonfinite_total, **{f"loss_{k}": v for k, v in means.items()},
            **self._device_memory(),
        )
        log.info(
            "step %d/%d | loss %.4f (mel %.4f) | lr %.2e | grad %.2f | %.2f steps/s | %.0f frames/s",
            self.step, target, means.get("total", float("nan")), means.get("mel", float("nan")), lr,
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
        s, acc, frozen = self.session, self.accelerator, self.freeze
        log.info("%s | run %s | %s", s.describe(), self.run.root, s.versions_line())
        log.info("model: %.2f M parameters (%.2f M train) | precision %s | device %s x %d | train %d clips, "
                 "%d batches/epoch", frozen.total / 1e6, frozen.trainable / 1e6, self.precision, acc.device,
                 acc.num_processes, len(self.train_set), self.sampler.batches_per_epoch())
        log.info("step %d -> target %d (max_steps %d)", self.step, target, self.cfg.training.max_steps)
        self._event(Event.START, mode=s.mode, target_step=target, max_steps=self.cfg.training.max_steps,
                    parameters=frozen.total, trainable_parameters=frozen.trainable, precision=self.precision,
                    processes=acc.num_processes, resumed_from=s.resumed_from, init_from=s.init_from)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.lock is not None:
            self.lock.release()


def train(opts: TrainOptions) -> TrainResult:
    """Train as `opts` asks (fresh, resumed or fine-tuned) and release the run at the end."""
    trainer = Trainer(opts)
    try:
        return trainer.train()
    finally:
        trainer.close()
