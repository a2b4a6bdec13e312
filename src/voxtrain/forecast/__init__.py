"""When will a training target be met? A saturating-curve forecast of one logged metric.

A straight line through a flattening loss curve promises a target far too early and knows no
target the curve will never reach. Here the history is fitted by weighted least squares (the
early transient left out, later points weighing more) with two forms that level off at c:

    exp:    y = c + a * exp(-k * u)        u = step / last step evaluated
    power:  y = c + a * u ** -p            a >= 0, k > 0, p > 0, c past no bound (a loss >= 0)

A parametric bootstrap gives the uncertainty: histories drawn around each fit (their noise level
drawn from its chi-squared spread: a handful of points barely fix it) are refitted and carried
forward at the run's evaluation cadence, noise included, to the first evaluation that meets the
target. The forms share the replicates in inverse proportion to their residual variance: on a
smooth curve what matters is where each levels off (exp early, power late), not a near tie.
The replicates' median and 10% / 90% quantiles are the forecast and its 80% interval; when most
never get there, the target is off the trend and their asymptotes say "levels off at X ± Y".

Lower is better inside: an "above" metric is negated on the way in and out. Numpy only: for a
fixed k or p the best c and a are a closed-form linear fit (variable projection), k and p are
searched on a log grid refined by golden section, all replicates at once, so `voxtrain status`
answers at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from voxtrain.forecast.curves import FORMS, first_passage, fit, form_shares, noise_draws, quantiles

STATUSES = ("met", "on_track", "off_trend", "too_few_points", "no_fit")
DIRECTIONS = ("below", "above")

# The early transient (warm-up, the first steep drop) says little about where the curve goes
# next: the fit starts at this fraction of the history's last step and weighs each point by
# (step / last step) ** WEIGHT_POWER, so the latest regime leads. Chosen on synthetic curves and
# the recorded runs' other validation losses, then checked on val_mel (bench/forecast_backtest.py).
FIT_FROM_FRACTION = 0.2
WEIGHT_POWER = 2.0
# Crossings later than this many times the last observed step are not forecast ("beyond").
MAX_EXTRAPOLATION = 10.0
# The latest evaluations "move away" from the target when their slope is this many standard
# errors the wrong way (a t statistic; with five points pure noise gets there about 3% of the time).
WORSENING_T = 3.0
BOOTSTRAP = 400
_MAX_FIT_POINTS = 200


@dataclass(frozen=True)
class Forecast:
    metric: str
    target: float
    direction: str  # "below" (lower is better) or "above"
    status: str  # one of STATUSES
    step: float | None  # median forecast step of the first crossing (on_track)
    step_low: float | None  # the interval's low end
    step_high: float | None  # its high end; None: beyond any bound (the horizon)
    level: float | None  # where the curve levels off (its asymptote): the middle of its interval
    level_err: float | None  # that interval's half-width: the ± in "levels off at X ± Y"
    model: str  # the saturating forms and their shares, e.g. "exp 30% + power 70%"
    points: int  # evaluations in the history
    last_step: int | None = None
    last_value: float | None = None
    horizon: float | None = None  # the bound past which a crossing counts as "beyond"
    interval: float = 0.8  # the interval's coverage

    def seconds(self, current_step: int, steps_per_second: float | None) -> tuple[float, float, float] | None:
        """(median, low, high) wall-clock seconds from `current_step` to the crossing at this
        speed; high is inf when the interval has no upper bound. None unless on track."""
        if self.status != "on_track" or self.step is None or not steps_per_second or steps_per_second <= 0:
            return None

        def left(step: float | None) -> float:
            return math.inf if step is None else max(step - current_step, 0.0) / steps_per_second

        return left(self.step), left(self.step_low), left(self.step_high)

    def describe(self, current_step: int | None = None, steps_per_second: float | None = None) -> str:
        """One line for the monitor and `voxtrain status`."""
        head = f"{self.metric} {self.direction} {_num(self.target)}: "
        pct = f"{round(self.interval * 100)}%"
        if self.status == "met":
            return head + f"met ({_num(self.last_value)} at step {self.last_step})"
        if self.status == "too_few_points":
            return head + f"too few evaluations to forecast ({self.points} so far)"
        if self.status == "no_fit":
            return head + "no forecast (no saturating curve fits these evaluations)"
        if self.model.startswith("worsening"):
            return head + f"not on the current trend: {self.model}"
        levels = f"levels off at {_num(self.level)} ± {_num(self.level_err)}"
        if self.status == "off_trend":
            if self.level is not None and self.sign * self.level <= self.sign * self.target and self.horizon:
                # The asymptote is past the target but the crossing is not within the horizon.
                return head + f"not on the current trend before step {_step(self.horizon)}: " + levels
            return head + "not on the current trend: " + levels
        high = f"beyond step {_step(self.horizon)}" if self.step_high is None else _step(self.step_high)
        text = head + f"on track for step ~{_step(self.step)} ({pct}: {_step(self.step_low)}-{high})"
        secs = self.seconds(current_step if current_step is not None else self.last_step or 0, steps_per_second)
        if secs is not None:
            spread = f"at least {_duration(secs[1])}" if self.step_high is None else \
                f"{_duration(secs[1])}-{_duration(secs[2])}"
            text += f", in ~{_duration(secs[0])} ({spread})"
        if self.level is not None and self.sign * self.level > self.sign * self.target:
            # Reached only by a lucky evaluation of a noisy metric: say so.
            text += f", by noise only: {levels}"
        return text

    @property
    def sign(self) -> int:
        return 1 if self.direction == "below" else -1

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _step(x: float | None) -> str:
    return "-" if x is None else str(int(round(x)))


def _duration(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    for unit, sub, name, subname in ((86400, 3600, "d", "h"), (3600, 60, "h", "m"), (60, 1, "m", "s")):
        if s >= unit:
            return f"{s // unit}{name}{s % unit // sub:02d}{subname}"
    return f"{s}s"


def _clean(steps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with a positive step, sorted by step; a repeated step keeps its last value."""
    by_step: dict[float, float] = {}
    for s, v in zip(steps, values):
        s, v = float(s), float(v)
        if math.isfinite(s) and math.isfinite(v) and s > 0:
            by_step[s] = v
    t = np.array(sorted(by_step), dtype=float)
    return t, np.array([by_step[s] for s in t], dtype=float)


def _window(t: np.ndarray, min_points: int, fit_from: float | None) -> np.ndarray:
    """Indices of the points the fit uses: from fit_from and from FIT_FROM_FRACTION of the last
    step on, but at least the last min_points."""
    keep = np.flatnonzero(t >= max(FIT_FROM_FRACTION * t[-1], fit_from or 0.0))
    if len(keep) < min_points:
        return np.arange(len(t) - min_points, len(t))
    # A long history is thinned evenly (the last point kept): the fit costs grow with it.
    return keep[np.unique(np.linspace(len(keep) - 1, 0, min(len(keep), _MAX_FIT_POINTS)).round().astype(int))]


def _worsening(t: np.ndarray, y: np.ndarray) -> float | None:
    """The step of the best value when the latest evaluations move away from the target (lower is
    better): their straight-line slope is positive beyond noise (t statistic over WORSENING_T).
    A rising validation loss is no saturating curve, and a fit through it would promise the target."""
    m = max(5, len(t) // 4)
    if len(t) < m + 1:
        return None
    x, z = t[-m:] - t[-m:].mean(), y[-m:]
    slope = float(x @ (z - z.mean()) / (x @ x))
    resid = z - z.mean() - slope * x
    se = math.sqrt(float(resid @ resid) / (m - 2) / float(x @ x))
    if slope <= 0 or slope < WORSENING_T * se:
        return None
    return float(t[int(np.argmin(y))])


def forecast_target(steps: Sequence[float], values: Sequence[float], target: float, direction: str,
                    level: float = 0.8, min_points: int = 4, horizon: float | None = None, *,
                    metric: str = "metric", hold: int = 1, limit: float | str | None = "auto",
                    fit_from: float | None = None, seed: int = 0) -> Forecast:
    """Forecast the step at which `values` (logged at `steps`) first reach `target`.

    direction "below": the target is met at or under it (losses, WER); "above": at or over it,
    on the latest `hold` evaluations in a row (training.targets_hold). `level`: the interval's
    coverage. `horizon`: the last step worth forecasting (e.g. max_steps); a crossing past it
    counts as "beyond"; None: MAX_EXTRAPOLATION times the last step evaluated. `limit`: a value
    the metric cannot pass (0 for a loss, 1 for a similarity); "auto": 0 for a "below" metric
    that has never been negative, 1 for an "above" one that has stayed in [0, 1]; None: none.
    `fit_from`: the first step worth fitting, e.g. the end of the LR warm-up (the fit also skips
    the first FIT_FROM_FRACTION of the steps). The bootstrap is seeded: the same history always
    gives the same forecast.
    """
    sign, t, v, base, done = _start(steps, values, target, direction, level, min_points, horizon, metric, hold)
    if done is not None:
        return done
    worse_since = _worsening(t, sign * v)
    if worse_since is not None:
        best = float(v[np.argmin(sign * v)])
        return Forecast(status="off_trend", **_NOTHING, model=f"worsening since step {int(worse_since)} (best "
                        f"{best:.3g})", **base)
    keep = _window(t, min_points, fit_from)
    tail = _tail_met(sign * v, sign * float(target), hold)
    found = _saturating(t, sign * v, keep, sign * float(target), base["horizon"], _floor(v, sign, limit),
                        (hold, tail), seed)
    if found is None:
        return Forecast(status="no_fit", **_NOTHING, model="", **base)
    cross, lev, model = found
    q = (1 - level) / 2
    # The middle of the level's interval, not its median: "X ± Y" then reads as that very interval
    # (the two forms' replicates make it lopsided).
    lev_low, lev_high = quantiles(lev, (q, 1 - q))
    return _crossing(cross, level, base, level=sign * (lev_low + lev_high) / 2, level_err=(lev_high - lev_low) / 2,
                     model=model)


_NOTHING = dict(step=None, step_low=None, step_high=None, level=None, level_err=None)


def _start(steps: Sequence[float], values: Sequence[float], target: float, direction: str, level: float,
           min_points: int, horizon: float | None, metric: str, hold: int):
    """Checked arguments and clean points; and the forecast when it is settled before any fit (met,
    too few points)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'below' or 'above', not {direction!r}")
    if not 0 < level < 1:
        raise ValueError(f"level is the interval's coverage, between 0 and 1 (e.g. 0.8), not {level!r}")
    if min_points < 4:
        raise ValueError(f"min_points must be at least 4 (three fitted parameters and one to spare), not {min_points}")
    if hold < 1:
        raise ValueError(f"hold is a number of evaluations in a row, at least 1, not {hold}")
    sign = 1 if direction == "below" else -1
    t, v = _clean(steps, values)
    until = float(horizon) if horizon is not None else (float(MAX_EXTRAPOLATION * t[-1]) if len(t) else None)
    base = dict(metric=metric, target=float(target), direction=direction, points=len(t),
                last_step=int(t[-1]) if len(t) else None, last_value=float(v[-1]) if len(t) else None,
                horizon=until, interval=level)
    done = None
    if _tail_met(sign * v, sign * float(target), hold) >= hold:
        done = Forecast(status="met", **_NOTHING, model="", **base)
    elif len(t) < min_points:
        done = Forecast(status="too_few_points", **_NOTHING, model="", **base)
    return sign, t, v, base, done


def _crossing(cross: np.ndarray, coverage: float, base: dict, **fit) -> Forecast:
    """on_track with the median and interval of the replicates' crossing steps, or off_trend when
    most never cross within the horizon."""
    q = (1 - coverage) / 2
    low, mid, high = quantiles(cross, (q, 0.5, 1 - q))
    if not math.isfinite(mid):
        return Forecast(status="off_trend", step=None, step_low=None, step_high=None, **fit, **base)
    return Forecast(status="on_track", step=mid, step_low=low, step_high=high if math.isfinite(high) else None,
                    **fit, **base)


def _tail_met(y: np.ndarray, goal: float, hold: int) -> int:
    """How many of the latest evaluations in a row meet `goal` (lower is better), up to `hold`."""
    return sum(1 for _ in itertools.takewhile(lambda value: value <= goal, y[::-1][:hold]))


def _floor(v: np.ndarray, sign: int, limit: float | str | None) -> float | None:
    """The limit in lower-is-better terms: a bound the fitted level may not pass."""
    if limit == "auto":
        if sign > 0:
            limit = 0.0 if v.min() >= 0 else None
        else:
            limit = 1.0 if v.min() >= 0 and v.max() <= 1 else None
    return None if limit is None else sign * float(limit)


def _saturating(t: np.ndarray, y: np.ndarray, keep: np.ndarray, goal: float, until: float, floor: float | None,
                hold: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Bootstrap replicates' first-passage steps and levels (lower is better) of the fits to the
    points `keep`, mixed over the forms by their shares; None when no form fits."""
    u, yw = t[keep] / t[-1], y[keep]
    w = u ** WEIGHT_POWER
    w /= w.sum()
    fits = [(form, *(x[0] for x in fit(form, u, yw[None, :], w, floor))) for form in FORMS]
    fits = [f for f in fits if all(math.isfinite(x) for x in f[1:])]
    if not fits:
        return None
    shares = form_shares([f[4] for f in fits])
    rng = np.random.default_rng(seed)
    crossings, levels = [], []
    for (form, c, a, theta, _), share in zip(fits, shares):
        fitted = c + a * form.basis(u, np.array(theta))
        sigma = noise_draws(yw - fitted, 3, max(1, round(BOOTSTRAP * share)), rng, w)
        replicas = fitted + sigma[:, None] * rng.standard_normal((len(sigma), len(u)))
        cb, ab, tb, _ = fit(form, u, replicas, w, floor)
        crossings.append(first_passage(form, (cb, ab, tb), sigma, t, until, goal, hold, rng))
        levels.append(cb)
    model = " + ".join(f"{form.name} {round(100 * s)}%" for (form, *_), s in zip(fits, shares))
    return np.concatenate(crossings), np.concatenate(levels), model


def linear_forecast(steps: Sequence[float], values: Sequence[float], target: float, direction: str,
                    level: float = 0.8, min_points: int = 4, horizon: float | None = None, *,
                    metric: str = "metric", last: int = 4, seed: int = 0) -> Forecast:
    """The straight line people draw through the last `last` evaluations, for the backtest only:
    it never levels off, so it has no level. Its interval comes from the same noise bootstrap."""
    sign, t, v, base, done = _start(steps, values, target, direction, level, min_points, horizon, metric, 1)
    line = dict(level=None, level_err=None, model=f"line through last {last}")
    if done is not None:
        return Forecast(**{**done.to_json(), **line})
    x, y, goal = t[-last:], sign * v[-last:], sign * float(target)
    slope, icept = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    sigma = noise_draws(y - (icept + slope * x), 2, BOOTSTRAP, rng)
    replicas = icept + slope * x + sigma[:, None] * rng.standard_normal((BOOTSTRAP, len(x)))
    xc = x - x.mean()
    slopes = (replicas - replicas.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = x.mean() + (goal - replicas.mean(axis=1)) / slopes
    cross = np.where((slopes < 0) & np.isfinite(cross), np.maximum(cross, t[-1]), np.inf)
    cross[cross > base["horizon"]] = np.inf
    return _crossing(cross, level, base, **line)
