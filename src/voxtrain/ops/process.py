"""`voxtrain stop`: ask a run's trainer to finish its step, save and exit."""

from __future__ import annotations

import os
import signal
import time

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import pid_alive, running_trainer
from voxtrain.artifacts.metrics_format import stop_events


def _clean_stop_since(run: RunDir, since: float) -> bool:
    """Did the trainer record a clean stop (saved, exit 0) after `since`?"""
    return any(r.get("exit_code") == 0 and r.get("time", 0) >= since - 1 for r in stop_events(run.metrics))


def stop_trainer(run: RunDir, timeout: float = 300.0, force: bool = False, poll: float = 0.2) -> str:
    """SIGTERM the run's trainer and wait for its graceful save; SIGKILL only with force.

    Returns "not running", "stopped" (a clean stop was recorded), "exited" (it died without
    one), "killed" (force, after the timeout) or "timeout"."""
    proc = running_trainer(run)
    if proc is None:
        return "not running"
    asked = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    deadline = asked + timeout
    while time.time() < deadline:
        if not pid_alive(proc.pid):
            return "stopped" if _clean_stop_since(run, asked) else "exited"
        time.sleep(poll)
    if force:
        os.kill(proc.pid, signal.SIGKILL)
        return "killed"
    return "timeout"
