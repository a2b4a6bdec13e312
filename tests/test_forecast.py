"""Target forecasts: saturating fits of a metric's history, their intervals and their words.

Synthetic curves with a known asymptote and seeded noise, evaluated like a run (every 100 steps),
and the recorded runs' real validation curves; the truth is the first evaluation that meets the
target, as in the backtest (bench/forecast_backtest.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxtrain import forecast
from voxtrain.artifacts.metrics_format import read_metrics, trajectory
from voxtrain.forecast import Forecast, forecast_target, linear_forecast

ROOT = Path(__file__).resolve().parents[1]
STEPS = np.arange(100, 4001, 100, dtype=float)


def loss_curve(seed: int = 0, noise: float = 0.003, floor: float = 0.45, power: float = 1.2) -> np.ndarray:
    """A power-law loss levelling off at `floor`, with seeded noise."""
    rng = np.random.default_rng(seed)
    return floor + 0.8 * (STEPS / 100) ** -power + rng.normal(0, noise, len(STEPS))


def exp_curve(seed: int = 5) -> np.ndarray:
    """An exponential approach to 0.3: it levels off within the history, so intervals are tight."""
    rng = np.random.default_rng(seed)
    return 0.3 + 0.6 * np.exp(-STEPS / 800) + rng.normal(0, 0.002, len(STEPS))


def first_met(values: np.ndarray, target: float, direction: str = "below") -> float:
    hit = (values <= target) if direction == "below" else (values >= target)
    assert hit.any(), "the curve never meets this target"
    return float(STEPS[np.argmax(hit)])


def inside(f: Forecast, truth: float) -> bool:
    return f.status == "on_track" and f.step_low <= truth <= (math.inf if f.step_high is None else f.step_high)


# The curve's mean meets it at step 1800; the forecasts see the first 10 evaluations (to step 1000).
TARGET = 0.45 + 0.8 * 18 ** -1.2


def test_reachable_target_truth_inside_the_interval():
    """An 80% interval misses one time in five, so this takes ten noise draws: at least 7 covered,
    medians near the truth (not a shrug), where the straight line covers almost none."""
    covered, line_covered, errors = 0, 0, []
    for seed in range(10):
        values = loss_curve(seed)
        truth = first_met(values, TARGET)
        f = forecast_target(STEPS[:10], values[:10], TARGET, "below", metric="val_mel")
        covered += inside(f, truth)
        line_covered += inside(linear_forecast(STEPS[:10], values[:10], TARGET, "below"), truth)
        errors.append(abs(f.step - truth) / truth if f.status == "on_track" else math.inf)
    assert covered >= 7, covered
    assert float(np.median(errors)) < 0.2, errors
    assert line_covered <= 3, line_covered


def test_straight_line_promises_a_flattening_target_too_early():
    values = loss_curve(0)
    truth = first_met(values, TARGET)
    line = linear_forecast(STEPS[:10], values[:10], TARGET, "below")
    curve = forecast_target(STEPS[:10], values[:10], TARGET, "below")
    assert line.step_high is not None and line.step_high < 0.8 * truth  # the line's whole interval is too early
    assert inside(curve, truth) and curve.step_low > line.step_high


@pytest.mark.parametrize("seed", [0, 3])
def test_unreachable_target_is_off_trend_with_the_level_near_the_truth(seed):
    values = loss_curve(seed)
    f = forecast_target(STEPS[:20], values[:20], 0.40, "below", metric="val_mel")
    assert f.status == "off_trend", f.describe()
    assert f.step is None and f.step_low is None
    assert abs(f.level - 0.45) <= 2 * f.level_err and 0 < f.level_err < 0.03
    assert f.describe().startswith("val_mel below 0.4: not on the current trend: levels off at 0.4")
    # Just under the asymptote, within its uncertainty: still off the trend, not "any day now".
    near = forecast_target(STEPS[:20], values[:20], 0.435, "below")
    assert near.status == "off_trend", near.describe()


def test_exponential_approach_and_a_horizon():
    values = exp_curve()
    truth = first_met(values, 0.35)
    f = forecast_target(STEPS[:10], values[:10], 0.35, "below", horizon=4000)
    assert inside(f, truth), (f.describe(), truth)
    # The same target with a horizon before the crossing: not reached within it.
    short = forecast_target(STEPS[:10], values[:10], 0.35, "below", horizon=1200)
    assert short.status == "off_trend"
    assert "before step 1200: levels off at 0.3" in short.describe()


def test_the_level_stays_within_the_metric_bounds():
    """A loss does not level off under 0, nor a similarity over 1 ("auto" limit). The first four
    validations of the recorded fine-tune have not started to flatten: unbounded, the fit would
    let the level run far below zero."""
    steps, values = [50, 100, 150, 200], np.array([0.7347, 0.6144, 0.5454, 0.5162])
    bounded = forecast_target(steps, values, 0.40, "below", horizon=800)
    assert bounded.status == "off_trend" and bounded.level - bounded.level_err >= -1e-12
    assert "levels off at 0.262 ± 0.262" in bounded.describe()  # honest: anywhere between 0 and 0.52
    free = forecast_target(steps, values, 0.40, "below", horizon=800, limit=None)
    assert free.level - free.level_err < -1
    rising = forecast_target(steps, 1 - values, 0.6, "above", horizon=800)
    assert rising.level + rising.level_err <= 1 + 1e-12


def test_direction_above_similarity_rising_to_its_ceiling():
    rng = np.random.default_rng(4)
    values = 0.9 - 0.5 * (STEPS / 100) ** -1.2 + rng.normal(0, 0.003, len(STEPS))
    truth = first_met(values, 0.88, "above")
    f = forecast_target(STEPS[:10], values[:10], 0.88, "above", metric="similarity")
    assert inside(f, truth), (f.describe(), truth)
    assert f.describe().startswith("similarity above 0.88: on track for step ~")
    never = forecast_target(STEPS[:20], values[:20], 0.95, "above", metric="similarity")
    assert never.status == "off_trend" and abs(never.level - 0.9) < 0.03, never.describe()
    assert forecast_target(STEPS[:20], values[:20], 0.8, "above").status == "met"


def test_noisy_wer_interval_still_covers():
    """WER levelling off at 0.08 with noise 0.02: a target of 0.07, under the level, is met by the
    first lucky evaluation, and the forecast says when (the noise is part of the forecast)."""
    covered = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        values = np.clip(0.08 + 0.5 * np.exp(-STEPS / 700) + rng.normal(0, 0.02, len(STEPS)), 0, 1)
        truth = first_met(values, 0.07)
        covered += inside(forecast_target(STEPS[:20], values[:20], 0.07, "below", metric="wer", horizon=4000), truth)
    assert covered >= 5, covered


def test_rising_validation_loss_is_off_trend():
    # Overfitting: the loss falls, then rises. A decreasing fit through it would still promise the target.
    rng = np.random.default_rng(0)
    values = 0.5 + 0.5 * np.exp(-STEPS / 400) + 4e-5 * np.maximum(STEPS - 1500, 0) + rng.normal(0, 0.003, len(STEPS))
    f = forecast_target(STEPS[:30], values[:30], 0.52, "below", metric="val_mel")
    assert f.status == "off_trend" and f.level is None
    assert f.describe().startswith("val_mel below 0.52: not on the current trend: worsening since step 1")


def test_met_and_too_few_points():
    values = loss_curve(0)
    met = forecast_target(STEPS[:10], values[:10], float(values[9]) + 1e-6, "below", metric="val_mel")
    assert met.status == "met" and met.last_step == 1000
    assert met.describe() == f"val_mel below {met.target:.3g}: met ({values[9]:.3g} at step 1000)"
    # A target an earlier, luckier evaluation met but the latest does not is not "met".
    noisy = [100, 200, 300, 400, 500], [0.9, 0.7, 0.58, 0.62, 0.61]
    assert forecast_target(*noisy, 0.6, "below").status != "met"
    assert forecast_target(*noisy, 0.61, "below").status == "met"
    # training.targets_hold: met once the target has held on that many evaluations in a row.
    assert forecast_target(*noisy, 0.62, "below", hold=2).status == "met"
    once = forecast_target(*noisy, 0.61, "below", hold=2)
    assert once.status == "on_track" and once.step_low == 600  # one more evaluation may do
    twice = forecast_target(*noisy, 0.61, "below", hold=3)
    assert twice.status == "on_track" and twice.step_low == 700
    few = forecast_target(STEPS[:3], values[:3], 0.5, "below", metric="val_mel")
    assert few.status == "too_few_points" and few.points == 3
    assert few.describe() == "val_mel below 0.5: too few evaluations to forecast (3 so far)"
    # Non-finite values and repeated steps do not count as evaluations.
    f = forecast_target([100, 200, 200, 300, 400], [1.0, float("nan"), 0.8, 0.7, float("inf")], 0.5, "below")
    assert f.status == "too_few_points" and f.points == 3


def test_wall_clock_and_json():
    values = exp_curve()
    f = forecast_target(STEPS[:12], values[:12], 0.35, "below", metric="val_mel")
    median, low, high = f.seconds(1200, 2.0)
    assert median == pytest.approx((f.step - 1200) / 2.0) and low == pytest.approx((f.step_low - 1200) / 2.0)
    assert high == pytest.approx((f.step_high - 1200) / 2.0)
    line = f.describe(current_step=1200, steps_per_second=2.0)
    assert line == (f"val_mel below 0.35: on track for step ~{round(f.step)} (80%: {round(f.step_low)}-"
                    f"{round(f.step_high)}), in ~{forecast._duration(median)} ({forecast._duration(low)}-"
                    f"{forecast._duration(high)})")
    assert forecast._duration(3725) == "1h02m"
    values = loss_curve(0)
    open_ended = forecast_target(STEPS[:10], values[:10], 0.465, "below", horizon=4000)
    assert open_ended.step_high is None and open_ended.seconds(1000, 1.0)[2] == math.inf
    assert "-beyond step 4000)" in open_ended.describe()
    assert f.seconds(1200, None) is None and "in ~" not in f.describe()
    data = json.loads(json.dumps(f.to_json(), allow_nan=False))
    assert data["status"] == "on_track" and data["step"] == f.step and data["model"].startswith("exp ")
    off = forecast_target(STEPS[:20], values[:20], 0.3, "below")
    assert off.seconds(2000, 2.0) is None


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="direction must be 'below' or 'above'"):
        forecast_target(STEPS, loss_curve(), 0.5, "down")
    with pytest.raises(ValueError, match="level is the interval's coverage"):
        forecast_target(STEPS, loss_curve(), 0.5, "below", level=80)
    with pytest.raises(ValueError, match="min_points must be at least 4"):
        forecast_target(STEPS, loss_curve(), 0.5, "below", min_points=3)


def test_the_fit_is_the_least_squares_optimum():
    """The variable-projection fit reaches scipy's least-squares optimum (or better) for both forms."""
    least_squares = pytest.importorskip("scipy.optimize").least_squares
    u = STEPS[4:20] / STEPS[19]
    y = loss_curve(1)[4:20]
    w = np.full(len(u), 1 / len(u))
    from voxtrain.forecast import curves

    for form in curves.FORMS:
        c, a, theta, sse = (x[0] for x in curves.fit(form, u, y[None, :], w))

        def resid(p, form=form):
            return p[0] + p[1] * form.basis(u, np.array(p[2])) - y

        best = least_squares(resid, x0=[y[-1], y[0] - y[-1], 1.0], bounds=([-np.inf, 0, 0.01], [np.inf, np.inf, 10]))
        assert sse <= np.mean(best.fun ** 2) * (1 + 1e-6), form.name


def test_import_is_light():
    code = ("import sys, voxtrain.forecast; "
            "print(sorted(m for m in ('scipy', 'torch', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_recorded_runs_from_halfway():
    """Real validation curves (bench/results/recorded_runs): from the first half of each run's
    evaluations, the targets it reached by 60%, 80% and 95% of its steps and two it never reached."""
    runs = sorted((ROOT / "bench" / "results" / "recorded_runs").glob("*.metrics.jsonl"))
    assert len(runs) >= 2
    covered = line_covered = reachable = off = unreachable = 0
    for path in runs:
        history = trajectory(read_metrics(path)).history("val_mel")
        steps = np.array([s for s, _ in history], dtype=float)
        values = np.array([v for _, v in history])
        half, end = len(steps) // 2, steps[-1]
        for share in (0.6, 0.8, 0.95):
            target = float(values[: np.searchsorted(steps, share * end, side="right")].min())
            truth = float(steps[np.argmax(values <= target)])
            if truth <= steps[half - 1]:
                continue
            reachable += 1
            covered += inside(forecast_target(steps[:half], values[:half], target, "below", horizon=end), truth)
            line_covered += inside(linear_forecast(steps[:half], values[:half], target, "below", horizon=end), truth)
        for gap in (0.01, 0.03):
            unreachable += 1
            f = forecast_target(steps[:half], values[:half], float(values.min()) - gap, "below", horizon=end)
            off += f.status == "off_trend"
    print(f"covered {covered}/{reachable} (line {line_covered}), off_trend {off}/{unreachable}")
    assert reachable >= 4 and covered >= 0.65 * reachable and line_covered < covered, (covered, line_covered, reachable)
    assert off >= 0.75 * unreachable, (off, unreachable)
