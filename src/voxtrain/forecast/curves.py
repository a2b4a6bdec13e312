"""The curve maths of the forecast: two saturating forms, their weighted least-squares fit by
variable projection, the bootstrap's noise draws, and the first evaluation that meets a goal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# How sharply the forms' shares of the replicates follow their fit (see form_shares).
SHARE_POWER = 1.0


_MAX_FUTURE_EVALS = 400


_GOLDEN_ITERS = 24


_GRID = 64


@dataclass(frozen=True)
class Form:
    """One saturating form c + a * basis(u, theta), theta searched on a log scale."""

    name: str
    log_lo: float
    log_hi: float

    def basis(self, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.name == "exp":
            return np.exp(-theta * u)
        return u ** (-theta)


FORMS = (Form("exp", math.log(0.01), math.log(100.0)), Form("power", math.log(0.01), math.log(10.0)))


def project(y: np.ndarray, w: np.ndarray, phi: np.ndarray, floor: float | None, paired: bool):
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


def fit(form: Form, u: np.ndarray, y: np.ndarray, w: np.ndarray, floor: float | None = None):
    """Least-squares fit of every row of y (B, n): c, a, theta, sse, each (B,)."""
    grid = np.linspace(form.log_lo, form.log_hi, _GRID)
    with np.errstate(over="ignore", under="ignore"):
        _, _, sse = project(y, w, form.basis(u[None, :], np.exp(grid)[:, None]), floor, paired=False)
    best = np.argmin(sse, axis=1)
    lo, hi = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, _GRID - 1)]

    def sse_at(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return project(y, w, form.basis(u[None, :], np.exp(x)[:, None]), floor, paired=True)[2]

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
        c, a, sse = project(y, w, form.basis(u[None, :], theta[:, None]), floor, paired=True)
    return c, a, theta, sse


def form_shares(sse: list[float]) -> list[float]:
    """Each form's share of the replicates: inverse to its residual variance (SHARE_POWER 1).

    Akaike weights (SSE to the power -n/2, both forms having three parameters) would hand one
    form everything on a smooth curve where the two fit almost equally well and the difference
    that matters is where each levels off; a form whose residuals are ten times larger still
    gets next to nothing."""
    logs = np.array([-SHARE_POWER * math.log(max(s, 1e-300)) for s in sse])
    raw = np.exp(logs - logs.max())
    return list(raw / raw.sum())


def noise_draws(resid: np.ndarray, params: int, count: int, rng: np.random.Generator,
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


def first_passage(form: Form, params: tuple[np.ndarray, np.ndarray, np.ndarray], sigma: np.ndarray,
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


def quantiles(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Empirical quantiles that stay inf where the sample is inf (no interpolation across it)."""
    xs = np.sort(x)
    return [float(xs[min(max(math.ceil(q * len(xs)) - 1, 0), len(xs) - 1)]) for q in qs]
