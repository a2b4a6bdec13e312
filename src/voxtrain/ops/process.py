"""One trainer per run directory: a POSIX-locked lock file plus a PID file.

The kernel drops the lock when its holder dies, however it dies, so a lock left by a
killed trainer is never mistaken for a live one. POSIX (lockf) rather than flock locks,
because DataLoader workers are forked: an flock would be shared with them and outlive a
SIGKILLed trainer by seconds, while a POSIX lock belongs to the trainer process alone.
The PID file is informational and a stale one is cleared with a message.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from dataclasses import dataclass

from voxtrain.ops.rundir import RunDir


class RunLockedError(RuntimeError):
    """Another live trainer holds this run directory."""


@dataclass
class TrainerProcess:
    pid: int
    started: float
    host: str
    alive: bool


def _pid_alive(pid: int) -> bool:
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
    return TrainerProcess(pid, float(info.get("started", 0)), str(info.get("host", "")), _pid_alive(pid))


def lock_is_held(run: RunDir) -> bool:
    if not run.lock_file.exists():
        return False
    with open(run.lock_file, "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN)
    return False


def running_trainer(run: RunDir) -> TrainerProcess | None:
    """The live trainer of this run, or None."""
    proc = read_pid(run)
    if proc is not None and proc.alive and lock_is_held(run):
        return proc
    return None


class RunLock:
    """Held for the trainer's lifetime; refuses a second trainer on the same run."""

    def __init__(self, run: RunDir, log=print):
        self.run, self.log, self._file = run, log, None

    def acquire(self) -> RunLock:
        self.run.logs.mkdir(parents=True, exist_ok=True)
        f = open(self.run.lock_file, "a+")
        for _ in range(3):
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                # `voxtrain status` probes the lock by taking it for an instant: retry briefly.
                time.sleep(0.2)
        else:
            f.close()
            other = read_pid(self.run)
            who = f"pid {other.pid}" if other else "another process"
            raise RunLockedError(
                f"{self.run.root} is already being trained by {who}. Watch it with `voxtrain monitor "
                f"{self.run.root}` or stop it with `voxtrain stop {self.run.root}`."
            ) from None
        stale = read_pid(self.run)
        if stale is not None and stale.pid != os.getpid():
            self.log(f"clearing stale PID file of dead trainer (pid {stale.pid})")
        self._file = f
        info = {"pid": os.getpid(), "started": time.time(), "host": socket.gethostname()}
        self.run.pid_file.write_text(json.dumps(info) + "\n")
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


def _clean_stop_since(run: RunDir, since: float) -> bool:
    """Did the trainer record a clean stop (saved, exit 0) after `since`?"""
    from voxtrain.ops.metrics import read_metrics

    return any(r.get("type") == "event" and r.get("event") == "stop" and r.get("exit_code") == 0
               and r.get("time", 0) >= since - 1 for r in read_metrics(run.metrics))


def stop_trainer(run: RunDir, timeout: float = 300.0, force: bool = False, poll: float = 0.2) -> str:
    """SIGTERM the run's trainer and wait for its graceful save; SIGKILL only with force."""
    proc = running_trainer(run)
    if proc is None:
        return "not running"
    asked = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    deadline = asked + timeout
    while time.time() < deadline:
        if not _pid_alive(proc.pid):
            return "stopped" if _clean_stop_since(run, asked) else "exited"
        time.sleep(poll)
    if force:
        os.kill(proc.pid, signal.SIGKILL)
        return "killed"
    return "timeout"
