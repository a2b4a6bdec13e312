"""Human-readable listings of a run's artifacts."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from voxtrain.artifacts.best import run_best_by
from voxtrain.artifacts.checkpoints import list_checkpoints
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import number, read_metrics, trajectory
from voxtrain.metrics import SCORES


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def directory_bytes(directory: Path) -> int:
    """Bytes of the plain files directly in `directory` (0 when it does not exist)."""
    try:
        return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    except OSError:
        return 0


def print_checkpoints(run: Path, console: Console | None = None) -> None:
    console = console or Console()
    rundir = RunDir(run)
    if not rundir.root.is_dir():
        # An exception, not an exit: callers (the CLI among them) decide how to report it.
        raise FileNotFoundError(f"no run directory at {run}")
    records = read_metrics(rundir.metrics)
    infos = list_checkpoints(rundir, records, verify=True)
    traj = trajectory(records)
    val_mel = {r["step"]: number(r.get("loss_mel")) for r in traj.val}
    scores = {r["step"]: r for r in traj.evals}
    score_cols = [k for k, score in SCORES.items() if score.listed
                  and any(number(r.get(k)) is not None for r in scores.values())]
    table = Table(title=f"checkpoints of {rundir.root} (best by {run_best_by(rundir.config)[0]})")
    columns = ["step", "saved", "size", "valid", "best", "val_mel", *(SCORES[k].header for k in score_cols), "file"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("saved", "valid", "best", "file") else "right")
    for i in infos:
        valid = "yes" if i.valid else f"[red]NO[/red] {i.error[:60]}"
        shown = [_score(val_mel.get(i.step))] + [_score(number(scores.get(i.step, {}).get(k))) for k in score_cols]
        table.add_row(str(i.step), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.mtime)),
                      human_bytes(i.size), valid, "best" if i.best else "", *shown, i.path.name)
    console.print(table)
    total = directory_bytes(rundir.checkpoints)
    if rundir.best_export.is_file():
        console.print(f"best export: {rundir.best_export} ({human_bytes(rundir.best_export.stat().st_size)})")
    console.print(f"total checkpoint disk use: {human_bytes(total)}")


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
