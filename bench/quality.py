"""Does the trained voice speak, and does it align? Prints one JSON object.

  python bench/quality.py                   # corpus -> prepare -> train -> evaluate, in bench/runs/quality
  python bench/quality.py --skip-train      # evaluate the run already there
  python bench/quality.py --workdir DIR     # work elsewhere (DIR/corpus, features, run, eval)

1. A piper demo corpus (`--sentences`, default 600), prepared without silence trimming so
   frames line up with piper's own per-phoneme durations.
2. `configs/tiny.yaml` trained on this CPU for at most `--minutes` (SIGTERM when the budget
   is spent: the run saves and stops).
3. Held-out sentences (never in the corpus) synthesized with HiFi-GAN, and the same
   sentences spoken by the piper teacher; word error rate of both from pocketsphinx.
4. Learned durations (MAS over the aligner) against piper's durations, in frames/phoneme.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/runs/ is gitignored: the corpus, features and run of a benchmark stay out of the repository.
DEFAULT_WORKDIR = ROOT / "bench" / "runs" / "quality"


def shown(path: Path) -> str:
    """A path for the JSON result: relative to the repository when inside it, so results kept
    in bench/results/ name no directory of the machine they were measured on."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def voxtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "voxtrain.cli", *args]


def train_with_budget(features: Path, run: Path, config: Path, minutes: float, overrides: list[str]) -> dict:
    sets = [x for o in overrides for x in ("--set", o)]
    t0 = time.time()
    proc = subprocess.Popen(voxtrain("train", "--features", str(features), "--run", str(run), "--config",
                                     str(config), "--yes", *sets), stdin=subprocess.DEVNULL)
    try:
        proc.wait(timeout=minutes * 60)
        stopped_early = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        stopped_early = True
    return {"train_wall_s": round(time.time() - t0, 1), "stopped_by_budget": stopped_early,
            "exit_code": proc.returncode}


def val_curve(run: Path) -> list[list[float]]:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.metrics_format import read_metrics

    return [[r["step"], round(r["loss_mel"], 4)] for r in read_metrics(RunDir(run).metrics) if r["type"] == "val"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="folder for the corpus, features, run and evaluation WAVs (default: bench/runs/quality)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    ap.add_argument("--sentences", type=int, default=600)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from alignment_error import duration_errors, load_reference_durations
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.data import FeatureStore
    from voxtrain.demo_corpus import HELDOUT_PATH, load_sentences, make_corpus
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.listening import ASR, word_error_rate

    work = args.workdir
    corpus, features, run = work / "corpus", work / "features", work / "run"
    result: dict = {"config": shown(args.config)}
    if not (corpus / "metadata.csv").is_file():
        make_corpus(corpus, voice="piper", n_sentences=args.sentences, progress=False)
    if not (features / "COMPLETE").is_file():
        subprocess.run(voxtrain("prepare", str(corpus), "--out", str(features), "--config", str(args.config),
                                "--set", "audio.trim_silence=false"), check=True)
    if not args.skip_train:
        result.update(train_with_budget(features, run, args.config, args.minutes, args.overrides))

    rundir = RunDir(run)
    weights = rundir.best_export if rundir.best_export.is_file() else rundir.checkpoint_files()[-1][1]
    acoustic = load_acoustic_model(weights)
    result.update(checkpoint=shown(weights), step=acoustic.step, val_mel_loss_curve=val_curve(run))

    # Intelligibility: the student and the teacher speak the same held-out sentences.
    heldout = load_sentences(HELDOUT_PATH)[: args.heldout]
    synth = Synthesizer(acoustic, "hifigan")
    student_dir, teacher_dir = work / "eval" / "student", work / "eval" / "teacher"
    t0 = time.time()
    student = [synth.write(w, student_dir / f"{i:03d}.wav") for i, w in enumerate(synth.waveforms(heldout))]
    result["student_synth_s"] = round(time.time() - t0, 1)
    make_corpus(teacher_dir, voice="piper", sentences=heldout, progress=False)
    teacher = sorted((teacher_dir / "wavs").glob("*.wav"))
    asr = ASR()
    student_hyp = [asr.transcribe_file(p) for p in student]
    teacher_hyp = [asr.transcribe_file(p) for p in teacher]
    result["wer_student"] = round(word_error_rate(heldout, student_hyp), 4)
    result["wer_teacher"] = round(word_error_rate(heldout, teacher_hyp), 4)
    result["wer_ratio"] = round(result["wer_student"] / max(result["wer_teacher"], 1e-9), 3)
    result["examples"] = [{"text": t, "student": s, "teacher": h}
                          for t, s, h in list(zip(heldout, student_hyp, teacher_hyp))[:4]]

    # Alignment: learned durations against piper's ground truth.
    store = FeatureStore(features)
    reference = load_reference_durations(corpus / "alignments.jsonl", boundaries=store.symbols.bos_id is not None)
    model = acoustic.model
    result["alignment_heldout"] = duration_errors(model, store, store.split_indices("val"), reference)
    result["alignment_train_sample"] = duration_errors(model, store, store.split_indices("train")[:60], reference)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
