"""Does bf16 train like fp32? The same short run in both precisions, against seed noise.

    python bench/precision_curves.py --features demo/features            # tiny config, 1000 steps
    python bench/precision_curves.py --features F --steps 300 --out bench/runs/precision_curves

Trains `voxtrain train` three times on one feature store (real command, real data):
fp32 with seed A, bf16 with seed A and fp32 with seed B. The two fp32 runs differ only in
their seed (weights init, data order, dropout), so their gap is what "noise" means for
this loss curve. bf16 "matches within noise" when its gap to fp32 (same seed) is no larger
than that seed-to-seed gap. Gaps are taken on the training loss averaged over windows of
`--window` steps (a single step's loss swings more than either gap) and on the
validation losses. Prints one JSON object; `--save` also writes it to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(features: Path, run: Path, config: Path, steps: int, precision: str, seed: int, threads: int) -> float:
    args = [
        sys.executable, "-m", "voxtrain.cli", "train", "--features", str(features), "--run", str(run),
        "--config", str(config), "--yes",
        "--set", f"training.max_steps={steps}", "--set", f"training.precision={precision}",
        "--set", f"training.seed={seed}", "--set", "training.log_every=25",
        "--set", f"training.validate_every={max(steps // 10, 1)}", "--set", f"training.save_every={steps}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def curves(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    """(step -> logged train loss, step -> validation mel loss) from metrics.jsonl."""
    train_loss, val_mel = {}, {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "train":
            train_loss[rec["step"]] = rec["loss_total"]
        elif rec["type"] == "val":
            val_mel[rec["step"]] = rec["loss_mel"]
    return train_loss, val_mel


def windowed(loss: dict[int, float], window: int) -> dict[int, float]:
    """Mean of the logged losses in each window of steps, keyed by the window's last step."""
    out: dict[int, list[float]] = {}
    for step, value in loss.items():
        out.setdefault(((step - 1) // window + 1) * window, []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(out.items())}


def gap(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    common = sorted(set(a) & set(b))
    diffs = [abs(a[k] - b[k]) for k in common]
    rel = [abs(a[k] - b[k]) / abs(b[k]) for k in common]
    return {"mean_abs": round(sum(diffs) / len(diffs), 4), "max_abs": round(max(diffs), 4),
            "mean_rel": round(sum(rel) / len(rel), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs=2, default=[1234, 4321])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "runs" / "precision")
    parser.add_argument("--save", action="store_true", help="also write bench/results/precision_curves.json")
    args = parser.parse_args()
    seed_a, seed_b = args.seeds
    plan = {"fp32": ("fp32", seed_a), "bf16": ("bf16", seed_a), "fp32_seed_b": ("fp32", seed_b)}
    seconds, train_curves, val_curves = {}, {}, {}
    for name, (precision, seed) in plan.items():
        run = args.out / name
        if run.exists():
            raise SystemExit(f"{run} exists: remove it or pass another --out")
        seconds[name] = round(train(args.features, run, args.config, args.steps, precision, seed, args.threads), 1)
        loss, val = curves(run)
        train_curves[name], val_curves[name] = windowed(loss, args.window), val
    noise_train = gap(train_curves["fp32_seed_b"], train_curves["fp32"])
    bf16_train = gap(train_curves["bf16"], train_curves["fp32"])
    noise_val = gap(val_curves["fp32_seed_b"], val_curves["fp32"])
    bf16_val = gap(val_curves["bf16"], val_curves["fp32"])
    result = {
        "config": os.path.relpath(args.config, ROOT) if str(args.config).startswith(str(ROOT)) else str(args.config),
        "features": str(args.features),
        "steps": args.steps,
        "window": args.window,
        "seeds": [seed_a, seed_b],
        "wall_s": seconds,
        "train_loss_windowed": {k: {str(s): round(v, 4) for s, v in c.items()} for k, c in train_curves.items()},
        "val_mel": {k: {str(s): round(v, 4) for s, v in c.items()} for k, c in val_curves.items()},
        "gap_train_bf16_vs_fp32": bf16_train,
        "gap_train_fp32_seed_noise": noise_train,
        "gap_val_bf16_vs_fp32": bf16_val,
        "gap_val_fp32_seed_noise": noise_val,
        "bf16_within_noise": bf16_train["mean_abs"] <= noise_train["mean_abs"]
        and bf16_val["mean_abs"] <= max(noise_val["mean_abs"], 1e-9),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.save:
        (ROOT / "bench" / "results" / "precision_curves.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
