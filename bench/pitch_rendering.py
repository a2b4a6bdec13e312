"""Where a voice's pitch goes between the model and the ear. For one acoustic model and the
speaker's real clips of some sentences, the median F0 of:

- the real clips, and their copy-synthesis (their own mels through the bundled HiFi-GAN);
- the model's own pitch prediction for the same sentences, in Hz by the statistics it was
  trained with, frame by frame along its predicted durations;
- its audio through HiFi-GAN (the bundled generator, or --generator) and through Griffin-Lim.

Every median is over the frames within 30 dB of the loudest, as in bench/finetune.py, so a gap
between "predicted" and the audio rows is the rendering's, not the model's pitch statistics.

    python bench/pitch_rendering.py --name base --checkpoint demo/runs/tiny/checkpoints/best.safetensors \\
        --corpus bench/runs/finetune/heldout_base_10

The corpus is a `make-corpus` directory (metadata.csv + wavs/): its sentences are what the model
speaks. Prints JSON; --out adds the result under --name to a JSON file (no machine paths).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voxtrain.audio import frame_energy, load_audio, mel_spectrogram, pitch_track  # noqa: E402
from voxtrain.inference.loader import load_acoustic_model  # noqa: E402
from voxtrain.inference.torch_voice import Synthesizer  # noqa: E402
from voxtrain.vocoder import load_hifigan  # noqa: E402

GATE_DB = 30.0


def gated_median(f0: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """The F0 of one clip's frames within GATE_DB of its loudest (pauses carry interpolated F0)."""
    loud = energy > energy.max() * 10 ** (-GATE_DB / 20)
    return f0[loud & (f0 > 0)]


def audio_f0(clips: list[np.ndarray], audio) -> float:
    frames = [gated_median(pitch_track(w, audio, n_frames=len(e)), e)
              for w in clips for e in [frame_energy(w, audio)]]
    return round(float(np.median(np.concatenate(frames))), 1)


def predicted_f0(synth: Synthesizer, texts: list[str], stats: dict) -> float:
    """The model's pitch and energy predictions, denormalized and repeated along its durations."""
    frames = []
    for ids in synth.phoneme_ids(texts):
        out = synth.acoustic.model.infer(torch.tensor([ids]))
        repeat = out["durations"][0].numpy()
        pitch = np.repeat(out["pitch"][0].numpy() * stats["pitch_std"] + stats["pitch_mean"], repeat)
        energy = np.repeat(out["energy"][0].numpy() * stats["energy_std"] + stats["energy_mean"], repeat)
        frames.append(gated_median(pitch, energy))
    return round(float(np.median(np.concatenate(frames))), 1)


def read_corpus(corpus: Path, sample_rate: int) -> tuple[list[str], list[np.ndarray]]:
    rows = [line.split("|") for line in (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines() if line]
    return [r[-1] for r in rows], [load_audio(corpus / "wavs" / f"{r[0]}.wav", sample_rate) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="what the row is called in the result")
    ap.add_argument("--checkpoint", type=Path, required=True, help="acoustic model (.pt or .safetensors)")
    ap.add_argument("--corpus", type=Path, required=True, help="the speaker's real clips (metadata.csv + wavs/)")
    ap.add_argument("--generator", type=Path, default=None, help="a HiFi-GAN generator instead of the bundled one")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to add the result to")
    args = ap.parse_args()

    acoustic = load_acoustic_model(args.checkpoint)
    meta = json.loads(args.checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
    stats = meta["speaker_stats"]
    audio = acoustic.config.audio
    texts, real = read_corpus(args.corpus, audio.sample_rate)
    bundled = load_hifigan()
    with torch.inference_mode():
        copy = [bundled(torch.from_numpy(mel_spectrogram(w, audio)).T[None].float())[0, 0].numpy() for w in real]
        voiced = Synthesizer(acoustic, "hifigan", args.generator, precision="fp32")  # a voice's own generator too
        hifigan = voiced.waveforms(texts)
        griffin_lim = Synthesizer(acoustic, "griffin-lim", precision="fp32").waveforms(texts)
        predicted = predicted_f0(Synthesizer(acoustic, "none", precision="fp32"), texts, stats)
    result = {
        "sentences": len(texts), "trained_pitch_mean": round(stats["pitch_mean"], 1),
        "real": audio_f0(real, audio), "copy_synthesis_bundled": audio_f0(copy, audio), "predicted": predicted,
        "hifigan": audio_f0(hifigan, audio), "griffin_lim": audio_f0(griffin_lim, audio),
        "generator": voiced.vocoder_path.name if voiced.vocoder_path else "bundled",
    }
    print(json.dumps({args.name: result}, indent=1))
    if args.out:
        done = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
        args.out.write_text(json.dumps({**done, args.name: result}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
