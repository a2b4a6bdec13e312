"""The operator's commands end to end, as real processes: smoke-test, train --detach,
status, stop (graceful and forced), stale PID files, preflight."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import save_temp_files
from voxtrain.artifacts.checkpoint_format import load_state, validate_training_state
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import pid_alive

LONG = ("--set", "training.max_steps=100000")  # still running when the test looks at it
CHECK_NAMES = ("prerequisites", "corpus", "prepare", "train 10 steps", "log file", "step 10 reached",
               "loss finite", "checkpoint", "resume", "synth griffin-lim", "synth hifigan")


@pytest.fixture
def cli_env(env) -> dict:
    # Wide tables: a rich cell must not wrap a phrase the test looks for.
    return dict(env, COLUMNS="200")


def voxtrain(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrain.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def detach(trainer, env: dict, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run(trainer.cmd(*LONG, *extra, "--detach"), env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def launched_pid(r: subprocess.CompletedProcess) -> int:
    m = re.search(r"training in the background: pid (\d+)", r.stdout)
    assert r.returncode == 0 and m, r.stdout + r.stderr
    return int(m.group(1))


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def kill(pid: int | None) -> None:
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 30, f"pid {pid} to die")


def table_row(output: str, name: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(f"│ {name} ")), "")


def stop_step(trainer) -> int:
    stops = [r for r in trainer.metrics() if r["type"] == "event" and r["event"] == "stop"]
    assert stops, "no stop event"
    return stops[-1]["step"]


def test_smoke_test_passes(tmp_path, cli_env):
    workdir = tmp_path / "smoke"
    r = voxtrain("smoke-test", "--workdir", str(workdir), env=cli_env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"all {len(CHECK_NAMES)} checks passed" in r.stdout
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")
            and line.split("│")[1].strip()}
    assert list(rows) == list(CHECK_NAMES)
    assert all("PASS" in row for row in rows.values()), r.stdout
    assert not workdir.exists(), "the work folder is removed without --keep"
    # A non-empty work folder is refused rather than deleted afterwards.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    r = voxtrain("smoke-test", "--workdir", str(tmp_path / "busy"), env=cli_env)
    assert r.returncode == 1 and "must be an empty folder" in r.stderr
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_detach_status_refuse_stale_pid_and_graceful_stop(trainer_factory, cli_env):
    t = trainer_factory("detached")
    run = RunDir(t.run)
    pids: list[int] = []
    try:
        r, _ = detach(t, cli_env)
        returned = time.time()
        pids.append(launched_pid(r))
        # --detach returns while the trainer runs on (100000 steps), once it holds the run: its PID file
        # names it. And it returns promptly then: it waits out a 3 s settle time and polls every 0.1 s,
        # so the margin covers only its own latency, not the trainer's start-up, slow on a loaded machine.
        owner = json.loads(run.pid_file.read_text())
        assert owner["pid"] == pids[0] and pid_alive(pids[0]), owner
        assert returned - owner["started"] < 3 + 20, f"--detach returned {returned - owner['started']:.1f}s " \
                                                     "after the trainer took the run"
        for words in (f"log:     {t.run}/logs/train_", f"voxtrain monitor {t.run}", f"voxtrain status {t.run}",
                      f"voxtrain stop {t.run}"):
            assert words in r.stdout, r.stdout
        assert run.pid_file.is_file() and run.latest_log_file() is not None
        status = voxtrain("status", str(t.run), env=cli_env)
        assert status.returncode == 0 and f"running (pid {pids[0]}" in status.stdout, status.stdout

        again, _ = detach(t, cli_env)
        assert again.returncode != 0
        assert f"already being trained by pid {pids[0]}" in again.stderr, again.stderr
        assert pid_alive(pids[0])

        # SIGKILL leaves the PID file and the lock file behind; the kernel dropped the lock.
        wait_for(lambda: t.last_step() >= 1, 60, "step 1")
        kill(pids[0])
        assert run.pid_file.is_file() and run.lock_file.is_file()
        status = voxtrain("status", str(t.run), env=cli_env)
        assert status.stdout.startswith("detached: dead"), status.stdout
        r, _ = detach(t, cli_env)
        pids.append(launched_pid(r))
        assert f"clearing the stale PID file of a dead trainer (pid {pids[0]}" in r.stderr, r.stderr
        status = voxtrain("status", str(t.run), env=cli_env)
        assert f"running (pid {pids[1]}" in status.stdout, status.stdout

        wait_for(lambda: t.last_step() >= 3, 60, "step 3")
        stop = voxtrain("stop", str(t.run), env=cli_env)
        assert stop.returncode == 0 and "stopped after saving a checkpoint" in stop.stdout, stop.stdout
        assert not pid_alive(pids[1])
        step = stop_step(t)
        assert step >= 3
        state = load_state(run.checkpoint(step))
        validate_training_state(state, run.checkpoint(step))
        assert state["step"] == step
        status = voxtrain("status", str(t.run), env=cli_env)
        assert status.stdout.startswith("detached: stopped: stopped by SIGTERM"), status.stdout
        assert not run.pid_file.exists()
        log = run.latest_log_file().read_text()
        assert "SIGTERM received" in log and f"stopped by SIGTERM at step {step}" in log
    finally:
        for pid in pids:
            kill(pid)


def test_forced_stop_kills_a_slow_save_and_keeps_the_last_checkpoint(trainer_factory, cli_env):
    t = trainer_factory("forced")
    run = RunDir(t.run)
    first = t.run_to_end("--until-step", "3", env=cli_env)
    assert first.returncode == 0, first.stderr
    pre = voxtrain("preflight", "--features", str(t.features), "--run", str(t.run), "--config", str(t.config),
                   env=cli_env)
    assert pre.returncode == 0 and "resume from step 3" in table_row(pre.stderr, "resume plan"), pre.stderr
    before = run.checkpoint(3).read_bytes()
    pid = None
    try:
        # Checkpoint writes take 600 s in this session; its first save is at step 5.
        r, _ = detach(t, dict(cli_env, VOXTRAIN_TEST_SLOW_WRITE_S="600"), "--set", "training.save_every=5")
        pid = launched_pid(r)
        # The stop comes while that save is in flight (its temporary file exists), so the trainer cannot
        # finish within the 1 s timeout however loaded the machine is: the forced kill lands in the save.
        wait_for(lambda: save_temp_files(run.checkpoints), 120, "the step-5 save to be in flight")
        t0 = time.monotonic()
        stop = voxtrain("stop", str(t.run), "--timeout", "1", "--force", env=cli_env)
        assert stop.returncode == 0 and "did not stop within 1s: killed" in stop.stdout, stop.stdout
        assert time.monotonic() - t0 < 60, "stop --force must not wait for the 600 s save"
        wait_for(lambda: not pid_alive(pid), 30, "the killed trainer to vanish")
        assert [p.name for p in save_temp_files(run.checkpoints)] == [f".ckpt-step00000005.pt.tmp{pid}"]
        assert [s for s, _ in run.checkpoint_files()] == [3]
        assert run.checkpoint(3).read_bytes() == before
        validate_training_state(load_state(run.checkpoint(3)), run.checkpoint(3))
        assert "dead" in voxtrain("status", str(t.run), env=cli_env).stdout
    finally:
        kill(pid)


def test_preflight(trainer_factory, tmp_path, cli_env):
    t = trainer_factory("pre")
    args = ("preflight", "--run", str(t.run), "--config", str(t.config))
    r = voxtrain(*args, "--features", str(tmp_path / "no-features"), env=cli_env)
    assert r.returncode == 1
    row = table_row(r.stderr, "features")
    assert "FAIL" in row and "voxtrain prepare" in row, r.stderr

    r = voxtrain(*args, "--features", str(t.features), env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "start fresh" in table_row(r.stderr, "resume plan"), r.stderr
    # "resume from step N" is checked on the run of the forced-stop test, which trains anyway.
