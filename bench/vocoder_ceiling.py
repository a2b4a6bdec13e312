"""How natural can a vocoder make a speaker at best? DNSMOS of the copy-synthesis of real clips.

    python bench/vocoder_ceiling.py --wavs bench/runs/finetune/heldout_new_10/wavs \\
        --generator tuned_100=bench/runs/finetune/runs/100_vocoder/checkpoints/generator_best.pt

Each real clip's own mel (the feature store's convention) goes through the bundled HiFi-GAN and
through every `--generator NAME=PATH` (e.g. `train-vocoder` results); the real clips are scored
too. A fine-tuned voice cannot sound more natural than its vocoder renders the speaker's real
mels, so this splits a naturalness gap into the vocoder's part and the acoustic model's.
Prints JSON; `--out` also writes it (no machine paths: generator names and clip counts only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voxtrain.audio import MelSpectrogram  # noqa: E402
from voxtrain.config import AudioConfig  # noqa: E402
from voxtrain.listening.dnsmos import DnsMos  # noqa: E402
from voxtrain.vocoder import load_hifigan  # noqa: E402


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wavs", type=Path, required=True, help="folder of the speaker's real clips (.wav)")
    parser.add_argument("--generator", action="append", default=[], help="NAME=PATH of a HiFi-GAN generator")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = AudioConfig()
    mel, dnsmos = MelSpectrogram(cfg), DnsMos(1)
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(args.wavs.glob("*.wav"))]
    if not clips:
        raise SystemExit(f"no .wav files in {args.wavs}")
    generators = {"bundled": load_hifigan(None)}
    generators.update({name: load_hifigan(path) for name, path in (g.split("=", 1) for g in args.generator)})
    result = {"clips": len(clips), "real": mean_scores([dnsmos.score(a) for a in clips]), "copy_synthesis": {}}
    for name, generator in generators.items():
        with torch.inference_mode():
            audio = [generator(mel(torch.from_numpy(a)[None]))[0, 0].numpy() for a in clips]
        result["copy_synthesis"][name] = mean_scores([dnsmos.score(a) for a in audio])
        print(f"{name}: {result['copy_synthesis'][name]}", file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
