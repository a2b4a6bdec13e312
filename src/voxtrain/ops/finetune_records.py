"""`pipeline.json`: what a `voxtrain finetune` run was asked for and what each stage did.

The request (base, corpus, features) is written once, when the pipeline starts; a rerun with
another base or corpus is refused, so a resume never changes what the voice is made from.
Each stage's record says whether it is done and how many wall-clock seconds it took over
every invocation: the budget left is the budget minus those seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.layout import FinetuneDir
from voxtrain.atomic import write_json_atomic
from voxtrain.errors import VoxtrainError

STAGES = ("prepare", "acoustic", "vocoder", "voice")
PIPELINE_VERSION = 1
# What a run is made from: a rerun must name the same.
_IDENTITY = ("base", "corpus", "features")


class FinetuneError(VoxtrainError):
    """The pipeline cannot run as asked; the message says what to do."""


@dataclass
class PipelineRecords:
    path: Path
    request: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, run: FinetuneDir, request: dict[str, Any]) -> PipelineRecords:
        """The run's records, or new ones. `request`'s base and corpus must be the run's own."""
        if not run.pipeline.is_file():
            return cls(run.pipeline, request)
        try:
            saved = json.loads(run.pipeline.read_text(encoding="utf-8"))
            records = cls(run.pipeline, saved["request"], saved.get("stages", {}))
        except (OSError, ValueError, KeyError) as err:
            raise FinetuneError(f"{run.pipeline} is unreadable ({err}): give voxtrain finetune a new --run") from None
        for key in _IDENTITY:
            if records.request.get(key) != request.get(key):
                raise FinetuneError(
                    f"{run.root} was started with --{key} {records.request.get(key)}, not {request.get(key)}: "
                    f"run the same command to continue it, or give a new --run")
        # The budget may change between invocations: a stopped pipeline can be given more time.
        records.request["budget_s"] = request["budget_s"]
        return records

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"version": PIPELINE_VERSION, "request": self.request, "stages": self.stages})

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") in ("done", "skipped")

    def used_seconds(self) -> float:
        return sum(float(r.get("seconds", 0.0)) for r in self.stages.values())

    def begin(self, stage: str, **facts: Any) -> float:
        record = self.stages.setdefault(stage, {"seconds": 0.0})
        record.update(status="running", started=time.time(), **facts)
        self.save()
        return time.perf_counter()

    def end(self, stage: str, t0: float, status: str, **facts: Any) -> None:
        record = self.stages[stage]
        spent = float(record.get("seconds", 0.0)) + time.perf_counter() - t0
        record.update(status=status, seconds=round(spent, 2), ended=time.time(), **facts)
        self.save()


def pipeline_stage(run: Path) -> tuple[Path, str] | None:
    """For a `voxtrain finetune` folder: the run of its current (or last) training stage, and a
    line saying where the pipeline is; None for any other folder. `status`, `monitor` and
    `stop` then act on that stage's run, so on the whole pipeline."""
    path = FinetuneDir(run).pipeline
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FinetuneError(f"{path} is unreadable ({err})") from None
    records = saved.get("stages", {})
    trained = [s for s in ("acoustic", "vocoder") if "run" in records.get(s, {})]
    if not trained:
        return None
    stage = next((s for s in trained if records[s].get("status") == "running"), trained[-1])
    record = records[stage]
    budget = float(saved.get("request", {}).get("budget_s", 0.0))
    spent = sum(float(r.get("seconds", 0.0)) for r in records.values())
    left = max(0.0, float(record.get("stop_at", 0.0)) - time.time()) if record.get("status") == "running" else 0.0
    line = (f"fine-tune pipeline: stage {stage} ({STAGES.index(stage) + 1} of {len(STAGES)}, {record.get('status')}); "
            f"budget {budget / 60:g} min, {spent / 60:.1f} min spent by finished stages"
            + (f", this stage's deadline in {left / 60:.1f} min" if left else ""))
    return Path(record["run"]), line
