"""metrics.jsonl: the run's record of what happened, one JSON object per line.

Written by the trainer (append + flush, so a reader never waits for a buffer), read by the
monitor, status, the checkpoint listing and the benchmarks. Import-light on purpose (no
torch, numpy or pydantic): `voxtrain status` must answer at once.

Every record has `type` (train | val | eval | event), `time` and usually `step`; an event also
has `event`, one of the names in `Event`. JSON has no NaN or Inf: such a value is written
as a string ("nan", "inf") so the fact stays visible; `number()` reads it back as a float.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIN, VAL, EVAL, EVENT = "train", "val", "eval", "event"
# The fields of an eval record that are not listening scores: what the evaluation covered and
# cost. Every other numeric field is a score (`voxtrain.metrics.SCORES` names the known ones).
EVAL_BOOKKEEPING = frozenset({"type", "time", "step", "seconds", "sentences", "texts", "errors", "refused"})


def metric_source(metric: str) -> tuple[str, str]:
    """Where a metric named in targets, early stop or best_by is recorded: `val_mel` is the
    `loss_mel` field of validation records (any `val_X` is `loss_X`), every other name is a
    field of the listening-score records (type "eval")."""
    if metric.startswith("val_"):
        return VAL, "loss_" + metric.removeprefix("val_")
    return EVAL, metric


class Event:
    """Names of the events a run records (the `event` field of an event record)."""

    START = "start"
    STOP = "stop"
    CHECKPOINT_SAVED = "checkpoint_saved"
    CHECKPOINT_SKIPPED = "checkpoint_skipped"
    CHECKPOINT_PRUNED = "checkpoint_pruned"
    CHECKPOINT_CORRUPT = "checkpoint_corrupt"
    NONFINITE_SKIP = "nonfinite_skip"
    BEST_EXPORTED = "best_exported"
    EXPORT_SKIPPED = "export_skipped"
    OUT_OF_MEMORY_RETRY = "out_of_memory_retry"
    TRACKER_FAILED = "tracker_failed"
    LISTENING_FAILED = "listening_failed"

    # The ones a person watching the run must be told about.
    WARNINGS = (CHECKPOINT_SKIPPED, CHECKPOINT_CORRUPT, NONFINITE_SKIP, EXPORT_SKIPPED, OUT_OF_MEMORY_RETRY,
                TRACKER_FAILED, LISTENING_FAILED)


def jsonable(value: Any) -> Any:
    """`value` as strict JSON data: non-finite floats become strings, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def number(value: Any) -> float | None:
    """A record's numeric field as a float ("nan"/"inf" strings included), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def eval_scores(record: dict) -> dict[str, float]:
    """The listening scores of an eval record by name, NaN and Inf included (shown, not hidden)."""
    scores = ((key, number(value)) for key, value in record.items() if key not in EVAL_BOOKKEEPING)
    return {key: value for key, value in scores if value is not None}


def step_of(record: dict) -> int | None:
    step = record.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class MetricsWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.dropped = 0

    def write(self, kind: str, **fields: Any) -> dict:
        record = {"type": kind, "time": round(time.time(), 3), **fields}
        try:
            self._file.write(json.dumps(jsonable(record)) + "\n")
            self._file.flush()
        except OSError as err:
            # A full disk must not kill a training run over its log: drop the record, say so
            # once, and keep going (the checkpoint guard handles the disk itself).
            if not self.dropped:
                sys.stderr.write(f"WARNING: cannot append to {self.path} ({err}); dropping metrics records\n")
            self.dropped += 1
        return record

    def event(self, name: str, step: int, **fields: Any) -> dict:
        return self.write(EVENT, event=name, step=step, **fields)

    def close(self) -> None:
        self._file.close()


class MetricsTail:
    """Incremental reader of metrics.jsonl: each `read` parses only the lines appended since
    the last one, so a long run's monitor does not re-parse megabytes every few seconds.

    A line is consumed only once its newline is written; a torn last line (writer killed
    mid-line) is never parsed and is reported through `torn_tail`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self.inode, self.offset, self.records, self.bad_lines, self.torn_tail = inode, 0, [], 0, False

    def read(self) -> list[dict]:
        try:
            st = os.stat(self.path)
        except OSError:
            self._reset(None)
            return self.records
        if st.st_ino != self.inode or st.st_size < self.offset:  # replaced or truncated
            self._reset(st.st_ino)
        if st.st_size > self.offset:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(st.st_size - self.offset)
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    self.bad_lines += 1
                    continue
                if isinstance(record, dict):
                    self.records.append(record)
            self.offset += end
        self.torn_tail = st.st_size > self.offset
        return self.records


def read_metrics(path: Path) -> list[dict]:
    """Every whole record of a metrics file (none when it does not exist)."""
    return list(MetricsTail(path).read())


def stop_events(path: Path) -> list[dict]:
    """The `stop` events of a metrics file, oldest first: how each session of the run ended."""
    return [r for r in read_metrics(path) if r.get("type") == EVENT and r.get("event") == Event.STOP]


@dataclass
class Trajectory:
    """A run's records after resumes: steps redone after a resume replace the ones a killed
    session had recorded past its last checkpoint, so nothing is counted twice."""

    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # listening scores (type "eval")
    starts: list[dict] = field(default_factory=list)
    session_train: list[dict] = field(default_factory=list)  # train records of the newest session
    stop: dict | None = None  # the newest session's stop event
    last_step_record: dict | None = None
    events: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, r: dict) -> None:
        kind, step = r.get("type"), step_of(r)
        if kind == EVENT:
            self._event(r, str(r.get("event")), step)
        elif kind == TRAIN and step is not None:
            _append_replacing(self.train, r, step)
            self.session_train.append(r)
            self.last_step_record = r
        elif kind == VAL and step is not None:
            _append_replacing(self.val, r, step)
        elif kind == EVAL and step is not None:
            _append_replacing(self.evals, r, step)

    def history(self, metric: str) -> list[tuple[int, float]]:
        """(step, value) of one metric by its target name (see METRIC_SOURCES), finite values only."""
        kind, key = metric_source(metric)
        rows = self.val if kind == VAL else self.evals
        points = []
        for r in rows:
            value = number(r.get(key))
            if value is not None and math.isfinite(value):
                points.append((r["step"], value))
        return points

    def _event(self, r: dict, name: str, step: int | None) -> None:
        self.events.setdefault(name, []).append(r)
        if name == Event.START:
            self.starts.append(r)
            self.stop, self.session_train = None, []
            if step is not None:
                # A resume restarts from a checkpoint: records past it describe steps that were redone.
                self.train = [x for x in self.train if x["step"] <= step]
                self.val = [x for x in self.val if x["step"] <= step]
                self.evals = [x for x in self.evals if x["step"] <= step]
        elif name == Event.STOP:
            self.stop = r
        if step is not None and name in (Event.START, Event.STOP, Event.CHECKPOINT_SAVED):
            self.last_step_record = r


def _append_replacing(records: list[dict], record: dict, step: int) -> None:
    while records and records[-1]["step"] >= step:  # a rewind without a start event
        records.pop()
    records.append(record)


def trajectory(records: list[dict]) -> Trajectory:
    t = Trajectory()
    for r in records:
        t.add(r)
    return t
