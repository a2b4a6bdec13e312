"""Graceful stop: the first SIGTERM/SIGINT asks the loop to finish its optimizer step and
save; a second one exits at once (the last good checkpoint is untouched because saves are
atomic: an interrupted save leaves only a temporary file)."""

from __future__ import annotations

import os
import signal
import sys


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            sys.stderr.write(f"\nsecond {name}: exiting now without saving; last good checkpoint kept\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signal_name = name
        sys.stderr.write(f"\n{name} received: finishing the current step, saving, then exiting "
                         "(send it again to exit at once)\n")
        sys.stderr.flush()

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
