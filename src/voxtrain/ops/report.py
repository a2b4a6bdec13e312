"""Human-readable listings of a run's artifacts."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from voxtrain.ops.rundir import RunDir


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def checkpoint_rows(run: Path) -> tuple[list[dict], int]:
    """One dict per checkpoint (oldest first) and the run's total checkpoint disk use."""
    from voxtrain.config import CheckpointConfig
    from voxtrain.train.checkpoints import CheckpointManager

    rundir = RunDir(run)
    infos = CheckpointManager(rundir, CheckpointConfig(), log=lambda msg: None).list()
    rows = [
        {"step": i.step, "file": i.path.name, "time": i.mtime, "bytes": i.size, "valid": i.valid,
         "best": i.best, "error": i.error}
        for i in infos
    ]
    total = sum(p.stat().st_size for p in rundir.checkpoints.glob("*") if p.is_file()) \
        if rundir.checkpoints.is_dir() else 0
    return rows, total


def print_checkpoints(run: Path, console: Console | None = None) -> None:
    console = console or Console()
    rundir = RunDir(run)
    if not rundir.root.is_dir():
        console.print(f"[red]no run directory at {run}[/red]")
        raise SystemExit(2)
    rows, total = checkpoint_rows(run)
    table = Table(title=f"checkpoints of {rundir.root}")
    for col in ("step", "saved", "size", "valid", "best", "file"):
        table.add_column(col, justify="right" if col in ("step", "size") else "left")
    for r in rows:
        valid = "yes" if r["valid"] else f"[red]NO[/red] {r['error'][:60]}"
        table.add_row(str(r["step"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])),
                      human_bytes(r["bytes"]), valid, "best" if r["best"] else "", r["file"])
    console.print(table)
    if rundir.best_export.is_file():
        console.print(f"best export: {rundir.best_export} ({human_bytes(rundir.best_export.stat().st_size)})")
    console.print(f"total checkpoint disk use: {human_bytes(total)}")
