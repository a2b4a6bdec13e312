"""Throughput of `voxtrain prepare`: audio seconds prepared per wall second.

    python bench/prepare.py                      # 200 espeak clips, 2 workers
    python bench/prepare.py --corpus LJSpeech-1.1 --workers 2
    python bench/prepare.py --stages             # also time each per-clip stage in one process

Prints one JSON object. The corpus is generated (espeak voice of voxtrain.demo_corpus) into
a temp folder unless --corpus is given; its generation is not part of the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from voxtrain.config import load_config
from voxtrain.data import prepare_corpus


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def stage_times(corpus: Path, config, limit: int) -> dict[str, float]:
    """Seconds spent per stage over the first `limit` clips, single process, one thread."""
    import numpy as np
    import pyworld
    import torch

    from voxtrain.audio import load_audio, mel_spectrogram, trim_silence
    from voxtrain.data.metadata import parse_metadata
    from voxtrain.text import TextProcessor

    torch.set_num_threads(1)
    a = config.audio
    entries = [e for e in parse_metadata(corpus) if not e.rejected][:limit]
    totals = dict.fromkeys(("phonemize", "load", "trim", "mel_energy", "dio", "stonemask"), 0.0)
    t = time.perf_counter()
    TextProcessor(config.text).process([e.source_text for e in entries])
    totals["phonemize"] = time.perf_counter() - t
    audio_s = 0.0
    for e in entries:
        t0 = time.perf_counter()
        wav = load_audio(corpus / "wavs" / e.audio, a.sample_rate)
        t1 = time.perf_counter()
        wav = trim_silence(wav, a)
        t2 = time.perf_counter()
        mel_spectrogram(wav, a)
        t3 = time.perf_counter()
        x = wav.astype(np.float64)
        period = a.hop_length / a.sample_rate * 1000.0
        f0, times = pyworld.dio(x, a.sample_rate, f0_floor=a.pitch_floor, f0_ceil=a.pitch_ceil, frame_period=period)
        t4 = time.perf_counter()
        pyworld.stonemask(x, f0, times, a.sample_rate)
        t5 = time.perf_counter()
        for key, dt in zip(
            ("load", "trim", "mel_energy", "dio", "stonemask"),
            (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
            strict=True,
        ):
            totals[key] += dt
        audio_s += len(wav) / a.sample_rate
    out = {f"{k}_s": round(v, 3) for k, v in totals.items()}
    out["clips"] = len(entries)
    out["audio_seconds"] = round(audio_s, 2)
    out["single_process_realtime_factor"] = round(audio_s / max(sum(totals.values()), 1e-9), 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="LJSpeech-format folder (else generated)")
    parser.add_argument("--clips", type=int, default=200, help="clips to generate when --corpus is not given")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--stages", action="store_true", help="also time each stage in one process")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory(prefix="voxtrain-bench-") as tmp:
        corpus = args.corpus
        result: dict = {}
        if corpus is None:
            from voxtrain.demo_corpus import make_corpus

            corpus = Path(tmp) / "corpus"
            t = time.perf_counter()
            make_corpus(corpus, voice="espeak", n_sentences=args.clips, progress=False)
            result["corpus_generation_s"] = round(time.perf_counter() - t, 2)
        cpu0 = _cpu_seconds()
        report = prepare_corpus(corpus, Path(tmp) / "features", config, workers=args.workers, progress=False)
        cpu_s = _cpu_seconds() - cpu0
        audio_s = report.hours * 3600
        result = {
            "clips": report.kept,
            "rejected": sum(report.rejected_by_reason.values()),
            "audio_seconds": round(audio_s, 2),
            "wall_seconds": round(report.seconds_wall, 2),
            "clips_per_s": round(report.kept / report.seconds_wall, 1),
            "realtime_factor": round(audio_s / report.seconds_wall, 1),
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            # CPU time (parent + workers) is what other load on a shared machine cannot
            # inflate: audio seconds per CPU second, times the cores, is the unloaded figure.
            "cpu_seconds": round(cpu_s, 2),
            "realtime_factor_per_cpu_second": round(audio_s / max(cpu_s, 1e-9), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
            **result,
        }
        if args.stages:
            result["stages"] = stage_times(corpus, config, limit=args.clips)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
