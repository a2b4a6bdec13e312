"""`voxtrain train --detach`: the same command in its own session, output to a log file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from voxtrain.ops.process import running_trainer
from voxtrain.ops.rundir import RunDir

# Set in the detached child: its stdout already is the log file.
DETACHED_ENV = "VOXTRAIN_DETACHED"


@dataclass
class Launch:
    pid: int
    log_file: Path
    exited: int | None  # exit code when the trainer died during start-up, else None


def strip_detach(argv: list[str]) -> list[str]:
    return [a for a in argv if a not in ("--detach", "-d")]


def launch_detached(train_argv: list[str], run: RunDir, settle_seconds: float = 3.0) -> Launch:
    """Start `voxtrain train <train_argv>` detached; watch it briefly so start-up errors surface now."""
    other = running_trainer(run)
    if other is not None:
        raise RuntimeError(f"{run.root} is already being trained by pid {other.pid}; "
                           f"`voxtrain stop {run.root}` first")
    run.logs.mkdir(parents=True, exist_ok=True)
    log_file = run.new_log_file()
    env = dict(os.environ, **{DETACHED_ENV: "1", "PYTHONUNBUFFERED": "1"})
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voxtrain.cli", "train", *strip_detach(train_argv), "--yes"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    deadline = time.time() + settle_seconds
    while time.time() < deadline:
        code = proc.poll()
        if code is not None:
            return Launch(proc.pid, log_file, code)
        time.sleep(0.1)
    return Launch(proc.pid, log_file, None)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
