"""`voxtrain smoke-test`: the whole pipeline in under a minute, with a pass/fail per step.

It proves an installation trains before anyone spends days on a real run: a tiny espeak
corpus (no network), features, 10 training steps through the real `voxtrain train` command
(so logging, the log file, pre-flight, the run lock and signal handling are the production
ones), a checkpoint that loads with weights_only, an exact resume, and synthesis through
both vocoders. A check that needs a failed one is reported as skipped, not run, so the
first failure is the one to read.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import TRAIN, read_metrics, stop_events
from voxtrain.config import Config, config_from_dict
from voxtrain.errors import VoxtrainError
from voxtrain.versions import versions_line

PASS, FAIL, SKIP = "pass", "fail", "skip"
N_CLIPS = 12
FIRST_STEPS, RESUME_STEPS = 10, 12
SYNTH_TEXT = "The smoke test speaks."
TRAIN_TIMEOUT_S = 600.0
# An untrained duration predictor may say anything, but outside these bounds (per phoneme;
# real speech is ~0.08 s) the model or the inference path is broken.
MIN_SECONDS_PER_PHONEME, MAX_SECONDS_PER_PHONEME = 0.01, 0.5

# A model small enough that a step takes milliseconds on one core, but with every part
# (aligner, variance adaptor, decoder) of the real one.
SMALL_MODEL = {
    "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "conv_filter": 64, "conv_kernel": 3,
    "predictor_filter": 32, "variance_embedding_kernel": 3,
    "aligner": {"attention_dim": 16, "binarization_start_step": 5, "binarization_ramp_steps": 5},
}
# With the small model only: the default schedule's 4000 warm-up steps would leave 12 steps
# at an LR near zero, and an untrained duration predictor speaks nothing a vocoder can render.
SMALL_MODEL_TRAINING = {"lr": 1e-3, "scheduler": "noam", "warmup_steps": 10}
# Applied to any config: the smoke run must reach its steps quickly and save only at its targets.
SMOKE_TRAINING = {
    "batch_size": 2, "batch_frames": 0, "grad_accum": 1, "max_steps": 1000, "log_every": 1,
    "validate_every": 1000, "save_every": 1000, "sample_vocoder": "none",
}


class SmokeFailure(VoxtrainError):
    """A check failed, or the smoke test cannot start; the message is the detail."""


@dataclass
class SmokeCheck:
    name: str
    status: str  # pass | fail | skip
    detail: str
    seconds: float


def smoke_config(base: Config | None = None) -> Config:
    """The config of the smoke run: `base` (default: the built-in defaults with a small model)
    with the training cadence and split the smoke corpus needs."""
    data = (base or Config()).to_dict()
    if base is None:
        aligner = dict(data["model"]["aligner"], **SMALL_MODEL["aligner"])
        data["model"].update(SMALL_MODEL, aligner=aligner)
        data["training"].update(SMALL_MODEL_TRAINING)
    data["training"].update(SMOKE_TRAINING)
    data["data"]["val_size"] = 2  # of 12 clips
    data["checkpoint"].update(keep_last=2, disk_margin_mb=min(data["checkpoint"]["disk_margin_mb"], 16.0))
    return config_from_dict(data, "smoke-test config")


class _Runner:
    """Runs checks in order, times them and skips those whose prerequisites did not pass."""

    def __init__(self, on_check: Callable[[SmokeCheck], None] | None):
        self.checks: list[SmokeCheck] = []
        self.passed: set[str] = set()
        self.on_check = on_check

    def run(self, name: str, needs: tuple[str, ...], fn: Callable[[], str]) -> None:
        missing = next((n for n in needs if n not in self.passed), None)
        if missing is not None:
            self._add(SmokeCheck(name, SKIP, f"skipped (needs {missing})", 0.0))
            return
        t0 = time.perf_counter()
        try:
            detail, status = fn(), PASS
        except VoxtrainError as err:  # SmokeFailure, or a refusal by the code under test: its message says why
            detail, status = str(err), FAIL
        except Exception as err:  # an unexpected error is a failed check, not a crashed smoke test
            detail, status = f"{type(err).__name__}: {err}", FAIL
        if status == PASS:
            self.passed.add(name)
        self._add(SmokeCheck(name, status, detail, time.perf_counter() - t0))

    def _add(self, check: SmokeCheck) -> None:
        self.checks.append(check)
        if self.on_check is not None:
            self.on_check(check)


def _prerequisites() -> str:
    found = [versions_line()]
    problems = []
    try:
        from voxtrain.text.phonemize import Phonemizer

        ipa = Phonemizer().phonemize(["Hello world."])[0]
        if not ipa:
            raise RuntimeError("phonemized 'Hello world.' to nothing")
        found.append(f"espeak-ng ok (/{ipa}/)")
    except Exception as err:
        problems.append(f"espeak-ng via phonemizer: {err}")
    try:
        import pyworld

        found.append(f"pyworld {getattr(pyworld, '__version__', '?')}")
    except ImportError as err:
        problems.append(f"pyworld: {err} (pip install pyworld-prebuilt)")
    try:
        import soundfile

        found.append(f"soundfile {soundfile.__version__} (libsndfile {soundfile.__libsndfile_version__})")
    except (ImportError, OSError) as err:
        problems.append(f"soundfile: {err}")
    try:
        from voxtrain.vocoder.hifigan import bundled_hifigan_path

        found.append(f"HiFi-GAN weights {bundled_hifigan_path()}")
    except Exception as err:
        problems.append(f"HiFi-GAN weights: {err}")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return ", ".join(found)


def _train(features: Path, run: Path, config: Path, until: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "voxtrain.cli", "train", "--features", str(features), "--run", str(run),
           "--config", str(config), "--until-step", str(until), "--yes"]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TRAIN_TIMEOUT_S, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise SmokeFailure(f"`voxtrain train --until-step {until}` did not finish in {TRAIN_TIMEOUT_S:.0f}s") from None


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("│", "┃", "┏", "┡", "└"))]
    return " | ".join(kept[-lines:])


def _steps(run: RunDir) -> list[dict]:
    return [r for r in read_metrics(run.metrics) if r.get("type") == TRAIN]


def _check_trained(proc: subprocess.CompletedProcess, until: int) -> str:
    if proc.returncode != 0:
        raise SmokeFailure(f"`voxtrain train --until-step {until}` exited {proc.returncode}: {_tail(proc.stderr)}")
    return f"`voxtrain train --until-step {until}` exited 0"


def _check_log(run: RunDir) -> str:
    log = run.latest_log_file()
    if log is None:
        raise SmokeFailure(f"no train_*.log in {run.logs}")
    text = log.read_text(errors="replace")
    if f"step {FIRST_STEPS}/{FIRST_STEPS}" not in text:
        raise SmokeFailure(f"{log} has no 'step {FIRST_STEPS}/{FIRST_STEPS}' line ({len(text)} bytes)")
    return f"{log} ({len(text.splitlines())} lines)"


def _check_step(run: RunDir, step: int) -> str:
    steps = _steps(run)
    last = max((r["step"] for r in steps), default=0)
    if last != step:
        raise SmokeFailure(f"{run.metrics}: last train record is step {last}, expected {step}")
    stops = stop_events(run.metrics)
    if not stops or stops[-1].get("exit_code") != 0:
        raise SmokeFailure(f"{run.metrics}: no clean stop event after step {step}")
    return f"metrics.jsonl: {len(steps)} train records, last step {last}; stop: {stops[-1].get('reason')}"


def _check_loss(run: RunDir) -> str:
    losses = [(r["step"], r.get("loss_total")) for r in _steps(run)]
    bad = [s for s, v in losses if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if not losses or bad:
        raise SmokeFailure(f"non-finite or missing loss at step(s) {bad[:5] or 'all'}")
    return f"loss {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step {losses[-1][0]}"


def _check_checkpoint(run: RunDir, step: int) -> str:
    from voxtrain.artifacts.checkpoint_format import load_state, validate_training_state

    path = run.checkpoint(step)
    if not path.is_file():
        found = ", ".join(p.name for _, p in run.checkpoint_files()) or "none"
        raise SmokeFailure(f"no {path.name} in {run.checkpoints} (found: {found})")
    state = load_state(path)  # weights_only=True; a CheckpointError is a failed check
    validate_training_state(state, path)
    if state["step"] != step:
        raise SmokeFailure(f"{path.name} holds step {state['step']}, expected {step}")
    return f"{path} ({path.stat().st_size / 2**20:.1f} MB) loads with weights_only"


def _check_resume(features: Path, run: RunDir, config: Path) -> str:
    proc = _train(features, run.root, config, RESUME_STEPS)
    _check_trained(proc, RESUME_STEPS)
    log = run.latest_log_file()
    text = log.read_text(errors="replace") if log else ""
    if not any("RESUMING from" in line and f"(step {FIRST_STEPS})" in line for line in text.splitlines()):
        raise SmokeFailure(f"the log does not say 'RESUMING from ... (step {FIRST_STEPS})': {_tail(proc.stderr)}")
    _check_step(run, RESUME_STEPS)
    _check_checkpoint(run, RESUME_STEPS)
    return f"resumed from step {FIRST_STEPS} and reached step {RESUME_STEPS}"


def _check_synth(run: RunDir, vocoder: str, out: Path) -> str:
    import numpy as np
    import soundfile as sf

    from voxtrain.inference.entry import synthesize
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.text import TextProcessor

    ckpt = run.checkpoint_files()[-1][1]
    t0 = time.perf_counter()
    synthesize(SYNTH_TEXT, ckpt, out, vocoder)
    took = time.perf_counter() - t0
    if not out.is_file():
        raise SmokeFailure(f"{out} was not written")
    wav, rate = sf.read(str(out), dtype="float32")
    acoustic = load_acoustic_model(ckpt)
    n_phonemes = len(TextProcessor(acoustic.config.text, acoustic.symbols).process([SYNTH_TEXT])[0].ids)
    seconds = len(wav) / rate
    shortest = MIN_SECONDS_PER_PHONEME * n_phonemes
    longest = MAX_SECONDS_PER_PHONEME * n_phonemes + 1.0
    if rate != acoustic.config.audio.sample_rate:
        raise SmokeFailure(f"{out}: {rate} Hz, the model's rate is {acoustic.config.audio.sample_rate} Hz")
    if not shortest <= seconds <= longest:
        raise SmokeFailure(f"{out}: {seconds:.2f} s for {n_phonemes} phonemes (plausible: "
                           f"{shortest:.3f}-{longest:.1f} s)")
    if not np.isfinite(wav).all():
        raise SmokeFailure(f"{out}: non-finite samples")
    return f"{out} ({seconds:.2f} s at {rate} Hz for {n_phonemes} phonemes, made in {took:.1f} s)"


def _workdir(workdir: Path | None) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="voxtrain-smoke-"))
    workdir = Path(workdir)
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        # The folder is removed afterwards (without keep): never one that holds someone's files.
        raise SmokeFailure(f"--workdir {workdir} must be an empty folder or not exist yet")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def run_smoke_test(workdir: Path | None = None, keep: bool = False, config: Config | None = None, *,
                   on_check: Callable[[SmokeCheck], None] | None = None) -> list[SmokeCheck]:
    """Run every check in order; each is timed and reported to `on_check` as it finishes.

    `workdir` (empty or new; default a fresh temporary folder) holds the corpus, features,
    run and WAVs, and is removed at the end unless `keep`. Raises SmokeFailure for a non-empty
    workdir; every other problem is a failed check.
    """
    root = _workdir(workdir)
    corpus, features, run, out = root / "corpus", root / "features", RunDir(root / "run"), root / "synth"
    cfg_path = root / "smoke.yaml"
    r = _Runner(on_check)
    try:
        cfg = smoke_config(config)
        cfg_path.write_text(cfg.to_yaml(), encoding="utf-8")

        def make() -> str:
            from voxtrain.demo_corpus import make_corpus

            s = make_corpus(corpus, voice="espeak", n_sentences=N_CLIPS, seed=0, progress=False)
            return f"{s.n_clips} espeak clips, {s.seconds:.1f} s of audio in {corpus}"

        def prepare() -> str:
            from voxtrain.data import prepare_corpus

            report = prepare_corpus(corpus, features, cfg, progress=False)
            if report.n_train < 1:
                raise SmokeFailure(f"no training clips: {report.summary()}")
            return report.summary()

        def train() -> str:
            proc = _train(features, run.root, cfg_path, FIRST_STEPS)
            return _check_trained(proc, FIRST_STEPS) + f" (batch {cfg.training.batch_size}, run {run.root})"

        trained = f"train {FIRST_STEPS} steps"
        r.run("prerequisites", (), _prerequisites)
        r.run("corpus", ("prerequisites",), make)
        r.run("prepare", ("corpus",), prepare)
        r.run(trained, ("prepare",), train)
        r.run("log file", (trained,), lambda: _check_log(run))
        r.run(f"step {FIRST_STEPS} reached", (trained,), lambda: _check_step(run, FIRST_STEPS))
        r.run("loss finite", (trained,), lambda: _check_loss(run))
        r.run("checkpoint", (trained,), lambda: _check_checkpoint(run, FIRST_STEPS))
        r.run("resume", ("checkpoint",), lambda: _check_resume(features, run, cfg_path))
        r.run("synth griffin-lim", ("checkpoint",), lambda: _check_synth(run, "griffin-lim", out / "griffin-lim.wav"))
        r.run("synth hifigan", ("checkpoint",), lambda: _check_synth(run, "hifigan", out / "hifigan.wav"))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return r.checks


def print_smoke(checks: list[SmokeCheck], workdir: Path | None = None) -> bool:
    """Print the table and a one-line verdict; True when every check passed."""
    from rich.console import Console
    from rich.table import Table

    styles = {PASS: "[green]PASS[/]", FAIL: "[bold red]FAIL[/]", SKIP: "[yellow]SKIP[/]"}
    table = Table(title="voxtrain smoke test")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, styles[c.status], f"{c.seconds:.1f}", c.detail)
    console = Console()
    console.print(table)
    failed = [c.name for c in checks if c.status == FAIL]
    skipped = [c.name for c in checks if c.status == SKIP]
    total = sum(c.seconds for c in checks)
    if not failed and not skipped:
        console.print(f"[bold green]all {len(checks)} checks passed[/] in {total:.1f} s")
    else:
        console.print(f"[bold red]smoke test FAILED[/]: {len(failed)} failed ({', '.join(failed)}), "
                      f"{len(skipped)} skipped, {len(checks) - len(failed) - len(skipped)} passed")
    if workdir is not None:
        console.print(f"files kept in {workdir}")
    return not failed and not skipped
