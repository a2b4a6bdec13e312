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

STATUSES = ("met", "on_track", "off_trend", "too_few_points", "no_fit")
DIRECTIONS = ("below", "above")

# The early transient (warm-up, the first steep drop) says little about where the curve goes
# next: the fit starts at this fraction of the history's last step and weighs each point by
# (step / last step) ** WEIGHT_POWER, so the latest regime leads. Chosen on synthetic curves and
# the recorded runs' other validation losses, then checked on val_mel (bench/forecast_backtest.py).
FIT_FROM_FRACTION = 0.2
WEIGHT_POWER = 2.0
# How sharply the forms' shares of the replicates follow their fit (see _shares).
SHARE_POWER = 1.0
# Crossings later than this many times the last observed step are not forecast ("beyond").
MAX_EXTRAPOLATION = 10.0
# The latest evaluations "move away" from the target when their slope is this many standard
# errors the wrong way (a t statistic; with five points pure noise gets there about 3% of the time).
WORSENING_T = 3.0
BOOTSTRAP = 400
_GRID = 64
_GOLDEN_ITERS = 24
_MAX_FUTURE_EVALS = 400
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


@dataclass(frozen=True)
class _Form:
    """One saturating form c + a * basis(u, theta), theta searched on a log scale."""

    name: str
    log_lo: float
    log_hi: float

    def basis(self, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.name == "exp":
            return np.exp(-theta * u)
        return u ** (-theta)


FORMS = (_Form("exp", math.log(0.01), math.log(100.0)), _Form("power", math.log(0.01), math.log(10.0)))


def _project(y: np.ndarray, w: np.ndarray, phi: np.ndarray, floor: float | None, paired: bool):
    """Best c >= floor and a >= 0 of y ~ c + a * phi, and the weighted SSE, in closed form.

    y (B, n); w (n,) sums to 1; phi (B, n) paired row by row (results (B,)) or phi (G, n) paired
    with every row of y (results (B, G))."""

    def dot(x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (x * b) @ w if paired else x @ (b * w).T

    def per_row(x: np.ndarray) -> np.ndarray:  # a (B,) quantity against (B,) or (B, G)
        return x if paired else x[:, None]

    ybar, phibar = y @ w, phi @ w
    yc, pc = y - ybar[:, None], phi - phibar[:, None]
    spy = dot(yc, pc)
    a = np.maximum(spy / np.maximum((pc * pc) @ w, 1e-300), 0.0)
    c = per_row(ybar) - a * phibar
    sse = per_row((yc * yc) @ w) - a * spy
    if floor is not None:
        # Past the metric's bound (a loss under 0): pin c there and fit a alone.
        z = y - floor
        spz = dot(z, phi)
        a_pinned = np.maximum(spz / np.maximum((phi * phi) @ w, 1e-300), 0.0)
        low = c < floor
        a, c = np.where(low, a_pinned, a), np.where(low, floor, c)
        sse = np.where(low, per_row((z * z) @ w) - a_pinned * spz, sse)
    return c, a, np.maximum(sse, 0.0)


def _fit(form: _Form, u: np.ndarray, y: np.ndarray, w: np.ndarray, floor: float | None = None):
    """Least-squares fit of every row of y (B, n): c, a, theta, sse, each (B,)."""
    grid = np.linspace(form.log_lo, form.log_hi, _GRID)
    with np.errstate(over="ignore", under="ignore"):
        _, _, sse = _project(y, w, form.basis(u[None, :], np.exp(grid)[:, None]), floor, paired=False)
    best = np.argmin(sse, axis=1)
    lo, hi = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, _GRID - 1)]

    def sse_at(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return _project(y, w, form.basis(u[None, :], np.exp(x)[:, None]), floor, paired=True)[2]

    # Golden-section search in log theta between the best grid point's neighbours, all rows at once.
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = sse_at(x1), sse_at(x2)
    for _ in range(_GOLDEN_ITERS):
        left = f1 < f2  # the minimum lies in [lo, x2]
        lo, hi = np.where(left, lo, x1), np.where(left, x2, hi)
        new = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        fn = sse_at(new)
        x1, x2, f1, f2 = (np.where(left, new, x2), np.where(left, x1, new),
                          np.where(left, fn, f2), np.where(left, f1, fn))
    theta = np.exp((lo + hi) / 2)
    with np.errstate(over="ignore", under="ignore"):
        c, a, sse = _project(y, w, form.basis(u[None, :], theta[:, None]), floor, paired=True)
    return c, a, theta, sse


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


def _shares(sse: list[float]) -> list[float]:
    """Each form's share of the replicates: inverse to its residual variance (SHARE_POWER 1).

    Akaike weights (SSE to the power -n/2, both forms having three parameters) would hand one
    form everything on a smooth curve where the two fit almost equally well and the difference
    that matters is where each levels off; a form whose residuals are ten times larger still
    gets next to nothing."""
    logs = np.array([-SHARE_POWER * math.log(max(s, 1e-300)) for s in sse])
    raw = np.exp(logs - logs.max())
    return list(raw / raw.sum())


def _noise_draws(resid: np.ndarray, params: int, count: int, rng: np.random.Generator,
                 w: np.ndarray | None = None) -> np.ndarray:
    """Noise levels for `count` replicates: the residual scale drawn from its own uncertainty
    (sigma^2 * dof / chi^2_dof). With a handful of points the scale is barely known, and a fixed
    estimate makes intervals far too narrow. Weighted residuals (w sums to 1) count as their
    effective number of points, 1 / sum(w^2)."""
    w = np.full(len(resid), 1.0 / len(resid)) if w is None else w
    n_eff = 1.0 / float(w @ w)
    dof = max(n_eff - params, 0.5)
    scale2 = float(w @ (resid * resid)) * n_eff / dof
    return np.sqrt(scale2 * dof / rng.chisquare(dof, size=count))


def _first_passage(form: _Form, params: tuple[np.ndarray, np.ndarray, np.ndarray], sigma: np.ndarray,
                   t: np.ndarray, bound: float, goal: float, hold: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """The step of the first future evaluation by which `goal` has held on `hold[0]` evaluations in
    a row (the last `hold[1]` observed ones count), per replicate; inf: none by `bound`.

    The target is met when evaluations show it, noise included: a noisy score (WER) gets there
    before its mean curve does. So each replicate's curve is evaluated at the run's evaluation
    cadence with its noise drawn on top."""
    spacing = float(np.median(np.diff(t[-4:])))
    spacing = max(spacing, (bound - t[-1]) / _MAX_FUTURE_EVALS)
    future = t[-1] + spacing * np.arange(1, max(int((bound - t[-1]) // spacing), 0) + 1)
    c, a, theta = params
    if not len(future):
        return np.full(len(c), np.inf)
    with np.errstate(over="ignore", under="ignore"):
        curve = c[:, None] + a[:, None] * form.basis(future[None, :] / t[-1], theta[:, None])
    hit = curve + sigma[:, None] * rng.standard_normal(curve.shape) <= goal
    need, tail = hold
    if need > 1:
        prefix = np.array([False] * (need - 1 - tail) + [True] * tail)
        ext = np.concatenate([np.broadcast_to(prefix, (len(hit), need - 1)), hit], axis=1)
        hit = np.logical_and.reduce([ext[:, i:i + hit.shape[1]] for i in range(need)])
    return np.where(hit.any(axis=1), future[np.argmax(hit, axis=1)], np.inf)


def _quantiles(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Empirical quantiles that stay inf where the sample is inf (no interpolation across it)."""
    xs = np.sort(x)
    return [float(xs[min(max(math.ceil(q * len(xs)) - 1, 0), len(xs) - 1)]) for q in qs]


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
    lev_low, lev_high = _quantiles(lev, (q, 1 - q))
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
    low, mid, high = _quantiles(cross, (q, 0.5, 1 - q))
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
    fits = [(form, *(x[0] for x in _fit(form, u, yw[None, :], w, floor))) for form in FORMS]
    fits = [f for f in fits if all(math.isfinite(x) for x in f[1:])]
    if not fits:
        return None
    shares = _shares([f[4] for f in fits])
    rng = np.random.default_rng(seed)
    crossings, levels = [], []
    for (form, c, a, theta, _), share in zip(fits, shares):
        fitted = c + a * form.basis(u, np.array(theta))
        sigma = _noise_draws(yw - fitted, 3, max(1, round(BOOTSTRAP * share)), rng, w)
        replicas = fitted + sigma[:, None] * rng.standard_normal((len(sigma), len(u)))
        cb, ab, tb, _ = _fit(form, u, replicas, w, floor)
        crossings.append(_first_passage(form, (cb, ab, tb), sigma, t, until, goal, hold, rng))
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
    sigma = _noise_draws(y - (icept + slope * x), 2, BOOTSTRAP, rng)
    replicas = icept + slope * x + sigma[:, None] * rng.standard_normal((BOOTSTRAP, len(x)))
    xc = x - x.mean()
    slopes = (replicas - replicas.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = x.mean() + (goal - replicas.mean(axis=1)) / slopes
    cross = np.where((slopes < 0) & np.isfinite(cross), np.maximum(cross, t[-1]), np.inf)
    cross[cross > base["horizon"]] = np.inf
    return _crossing(cross, level, base, **line)
