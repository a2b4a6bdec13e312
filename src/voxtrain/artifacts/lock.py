"""One trainer per run directory: a POSIX-locked lock file plus a PID file.

The kernel drops the lock when its holder dies, however it dies, so a lock left by a
killed trainer is never mistaken for a live one. POSIX (lockf) rather than flock locks,
because DataLoader and prepare workers are forked: an flock would be shared with them and
outlive a SIGKILLed parent by seconds, while a POSIX lock belongs to the locking process
alone. The PID file is informational and a stale one is cleared with a message. The
feature store's writer lock (`voxtrain prepare`) is the same mechanism: `exclusive_lock`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from voxtrain.artifacts.layout import RunDir
from voxtrain.atomic import write_text_atomic
from voxtrain.errors import VoxtrainError


def exclusive_lock(path: Path, attempts: int = 1, wait: float = 0.2) -> IO | None:
    """Take the POSIX lock of `path` (created if needed) without blocking; the open file
    holds it until closed, or None when another process has it. Filesystems without
    locks (some network mounts) count as unlocked."""
    f = open(path, "a+")
    for attempt in range(attempts):
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):  # "held"; anything else: no locks here
                return f
            if attempt + 1 < attempts:
                time.sleep(wait)
    f.close()
    return None


class RunLockedError(VoxtrainError, RuntimeError):
    """Another live trainer holds this run directory."""


@dataclass
class TrainerProcess:
    pid: int
    started: float
    host: str
    alive: bool


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not a running trainer.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(run: RunDir) -> TrainerProcess | None:
    try:
        info = json.loads(run.pid_file.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return TrainerProcess(pid, float(info.get("started", 0)), str(info.get("host", "")), pid_alive(pid))


def lock_is_held(run: RunDir) -> bool:
    if not run.lock_file.exists():
        return False
    probe = exclusive_lock(run.lock_file)
    if probe is None:
        return True
    probe.close()  # closing releases the lock taken for the probe
    return False


def running_trainer(run: RunDir) -> TrainerProcess | None:
    """The live trainer of this run, or None."""
    proc = read_pid(run)
    if proc is not None and proc.alive and lock_is_held(run):
        return proc
    return None


class RunLock:
    """Held for the trainer's lifetime; refuses a second trainer on the same run."""

    def __init__(self, run: RunDir, log: Callable[[str], None] = print):
        self.run, self.log, self._file = run, log, None

    def acquire(self) -> RunLock:
        self.run.logs.mkdir(parents=True, exist_ok=True)
        # `voxtrain status` probes the lock by taking it for an instant: retry briefly.
        f = exclusive_lock(self.run.lock_file, attempts=3)
        if f is None:
            other = read_pid(self.run)
            who = f"pid {other.pid}" if other else "another process"
            raise RunLockedError(
                f"{self.run.root} is already being trained by {who}. Watch it with `voxtrain monitor "
                f"{self.run.root}` or stop it with `voxtrain stop {self.run.root}`."
            )
        stale = read_pid(self.run)
        if stale is not None and stale.pid != os.getpid():
            self.log(f"clearing stale PID file of dead trainer (pid {stale.pid})")
        self._file = f
        info = {"pid": os.getpid(), "started": time.time(), "host": socket.gethostname()}
        write_text_atomic(self.run.pid_file, json.dumps(info) + "\n")  # a reader never sees half a PID
        return self

    def release(self) -> None:
        if self._file is None:
            return
        proc = read_pid(self.run)
        if proc is not None and proc.pid == os.getpid():
            self.run.pid_file.unlink(missing_ok=True)
        fcntl.lockf(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
