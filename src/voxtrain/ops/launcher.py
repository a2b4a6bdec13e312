"""`voxtrain train --detach` (and `train-vocoder --detach`): the same command in its own
session, output to a log file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import read_pid, running_trainer

# Set in the detached child: its stdout already is the log file.
DETACHED_ENV = "VOXTRAIN_DETACHED"


@dataclass
class Launch:
    pid: int
    log_file: Path
    exited: int | None  # exit code when the trainer died during start-up, else None


def strip_detach(argv: list[str]) -> list[str]:
    return [a for a in argv if a not in ("--detach", "-d")]


def launch_detached(command_argv: list[str], run: RunDir, settle_seconds: float = 3.0,
                    startup_timeout: float = 60.0) -> Launch:
    """Start `voxtrain <command_argv>` (a training command and its options) detached; watch it
    briefly so start-up errors surface now.

    Returns once the trainer holds the run (its PID file names it), so `voxtrain status` run
    right after sees it running, or after `startup_timeout` on a very slow start.
    """
    other = running_trainer(run)
    if other is not None:
        raise RuntimeError(f"{run.root} is already being trained by pid {other.pid}; "
                           f"`voxtrain stop {run.root}` first")
    stale = read_pid(run)
    if stale is not None:
        # Not removed here: the new trainer overwrites it once it holds the lock, so a trainer
        # starting in between can never lose its PID file to us.
        print(f"clearing the stale PID file of a dead trainer (pid {stale.pid} holds no lock on {run.root})",
              file=sys.stderr)
    run.logs.mkdir(parents=True, exist_ok=True)
    log_file = run.new_log_file()
    env = dict(os.environ, **{DETACHED_ENV: "1", "PYTHONUNBUFFERED": "1"})
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voxtrain.cli", *strip_detach(command_argv), "--yes"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    t0 = time.time()
    while True:
        code = proc.poll()
        if code is not None:
            return Launch(proc.pid, log_file, code)
        elapsed = time.time() - t0
        owner = read_pid(run)
        holds_run = owner is not None and owner.pid == proc.pid
        if elapsed >= settle_seconds and (holds_run or elapsed >= startup_timeout):
            return Launch(proc.pid, log_file, None)
        time.sleep(0.1)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
