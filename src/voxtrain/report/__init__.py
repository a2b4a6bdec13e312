"""`voxtrain report RUN`: one self-contained HTML page of a run (RUN/report.html).

Curves and score plots (inline SVG), targets with their forecast, the checkpoints with their
scores and the best one marked, the latest alignment image and a player for every
evaluation's and validation's clips, newest first. It opens offline, with no server, and
needs nothing outside the file but the older clips' WAVs (see `page.EMBED_AUDIO_BYTES`).

Import-light (no torch): the trainer rewrites the page at every evaluation, through
`refresh_report`, which never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voxtrain.artifacts.layout import RunDir
from voxtrain.atomic import write_text_atomic
from voxtrain.report.data import ReportData, gather
from voxtrain.report.page import EMBED_AUDIO_BYTES, render

__all__ = ["EMBED_AUDIO_BYTES", "ReportData", "gather", "refresh_report", "render_report", "write_report"]


def _rundir(run: Path | RunDir) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(Path(run))


def render_report(run: Path | RunDir, embed_audio_bytes: int = EMBED_AUDIO_BYTES) -> str:
    """The page of `run` as HTML text. Missing or damaged pieces are notes on the page.
    Raises FileNotFoundError when `run` is not a directory."""
    rundir = _rundir(run)
    if not rundir.root.is_dir():
        raise FileNotFoundError(f"no run directory at {rundir.root}")
    return render(gather(rundir), embed_audio_bytes)


def write_report(run: Path | RunDir, embed_audio_bytes: int = EMBED_AUDIO_BYTES) -> Path:
    """Write RUN/report.html atomically (a reader sees the old page or the whole new one) and
    return its path. The newest clips are embedded up to `embed_audio_bytes` of WAV data,
    older ones linked relative to the page."""
    rundir = _rundir(run)
    write_text_atomic(rundir.report, render_report(rundir, embed_audio_bytes))
    return rundir.report


def refresh_report(run: Path | RunDir, log: Callable[[str], None] = print) -> Path | None:
    """`write_report` for the trainer: a failure (full disk, an unforeseen record) is one
    warning through `log` and None, never an exception that would end a training run."""
    try:
        return write_report(run)
    except Exception as err:
        log(f"WARNING: report page not updated ({type(err).__name__}: {err}); training goes on")
        return None
