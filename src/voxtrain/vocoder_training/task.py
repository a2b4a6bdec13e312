"""The vocoder task: the HiFi-GAN generator fine-tuned on teacher-forced mels, run by the harness.

The generator trains on an L1 log-mel loss plus a multi-resolution STFT loss, and, with
`vocoder_training.critic`, against a critic (`voxtrain.vocoder.critics`): a second module
and optimizer slot of the same step. The bundled package ships no critic weights, so a
critic starts fresh and trains `critic_warmup_steps` before its losses reach the generator.

Data order is a pure function of (seed, epoch, batch): each epoch is a seeded permutation of
the training clips, cut into batches, and each segment's position is drawn from a generator
seeded by its batch. A checkpoint therefore only needs (step, epoch, batch_in_epoch) to
resume on exactly the segments an unbroken run would see. With several processes each
takes its share of every global batch.

Validation: the mel L1 of the whole validation clips, at step 0 (the untouched vocoder, the
baseline) and every validate_every steps, and the listening scores of the voice (the acoustic
model with the generator in training) as `evaluation` asks; the best generator by
`checkpoint.best_by` is exported in jik876 format to RUN/checkpoints/generator_best.pt, and
beside it the whole voice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxtrain.artifacts.checkpoint_format import CheckpointError, TrainingState, load_state, serialize
from voxtrain.artifacts.checkpoints import CheckpointManager
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.weights import export_weights, weights_bytes
from voxtrain.atomic import write_atomic
from voxtrain.audio import MelSpectrogram
from voxtrain.data.loader import FeatureDataset
from voxtrain.train.listening import ListeningEvaluator
from voxtrain.train.state import seed_everything
from voxtrain.train.step import adversarial_step
from voxtrain.train.stopping import StopRules
from voxtrain.train.task import LoopSettings, OptimizerSlot, RunContext, StepResult, Validation
from voxtrain.vocoder.critics import build_critic
from voxtrain.vocoder_training.joint import JointBatch, JointData, JointModel, joint_optimizer
from voxtrain.vocoder_training.objective import JointObjective, Segments, VocoderObjective
from voxtrain.vocoder_training.setup import VocoderInputs, VocoderOptions, open_inputs
from voxtrain.vocoder_training.sources import VocoderTrainingError, teacher_forced_mel

log = logging.getLogger("voxtrain.vocoder_training")


class SegmentOrder:
    """Which (clip, start frame) segments make this process's share of batch `index` of `epoch`."""

    def __init__(self, clips: list[int], lengths: list[int], batch_size: int, frames: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.clips, self.lengths, self.frames, self.seed = clips, lengths, frames, seed
        self.rank, self.world_size = rank, world_size
        self.batch_size = max(min(batch_size * world_size, len(clips)) // world_size, 1)
        self.per_epoch = max(len(clips) // (self.batch_size * world_size), 1)

    def batch(self, epoch: int, index: int) -> list[tuple[int, int]]:
        whole = self.batch_size * self.world_size
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        members = order[index * whole : (index + 1) * whole]
        where = np.random.default_rng([self.seed, epoch, index, 1])
        picks = [(self.clips[m], int(where.integers(0, max(self.lengths[m] - self.frames, 0) + 1))) for m in members]
        return picks[self.rank :: self.world_size]


def load_critic(critic: torch.nn.Module, path: Path) -> None:
    """Start `critic` from the critic of another train-vocoder run's checkpoint."""
    try:
        state = TrainingState.from_dict(load_state(path), path)
    except CheckpointError as err:
        raise VocoderTrainingError(f"vocoder_training.critic_from: {err}") from None
    if "critic" not in state.critics:
        raise VocoderTrainingError(f"vocoder_training.critic_from: {path} holds no critic (mode {state.mode!r}): "
                                   f"give a checkpoint of a train-vocoder run trained with vocoder_training.critic")
    try:
        critic.load_state_dict(state.critics["critic"])
    except RuntimeError as err:
        raise VocoderTrainingError(
            f"vocoder_training.critic_from: the critic in {path} is not this run's kind of critic "
            f"({str(err).splitlines()[0]}): use the same vocoder_training.critic and critic_resolutions") from None
    log.info("critic started from %s (step %d)", path, state.step)


class VocoderTask:
    mode = "vocoder"
    def __init__(self, ctx: RunContext, inputs: VocoderInputs) -> None:
        self.ctx, self.inputs = ctx, inputs
        self.critics: dict[str, torch.nn.Module] = {}  # no critics yet
        self.config = inputs.config
        v = self.config.vocoder_training
        self.description = inputs.describe(ctx)
        self.loop = LoopSettings("vocoder_training", v.max_steps, v.log_every, v.validate_every, v.save_every,
                                 v.max_nonfinite_steps, validate_at_ends=True)
        self.stop_rules = StopRules({}, 1)  # a vocoder fine-tune ends at its step target
        self.symbols, self.dataset_fingerprint = inputs.store.symbols.to_dict(), inputs.store.fingerprint
        self.run_facts = inputs.run_facts()
        acc = ctx.accelerator
        if v.joint:  # the checkpoint's `model` is then both: generator.* and acoustic.*
            trained = JointModel(inputs.generator, inputs.acoustic.model, v.segment_frames)
            optimizer = joint_optimizer(trained, self.config)
        else:
            trained = inputs.generator
            optimizer = torch.optim.AdamW(trained.parameters(), lr=v.lr, betas=tuple(v.betas),
                                          weight_decay=v.weight_decay)
        self.wrapped, optimizer = acc.prepare(trained, optimizer)
        self.model = acc.unwrap_model(self.wrapped)
        self.generator = self.model.generator if v.joint else self.model
        self.slots = {"model": OptimizerSlot(optimizer, lambda n: v.lr, v.grad_clip)}
        critic = None
        if v.critic != "none":
            critic = build_critic(v.critic, v.critic_resolutions)
            if v.critic_from and ctx.latest is None:  # a resume takes its own critic from its checkpoint
                load_critic(critic, Path(v.critic_from))
            critic_optimizer = torch.optim.AdamW(critic.parameters(), lr=v.critic_lr, betas=tuple(v.betas),
                                                 weight_decay=v.weight_decay)
            self.critic_wrapped, critic_optimizer = acc.prepare(critic, critic_optimizer)
            critic = self.critics["critic"] = acc.unwrap_model(self.critic_wrapped)
            self.slots["critic"] = OptimizerSlot(critic_optimizer, lambda n: v.critic_lr, v.grad_clip)
        self.objective = (JointObjective if v.joint else VocoderObjective)(self.config, critic)
        pairs = inputs.pairs
        self.joint_data = JointData(FeatureDataset(inputs.store, range(len(inputs.store))), pairs,
                                    v.segment_frames) if v.joint else None
        train = pairs.split("train")
        self.order = SegmentOrder(train, [pairs.n_frames(i) for i in train], v.batch_size, v.segment_frames, v.seed,
                                  acc.process_index, acc.num_processes)
        self.val_clips = pairs.split("val")
        self.mel = MelSpectrogram(self.config.audio)
        self.recorder: RunRecorder | None = None
        self.listener: ListeningEvaluator | None = None
        self._synth = None

    def attach(self, recorder: RunRecorder | None) -> None:
        self.recorder = recorder
        if recorder is not None:
            self.listener = ListeningEvaluator(self.config, self.inputs.store, self._voice, recorder, self.ctx.run,
                                               self.config.vocoder_training.validate_every)

    def _voice(self):
        """The voice as synth will speak it: the acoustic model and the generator in training."""
        from voxtrain.inference.torch_voice import Synthesizer
        from voxtrain.vocoder import HifiGanVocoder

        if self._synth is None:
            device = self.ctx.accelerator.device
            self._synth = Synthesizer(self.inputs.acoustic, "none", device=device)
            self._synth.vocoder = HifiGanVocoder(self.generator, self.config.audio, device)
        return self._synth

    def batches(self, epoch: int, batch_in_epoch: int) -> Iterator[tuple[int, int, Segments | JointBatch]]:
        frames = self.config.vocoder_training.segment_frames
        while True:
            if batch_in_epoch >= self.order.per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            picks = self.order.batch(epoch, batch_in_epoch)
            batch_in_epoch += 1
            if self.joint_data is not None:
                yield epoch, batch_in_epoch, self.joint_data.batch(picks)
            else:
                yield epoch, batch_in_epoch, Segments(*self.inputs.pairs.batch(picks, frames))

    def step(self, micro_batches: list[Segments | JointBatch], step: int) -> StepResult:
        self.wrapped.train()
        self.objective.generated.clear()
        critic = self.critic_wrapped if self.critics else None
        return adversarial_step(self.wrapped, self.objective, critic, self.objective.critic_objective, self.slots,
                                self.ctx.accelerator, micro_batches, step,
                                check_grad_norm=self.ctx.precision != "fp16")

    @torch.no_grad()
    def validate(self, step: int) -> Validation | None:
        """Mean |log-mel| error of the generator's audio from each validation clip's teacher-forced
        mel against the clip's real mel (the store's), over every frame and band."""
        if not self.val_clips:
            log.warning("the feature store has no validation clips: no val_mel, no best generator export")
            return None
        t0 = time.perf_counter()
        device = self.ctx.accelerator.device
        self.model.eval()
        error, count = 0.0, 0
        for i in self.val_clips:
            predicted = self._teacher_forced(i)
            real = torch.from_numpy(self.inputs.store.item(i)["mel"].astype(np.float32)).T
            mel = self.mel(self.generator(torch.from_numpy(predicted).T[None].to(device)).float().cpu())[0]
            error += float(torch.sum(torch.abs(mel - real)))
            count += real.numel()
        val = error / count
        self.recorder.val(step, {"mel": val})
        log.info("validation at step %d: val_mel %.4f over %d clips (%.1fs)", step, val, len(self.val_clips),
                 time.perf_counter() - t0)
        # The ears judge the voice as synth speaks it: a critic lowers the mel error and the
        # naturalness apart, so with checkpoint.best_by a listening score the best is chosen by ear.
        scores = self.listener.evaluate(step) if self.listener is not None else None
        heard = self.listener is not None and self.listener.available
        return Validation(val, scores or None, {"val_mel": val} | (scores or {}),
                          may_be_best=scores is not None or not heard)

    def _teacher_forced(self, i: int) -> np.ndarray:
        """Clip i's teacher-forced mel (T, n_mels): the pairs', or in a joint fine-tune the
        acoustic model's as it is now."""
        if self.joint_data is None:
            return self.inputs.pairs.clip(i)[0]
        return teacher_forced_mel(self.inputs.acoustic.model, self.joint_data.dataset[i])

    def export_best(self, ckpt: CheckpointManager, validation: Validation) -> None:
        """The current generator as the run's best, `{"generator": state_dict}` (what
        `load_hifigan` reads), and beside it the whole voice: the acoustic model's weights
        with a sidecar naming that generator, which synth, the exports and evaluate then use
        unasked."""
        run, best, acoustic = self.ctx.run, ckpt.best, self.inputs.acoustic
        data = serialize({"generator": {k: v.detach().clone() for k, v in self.generator.state_dict().items()}})
        meta = dict(acoustic.meta, vocoder=run.vocoder_export.name, vocoder_step=best.step,
                    vocoder_val_mel=best.val_mel, acoustic_checkpoint=acoustic.path.name)
        if self.joint_data is not None:  # the acoustic weights are the jointly trained ones, not the file's
            meta["acoustic_joint_step"] = best.step

        def write() -> None:
            write_atomic(data, run.vocoder_export)
            export_weights(acoustic.model.state_dict(), meta, run.best_export)

        ckpt.export_guarded(len(data) + weights_bytes(acoustic.model.state_dict()), write,
                            generator=str(run.vocoder_export))

    def facts(self) -> dict[str, Any]:
        return self.inputs.checkpoint_facts()

    def announce(self) -> dict[str, Any]:
        o, v = self.order, self.config.vocoder_training
        log.info("vocoder fine-tune: %d train / %d val clips, %d batches of %d x %d frames per epoch per process",
                 len(o.clips), len(self.val_clips), o.per_epoch, o.batch_size, v.segment_frames)
        return {"acoustic_checkpoint": str(self.inputs.acoustic.path)}

    def advice(self, trouble: str) -> str:
        v = self.config.vocoder_training
        if trouble == "out_of_memory_retry":
            return "lower vocoder_training.batch_size or segment_frames to avoid the retries"
        if trouble == "out_of_memory":
            return (f"Lower vocoder_training.batch_size ({v.batch_size}) or vocoder_training.segment_frames "
                    f"({v.segment_frames}).")
        return f"Lower vocoder_training.lr ({v.lr:g}), or set vocoder_training.precision=fp32."


class VocoderOpener:
    """A `train-vocoder` invocation, opened into a task once the harness holds the run."""

    def __init__(self, opts: VocoderOptions) -> None:
        self.opts, self.config = opts, opts.config
        self.precision = opts.config.vocoder_training.precision

    def open(self, ctx: RunContext) -> VocoderTask:
        # Seeded like the acoustic task: a fresh run's RNGs are then a function of the config
        # alone, and a resume's restored RNGs are the unbroken run's.
        seed_everything(self.config.vocoder_training.seed)
        return VocoderTask(ctx, open_inputs(self.opts, ctx))
