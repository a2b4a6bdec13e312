"""Are voxtrain's target forecasts honest? A backtest on real recorded runs, no training needed.

    python bench/forecast_backtest.py                      # the runs in bench/results/recorded_runs/
    python bench/forecast_backtest.py --synthetic 80 --save   # and seeded synthetic curves; write the JSON
    python bench/forecast_backtest.py --import tiny_scratch=runs/tiny   # copy a run's metrics.jsonl in
    python bench/forecast_backtest.py --set WEIGHT_POWER=0  # a sweep over one of forecast's constants

For every run (its `--metric` history, after resumes) and several targets: ones the run really
met (its smoothed best by 40%, 60%, 80% and 95% of its steps) and ones it never met (that best
beaten by half, one and three times its gain over the last quarter, or the noise if larger), a
forecast is made from the first 25%, 50% and 75% of the evaluations, with the last evaluation
recorded as the horizon (past it nobody knows), and compared with the step at which an
evaluation first met the target. Targets already met at the cut-off are left out, and so are
cut-offs with too few evaluations to forecast (counted as too_few_points). Beside it, on the same
cases: the saturating forecast told where the LR warm-up ends (fit_from), and the straight line
through the last four evaluations (what people do), its interval from the same noise bootstrap.

Figures: coverage (the truth inside the 80% interval; a reachable target forecast off_trend
counts as outside), on_track (share of reachable targets forecast as reached), median absolute
error in steps and over the steps still to go (off_trend counts as infinitely wrong), median
width of the bounded intervals over the steps to go and the share left open ("beyond"), and for
unreachable targets the share said off_trend. Prints JSON and markdown tables for the README.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path, PurePath

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from voxtrain import forecast  # noqa: E402
from voxtrain.artifacts.layout import RunDir  # noqa: E402
from voxtrain.artifacts.metrics_format import read_metrics, trajectory  # noqa: E402

RUNS = ROOT / "bench" / "results" / "recorded_runs"
RESULT = ROOT / "bench" / "results" / "forecast_backtest.json"
SUFFIX = ".metrics.jsonl"
SIDECAR = ".run.json"
WARMUP_SCHEDULERS = ("warmup_cosine", "noam")
CUTOFFS = (0.25, 0.5, 0.75)
REACHED_AT = (0.4, 0.6, 0.8, 0.95)
BEYOND = (0.5, 1.0, 3.0)
TUNABLE = ("FIT_FROM_FRACTION", "WEIGHT_POWER", "SHARE_POWER", "WORSENING_T", "BOOTSTRAP")
# name -> (forecaster, whether it is told where the LR warm-up ends)
METHODS = {"saturating": (forecast.forecast_target, False), "saturating_warmup": (forecast.forecast_target, True),
           "linear": (forecast.linear_forecast, False)}

_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\\"']+[/\\])*([^\s/\\\"']+)")
_PATH_KEYS = ("path", "file", "dir", "_from")


def strip_paths(value: object, key: str = "") -> object:
    """A record with every machine path replaced by its file name."""
    if isinstance(value, dict):
        return {k: strip_paths(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_paths(v, key) for v in value]
    if isinstance(value, str):
        if key.endswith(_PATH_KEYS) and ("/" in value or "\\" in value):
            return PurePath(value.replace("\\", "/")).name
        return _ABS_PATH.sub(r"\1", value)
    return value


def import_run(name: str, run_dir: Path) -> Path:
    """Copy RUN/metrics.jsonl to recorded_runs/NAME.metrics.jsonl without machine paths, and the
    schedule facts of RUN/config.yaml a forecast may use to NAME.run.json."""
    run = RunDir(run_dir)
    if not run.metrics.is_file():
        raise SystemExit(f"--import {name}={run_dir}: no {run.metrics.name} there (is it a run directory?)")
    lines = [json.dumps(strip_paths(r)) for r in read_metrics(run.metrics)]
    RUNS.mkdir(parents=True, exist_ok=True)
    out = RUNS / (name + SUFFIX)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    training = (yaml.safe_load(run.config.read_text()) or {}).get("training", {}) if run.config.is_file() else {}
    facts = {k: training.get(k) for k in ("max_steps", "warmup_steps", "scheduler", "lr", "validate_every")}
    (RUNS / (name + SIDECAR)).write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return out


def recorded(folder: Path, metric: str) -> list[dict]:
    curves = []
    for path in sorted(folder.glob("*" + SUFFIX)):
        history = trajectory(read_metrics(path)).history(metric)
        if len(history) < 10:
            print(f"skipping {path.name}: {len(history)} evaluations of {metric} (10 needed)", file=sys.stderr)
            continue
        steps, values = zip(*history)
        name = path.name.removesuffix(SUFFIX)
        sidecar = folder / (name + SIDECAR)
        facts = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        warmup = facts.get("warmup_steps") if facts.get("scheduler") in WARMUP_SCHEDULERS else None
        # The horizon is the last evaluation recorded: past it nobody knows whether a target was met.
        curves.append(dict(name=name, steps=list(steps), values=list(values), warmup=warmup, horizon=steps[-1],
                           direction="above" if metric in ("similarity",) else "below"))
    return curves


def synthetic(count: int, seed: int = 7) -> list[dict]:
    """Seeded curves unlike both fitted forms: loss against the area under a warm-up + cosine LR
    schedule (it flattens as the LR decays), fine-tunes that start low, noisy WER-like scores and
    similarities rising to a ceiling."""
    rng = np.random.default_rng(seed)
    curves = []
    for i in range(count):
        kind = ("scratch", "finetune", "wer", "similarity")[i % 4]
        total = int(rng.choice([1000, 2500, 10000, 50000]))
        steps = np.linspace(total / 20, total, 20)
        t = np.arange(1, total + 1)
        warm = max(1, int(total * rng.uniform(0.02, 0.12)))
        lr = np.where(t < warm, t / warm, 0.5 * (1 + np.cos(np.pi * (t - warm) / (total - warm))))
        if kind == "finetune":
            lr = np.full(total, rng.uniform(0.2, 1.0))
        area = np.cumsum(lr)[steps.astype(int) - 1] / total
        alpha, floor = rng.uniform(0.3, 1.5), rng.uniform(0.2, 0.6)
        offset = rng.uniform(0.5, 3.0) if kind == "finetune" else rng.uniform(0.002, 0.05)
        shape = (area + offset) ** -alpha / (offset ** -alpha)
        noise = {"scratch": 0.004, "finetune": 0.002, "wer": 0.02, "similarity": 0.01}[kind]
        if kind == "wer":
            values = floor * 0.3 + 0.8 * shape
        elif kind == "similarity":
            values = 0.95 - floor * 0.2 - 0.6 * shape
        else:
            values = floor + rng.uniform(0.3, 1.5) * shape
        values = values + rng.normal(0, noise, len(steps))
        curves.append(dict(name=f"synthetic_{kind}_{i}", steps=list(steps), values=list(values),
                           direction="above" if kind == "similarity" else "below", horizon=total,
                           warmup=None if kind == "finetune" else warm))
    return curves


def smoothed(y: np.ndarray) -> np.ndarray:
    """Running median of three: a target a person sets is a level the curve reaches, not one lucky
    noisy evaluation (the truth is still the first raw evaluation that meets it)."""
    padded = np.concatenate([y[:1], y, y[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def targets(values: list[float], steps: list[float], sign: int) -> list[tuple[str, float]]:
    """(label, target) pairs: values the run reached by a share of its steps, and beyond its best."""
    y = smoothed(sign * np.asarray(values))
    best_so_far = np.minimum.accumulate(y)
    noise = 1.4826 * float(np.median(np.abs(sign * np.asarray(values) - y)))
    out = []
    for frac in REACHED_AT:
        i = int(np.searchsorted(steps, frac * steps[-1], side="right")) - 1
        out.append((f"reached@{round(frac * 100)}%", sign * float(best_so_far[max(i, 0)])))
    quarter = int(np.searchsorted(steps, 0.75 * steps[-1], side="right")) - 1
    # Beyond the best by at least the noise: a noise-sized step past it is a coin toss, not a trend.
    gain = max(float(best_so_far[quarter] - best_so_far[-1]), noise, 1e-3 * abs(float(best_so_far[-1])) + 1e-9)
    for k in BEYOND:
        out.append((f"beyond best by {k:g}x last-quarter gain", sign * float(best_so_far[-1] - k * gain)))
    return out


def first_crossing(steps: list[float], values: list[float], target: float, sign: int) -> float | None:
    return next((s for s, v in zip(steps, values) if sign * v <= sign * target), None)


def cases(curve: dict) -> list[dict]:
    steps, values, direction = curve["steps"], curve["values"], curve["direction"]
    sign = 1 if direction == "below" else -1
    rows = []
    for label, target in targets(values, steps, sign):
        truth = first_crossing(steps, values, target, sign)
        for cut in CUTOFFS:
            n = max(1, round(cut * len(steps)))
            if first_crossing(steps[:n], values[:n], target, sign) is not None:
                continue  # already met at the cut-off: nothing to forecast
            row = dict(run=curve["name"], target=target, label=label, cutoff=cut, from_step=steps[n - 1],
                       truth=truth, horizon=curve["horizon"])
            for name, (method, warm) in METHODS.items():
                if warm and not curve.get("warmup"):
                    continue
                extra = dict(fit_from=curve["warmup"]) if warm else {}
                f = method(steps[:n], values[:n], target, direction, horizon=curve["horizon"], **extra)
                row[name] = dict(status=f.status, step=f.step, low=f.step_low, high=f.step_high,
                                 level=f.level, level_err=f.level_err)
            rows.append(row)
    return rows


def score(rows: list[dict], method: str) -> dict:
    asked = [r for r in rows if method in r]
    # too few evaluations at the cut-off: no forecast was made, so none is scored (counted apart)
    rows = [r for r in asked if r[method]["status"] != "too_few_points"]
    reach = [r for r in rows if r["truth"] is not None]
    never = [r for r in rows if r["truth"] is None]
    covered, errors, relative, widths, open_ended = [], [], [], [], []
    for r in reach:
        f, left = r[method], r["truth"] - r["from_step"]
        on = f["status"] == "on_track"
        high = math.inf if f["high"] is None else f["high"]
        covered.append(on and f["low"] <= r["truth"] <= high)
        errors.append(abs(f["step"] - r["truth"]) if on else math.inf)
        relative.append(errors[-1] / left)
        if on:
            open_ended.append(f["high"] is None)
            if f["high"] is not None:
                widths.append((f["high"] - f["low"]) / left)

    def share(flags: list[bool]) -> float | None:
        return round(sum(flags) / len(flags), 3) if flags else None

    def median(xs: list[float]) -> float | None:
        if not xs:
            return None
        m = float(np.median(xs)) if all(math.isfinite(x) for x in xs) else sorted(xs)[len(xs) // 2]
        return round(m, 3) if math.isfinite(m) else None  # None: most forecasts missed entirely

    return dict(too_few_points=len(asked) - len(rows), reachable=len(reach), coverage=share(covered),
                on_track=share([r[method]["status"] == "on_track" for r in reach]),
                median_abs_error_steps=median(errors), median_abs_error_over_steps_left=median(relative),
                median_width_over_steps_left=median(widths),
                open_ended=share(open_ended), unreachable=len(never),
                off_trend=share([r[method]["status"] == "off_trend" for r in never]))


def summarize(curves: list[dict]) -> dict:
    rows = [row for c in curves for row in cases(c)]
    runs = {c["name"]: dict(evaluations=len(c["steps"]), last_step=c["steps"][-1], horizon=c["horizon"],
                            warmup=c.get("warmup"), direction=c["direction"], first=round(c["values"][0], 4),
                            last=round(c["values"][-1], 4), best=round(min(c["values"]) if c["direction"] == "below"
                                                                        else max(c["values"]), 4)) for c in curves}
    per_run = {name: {m: score([r for r in rows if r["run"] == name], m) for m in METHODS} for name in runs}
    by_cutoff = {str(cut): {m: score([r for r in rows if r["cutoff"] == cut], m) for m in METHODS} for cut in CUTOFFS}
    labels = sorted({r["label"] for r in rows})
    by_target = {label: {m: score([r for r in rows if r["label"] == label], m) for m in METHODS} for label in labels}
    return dict(runs=runs, overall={m: score(rows, m) for m in METHODS}, by_cutoff=by_cutoff, by_target=by_target,
                per_run=per_run, cases=rows)


def table(result: dict, title: str) -> str:
    head = ("| " + title + " | method | reachable | 80% interval covers | on track | median abs error (steps) | "
            "error / steps to go | unreachable | said off_trend |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    groups = [("all", result["overall"])] + [(name, s) for name, s in result["per_run"].items()]
    for name, methods in groups:
        for m, s in methods.items():
            if s["reachable"] + s["unreachable"] == 0:
                continue
            err = s["median_abs_error_steps"]
            lines.append(f"| {name} | {m} | {s['reachable']} | {_pct(s['coverage'])} | {_pct(s['on_track'])} | "
                         f"{'never' if err is None else round(err)} | {_pct(s['median_abs_error_over_steps_left'])} | "
                         f"{s['unreachable']} | {_pct(s['off_trend'])} |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{round(100 * x)}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=RUNS, help="folder of NAME.metrics.jsonl files")
    ap.add_argument("--metric", default="val_mel")
    ap.add_argument("--synthetic", type=int, default=0, help="also backtest this many seeded synthetic curves")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help=f"override one of forecast's tuning constants for a sweep: {', '.join(TUNABLE)}")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="NAME=RUN_DIR",
                    help="copy RUN_DIR/metrics.jsonl to recorded_runs/NAME.metrics.jsonl, paths stripped")
    ap.add_argument("--cases", action="store_true", help="print every case, not only the figures")
    ap.add_argument("--save", action="store_true", help=f"write {RESULT.relative_to(ROOT)}")
    args = ap.parse_args()
    for spec in args.imports:
        name, _, run_dir = spec.partition("=")
        print(f"imported {import_run(name, Path(run_dir)).name}", file=sys.stderr)
    for spec in args.overrides:
        name, _, value = spec.partition("=")
        if name not in TUNABLE:
            raise SystemExit(f"--set {spec}: {name} is not one of {', '.join(TUNABLE)}")
        setattr(forecast, name, float(value))
    settings = dict(metric=args.metric, cutoffs=CUTOFFS, reached_at=REACHED_AT, beyond_best_by=BEYOND,
                    interval=0.8, linear_last=4, **{name.lower(): getattr(forecast, name) for name in TUNABLE})
    out: dict = dict(settings=settings)
    curves = recorded(args.runs, args.metric)
    if curves:
        out["recorded"] = summarize(curves)
    if args.synthetic:
        synth = summarize(synthetic(args.synthetic))
        out["synthetic"] = {k: v for k, v in synth.items() if k not in ("per_run", "cases", "runs", "by_target")}
        out["synthetic"]["curves"] = args.synthetic
    shown = out if args.cases else {k: ({kk: vv for kk, vv in v.items() if kk != "cases"} if isinstance(v, dict)
                                        else v) for k, v in out.items()}
    print(json.dumps(shown, indent=1))
    if "recorded" in out:
        print("\n" + table(out["recorded"], f"run ({args.metric})"))
    if "synthetic" in out:
        print("\n" + table(dict(overall=out["synthetic"]["overall"], per_run={}), "synthetic"))
    if args.save:
        RESULT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
