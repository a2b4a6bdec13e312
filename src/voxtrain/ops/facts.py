"""What a snapshot of a run holds (`RunSnapshot`), apart from how it is taken (`snapshot`), so
the warnings about a run read these facts without importing the code that gathers them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from voxtrain.artifacts.metrics_format import jsonable


@dataclass
class ProcessFacts:
    """The live trainer process as the OS sees it (psutil)."""

    cpu_percent: float
    rss: int  # bytes, the trainer alone
    threads: int
    children: int  # data-loader and prepare workers
    children_rss: int  # bytes, all children together


@dataclass
class CheckpointRow:
    """One rotation checkpoint, from `artifacts.checkpoints.list_checkpoints` (never opened)."""

    step: int
    file: str  # name inside checkpoints/
    time: float  # mtime, seconds since the epoch
    bytes: int
    best: bool  # the step the best-model rule picks from the validation records
    corrupt: bool  # the trainer reported this very file corrupt (a later re-save at the step is not)
    error: str = ""  # why it is corrupt, as the trainer reported it


@dataclass
class RunSnapshot:
    """Facts about one run directory at one moment. Times are seconds since the epoch,
    durations seconds; None means "not known (yet)". Losses may be NaN/Inf: shown, not hidden."""

    run: str  # absolute path of the run directory
    name: str
    now: float  # when the snapshot was taken
    # -- state -------------------------------------------------------------------------
    state: str = "not started"  # running | finished | stopped | dead | not started
    pid: int | None = None  # of the live trainer only
    host: str | None = None
    stop_reason: str | None = None  # of the newest session's stop event
    exit_code: int | None = None
    step: int = 0  # newest step recorded (train, start, stop or checkpoint_saved)
    target_step: int | None = None  # where the current stage of training ends
    max_steps: int | None = None  # where the whole run ends
    epoch: int | None = None
    # -- training losses (after resumes: redone steps count once) ------------------------
    loss: float | None = None  # loss_total of the newest train record
    loss_mel: float | None = None
    loss_avg100: float | None = None  # mean finite loss_total over the last AVG_WINDOW_STEPS steps
    loss_recent: list[float | None] = field(default_factory=list)  # last SPARK_POINTS loss_total values
    lr: float | None = None
    grad_norm: float | None = None
    # -- validation ----------------------------------------------------------------------
    val_loss: float | None = None  # newest finite validation loss_total
    val_loss_mel: float | None = None
    val_step: int | None = None
    val_count: int = 0
    val_trend: str | None = None  # rising | falling | flat over the last VAL_TREND_RECORDS validations
    best_step: int | None = None
    best_val_mel: float | None = None
    best_by: str = "val_mel"  # checkpoint.best_by
    best_value: float | None = None  # the best checkpoint's best_by metric
    # -- listening scores and targets ----------------------------------------------------
    scores: dict[str, float] = field(default_factory=dict)  # the newest evaluation's
    scores_step: int | None = None
    scores_seconds: float | None = None  # what that evaluation cost
    targets: list[dict[str, Any]] = field(default_factory=list)  # per target: value and forecast
    stop_cause: str | None = None  # targets_reached, early_stop, ... of the newest stop event
    # -- speed and time ------------------------------------------------------------------
    steps_per_s: float | None = None  # wall clock, validation and saving included
    frames_per_s: float | None = None  # as the trainer logged it
    eta_target_s: float | None = None  # for a run not training: what it still needs once resumed
    eta_max_s: float | None = None
    started: float | None = None  # the first session's start
    session_started: float | None = None
    sessions: int = 0
    elapsed_s: float | None = None  # up to now while running, else up to the last record
    session_elapsed_s: float | None = None
    last_record_time: float | None = None
    last_record_age_s: float | None = None
    # -- checkpoints and disk ------------------------------------------------------------
    checkpoints: list[CheckpointRow] = field(default_factory=list)  # oldest first
    checkpoints_bytes: int = 0  # every file in checkpoints/, best export included
    last_checkpoint: CheckpointRow | None = None
    disk_free: int = 0  # bytes free on the run's filesystem
    checkpoints_fit: int | None = None  # more saves of the newest one's size; None: no checkpoint or config
    # -- process and health ----------------------------------------------------------------
    process: ProcessFacts | None = None
    gpu: dict[str, Any] | None = None  # the gpu*/cuda* fields of the newest train record
    counts: dict[str, int] = field(default_factory=dict)  # events of `Event.WARNINGS`, by name
    nonfinite_skipped: int = 0  # training steps skipped for a non-finite loss or gradient
    log_file: str | None = None  # the newest trainer log
    metrics_records: int = 0
    metrics_bad_lines: int = 0
    metrics_torn_tail: bool = False  # the last line is still being written (or its writer died)
    warnings: list[str] = field(default_factory=list)  # what a person must act on, in words

    def to_json(self) -> dict[str, Any]:
        """The snapshot as strict JSON data (NaN/Inf as strings, like metrics.jsonl)."""
        return jsonable(dataclasses.asdict(self))
