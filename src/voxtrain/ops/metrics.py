"""metrics.jsonl: one JSON object per line, appended and flushed, read by the monitor."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    # JSON has no NaN/Inf; keep the fact visible as a string rather than break the file.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.dropped = 0

    def write(self, kind: str, **fields: Any) -> dict:
        record = {"type": kind, "time": round(time.time(), 3)}
        record.update({k: _clean(v) for k, v in fields.items()})
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            # A full disk must not kill a training run over its log: drop the record, say so
            # once, and keep going (the checkpoint guard handles the disk itself).
            if not self.dropped:
                sys.stderr.write(f"WARNING: cannot append to {self.path} ({err}); dropping metrics records\n")
            self.dropped += 1
        return record

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict]:
    """All records; a torn last line (the writer was killed mid-line) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
