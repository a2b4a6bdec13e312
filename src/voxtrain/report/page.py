"""The report page as one HTML string: stylesheet, plots, tables, images and audio inline.

Audio: the newest clips are embedded as base64 data URIs up to a byte budget, older ones are
links relative to the page (which lives in the run directory, next to samples/). A long run
has hundreds of evaluations of several clips each, far too much audio for one file, while
the newest clips (what the voice sounds like now) keep playing wherever the page is copied.
"""

from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path

from voxtrain import __version__
from voxtrain.artifacts.metrics_format import number
from voxtrain.artifacts.run_view import TargetForecast
from voxtrain.report.assets import CHECK_SCRIPT, STYLE
from voxtrain.report.data import ReportData, SampleGroup, direction_of
from voxtrain.report.svg import PALETTE, Band, Series, Threshold, fmt_value, line_plot

# WAV bytes embedded in the page before older clips become relative links (base64 adds a third).
EMBED_AUDIO_BYTES = 6 << 20
# Loss plots switch to a log y axis past this max/min ratio.
LOG_RATIO = 5.0
STATUS_WORDS = {"met": "met", "on_track": "on track", "off_trend": "off trend", "too_few_points": "too few points",
                "no_fit": "no fit"}
SCORE_TITLES = {"wer": "Word error rate (WER)", "cer": "Character error rate (CER)",
                "dnsmos_ovrl": "DNSMOS overall", "dnsmos_sig": "DNSMOS signal", "dnsmos_bak": "DNSMOS background",
                "similarity": "Speaker similarity", "composite": "Composite score"}

esc = html.escape


def render(data: ReportData, embed_audio_bytes: int = EMBED_AUDIO_BYTES) -> str:
    body = [
        _header(data),
        _notes(data.notes),
        _targets(data),
        _curves(data),
        _checkpoints(data),
        _alignment(data),
        _samples(data, _audio_sources(data, embed_audio_bytes)),
        f'<footer>voxtrain {esc(__version__)} · written {esc(_clock(time.time()))}</footer>',
    ]
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(data.run.name)} · voxtrain report</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main>"
        f'<pre id="render-check" hidden></pre><script>{CHECK_SCRIPT}</script></body></html>\n'
    )


def _clock(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _header(data: ReportData) -> str:
    traj, cfg = data.traj, data.config
    facts = []
    if data.current_step is not None:
        facts.append(f"step <b>{data.current_step}</b>" + (f" of {cfg.training.max_steps}" if cfg else ""))
    loss = number(traj.train[-1].get("loss_total")) if traj.train else None
    if loss is not None:
        facts.append(f"train loss <b>{fmt_value(loss)}</b>")
    val = number(traj.val[-1].get("loss_mel")) if traj.val else None
    if val is not None:
        facts.append(f"validation mel loss <b>{fmt_value(val)}</b>")
    best = next((c for c in data.checkpoints if c.best), None)
    if best is not None:
        facts.append(f"best checkpoint <b>step {best.step}</b>")
    if data.steps_per_s:
        facts.append(f"{data.steps_per_s:.2f} steps/s")
    facts.append(f"{len(traj.starts)} session(s), {len(traj.evals)} evaluation(s)")
    state = "stopped" if traj.stop else "running or interrupted"
    last = number(traj.last_step_record.get("time")) if traj.last_step_record else None
    return (f"<header><h1>{esc(data.run.name)}</h1><p class=\"facts\">{' · '.join(facts)}</p>"
            f'<p class="muted">{state}; last record {esc(_clock(last))}</p>'
            "</header>")


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<section class="notes">' + "".join(f"<p>⚠ {esc(n)}</p>" for n in notes) + "</section>"


def _sign(direction: str) -> str:
    return "≤" if direction == "below" else "≥"


def _targets(data: ReportData) -> str:
    if not data.targets:
        why = ("No targets set (training.targets in the run's config)." if data.config is not None
               else "Targets unknown: the run's config could not be read (see above).")
        return f'<section><h2>Targets</h2><p class="muted">{esc(why)}</p></section>'
    rows = []
    for t in data.targets:
        status = t.forecast.status if t.forecast else "none"
        latest = f"{fmt_value(t.latest[1])} <span class=\"muted\">at {t.latest[0]}</span>" if t.latest else "-"
        rows.append(f"<tr><td>{esc(t.metric)}</td><td class=\"nowrap\">{_sign(t.direction)} "
                    f"{fmt_value(t.threshold)}</td><td class=\"nowrap\">{latest}</td><td><span class=\"badge "
                    f"{esc(status)}\">{esc(STATUS_WORDS.get(status, 'no forecast'))}</span></td>"
                    f"<td>{esc(_without_head(t))}</td></tr>")
    return ('<section><h2>Targets</h2><table class="targets"><thead><tr><th>metric</th><th>target</th>'
            "<th>latest</th><th>status</th><th>forecast</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></section>")


def _without_head(t: TargetForecast) -> str:
    """The forecast's words without the "metric below X: " the table's own columns already say."""
    head = t.text.partition(": ")
    return head[2] if t.forecast is not None and head[0].startswith(t.metric) and head[2] else t.text


def _band(t: TargetForecast | None) -> Band | None:
    fc = t.forecast if t else None
    if fc is None or fc.status != "on_track" or fc.step is None or fc.step_low is None:
        return None
    return Band(fc.step_low, fc.step_high, fc.step)


def _figure(title: tuple[str, str], plot: str, series: list[Series], target: TargetForecast | None) -> str:
    legend = "".join(f'<span class="key"><i style="background:{s.color}"></i>{esc(s.label)}</span>'
                     for s in series if s.points)
    if target is not None:
        legend += f'<span class="key"><i class="dash"></i>target {_sign(target.direction)} ' \
                  f"{fmt_value(target.threshold)}</span>"
        if _band(target) is not None:
            legend += '<span class="key"><i class="shade"></i>forecast crossing</span>'
    return (f"<figure><figcaption><h3>{esc(title[0])}<span>{esc(title[1])}</span></h3>"
            f'<div class="legend">{legend}</div></figcaption>{plot}</figure>')


def _curves(data: ReportData) -> str:
    traj = data.traj
    targets = {t.metric: t for t in data.targets}

    def train(key: str) -> list[tuple[float, float]]:
        out = []
        for r in traj.train:
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool):
                out.append((r["step"], float(r[key])))
        return [p for p in out if p[1] == p[1] and abs(p[1]) != float("inf")]

    train_series = [Series("total", train("loss_total"), PALETTE[0]), Series("mel", train("loss_mel"), PALETTE[1])]
    plot = line_plot(train_series, plot_id="plot-train", log_ratio=LOG_RATIO)
    figures = [_figure(("Training loss", "per logged step"), plot, train_series, None)]
    metrics = ["val_mel"] + [m for m in targets if m.startswith("val_") and m != "val_mel"] + data.score_metrics
    for i, metric in enumerate(metrics):
        target = targets.get(metric)
        series = [Series(_plot_label(metric), traj.history(metric), PALETTE[(i + 2) % len(PALETTE)])]
        threshold = Threshold(target.threshold, f"target {fmt_value(target.threshold)}") if target else None
        plot = line_plot(series, plot_id=f"plot-{metric}", threshold=threshold, band=_band(target))
        figures.append(_figure(_plot_title(metric), plot, series, target))
    return '<section><h2>Curves</h2><div class="plots">' + "".join(figures) + "</div></section>"


def _plot_title(metric: str) -> tuple[str, str]:
    """A plot's title and its muted remark."""
    if metric.startswith("val_"):
        return f"Validation {metric.removeprefix('val_').replace('_', ' ')} loss", "held-out clips"
    return SCORE_TITLES.get(metric, metric), ("lower is better" if direction_of(metric) == "below"
                                              else "higher is better")


def _plot_label(metric: str) -> str:
    return "validation" if metric.startswith("val_") else metric


def _checkpoints(data: ReportData) -> str:
    if not data.checkpoints:
        return '<section><h2>Checkpoints</h2><p class="muted">No checkpoint saved yet.</p></section>'
    scores = data.score_metrics
    head = "".join(f"<th>{esc(m)}</th>" for m in ["step", "saved", "size", "val mel", *scores, ""])
    rows = []
    for c in reversed(data.checkpoints):
        val, ev = data.val_at(c.step) or {}, data.eval_at(c.step) or {}
        cells = [str(c.step), esc(_clock(c.mtime)), f"{c.size / 2**20:.1f} MB", _cell(val.get("loss_mel"))]
        cells += [_cell(ev.get(m)) for m in scores]
        mark = '<span class="badge met">★ best</span>' if c.best else ""
        if c.valid is False:
            mark += f' <span class="badge off_trend" title="{esc(c.error)}">corrupt</span>'
        cells.append(mark)
        rows.append(f'<tr class="{"best" if c.best else ""}">' + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    return (f'<section><h2>Checkpoints</h2><table class="checkpoints"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></section>")


def _cell(value: object) -> str:
    v = number(value)
    return '<span class="muted">-</span>' if v is None else fmt_value(v)


def _alignment(data: ReportData) -> str:
    if data.alignment is None:
        return ""
    step, path = data.alignment
    try:
        uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return ""
    return (f'<section><h2>Alignment <span class="muted">step {step}, first validation clip</span></h2>'
            f'<img class="alignment" alt="alignment at step {step}" src="{uri}"></section>')


def _audio_sources(data: ReportData, budget: int) -> dict[Path, str]:
    """Each clip's src: data URIs for the newest clips while they fit `budget`, then links."""
    sources, used, embedding = {}, 0, True
    for group in data.samples:
        for clip in group.clips:
            if embedding and used + clip.size <= budget:
                try:
                    sources[clip.path] = "data:audio/wav;base64," + base64.b64encode(clip.path.read_bytes()).decode()
                    used += clip.size
                    continue
                except OSError:
                    pass
            embedding = False  # keep "embedded" a newest-first prefix, so the rule is easy to state
            sources[clip.path] = Path(os.path.relpath(clip.path, data.run.report.parent)).as_posix()
    return sources


def _samples(data: ReportData, sources: dict[Path, str]) -> str:
    if not data.samples:
        return '<section><h2>Samples</h2><p class="muted">No audio samples yet.</p></section>'
    blocks, linked = [], sum(not s.startswith("data:") for s in sources.values())
    by_step: dict[int, list[SampleGroup]] = {}
    for g in data.samples:
        by_step.setdefault(g.step, []).append(g)
    for step, groups in by_step.items():
        summary, errors = _eval_summary(data, step)
        inner = "".join(_group(g, sources) for g in groups)
        blocks.append(f'<div class="step"><h3>step {step} <span class="muted">{summary}</span></h3>{errors}'
                      f"{inner}</div>")
    note = (f'<p class="muted">The {linked} oldest clip(s) play from the run directory (links relative to this '
            "page): keep report.html next to samples/.</p>") if linked else ""
    return '<section><h2>Samples <span class="muted">newest first</span></h2>' + note + "".join(blocks) + "</section>"


def _eval_summary(data: ReportData, step: int) -> tuple[str, str]:
    """The listening scores at `step` in one line, and each failed scorer's message."""
    ev = data.eval_at(step) or {}
    scores = [(m, number(ev.get(m))) for m in data.score_metrics]
    summary = " · ".join(f"{esc(m)} {fmt_value(v)}" for m, v in scores if v is not None)
    failed = ev.get("errors") if isinstance(ev.get("errors"), dict) else {}
    errors = "".join(f'<p class="error">{esc(str(k))}: {esc(str(v))}</p>' for k, v in failed.items())
    return summary, errors


def _group(group: SampleGroup, sources: dict[Path, str]) -> str:
    title = "listening evaluation" if group.kind == "evaluation" else "validation sentences"
    clips = "".join(
        f'<div class="clip"><span class="label">{esc(c.label or c.path.stem.replace("_", " "))}</span>'
        f'<audio controls preload="metadata" src="{esc(sources[c.path])}"></audio></div>'
        for c in group.clips if c.path in sources)
    return f'<div class="group"><h4>{title}</h4>{clips}</div>'
