"""`voxtrain finetune`: a folder of recordings and a base voice in, a finished voice out, in a
wall-clock budget.

Stages, each resumable and never redone once done (`pipeline.json`, ops/finetune_records.py):
prepare the corpus into RUN/features; fine-tune the acoustic model (`voxtrain train
--init-from`) in RUN/acoustic; fine-tune the vocoder on its mels (`voxtrain train-vocoder`)
in RUN/vocoder; write the voice to RUN/voice.safetensors (and with --onnx the piper voice).
The training stages run as `voxtrain` subprocesses (operations never import the training
loop), each with a deadline: at it the stage finishes its step, validates it and saves, so
time spent is never thrown away. The split of the time between the stages is
ops/finetune_plan.py's, from the phase-2 bench.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.layout import FinetuneDir, RunDir, export_sidecar
from voxtrain.artifacts.metrics_format import stop_events
from voxtrain.artifacts.store import FeatureStore
from voxtrain.atomic import write_json_atomic
from voxtrain.config import Config, load_config
from voxtrain.config.derive import explicit_settings
from voxtrain.ops.finetune_plan import FinetuneBudget, recommend_budget, split_minutes
from voxtrain.ops.finetune_records import FinetuneError, PipelineRecords

log = logging.getLogger("voxtrain.finetune")

# Fewer seconds than this left for the vocoder stage: it would not get past its critic's
# warm-up (bench/finetune.py: 100 steps of ~2 s on 2 cores), so the voice keeps the base's vocoder.
MIN_VOCODER_SECONDS = 120.0


@dataclass
class FinetuneRequest:
    """One `voxtrain finetune` invocation."""

    base: Path
    corpus: Path
    run: Path
    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    budget_minutes: float | None = None  # None: finetune.budget_minutes
    features: Path | None = None  # a store prepared already, instead of RUN/features
    onnx: bool = False

    def identity(self, budget_s: float) -> dict[str, Any]:
        return {"base": str(self.base), "corpus": str(self.corpus),
                "features": str(self.features) if self.features else None, "budget_s": budget_s}


@dataclass
class FinetuneOutcome:
    exit_code: int
    message: str
    voice: Path | None = None


class Pipeline:
    def __init__(self, req: FinetuneRequest, confirm: Callable[[list[str]], None]) -> None:
        self.req, self.confirm = req, confirm
        self.dir = FinetuneDir(req.run)
        self.config = load_config(req.config_path, req.overrides)
        f = self.config.finetune
        minutes = req.budget_minutes if req.budget_minutes is not None else f.budget_minutes
        if minutes < f.min_budget_minutes:
            raise FinetuneError(f"--budget {minutes:g}m is too small for a useful fine-tune: the minimum is "
                                f"{f.min_budget_minutes:g} minutes (finetune.min_budget_minutes)")
        self.budget_s = minutes * 60
        self.records = PipelineRecords.open(self.dir, req.identity(self.budget_s))
        self.stopped = False
        self._child: subprocess.Popen | None = None

    # -- time ------------------------------------------------------------------------
    def seconds_left(self) -> float:
        """The budget less every stage's recorded seconds (earlier invocations included)."""
        return self.budget_s - self.records.used_seconds()

    # -- stages ----------------------------------------------------------------------
    def run(self) -> FinetuneOutcome:
        """The stages, holding the folder's lock (its PID file is what `--detach` waits for)."""
        from voxtrain.artifacts.lock import RunLock

        with RunLock(RunDir(self.dir.root), log.warning):
            return self._stages()

    def _stages(self) -> FinetuneOutcome:
        features = self.prepare()
        store = FeatureStore(features)
        budget = self.plan(store)
        for stage, runner in (("acoustic", self.acoustic), ("vocoder", self.vocoder)):
            if self.records.done(stage):
                log.info("%s stage: %s already", stage, self.records.stages[stage]["status"])
                continue
            runner(store, budget)
            if self.stopped:
                return FinetuneOutcome(0, f"stopped during the {stage} stage: run the same command to continue")
        voice = self.write_voice()
        return FinetuneOutcome(0, f"the voice: {voice}", voice)

    def prepare(self) -> Path:
        if self.req.features is not None:
            return self.req.features
        if self.records.done("prepare") and (self.dir.features / "COMPLETE").is_file():
            return self.dir.features
        from voxtrain.data.metadata import read_metadata
        from voxtrain.data.prepare import prepare_corpus

        t0 = self.records.begin("prepare")
        cfg = self._prepare_config(len(read_metadata(self.req.corpus).entries))
        report = prepare_corpus(self.req.corpus, self.dir.features, cfg)
        self.records.end("prepare", t0, "done", kept=report.kept, rejected=report.rejected,
                         minutes=round(report.hours * 60, 2))
        return self.dir.features

    def _prepare_config(self, clips: int) -> Config:
        """A fifth of a small corpus for validation (2 to the config's val_size), unless the config says."""
        if "data.val_size" in explicit_settings(self.config.data, "data"):
            return self.config
        val = max(2, min(self.config.data.val_size, clips // 5))
        return self.config.model_copy(update={"data": self.config.data.model_copy(update={"val_size": val})})

    def plan(self, store: FeatureStore) -> FinetuneBudget:
        """The steps each stage aims at (from the data) and the time each gets (from the budget);
        shown and confirmed before the first training step."""
        train = store.split_indices("train")
        minutes = split_minutes(store, "train")
        f = self.config.finetune
        if minutes * 60 < f.min_audio_seconds:
            raise FinetuneError(f"{self.req.corpus}: {minutes * 60:.0f} s of training audio ({len(train)} clips after "
                                f"{len(store.split_indices('val'))} for validation); a fine-tune needs at least "
                                f"{f.min_audio_seconds:g} s (finetune.min_audio_seconds): record more clips")
        budget = recommend_budget(len(train), self.config.training.batch_size, minutes)
        left = self.seconds_left() - f.reserve_seconds
        rows = [f"data: {len(train)} train clips ({minutes:.1f} min), {len(store.split_indices('val'))} validation",
                f"budget: {self.budget_s / 60:g} min, {max(left, 0) / 60:.1f} min of it left for training",
                f"acoustic: up to {budget.acoustic_steps} steps in {f.acoustic_share * max(left, 0) / 60:.1f} min",
                f"vocoder: up to {budget.vocoder_steps} steps in the rest",
                f"voice: {self.dir.voice}" + (f" and {self.dir.onnx}" if self.req.onnx else "")]
        if not self.records.stages.get("acoustic"):
            self.confirm(rows)
        return budget

    def acoustic(self, store: FeatureStore, budget: FinetuneBudget) -> None:
        run, f = self.dir.acoustic, self.config.finetune
        steps = self._steps("training", budget.acoustic_steps)
        stop_at = time.time() + f.acoustic_share * (self.seconds_left() - f.reserve_seconds)
        sets = self._recipe({
            "training.max_steps": steps, "training.validate_every": steps, "training.save_every": max(25, steps // 4),
            "model.aligner.binarization_start_step": 0, "model.aligner.binarization_ramp_steps": 1,
            # The mel critic won by all three ears on 20 clips (docs/NATURALNESS.md); a quarter
            # of the steps warms it up, a quarter ramps it in.
            "training.adversarial.critic": "mel", "training.adversarial.warmup_steps": steps // 4,
            "training.adversarial.ramp_steps": steps // 4})
        start = [] if run.checkpoint_files() else ["--init-from", str(self.req.base)]
        self._stage("acoustic", run, ["train", *start, "--features", str(store.root), "--run", str(run.root),
                                      *sets], stop_at, steps)

    def vocoder(self, store: FeatureStore, budget: FinetuneBudget) -> None:
        run, f = self.dir.vocoder, self.config.finetune
        left = self.seconds_left() - f.reserve_seconds
        if left < MIN_VOCODER_SECONDS:
            t0 = self.records.begin("vocoder")
            self.records.end("vocoder", t0, "skipped",
                             reason=f"{max(left, 0):.0f} s left, under {MIN_VOCODER_SECONDS:.0f}: the base's vocoder")
            return
        steps = self._steps("vocoder_training", budget.vocoder_steps)
        sets = self._recipe({
            "vocoder_training.max_steps": steps, "vocoder_training.validate_every": steps,
            "vocoder_training.save_every": max(25, steps // 4),
            "vocoder_training.critic_warmup_steps": steps // 4, "vocoder_training.adversarial_ramp_steps": steps // 4})
        acoustic = self.dir.acoustic.best_export
        self._stage("vocoder", run, ["train-vocoder", "--checkpoint", str(acoustic), "--features", str(store.root),
                                     "--corpus", str(self.req.corpus), "--run", str(run.root), *sets],
                    time.time() + left, steps)

    def _steps(self, section: str, planned: int) -> int:
        """The stage's step target: the plan's, unless the user's config or --set gives max_steps."""
        given = explicit_settings(getattr(self.config, section), section)
        return int(given.get(f"{section}.max_steps", planned))

    def _recipe(self, settings: dict[str, Any]) -> list[str]:
        """--set arguments: the pipeline's settings, except what the user's config or --set gives."""
        given = {k for section in ("training", "vocoder_training", "model")
                 for k in explicit_settings(getattr(self.config, section), section)}
        out = [x for k, v in settings.items() if k not in given for x in ("--set", f"{k}={v}")]
        if self.req.config_path is not None:
            out = ["--config", str(self.req.config_path), *out]
        return [*out, *(x for o in self.req.overrides for x in ("--set", o))]

    def _stage(self, stage: str, run: RunDir, argv: list[str], stop_at: float, steps: int) -> None:
        """Run one training stage as a `voxtrain` subprocess until its target or `stop_at`."""
        t0 = self.records.begin(stage, run=str(run.root), target_steps=steps, stop_at=round(stop_at, 1))
        log.info("%s stage: running in %s, up to %d steps or %.1f min", stage, run.root, steps,
                 max(stop_at - time.time(), 0) / 60)
        cmd = [sys.executable, "-m", "voxtrain.cli", *argv, "--yes", "--stop-at", f"{stop_at:.3f}"]
        code = self._run_child(cmd)
        stop = _last_stop(run)
        cause = (stop or {}).get("cause")
        if code != 0:
            self.records.end(stage, t0, "failed", exit_code=code)
            raise FinetuneError(f"the {stage} stage failed (exit code {code}; its log is in {run.logs}): fix what "
                                f"it says, then run the same command to continue")
        if self.stopped or cause == "signal":
            self.stopped = True
            self.records.end(stage, t0, "stopped", step=(stop or {}).get("step"))
            return
        self.records.end(stage, t0, "done", step=(stop or {}).get("step"), cause=cause or "target")

    def _run_child(self, cmd: list[str]) -> int:
        """The stage in the foreground; SIGTERM/SIGINT to the pipeline stop the stage as they stop `train`."""
        def forward(signum: int, _frame: Any) -> None:
            self.stopped = True
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
            return self._child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._child = None

    def write_voice(self) -> Path:
        """The finished voice at one path: the vocoder run's best (acoustic weights whose sidecar
        names its generator), or the acoustic run's best with the bundled generator."""
        t0 = self.records.begin("voice")
        out, vocoder = self.dir, self.dir.vocoder
        if vocoder.vocoder_export.is_file() and vocoder.best_export.is_file():
            shutil.copyfile(vocoder.vocoder_export, out.voice_generator)
            _copy_voice(vocoder.best_export, out.voice, out.voice_generator.name)
        else:
            out.voice_generator.unlink(missing_ok=True)
            _copy_voice(self.dir.acoustic.best_export, out.voice, None)
        facts: dict[str, Any] = {"path": str(out.voice)}
        if self.req.onnx:
            from voxtrain.export.onnx import export_onnx_voice

            export_onnx_voice(out.voice, out.onnx)
            facts["onnx"] = str(out.onnx)
        self.records.end("voice", t0, "done", **facts)
        return out.voice


def _copy_voice(weights: Path, out: Path, generator: str | None) -> None:
    """Copy an export and its sidecar; the sidecar names `generator` (beside `out`) or none."""
    if not weights.is_file():
        raise FinetuneError(f"{weights} is missing: the stage that writes it has no best yet; run the same "
                            f"command again to continue it")
    meta = json.loads(export_sidecar(weights).read_text(encoding="utf-8"))
    if generator is None:
        meta.pop("vocoder", None)
    else:
        meta["vocoder"] = generator
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(weights, tmp)
    tmp.replace(out)
    write_json_atomic(export_sidecar(out), meta)


def _last_stop(run: RunDir) -> dict | None:
    stops = stop_events(run.metrics)
    return stops[-1] if stops else None


def run_finetune(req: FinetuneRequest, confirm: Callable[[list[str]], None] = lambda rows: None) -> FinetuneOutcome:
    """Run (or continue) the pipeline; `confirm` sees the plan's lines before any training and
    may raise to stop there. FinetuneError says what to fix."""
    if not math.isfinite(req.budget_minutes or 0.0):
        raise FinetuneError("--budget must be a number of minutes")
    return Pipeline(req, confirm).run()
