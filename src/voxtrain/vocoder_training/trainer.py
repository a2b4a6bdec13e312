"""The vocoder fine-tune loop: the HiFi-GAN generator on teacher-forced mels, readable in one sitting.

Only the generator trains, on an L1 log-mel loss plus a multi-resolution STFT loss. No
discriminators: the bundled package ships the generator alone, and discriminators started
from scratch need far more steps to become useful critics than a CPU fine-tune has; until
they are, their adversarial loss only adds noise to a generator that already sounds right.

Data order is a pure function of (seed, epoch, batch): each epoch is a seeded permutation of
the training clips, cut into batches, and each segment's position is drawn from a generator
seeded by its batch. A checkpoint therefore only needs (step, epoch, batch_in_epoch) to
resume on exactly the segments an unbroken run would see; the global RNGs are saved too.

The loop stops at the stage target (`until_step`) or at vocoder_training.max_steps, on
SIGTERM/SIGINT after finishing the step and saving, or at a non-finite loss (exit 3, after
saving the last good weights). Validation: the mel L1 of the whole validation clips, at
step 0 (the untouched vocoder, the baseline) and every validate_every steps; the best
generator is exported in jik876 format to RUN/checkpoints/generator_best.pt.
"""

from __future__ import annotations

import errno
import logging
import math
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from voxtrain.artifacts.best import BestTracker
from voxtrain.artifacts.checkpoints import CheckpointManager, serialize
from voxtrain.artifacts.disk import save_needs
from voxtrain.artifacts.records import Event
from voxtrain.artifacts.weights import export_weights, weights_bytes
from voxtrain.atomic import write_atomic
from voxtrain.audio import MelSpectrogram
from voxtrain.train.signals import StopRequest
from voxtrain.train.state import capture_rng, restore_rng
from voxtrain.vocoder.losses import MelLoss, MultiResolutionSTFTLoss
from voxtrain.vocoder_training.setup import VocoderOptions, VocoderSession, open_session

log = logging.getLogger("voxtrain.vocoder_training")

EXIT_OK, EXIT_NONFINITE = 0, 3


@dataclass
class VocoderResult:
    exit_code: int
    step: int
    reason: str
    best_step: int | None = None
    best_val_mel: float | None = None


class SegmentOrder:
    """Which (clip, start frame) segments make batch `index` of `epoch`."""

    def __init__(self, clips: list[int], lengths: list[int], batch_size: int, frames: int, seed: int) -> None:
        self.clips, self.lengths, self.frames, self.seed = clips, lengths, frames, seed
        self.batch_size = min(batch_size, len(clips))
        self.per_epoch = len(clips) // self.batch_size

    def batch(self, epoch: int, index: int) -> list[tuple[int, int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        members = order[index * self.batch_size : (index + 1) * self.batch_size]
        where = np.random.default_rng([self.seed, epoch, index, 1])
        return [(self.clips[m], int(where.integers(0, max(self.lengths[m] - self.frames, 0) + 1))) for m in members]


class VocoderTrainer:
    def __init__(self, opts: VocoderOptions) -> None:
        self.s: VocoderSession = open_session(opts)
        try:
            self._build()
        except BaseException:
            self.s.close()  # the run's lock, held since open_session
            raise

    def _build(self) -> None:
        s, vcfg = self.s, self.s.config.vocoder_training
        self.cfg, self.run, self.generator = s.config, s.run, s.generator
        self.optimizer = torch.optim.AdamW(self.generator.parameters(), lr=vcfg.lr, betas=tuple(vcfg.betas),
                                           weight_decay=vcfg.weight_decay)
        self.mel_loss = MelLoss(self.cfg.audio)
        self.stft_loss = MultiResolutionSTFTLoss(vcfg.stft_resolutions)
        self.mel = MelSpectrogram(self.cfg.audio)
        train = s.pairs.split("train")
        self.order = SegmentOrder(train, [s.pairs.n_frames(i) for i in train], vcfg.batch_size,
                                  vcfg.segment_frames, vcfg.seed)
        self.val_clips = s.pairs.split("val")
        self.ckpt = CheckpointManager(self.run, self.cfg.checkpoint, on_event=self._event, log=log.warning)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if s.resume_state is not None:
            self._restore(s.resume_state)
        self.stop = StopRequest()

    # -- state ---------------------------------------------------------------------------
    def _event(self, name: str, step: int | None = None, **fields) -> None:
        self.s.recorder.event(name, self.step if step is None else step, **fields)

    def _restore(self, state: dict) -> None:
        self.generator.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.ckpt.best = BestTracker.from_state(state, self.ckpt.best.metric, self.ckpt.best.direction)
        restore_rng(state["rng"])

    def training_state(self) -> dict:
        s = self.s
        return {
            "format": 1, "mode": "vocoder",
            "model": self.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "rng": capture_rng(), "config": self.cfg.to_dict(), "symbols": s.store.symbols.to_dict(),
            "best": self.ckpt.best.state(), "best_step": self.ckpt.best.step, "best_loss": self.ckpt.best.val_mel,
            "acoustic_checkpoint": str(s.acoustic.path), "corpus": str(s.corpus), "features": str(s.store.root),
            "pairs_signature": s.pairs.signature, "dataset_fingerprint": s.store.fingerprint,
            "time": time.time(), "versions": s.versions,
        }

    def save(self) -> None:
        if self._last_saved != self.step and self.ckpt.save(self.training_state(), self.step) is not None:
            self._last_saved = self.step

    def export_generator(self) -> None:
        """The current generator as the run's best, `{"generator": state_dict}` (what
        `load_hifigan` reads), and beside it the whole voice: the acoustic model's weights
        with a sidecar naming that generator, which synth, the exports and evaluate then use
        unasked. Both are written atomically under the checkpoints' disk rule."""
        data = serialize({"generator": {k: v.detach().clone() for k, v in self.generator.state_dict().items()}})
        path, voice, best = self.run.vocoder_export, self.run.best_export, self.ckpt.best
        acoustic = self.s.acoustic
        need = len(data) + weights_bytes(acoustic.model.state_dict())
        free = shutil.disk_usage(self.run.checkpoints).free
        if free < save_needs(need, self.cfg.checkpoint.disk_margin_mb):
            log.warning("best generator export skipped: not enough disk space (%d MB free)", free >> 20)
            self._event(Event.EXPORT_SKIPPED, best.step, reason="not enough free disk space", bytes=need)
            return
        meta = dict(acoustic.meta, vocoder=path.name, vocoder_step=best.step, vocoder_val_mel=best.val_mel,
                    acoustic_checkpoint=acoustic.path.name)
        try:
            write_atomic(data, path)
            export_weights(acoustic.model.state_dict(), meta, voice)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            self._event(Event.EXPORT_SKIPPED, best.step, reason="disk full (ENOSPC) while writing", bytes=need)
            return
        self._event(Event.BEST_EXPORTED, best.step, val_mel_loss=best.val_mel, best_by=best.metric,
                    value=best.value, path=str(path), voice=str(voice))

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> VocoderResult:
        vcfg = self.cfg.vocoder_training
        target = min(self.s.until_step or vcfg.max_steps, vcfg.max_steps)
        self._last_saved = self.step if self.s.resume_state is not None else -1
        self._announce(target)
        if self.step >= target:
            return self._result(EXIT_OK, f"already at step {self.step} >= target {target}")
        self.stop.install()
        try:
            if self.s.resume_state is None:
                self.validate()  # the untouched vocoder: the baseline every later validation is read against
            reason, code = self._loop(target)
            self.save()  # still under the handler: a second signal now exits at once
        finally:
            self.stop.uninstall()
        self._event(Event.STOP, reason=reason, exit_code=code)
        log.info("%s at step %d", reason, self.step)
        return self._result(code, reason)

    def _loop(self, target: int) -> tuple[str, int]:
        vcfg = self.cfg.vocoder_training
        sums: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        while self.step < target:
            if self.stop.requested:
                return f"stopped by {self.stop.signal_name}", EXIT_OK
            picks = self.order.batch(self.epoch, self.batch_in_epoch)
            mels, wavs = self.s.pairs.batch(picks, vcfg.segment_frames)
            losses = self._train_step(mels, wavs)
            if not math.isfinite(losses["total"]):
                return (f"non-finite loss at step {self.step + 1}: saved the last good weights (step {self.step}) "
                        f"and stopped; lower vocoder_training.lr"), EXIT_NONFINITE
            self.step += 1
            self.batch_in_epoch += 1
            if self.batch_in_epoch >= self.order.per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            window_steps += 1
            if self.step % vcfg.log_every == 0 or self.step == target:
                seconds = time.perf_counter() - window_start
                self._log_train({k: v / window_steps for k, v in sums.items()}, seconds / window_steps, target)
                sums, window_steps, window_start = {}, 0, time.perf_counter()
            if self.step % vcfg.validate_every == 0 or self.step == vcfg.max_steps:
                self.validate()
            if self.step % vcfg.save_every == 0:
                self.save()
        return f"reached target step {target}", EXIT_OK

    def _train_step(self, mels: torch.Tensor, wavs: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a batch of segments; the loss terms as floats."""
        w = self.cfg.vocoder_training
        self.generator.train()
        self.optimizer.zero_grad(set_to_none=True)
        generated = self.generator(mels)
        mel = self.mel_loss(generated, wavs)
        sc, mag = self.stft_loss(generated, wavs)
        total = w.mel_weight * mel + w.stft_weight * (sc + mag)
        if not torch.isfinite(total):
            return {"total": float(total.detach())}
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), float("inf"))
        self.optimizer.step()
        parts = {"total": total, "mel": mel, "sc": sc, "mag": mag, "grad_norm": grad_norm}
        return {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean |log-mel| error of the generator's audio from each validation clip's teacher-forced
        mel against the clip's real mel (the store's), over every frame and band."""
        if not self.val_clips:
            log.warning("the feature store has no validation clips: no val_mel, no best generator export")
            return None
        t0 = time.perf_counter()
        self.generator.eval()
        error, count = 0.0, 0
        for i in self.val_clips:
            predicted, _ = self.s.pairs.clip(i)
            real = torch.from_numpy(self.s.store.item(i)["mel"].astype(np.float32)).T
            mel = self.mel(self.generator(torch.from_numpy(predicted).T[None]))[0]
            error += float(torch.sum(torch.abs(mel - real)))
            count += real.numel()
        val = error / count
        self.s.recorder.val(self.step, {"mel": val})
        log.info("validation at step %d: val_mel %.4f over %d clips (%.1fs)", self.step, val, len(self.val_clips),
                 time.perf_counter() - t0)
        if self.ckpt.best.consider(self.step, val):
            self.export_generator()
        return val

    def _log_train(self, means: dict[str, float], seconds_per_step: float, target: int) -> None:
        grad_norm = means.pop("grad_norm", float("nan"))
        self.s.recorder.train(
            self.step, epoch=self.epoch, lr=self.cfg.vocoder_training.lr, grad_norm=grad_norm,
            steps_per_s=1.0 / max(seconds_per_step, 1e-9), seconds_per_step=seconds_per_step,
            target_step=target, max_steps=self.cfg.vocoder_training.max_steps,
            **{f"loss_{k}": v for k, v in means.items()},
        )
        log.info("step %d/%d | loss %.4f (mel %.4f, sc %.4f, mag %.4f) | %.2f s/step", self.step, target,
                 means["total"], means.get("mel", math.nan), means.get("sc", math.nan), means.get("mag", math.nan),
                 seconds_per_step)

    def _announce(self, target: int) -> None:
        s, vcfg = self.s, self.cfg.vocoder_training
        log.info("%s | run %s", s.describe(), self.run.root)
        log.info("vocoder fine-tune: %d train / %d val clips, %d batches of %d x %d frames per epoch | step %d -> "
                 "target %d (max_steps %d)", len(self.order.clips), len(self.val_clips), self.order.per_epoch,
                 self.order.batch_size, vcfg.segment_frames, self.step, target, vcfg.max_steps)
        self._event(Event.START, mode="vocoder", target_step=target, max_steps=vcfg.max_steps,
                    resumed_from=s.resumed_from, acoustic_checkpoint=str(s.acoustic.path))

    def _result(self, code: int, reason: str) -> VocoderResult:
        return VocoderResult(code, self.step, reason, self.ckpt.best.step, self.ckpt.best.val_mel)

    def close(self) -> None:
        self.s.close()
