"""Graceful stop: the first SIGTERM/SIGINT asks the loop to finish its optimizer step and
save; a second one exits at once.

After the first signal both signals are reset to the kernel's default action, so the
second one terminates the process immediately even while the main thread is blocked in a
long write or fsync (a Python-level handler would only run after that call returns). The
last good checkpoint is untouched because saves are atomic: an interrupted save leaves only
a temporary file, removed at the next start.
"""

from __future__ import annotations

import signal
import sys
import time


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sys.stderr.write(f"\n{stamp} {self.signal_name} received: finishing the current step, saving, then "
                         "exiting (send it again to exit at once without saving)\n")
        sys.stderr.flush()

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
