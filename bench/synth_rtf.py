"""Synthesis speed: real-time factor (compute seconds per audio second) at batch 1.

    python bench/synth_rtf.py                       # configs/ljspeech.yaml, 100 phonemes, 2 threads
    python bench/synth_rtf.py --phonemes 60 --reps 5
    python bench/synth_rtf.py --compile             # acoustic model through torch.compile

Prints one JSON object with acoustic_rtf, vocoder_rtf and end_to_end_rtf, for fp32 and for
bf16 (torch.autocast on CPU around both models). Lower is faster; < 1 is faster than real time.

The acoustic model is untrained (timing only; its output is noise), and an untrained
duration predictor gives arbitrary lengths: near zero frames, or thousands. So the
predictor's output layer is set to a constant log(1 + 5): every phoneme lasts 5 frames,
LJSpeech's average (~555 frames for ~110 phonemes), and 100 phonemes give 500 frames =
5.8 s of audio. Everything else runs FastSpeech2.infer as `voxtrain synth` does (encoder,
all three predictors, length regulator, decoder, postnet), so the time is what a trained
model of this config spends on an utterance of that length. The vocoder is the bundled,
pretrained HiFi-GAN V1. Text normalisation and phonemization are not timed. As in
`voxtrain synth`, glibc malloc keeps freed memory (voxtrain.malloc) and, for bf16, the
acoustic model's matmul/conv weights are stored in bf16 (voxtrain.precision).

--compile runs the acoustic model's infer through torch.compile (Inductor, which needs a
C++ compiler at run time and compiles for each new input length); `voxtrain synth` does
not. It is here to show how much a graph compiler would buy; the warm-up calls include
the compilation, whose seconds are reported as compile_s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from voxtrain.config import load_config
from voxtrain.malloc import retain_freed_memory
from voxtrain.model import FastSpeech2
from voxtrain.precision import store_weights_for_autocast
from voxtrain.text.symbols import SymbolTable
from voxtrain.vocoder import load_vocoder

ROOT = Path(__file__).resolve().parents[1]


def acoustic_model(cfg, frames_per_phoneme: int) -> FastSpeech2:
    model = FastSpeech2(cfg.model, len(SymbolTable.default()), cfg.audio.n_mels).eval()
    with torch.no_grad():
        proj = model.duration_predictor.proj
        proj.weight.zero_()
        proj.bias.fill_(math.log1p(frames_per_phoneme))  # the predictor outputs log(1 + frames)
    return model


def timed(fn, reps: int, warmup: int) -> tuple[float, float, object]:
    """Median and best seconds over reps calls after warm-up calls (oneDNN builds its
    kernels for each new shape on first use), and the last result."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


def measure(model: FastSpeech2, vocoder, phonemes: torch.Tensor, bf16: bool, args, sr: int) -> dict:
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    # A fresh compilation per precision: autocast is part of what Inductor compiles.
    infer = torch.compile(model.infer, dynamic=False) if args.compile else model.infer

    def acoustic():
        with ctx():
            out = infer(phonemes)
        return out["mel"][0, : int(out["mel_lens"][0])].T.float()

    compile_s = None
    if args.compile:
        start = time.perf_counter()
        acoustic()
        compile_s = round(time.perf_counter() - start, 1)
    acoustic_s, acoustic_best, mel = timed(acoustic, args.reps, args.warmup)

    def vocode():
        with ctx():
            return vocoder(mel)

    vocoder_s, vocoder_best, wav = timed(vocode, args.reps, args.warmup)
    audio_s = wav.shape[-1] / sr
    return {
        **({} if compile_s is None else {"compile_s": compile_s}),
        "mel_frames": int(mel.shape[-1]),
        "audio_s": round(audio_s, 3),
        "acoustic_s": round(acoustic_s, 4),
        "vocoder_s": round(vocoder_s, 3),
        "acoustic_rtf": round(acoustic_s / audio_s, 4),
        "vocoder_rtf": round(vocoder_s / audio_s, 3),
        "end_to_end_rtf": round((acoustic_s + vocoder_s) / audio_s, 3),
        # The fastest call is the one the machine's other load disturbed least.
        "best_acoustic_rtf": round(acoustic_best / audio_s, 4),
        "best_vocoder_rtf": round(vocoder_best / audio_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ljspeech.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--phonemes", type=int, default=100)
    parser.add_argument("--frames-per-phoneme", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per model and precision")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the acoustic model (not what synth does)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.overrides)
    model = acoustic_model(cfg, args.frames_per_phoneme)
    vocoder = load_vocoder("hifigan", None, cfg.audio, "cpu")
    gen = torch.Generator().manual_seed(args.seed)
    phonemes = torch.randint(2, len(SymbolTable.default()), (1, args.phonemes), generator=gen)
    sr = cfg.audio.sample_rate
    results = {"fp32": measure(model, vocoder, phonemes, False, args, sr)}
    results["bf16"] = measure(store_weights_for_autocast(model, "bf16"), vocoder, phonemes, True, args, sr)
    result = {
        "config": os.path.relpath(args.config, ROOT) if args.config.startswith(str(ROOT)) else args.config,
        "acoustic_parameters": sum(p.numel() for p in model.parameters()),
        "vocoder_parameters": sum(p.numel() for p in vocoder.generator.parameters()),
        "phonemes": args.phonemes,
        "frames_per_phoneme": args.frames_per_phoneme,
        "batch": 1,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "compiled": args.compile,
        "warmup": args.warmup,
        "reps": args.reps,
        **results,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
