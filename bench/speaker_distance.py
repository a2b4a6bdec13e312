"""How far each make-corpus speaker is from the base piper voice: which variants can stand in for
"a clearly different speaker" in the phase-2 (speaker adaptation) benches. Prints one JSON object
and writes it to bench/results/speaker_distance.json.

  python bench/speaker_distance.py                 # 12 sentences per variant
  python bench/speaker_distance.py --sentences 6   # a quicker look

The base centroid is the GE2E embedding centroid (voxtrain.listening.speaker) of the base piper
voice on one set of sentences (set A). Every variant, the base included, then speaks 12 other
sentences (set B) through `make_corpus` with its options, and each of its clips is scored against
that centroid. So the "piper base" row is the ceiling a clip of the same voice on unseen text
reaches; the leave-one-out similarity of the set-A clips to their own centroid is reported too.

Per variant: similarity to the base centroid (mean, min, max over clips), the median F0 (WORLD via
voxtrain.audio.features.pitch_track, over frames within 20 dB of the clip's loudest), seconds per
clip (a plain speaker shift speaks faster or slower; keep-tempo does not), and DNSMOS OVRL
(voxtrain.listening.dnsmos, a naturalness proxy trained on human speech) of two 9 s stretches of
the variant's clips joined (DNSMOS costs seconds per 9 s window on a busy CPU, so not every clip).
The median F0 of a band-limited variant is not its pitch: the 300 Hz high-pass removes the
fundamental and the pitch tracker follows a harmonic (see f0_note in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "speaker_distance.json"
RATE = 22050
DNSMOS_WINDOWS = 2
# (name, make_corpus options). espeak's plain voice and its female variant are the synthetic
# extremes; the piper shifts are the natural-prosody candidates.
VARIANTS: list[tuple[str, dict]] = [
    ("piper base", {"voice": "piper"}),
    ("piper shift 0.87", {"voice": "piper", "speaker_shift": 0.87}),
    ("piper shift 1.15", {"voice": "piper", "speaker_shift": 1.15}),
    ("piper shift 1.3", {"voice": "piper", "speaker_shift": 1.3}),
    ("piper shift 0.87 keep-tempo", {"voice": "piper", "speaker_shift": 0.87, "keep_tempo": True}),
    ("piper shift 1.15 keep-tempo", {"voice": "piper", "speaker_shift": 1.15, "keep_tempo": True}),
    ("piper shift 1.3 keep-tempo", {"voice": "piper", "speaker_shift": 1.3, "keep_tempo": True}),
    ("piper phone", {"voice": "piper", "degrade": "phone"}),
    ("piper shift 1.15 keep-tempo, phone", {"voice": "piper", "speaker_shift": 1.15, "keep_tempo": True,
                                            "degrade": "phone"}),
    ("espeak en-us", {"voice": "espeak"}),
    ("espeak en-us+f3", {"voice": "espeak", "espeak_voice": "en-us+f3"}),
    ("espeak en-us+m3", {"voice": "espeak", "espeak_voice": "en-us+m3"}),
]


def render(out: Path, sentences: list[str], options: dict) -> tuple[list[np.ndarray], float]:
    """The clips make_corpus writes for these sentences and options, and its wall-clock seconds."""
    import soundfile as sf

    from voxtrain.demo_corpus import make_corpus

    t0 = time.perf_counter()
    make_corpus(out, sentences=sentences, progress=False, **options)
    seconds = time.perf_counter() - t0
    clips = []
    for path in sorted((out / "wavs").glob("vox_*.wav")):
        wav, rate = sf.read(str(path), dtype="float32")
        assert rate == RATE, (path.name, rate)
        clips.append(wav)
    return clips, seconds


def median_f0(clips: list[np.ndarray]) -> float:
    """Median F0 in Hz over every clip's frames within 20 dB of that clip's loudest frame (the
    pitch track interpolates through pauses; those frames would weigh in otherwise)."""
    from voxtrain.audio.features import frame_energy, pitch_track
    from voxtrain.config import AudioConfig

    cfg, voiced = AudioConfig(), []
    for wav in clips:
        f0, energy = pitch_track(wav, cfg), frame_energy(wav, cfg)
        n = min(len(f0), len(energy))
        voiced.append(f0[:n][energy[:n] > 0.1 * energy[:n].max()])
    return float(np.median(np.concatenate(voiced)))


def dnsmos_windows(clips: list[np.ndarray]) -> list[np.ndarray]:
    """DNSMOS_WINDOWS disjoint model-length (9.01 s) stretches of the variant's clips joined with
    short pauses, at 16 kHz. Each model call costs seconds on a busy CPU whatever the clip's
    length (a short clip is repeated to 9.01 s), so joined clips score more speech per call."""
    from voxtrain.listening.common import to_scorer_rate
    from voxtrain.listening.dnsmos import INPUT_SAMPLES

    pause = np.zeros(int(0.25 * RATE), dtype=np.float32)
    joined = to_scorer_rate(np.concatenate([part for c in clips for part in (c, pause)]), RATE)
    n = max(1, min(DNSMOS_WINDOWS, len(joined) // INPUT_SAMPLES))
    return [joined[i * INPUT_SAMPLES : (i + 1) * INPUT_SAMPLES] for i in range(n)]


def score(clips: list[np.ndarray], reference, dnsmos) -> dict:
    from voxtrain.listening.common import to_scorer_rate
    from voxtrain.listening.speaker import shared_encoder

    embeddings = shared_encoder().embed_many([to_scorer_rate(c, RATE) for c in clips])
    similarity = [reference.similarity(e) for e in embeddings]
    ovrl = [dnsmos.score(w)["dnsmos_ovrl"] for w in dnsmos_windows(clips)] if dnsmos else []
    return {
        "similarity_to_base": {"mean": round(float(np.mean(similarity)), 3), "min": round(min(similarity), 3),
                               "max": round(max(similarity), 3)},
        "median_f0_hz": round(median_f0(clips), 1),
        "seconds_per_clip": round(float(np.mean([len(c) / RATE for c in clips])), 2),
        "dnsmos_ovrl": round(float(np.mean(ovrl)), 2) if ovrl else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=12, help="sentences per variant (and in the base centroid)")
    ap.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS OVRL")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from voxtrain.demo_corpus import select_sentences
    from voxtrain.listening.dnsmos import DnsMos
    from voxtrain.listening.speaker import speaker_reference

    t0 = time.perf_counter()
    # Disjoint sentence sets: the centroid's (A) and the one every variant speaks (B).
    pool = select_sentences(2 * args.sentences, seed=11)
    set_a, set_b = pool[: args.sentences], pool[args.sentences :]
    dnsmos = None if args.no_dnsmos else DnsMos(threads=1)
    with tempfile.TemporaryDirectory(prefix="speaker-distance-") as tmp:
        base_a, _ = render(Path(tmp) / "base_a", set_a, {"voice": "piper"})
        reference = speaker_reference(base_a, RATE, "piper joe on set A")
        own = [reference.similarity(e, leave_out=i) for i, e in enumerate(reference.embeddings)]
        rows = []
        for i, (name, options) in enumerate(VARIANTS):
            clips, render_s = render(Path(tmp) / f"v{i}", set_b, options)
            t_score = time.perf_counter()
            rows.append({"variant": name, "options": options, **score(clips, reference, dnsmos),
                         "render_seconds": round(render_s, 1),
                         "score_seconds": round(time.perf_counter() - t_score, 1)})
            print(f"{name}: {rows[-1]['similarity_to_base']['mean']}", flush=True)
    result = {
        "bench": "speaker_distance",
        "sentences_per_variant": args.sentences,
        "reference": f"GE2E centroid of {len(base_a)} piper base clips (set A); variants speak set B",
        "ceiling_leave_one_out": {"mean": round(float(np.mean(own)), 3), "min": round(min(own), 3)},
        "f0_note": "median_f0_hz of the phone variants is unreliable: the 300 Hz high-pass removes the "
                   "fundamental, and the pitch tracker follows a harmonic instead",
        "dnsmos_note": f"dnsmos_ovrl: mean over {DNSMOS_WINDOWS} disjoint 9 s stretches of the variant's clips joined",
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
