"""`voxtrain monitor` (live dashboard, plain text, JSON) and `voxtrain status`.

Everything shown comes from run_snapshot, so the dashboard, the plain lines and the JSON
always state the same facts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import MetricsTail
from voxtrain.ops.facts import CheckpointRow, RunSnapshot
from voxtrain.ops.listing import human_bytes
from voxtrain.ops.snapshot import run_snapshot

BLOCKS = "▁▂▃▄▅▆▇█"
STATE_STYLE = {"running": "bold green", "finished": "bold cyan", "stopped": "bold yellow",
               "dead": "bold red", "not started": "bold white"}
TREND_ARROW = {"rising": "↑", "falling": "↓", "flat": "→"}


def sparkline(values: list[float | None], width: int = 60) -> str:
    """Unicode block sparkline; more points than `width` are averaged into buckets."""
    vals = [v if v is not None and math.isfinite(v) else None for v in values]
    if len(vals) > width:
        buckets = []
        for i in range(width):
            chunk = [v for v in vals[i * len(vals) // width : (i + 1) * len(vals) // width] if v is not None]
            buckets.append(sum(chunk) / len(chunk) if chunk else None)
        vals = buckets
    finite = [v for v in vals if v is not None]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    # A flat curve sits mid-height so it does not read as "at its minimum".
    return "".join(" " if v is None else BLOCKS[3 if span == 0 else round((v - lo) / span * 7)] for v in vals)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _f(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _clock(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _state(s: RunSnapshot) -> str:
    text = s.state
    if s.pid is not None:
        text += f" (pid {s.pid}" + (f" on {s.host}" if s.host else "") + ")"
    elif s.state in ("stopped", "finished") and s.stop_reason:
        text += f": {s.stop_reason}"
    return text


def _step_line(s: RunSnapshot) -> str:
    line = f"step {s.step}"
    if s.target_step is not None:
        pct = 100 * s.step / s.target_step if s.target_step else 100.0
        line += f" / {s.target_step} ({pct:.1f}%)"
    if s.max_steps is not None and s.max_steps != s.target_step:
        line += f", max_steps {s.max_steps}"
    return line


def _eta_words(s: RunSnapshot) -> str:
    # For a run that is not training, the same figure is the time it still needs once resumed.
    word = "ETA" if s.state == "running" else "remaining"
    return f"{word} {duration(s.eta_target_s)} to target, {duration(s.eta_max_s)} to max_steps"


def _val_line(s: RunSnapshot) -> str:
    if s.val_loss is None:
        return "validation: none yet"
    trend = f" {TREND_ARROW[s.val_trend]} {s.val_trend}" if s.val_trend else ""
    best = f"; {_best_words(s)}" if s.best_step is not None else ""
    return f"validation: {_f(s.val_loss)}{trend} at step {s.val_step}{best}"


def _best_words(s: RunSnapshot) -> str:
    if s.best_step is None:
        return ""
    by = f"{s.best_by} {_f(s.best_value)}, " if s.best_by != "val_mel" and s.best_value is not None else ""
    return f"best at step {s.best_step} ({by}mel {_f(s.best_val_mel)})"


def _scores_line(s: RunSnapshot) -> str | None:
    if s.scores_step is None:
        return None
    cost = f" ({s.scores_seconds:.0f}s)" if s.scores_seconds is not None else ""
    return f"scores at step {s.scores_step}{cost}: " + "  ".join(f"{k} {v:.3f}" for k, v in s.scores.items())


def _listening_lines(s: RunSnapshot) -> list[str]:
    lines = [line for line in (_scores_line(s),) if line]
    lines += [f"target {t['text']}" for t in s.targets]
    return lines


def _ckpt_line(row: CheckpointRow | None) -> str:
    if row is None:
        return "none"
    return f"step {row.step} ({_clock(row.time)}, {human_bytes(row.bytes)})"


def _process_facts(s: RunSnapshot) -> list[str]:
    p = s.process
    if p is None:
        return ["not running"]
    facts = [f"CPU {p.cpu_percent:.0f}%", f"RSS {human_bytes(p.rss)}", f"threads {p.threads}"]
    if p.children:
        facts.append(f"+ {p.children} children {human_bytes(p.children_rss)}")
    facts += [f"{k} {v}" for k, v in (s.gpu or {}).items()]
    return facts


def _process_line(s: RunSnapshot) -> str:
    return "process: " + "  ".join(_process_facts(s))


def text_lines(s: RunSnapshot) -> list[str]:
    """The dashboard's facts as plain lines (non-TTY output, --plain, logs)."""
    lines = [
        f"run: {s.name} ({s.run})",
        f"state: {_state(s)}",
        _step_line(s),
        f"loss: {_f(s.loss)}  avg100 {_f(s.loss_avg100)}  mel {_f(s.loss_mel)}  lr {_f(s.lr, '.2e')}",
        f"curve: {sparkline(s.loss_recent) or '-'}",
        _val_line(s),
        *_listening_lines(s),
        f"speed: {_f(s.steps_per_s, '.2f')} steps/s  {_eta_words(s)}",
        f"elapsed: {duration(s.elapsed_s)} since first start, {duration(s.session_elapsed_s)} "
        f"this session ({s.sessions} session(s))",
        f"checkpoints: {len(s.checkpoints)} using {human_bytes(s.checkpoints_bytes)}; last "
        f"{_ckpt_line(s.last_checkpoint)}",
    ]
    for row in s.checkpoints:
        flags = " best" * row.best + " CORRUPT" * row.corrupt
        lines.append(f"  step {row.step}  {_clock(row.time)}  {human_bytes(row.bytes)}{flags}")
    fits = "" if s.checkpoints_fit is None else f", {s.checkpoints_fit} more checkpoints fit"
    lines.append(f"disk: {human_bytes(s.disk_free)} free{fits}")
    lines.append(_process_line(s))
    lines += [f"WARNING: {w}" for w in s.warnings]
    return lines


def status_lines(s: RunSnapshot) -> list[str]:
    """The short answer of `voxtrain status`."""
    lines = [f"{s.name}: {_state(s)}", _step_line(s),
             f"loss {_f(s.loss)} (avg100 {_f(s.loss_avg100)})" + (
                 f", val {_f(s.val_loss)}" if s.val_loss is not None else "")]
    if s.steps_per_s is not None:
        lines.append(f"{_f(s.steps_per_s, '.2f')} steps/s, {_eta_words(s)}")
    lines += _listening_lines(s)
    lines.append(f"last checkpoint: {_ckpt_line(s.last_checkpoint)}")
    lines += [f"WARNING: {w}" for w in s.warnings]
    return lines


# -- rich dashboard ---------------------------------------------------------------------
def _panel(body: RenderableType, title: str, style: str = "blue") -> Panel:
    return Panel(body, title=title, title_align="left", border_style=style)


def _bar(label: str, done: int, total: Any) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=7)
    grid.add_column(ratio=1)
    grid.add_column(width=24, justify="right")
    if isinstance(total, int) and total > 0:
        grid.add_row(label, ProgressBar(total=total, completed=min(done, total)),
                     f"{done} / {total} {100 * done / total:5.1f}%")
    else:
        grid.add_row(label, "", f"{done} / ?")
    return grid


def render(s: RunSnapshot) -> RenderableType:
    header = Text.assemble(
        ("voxtrain monitor  ", "bold"), (s.name, "bold magenta"), "   ",
        (s.state.upper() + _state(s)[len(s.state):], STATE_STYLE.get(s.state, "")),
        f"   updated {time.strftime('%H:%M:%S', time.localtime(s.now))}",
    )
    bars = [_bar("stage", s.step, s.target_step)]
    if s.max_steps is not None and s.max_steps != s.target_step:
        bars.append(_bar("max", s.step, s.max_steps))
    progress = _panel(Group(Text(_step_line(s)), *bars), "progress")

    losses = Text()
    losses.append(f"loss   {_f(s.loss)}\navg100 {_f(s.loss_avg100)}\nmel    {_f(s.loss_mel)}\n")
    losses.append(sparkline(s.loss_recent, 44) or "-", style="cyan")
    trend = s.val_trend
    val = Text(f"last  {_f(s.val_loss)} ")
    if trend:
        val.append(f"{TREND_ARROW[trend]} {trend}", style="red" if trend == "rising" else "green")
    val.append(f"\nstep  {_f(s.val_step, 'd')}\n{_best_words(s) or 'best  -'}")
    eta_word = "ETA" if s.state == "running" else "left"
    speed = Text(
        f"{_f(s.steps_per_s, '.2f')} steps/s\n{eta_word} target  {duration(s.eta_target_s)}\n"
        f"{eta_word} max     {duration(s.eta_max_s)}\nelapsed {duration(s.elapsed_s)} "
        f"(session {duration(s.session_elapsed_s)})"
    )
    row1 = Table.grid(expand=True, padding=(0, 1))
    for ratio in (3, 2, 2):
        row1.add_column(ratio=ratio)
    row1.add_row(_panel(losses, "losses"), _panel(val, "validation"), _panel(speed, "speed"))

    table = Table(box=None, padding=(0, 2))
    for col in ("step", "saved", "size", ""):
        table.add_column(col, justify="right" if col in ("step", "size") else "left")
    for row in s.checkpoints[-6:]:
        flag = Text("best", "green") if row.best else Text("")
        if row.corrupt:
            flag.append(" CORRUPT", "bold red")
        table.add_row(str(row.step), _clock(row.time), human_bytes(row.bytes), flag)
    fits = "" if s.checkpoints_fit is None else f"  ·  {s.checkpoints_fit} more fit"
    disk = Text(f"{len(s.checkpoints)} files, {human_bytes(s.checkpoints_bytes)}  ·  disk free "
                f"{human_bytes(s.disk_free)}{fits}")
    row2 = Table.grid(expand=True, padding=(0, 1))
    row2.add_column(ratio=3)
    row2.add_column(ratio=2)
    row2.add_row(_panel(Group(table if s.checkpoints else Text("none yet"), disk), "checkpoints"),
                 _panel(Text("\n".join(_process_facts(s))), "process"))

    parts: list[RenderableType] = [_panel(header, "run", STATE_STYLE.get(s.state, "blue").split()[-1]),
                                   progress, row1, row2]
    if listening := _listening_lines(s):
        parts.append(_panel(Text("\n".join(listening)), "listening scores and targets"))
    if s.warnings:
        parts.append(_panel(Text("\n".join(f"• {w}" for w in s.warnings), style="red"), "warnings", "red"))
    return Group(*parts)


# -- entry points ---------------------------------------------------------------------
def monitor(run: Path, interval: float = 5.0, once: bool = False, plain: bool = False,
            as_json: bool = False) -> int:
    run = Path(run)
    tail = MetricsTail(RunDir(run).metrics)
    snap, code = _snapshot_or_error(run, tail)
    if snap is None:
        return code
    if as_json:
        print(json.dumps(snap.to_json()))
        return 0
    console = Console()
    live_view = console.is_terminal and not plain
    try:
        if once:
            if live_view:
                console.print(render(snap))
            else:
                print("\n".join(text_lines(snap)), flush=True)
            return 0
        if not live_view:
            while True:
                print("\n".join(text_lines(snap)) + "\n", flush=True)
                time.sleep(interval)
                snap = _refresh(run, tail, snap)
        with Live(render(snap), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                snap = _refresh(run, tail, snap)
                live.update(render(snap), refresh=True)
    except KeyboardInterrupt:
        return 0


def _refresh(run: Path, tail: MetricsTail, previous: RunSnapshot) -> RunSnapshot:
    try:
        return run_snapshot(run, tail)
    except OSError as err:
        # The dashboard outlives a vanished or unreadable run dir: keep the last facts, say why.
        return dataclasses.replace(previous, now=time.time(), warnings=[f"cannot read the run: {err}"])


def _snapshot_or_error(run: Path, tail: MetricsTail | None = None) -> tuple[RunSnapshot | None, int]:
    """The snapshot, or None and the exit code after printing why there is none."""
    try:
        return run_snapshot(Path(run), tail), 0
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None, 1
    except OSError as err:  # e.g. an unreadable metrics file
        print(f"error: cannot read {run}: {err}", file=sys.stderr)
        return None, 1


def print_status(run: Path, as_json: bool = False) -> int:
    snap, code = _snapshot_or_error(run)
    if snap is None:
        return code
    print(json.dumps(snap.to_json()) if as_json else "\n".join(status_lines(snap)))
    return 0

