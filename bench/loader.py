"""Training-loader throughput: mel frames per second the DataLoader delivers from a feature store.

    python bench/loader.py                                  # generated espeak corpus, 200 clips
    python bench/loader.py --features FEATURES --batches 400 --workers 2

Prints one JSON object. Iterates exactly the training loader (FeatureDataset +
BucketBatchSampler + collate, persistent workers, epochs as the engine runs them) and
compares the frames it delivers with what training consumes (--train-frames-per-s, real
frames). A ratio well above 1 means the loader is not what limits training. The store is
generated (espeak voice + prepare) into a temp folder unless --features is given; that is
not part of the timing, nor is the workers' start-up (the first batch, reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import load_config
from voxtrain.data.loader import BucketBatchSampler, FeatureDataset, collate

ROOT = Path(__file__).resolve().parents[1]


def make_features(tmp: Path, clips: int, config) -> tuple[Path, dict]:
    from voxtrain.data import prepare_corpus
    from voxtrain.demo_corpus import make_corpus

    t = time.perf_counter()
    make_corpus(tmp / "corpus", voice="espeak", n_sentences=clips, progress=False)
    prepare_corpus(tmp / "corpus", tmp / "features", config, workers=2, progress=False)
    return tmp / "features", {"store_generation_s": round(time.perf_counter() - t, 1)}


def batches(loader: DataLoader, sampler: BucketBatchSampler):
    """Endless batches over epochs, as Trainer.micro_batches() iterates them."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(store: FeatureStore, batch_size: int, workers: int, n: int, seed: int) -> dict:
    data = FeatureDataset(store, store.split_indices("train"))
    sampler = BucketBatchSampler([data.n_frames(i) for i in range(len(data))], batch_size=batch_size, seed=seed)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator())
    it = batches(loader, sampler)
    t0 = time.perf_counter()
    first = next(it)
    first_s = time.perf_counter() - t0
    frames = padded = items = 0
    cpu0, t1 = time.process_time(), time.perf_counter()
    for _ in range(n):
        b = next(it)
        lens = b["mel_lens"]
        frames += int(lens.sum())
        padded += int(lens.max()) * len(lens)
        items += len(lens)
    wall, cpu = time.perf_counter() - t1, time.process_time() - cpu0
    return {
        "workers": workers,
        "first_batch_s": round(first_s, 3),
        "batches": n,
        "items": items,
        "wall_s": round(wall, 3),
        "main_process_cpu_s": round(cpu, 3),
        # With workers=0 all loading runs in this process: frames per CPU second is the cost.
        **({"frames_per_cpu_s": round(frames / max(cpu, 1e-9))} if workers == 0 else {}),
        "batches_per_s": round(n / wall, 1),
        "items_per_s": round(items / wall, 1),
        "frames_per_s": round(frames / wall),
        "padding_fraction": round(1 - frames / max(padded, 1), 3),
        "mean_frames_per_item": round(frames / max(items, 1), 1),
        "first_batch_shape": list(first["mels"].shape),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=None, help="feature store (else generated)")
    parser.add_argument("--clips", type=int, default=200, help="clips to generate when --features is not given")
    parser.add_argument("--config", default=str(ROOT / "configs" / "ljspeech.yaml"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=200, help="batches to time")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader worker counts to try")
    parser.add_argument("--train-frames-per-s", type=float, default=2750.0,
                        help="real mel frames/s training consumes (bench/train_throughput.py, reference config, bf16)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.features is None:  # the config's 100 validation clips would halve a generated store
        args.overrides = [f"data.val_size={max(2, args.clips // 20)}", *args.overrides]
    torch.set_num_threads(1)  # the trainer owns the cores; collate is not worth more
    config = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory(prefix="voxtrain-bench-") as tmp:
        extra: dict = {}
        features = args.features
        if features is None:
            features, extra = make_features(Path(tmp), args.clips, config)
        store = FeatureStore(features)
        train_clips = len(store.split_indices("train"))
        runs = [measure(store, args.batch, w, args.batches, args.seed) for w in args.workers]
    for r in runs:
        r["ratio_to_training"] = round(r["frames_per_s"] / args.train_frames_per_s, 1)
        if "frames_per_cpu_s" in r:
            r["core_share_at_training_rate"] = round(args.train_frames_per_s / r["frames_per_cpu_s"], 3)
    result = {
        "features": str(args.features) if args.features else f"generated espeak corpus, {args.clips} clips",
        "train_clips": train_clips,
        "batch": args.batch,
        "train_frames_per_s": args.train_frames_per_s,
        "runs": runs,
        "load_average_1min": round(os.getloadavg()[0], 2),
        **extra,
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
