"""Shared fixtures: a small real corpus (espeak voice) prepared once per test session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
import torch
import yaml

if TYPE_CHECKING:
    import torch

# A model small enough that a step takes milliseconds on one core.
MICRO_CONFIG = {
    "data": {"val_size": 2, "shard_size": 8},
    "model": {
        "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "conv_filter": 64, "conv_kernel": 3,
        "predictor_filter": 32, "variance_embedding_kernel": 3,
        "aligner": {"attention_dim": 16, "binarization_start_step": 5, "binarization_ramp_steps": 5},
    },
    "training": {
        "max_steps": 40, "batch_size": 2, "grad_accum": 2, "lr": 1e-3, "scheduler": "noam", "warmup_steps": 10,
        "log_every": 1, "validate_every": 1000, "save_every": 1000, "precision": "fp32", "sample_vocoder": "none",
        "validation_sentences": ["A short test."],
    },
    "checkpoint": {"keep_last": 2, "disk_margin_mb": 0},
    # Listening scores have their own tests; elsewhere they would only slow the micro runs.
    "evaluation": {"enabled": False},
}


def _env() -> dict:
    env = dict(os.environ)
    # One thread: bitwise-reproducible CPU math and no fight over the 2 cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    from voxtrain.demo_corpus import make_corpus

    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, voice="espeak", n_sentences=14, seed=3, progress=False)
    return out


@pytest.fixture(scope="session")
def features(tmp_path_factory, corpus_dir) -> Path:
    from voxtrain.config import config_from_dict
    from voxtrain.data import prepare_corpus

    out = tmp_path_factory.mktemp("features")
    prepare_corpus(corpus_dir, out, config_from_dict(MICRO_CONFIG), workers=1, progress=False)
    return out


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               proc: subprocess.Popen | None = None, poll: float = 0.02) -> Any:
    """Wait until predicate() is truthy and return its value; fail loudly, naming `what`, when
    `timeout` runs out or when `proc` exits first. The timeout is a margin, never the event."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def save_temp_files(checkpoints: Path) -> list[Path]:
    """Temporary files of checkpoint saves in flight (or killed mid-write): `.ckpt-step*.pt.tmp<pid>`."""
    return sorted(checkpoints.glob(".ckpt-step*.pt.tmp*")) if checkpoints.is_dir() else []


class OutputLines(threading.Thread):
    """Reads a process's output in the background, so a test can wait for a line the process
    prints (an event) while the pipe never fills up."""

    def __init__(self, stream: IO[str]):
        super().__init__(daemon=True)
        self.stream, self.lines, self.ended = stream, [], False
        self._changed = threading.Condition()
        self.start()

    def run(self) -> None:
        for line in self.stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line holding `needle`; fails when the output ends or `timeout` runs out first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    why = "the output ended" if self.ended else f"timed out after {timeout:g}s"
                    raise AssertionError(f"{why} before a line with {needle!r}:\n{''.join(self.lines)}")
                self._changed.wait(left)


@pytest.fixture(scope="session")
def trained(features, tmp_path_factory) -> Path:
    """A checkpoint of the micro model after 300 steps: enough to speak recognisably."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = write_config(tmp / "c.yaml", training={"max_steps": 300, "save_every": 300, "log_every": 50,
                                                 "grad_accum": 1, "batch_size": 4})
    t = Trainer(features, tmp / "run", cfg)
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    return t.run / "checkpoints" / "ckpt-step00000300.pt"


def write_config(path: Path, **sections) -> Path:
    cfg = json.loads(json.dumps(MICRO_CONFIG))
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


class Trainer:
    """Runs `voxtrain train` as a real process."""

    def __init__(self, features: Path, run: Path, config: Path):
        self.features, self.run, self.config = features, run, config

    def cmd(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "voxtrain.cli", "train", "--features", str(self.features),
                "--run", str(self.run), "--config", str(self.config), *extra]

    def run_to_end(self, *extra: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*extra), env=env or _env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*extra), env=env or _env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, text=True)

    def metrics(self) -> list[dict]:
        from voxtrain.artifacts.metrics_format import read_metrics

        return read_metrics(self.run / "metrics.jsonl")

    def last_step(self) -> int:
        steps = [r["step"] for r in self.metrics() if r["type"] == "train"]
        return max(steps) if steps else 0

    def wait_for_step(self, proc: subprocess.Popen, step: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.last_step() < step:
            if proc.poll() is not None:
                raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stdout.read()}")
            if time.time() > deadline:
                proc.send_signal(signal.SIGKILL)
                out = proc.communicate(timeout=30)[0] if proc.stdout else ""
                raise AssertionError(f"step {step} not reached in {timeout}s (last step {self.last_step()}): "
                                     f"{(out or '')[-3000:]}")
            time.sleep(0.02)


@pytest.fixture
def trainer_factory(features, tmp_path):
    def make(name: str = "run", **sections) -> Trainer:
        cfg = write_config(tmp_path / f"{name}.yaml", **sections)
        return Trainer(features, tmp_path / name, cfg)

    return make


@pytest.fixture
def env() -> dict:
    return _env()


# -- a real small filesystem, filled while a trainer runs ----------------------------------
def _mount_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """A real 16 MB tmpfs (needs root: skipped otherwise)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, 16384):
        pytest.skip("cannot mount a tmpfs here (needs root); the disk-full test needs a real small filesystem")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def free_bytes(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize


def fill_disk(fs: Path, leave: int) -> None:
    """Grow fs/filler.bin until at most `leave` bytes are free (another tenant eating the disk)."""
    with open(fs / "filler.bin", "ab") as f:
        excess = free_bytes(fs) - leave
        if excess > 0:
            f.write(b"\0" * excess)


class Hog(threading.Thread):
    """Keeps the filesystem at most `leave` bytes free, eating whatever the trainer frees."""

    def __init__(self, fs: Path, leave: int):
        super().__init__(daemon=True)
        self.fs, self.leave, self.stop = fs, leave, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fill_disk(self.fs, self.leave)
            except OSError:
                pass
            time.sleep(0.005)


def wait_event(trainer, proc, predicate, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in trainer.metrics():
            if e["type"] == "event" and predicate(e):
                return e
        assert proc.poll() is None, f"trainer exited: {proc.stdout.read()}"
        time.sleep(0.05)
    raise AssertionError("event not seen in time")


def initial_weights(state: dict) -> dict[str, torch.Tensor]:
    """The weights the trainer builds before it loads anything: the model of the checkpoint's config,
    freshly initialised after seed_everything (this process's RNGs are left as they were)."""
    import random

    import numpy as np
    import torch

    from voxtrain.config import config_from_dict
    from voxtrain.model import FastSpeech2
    from voxtrain.text import SymbolTable
    from voxtrain.train.state import seed_everything

    cfg = config_from_dict(state["config"])
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(cfg.training.seed)
        model = FastSpeech2(cfg.model, len(SymbolTable.from_dict(state["symbols"])), cfg.audio.n_mels)
    random.setstate(py_state)
    np.random.set_state(np_state)
    return model.state_dict()


# -- comparing checkpoints ---------------------------------------------------------------
def assert_same(a, b, where: str = "state") -> None:
    """Bitwise equality of two checkpoint-like structures: same keys everywhere, torch.equal tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b)}"
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} vs " \
                                                             f"{sorted(map(str, b)) if isinstance(b, dict) else b}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def without_time(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "time"}  # the wall-clock time of the save


# -- train-vocoder runs on the micro corpus (test_vocoder_training, _harness, _critics) ----------
# Tiny segments, batch 2, few steps: a step is under a second on one core. Validation (the
# whole of both validation clips) is the slow part, so it runs only at step 0 and at the end.
VOCODER_SETTINGS = {
    "vocoder_training": {
        "max_steps": 6, "batch_size": 2, "segment_frames": 8, "log_every": 1, "validate_every": 1000,
        "save_every": 1000, "stft_resolutions": [[512, 50, 240], [1024, 120, 600]], "start": "ljspeech",
        "critic": "none",  # the critic's tests turn it on
    },
    "training": {"trackers": []},
    "checkpoint": {"keep_last": 1, "disk_margin_mb": 0},
    "evaluation": {"enabled": False},  # as in MICRO_CONFIG; test_vocoder_critics turns it on once
}


@pytest.fixture(scope="module")
def acoustic(features, tmp_path_factory) -> Path:
    """A micro acoustic model trained briefly: its mels are poor, which is what the vocoder must learn to render."""
    tmp = tmp_path_factory.mktemp("acoustic")
    cfg = write_config(tmp / "c.yaml", training={"max_steps": 60, "save_every": 60, "log_every": 60,
                                                 "grad_accum": 1, "batch_size": 4, "trackers": []})
    result = Trainer(features, tmp / "run", cfg).run_to_end("--yes")
    assert result.returncode == 0, result.stderr
    return tmp / "run" / "checkpoints" / "ckpt-step00000060.pt"


@pytest.fixture(scope="module")
def vocoder_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocoder_config") / "vocoder.yaml"
    path.write_text(yaml.safe_dump(VOCODER_SETTINGS))
    return path


def vocoder_cmd(acoustic: Path, features: Path, corpus: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "voxtrain.cli", "train-vocoder", "--checkpoint", str(acoustic),
            "--features", str(features), "--corpus", str(corpus), "--run", str(run), "--config", str(config),
            "--yes", *extra]


def run_cmd(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def records(run: Path, kind: str) -> dict[int, dict]:
    """The run's train or val records by step."""
    from voxtrain.artifacts.metrics_format import read_metrics

    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if r["type"] == kind}


def events(run: Path, name: str) -> list[dict]:
    from voxtrain.artifacts.metrics_format import read_metrics

    return [r for r in read_metrics(run / "metrics.jsonl") if r["type"] == "event" and r["event"] == name]


@pytest.fixture(scope="module")
def reference(acoustic, features, corpus_dir, vocoder_config, tmp_path_factory) -> Path:
    """An uninterrupted fine-tune to max_steps: the run the other tests are measured against."""
    run = tmp_path_factory.mktemp("vocoder") / "reference"
    result = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, run, vocoder_config))
    assert result.returncode == 0, result.stderr
    return run
