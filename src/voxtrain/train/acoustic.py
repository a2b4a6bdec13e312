"""The acoustic task: FastSpeech2 with its learned aligner, trained by the run harness.

A fresh run, an exact resume, or a fine-tune from other weights (phase 2): the session
(`train/session.py`) decides which and the config the run really uses; this module builds
the model, its optimizer and its data order, and says how one step, a validation and the
best export go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from voxtrain.adversarial import adversarial_scale, critic_loss, generator_losses, halves
from voxtrain.artifacts.checkpoints import CheckpointManager
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.store import FeatureStore
from voxtrain.artifacts.weights import export_metadata
from voxtrain.config import AdversarialConfig, Config
from voxtrain.data.loader import BucketBatchSampler, FeatureDataset, collate
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss
from voxtrain.model.critic import MelCritic, mel_windows, window_starts
from voxtrain.train.engine import TrainResult, run_task
from voxtrain.train.finetune import (
    freeze_for_finetune,
    load_base_weights,
    start_critic_from_base,
    trainable_parameters,
    voice_facts,
)
from voxtrain.train.listening import ListeningEvaluator
from voxtrain.train.optim import make_optimizer
from voxtrain.train.runtime import own_process_group
from voxtrain.train.session import RunSession, TrainOptions, prepare_session
from voxtrain.train.state import lr_at, seed_everything
from voxtrain.train.step import adversarial_step
from voxtrain.train.stopping import StopRules
from voxtrain.train.task import LoopSettings, OptimizerSlot, RunContext, StepResult, Validation
from voxtrain.train.validation import Validator

log = logging.getLogger("voxtrain.train")


class AcousticObjective:
    """FastSpeech2's losses of a batch, as the step calls every objective; with a mel critic,
    after its warm-up, its adversarial and feature-matching losses on a window of each clip's
    predicted mel. It keeps the step's windows (real, and predicted without gradient) for the
    critic's turn, so the model runs once per step."""

    def __init__(self, loss_fn: FastSpeech2Loss, critic: torch.nn.Module | None = None,
                 adversarial: AdversarialConfig | None = None, seed: int = 0) -> None:
        self.loss_fn, self.critic, self.a, self.seed = loss_fn, critic, adversarial, seed
        self.windows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, model: torch.nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict]:
        out = model(batch)
        loss, parts = self.loss_fn(out, batch, step)
        if self.critic is None:
            return loss, parts
        a = self.a
        predicted = out["mel_postnet"] if out.get("mel_postnet") is not None else out["mel_pred"]
        # Positions depend on the step and the micro-batch, never on the global RNG.
        lengths = batch.mel_lens.cpu()
        starts = window_starts(lengths, a.frames, (self.seed * 1_000_003 + step) * 31 + len(self.windows))
        real, fake = mel_windows(batch.mels, lengths, starts, a.frames), mel_windows(predicted, lengths, starts,
                                                                                      a.frames)
        self.windows.append((real, fake.detach()))
        if (scale := adversarial_scale(step, a.warmup_steps, a.ramp_steps)) > 0:
            adversarial, matching = generator_losses(self.critic(real), self.critic(fake))
            loss = loss + scale * (a.weight * adversarial + a.feature_weight * matching)
            parts = parts | {"total": loss, "adversarial": adversarial, "feature_matching": matching}
        return loss, parts

    def critic_objective(self, critic: torch.nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict]:
        """The critic's least-squares loss on the step's real and predicted windows, one forward."""
        real, fake = self.windows.pop(0)
        real_out, fake_out = halves(critic(torch.cat([real, fake])), len(real))
        loss = critic_loss(real_out, fake_out)
        return loss, {"total": loss, "critic": loss}


class AcousticOpener:
    """What one `voxtrain train` invocation asks for, opened into a task by the harness."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts, self.config = opts, opts.config
        self.precision = opts.config.training.precision

    def open(self, ctx: RunContext) -> AcousticTask:
        store = FeatureStore(self.opts.features)
        # The session decides fresh / resume / fine-tune and the effective config.
        session = prepare_session(self.opts, store, ctx.latest)
        seed_everything(session.config.training.seed)
        return AcousticTask(ctx, store, session, self.opts.skip_mismatched)


class AcousticTask:
    def __init__(self, ctx: RunContext, store: FeatureStore, session: RunSession, skip_mismatched: bool) -> None:
        self.ctx, self.store, self.session = ctx, store, session
        self.critics: dict[str, torch.nn.Module] = {}  # no critics yet
        self.config: Config = session.config
        self.mode, self.description = session.mode, session.describe()
        t = self.config.training
        self.loop = LoopSettings("training", t.max_steps, t.log_every, t.validate_every, t.save_every,
                                 t.max_nonfinite_steps, t.grad_accum)
        self.stop_rules = StopRules.from_config(t)
        self.symbols, self.dataset_fingerprint = store.symbols.to_dict(), store.fingerprint
        self.run_facts = {"init_from": session.init_from,
                          "dataset": {"path": str(store.root), "fingerprint": store.fingerprint}}
        self._build_model(skip_mismatched)
        self._build_loader()
        self.validator: Validator | None = None
        self.listener: ListeningEvaluator | None = None

    def _build_model(self, skip_mismatched: bool) -> None:
        acc, t = self.ctx.accelerator, self.config.training
        model = FastSpeech2(self.config.model, len(self.store.symbols), self.config.audio.n_mels)
        if self.session.init_weights is not None:
            load_base_weights(model, self.session, self.store, skip_mismatched)
        self.freeze = freeze_for_finetune(model, self.session)
        self.loss_fn = FastSpeech2Loss(t, self.config.model.aligner)
        optimizer = make_optimizer(trainable_parameters(model), t, acc.device)
        self.wrapped, optimizer = acc.prepare(model, optimizer)
        self.model: FastSpeech2 = acc.unwrap_model(self.wrapped)
        self.slots = {"model": OptimizerSlot(optimizer, lambda n: lr_at(n, t), t.grad_clip)}
        critic, a = None, t.adversarial
        if a.critic != "none":
            critic = MelCritic(a.channels)
            critic_optimizer = make_optimizer(critic.parameters(), t, acc.device)
            self.critic_wrapped, critic_optimizer = acc.prepare(critic, critic_optimizer)
            critic = self.critics["critic"] = acc.unwrap_model(self.critic_wrapped)
            self.slots["critic"] = OptimizerSlot(critic_optimizer, lambda n: a.lr, t.grad_clip)
            if self.session.init_weights is not None:  # a fresh fine-tune; a resume has its own critic
                start_critic_from_base(critic, Path(self.session.init_from))
        self.objective = AcousticObjective(self.loss_fn, critic, a, t.seed)

    def _build_loader(self) -> None:
        t, acc = self.config.training, self.ctx.accelerator
        self.train_set = FeatureDataset(self.store, self.store.split_indices("train"))
        self.sampler = BucketBatchSampler(
            [self.train_set.n_frames(i) for i in range(len(self.train_set))],
            batch_size=t.batch_size, batch_frames=t.batch_frames, seed=t.seed,
            rank=acc.process_index, world_size=acc.num_processes,
        )
        workers = self.config.data.num_workers
        self.loader = DataLoader(
            self.train_set, batch_sampler=self.sampler, collate_fn=collate, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator(),  # never draws from the global RNG
            worker_init_fn=own_process_group, pin_memory=acc.device.type == "cuda",
        )

    def attach(self, recorder: RunRecorder | None) -> None:
        if recorder is None:
            return
        acc = self.ctx.accelerator
        self.validator = Validator(self.model, self.loss_fn, self.store, self.config, recorder, self.ctx.run,
                                   acc.device, acc.autocast)
        self.listener = ListeningEvaluator(self.config, self.store, self.validator.synthesizer, recorder,
                                           self.ctx.run)

    def batches(self, epoch: int, batch_in_epoch: int) -> Iterator[tuple[int, int, Batch]]:
        start = batch_in_epoch
        while True:
            self.sampler.set_epoch(epoch, start)
            if start >= self.sampler.batches_per_epoch():
                epoch, start = epoch + 1, 0
                continue
            for i, batch in enumerate(self.loader, start=start + 1):
                yield epoch, i, batch
            epoch, start = epoch + 1, 0

    def step(self, micro_batches: list[Batch], step: int) -> StepResult:
        self.objective.windows.clear()
        critic = self.critic_wrapped if self.critics else None
        return adversarial_step(self.wrapped, self.objective, critic, self.objective.critic_objective, self.slots,
                                self.ctx.accelerator, micro_batches, step,
                                check_grad_norm=self.ctx.precision != "fp16")  # fp16's scaler owns overflows

    def validate(self, step: int) -> Validation | None:
        val = self.validator.run_validation(step)
        scores = self.listener.evaluate(step)
        measured = {f"val_{k}": v for k, v in (val or {}).items()} | (scores or {})
        return Validation(val["mel"] if val else None, scores or None, measured,
                          may_be_best=val is not None and (scores is not None or not self.listener.available))

    def export_best(self, ckpt: CheckpointManager, validation: Validation) -> None:
        meta = export_metadata(self.config.to_dict(), self.symbols, ckpt.best.step, val_mel_loss=validation.val_mel,
                               scores=validation.scores, **voice_facts(self.session, self.store))
        ckpt.export_best(self.model.state_dict(), meta)

    def facts(self) -> dict[str, Any]:
        return voice_facts(self.session, self.store)

    def announce(self) -> dict[str, Any]:
        frozen, s = self.freeze, self.session
        log.info("model: %.2f M parameters (%.2f M train) | train %d clips, %d batches/epoch", frozen.total / 1e6,
                 frozen.trainable / 1e6, len(self.train_set), self.sampler.batches_per_epoch())
        return {"parameters": frozen.total, "trainable_parameters": frozen.trainable, "init_from": s.init_from}

    def advice(self, trouble: str) -> str:
        t = self.config.training
        if trouble == "out_of_memory_retry":
            return "lower training.batch_size or set training.batch_frames to avoid the retries"
        if trouble == "out_of_memory":
            return (f"Lower training.batch_size ({t.batch_size}) or set training.batch_frames "
                    f"({t.batch_frames or 'off'}) and raise training.grad_accum ({t.grad_accum}) to keep the global "
                    f"batch; data.num_workers and shorter audio.max_seconds also help.")
        return ("Try a lower training.lr, training.precision=fp32, a smaller training.grad_clip, or check the data "
                "(voxtrain prepare's rejected.tsv).")


def train(opts: TrainOptions) -> TrainResult:
    """Train as `opts` asks (fresh, resumed or fine-tuned) and release the run at the end."""
    return run_task(AcousticOpener(opts), opts.run_dir, opts.until_step, opts.stop_at)
