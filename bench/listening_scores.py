"""Listening scores of the `make demo` voice, its piper teacher, and the ceiling and floor rows,
with each score's run-to-run noise and what an evaluation costs. Prints one JSON object.

  python bench/listening_scores.py                      # the demo run, demo/features, demo/corpus
  python bench/listening_scores.py --sentences 8        # a quicker look
  python bench/listening_scores.py --cost-only          # what one 8-sentence evaluation costs
  python bench/listening_scores.py --out bench/results/listening_scores_cpu.json

Rows (held-out sentences of voxtrain.listening.default_sentences unless said otherwise):
- every checkpoint of the run and its best export (HiFi-GAN), each with its validation mel loss;
- teacher: the piper joe voice on the same sentences (the `make-corpus --voice piper` code path,
  which runs piper as its own program: voxtrain never imports the GPL piper package);
- floors: the best export's mels through Griffin-Lim, and an untrained model of the same config;
- on the 20 validation clips: the real recordings and their HiFi-GAN copy-synthesis (ceilings),
  their Griffin-Lim copy-synthesis (floor).
Similarity is against the centroid of the real validation clips (each validation clip against
the centroid of the other 19).

Noise: the best export evaluated again on 8 sentences (synthesis and scoring: deterministic?),
and the spread of a score over random 8-sentence subsets of the held-out set (the std of the
8-sentence score, and of the difference between two checkpoints measured on the same subset).
Cost: one 8-sentence evaluation of the best export, wall-clock and CPU seconds per part, with
the 1-minute load average (this machine's 2 cores are shared, so wall-clock varies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = ROOT / "bench" / "runs" / "listening"
SUBSET = 8
DRAWS = 2000


def shown(path: Path | str | None) -> str | None:
    """A path for the JSON result, relative to the repository, so results name no machine path."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def teacher_row(sentences: list[str], scorers, reference, workdir: Path):
    """The piper teacher speaking the held-out sentences."""
    from voxtrain.audio import load_audio
    from voxtrain.demo_corpus import make_corpus
    from voxtrain.listening import score_clips

    out = workdir / "teacher"
    t0, c0 = time.perf_counter(), time.process_time()
    make_corpus(out, voice="piper", sentences=sentences, progress=False)
    clips = [load_audio(p, 22050) for p in sorted((out / "wavs").glob("*.wav"))]
    synth_s, synth_cpu = time.perf_counter() - t0, time.process_time() - c0
    row = score_clips("piper teacher (joe)", clips, 22050, sentences, scorers, reference, kind="teacher",
                      sentence_set=f"held-out sentences ({len(sentences)})")
    # piper runs in its own process: its CPU time is not ours, so only wall-clock is comparable.
    row.seconds = {"synthesis": synth_s, **row.seconds}
    row.cpu_seconds = {"synthesis (this process only)": synth_cpu, **row.cpu_seconds}
    return row


def subset_noise(rows: dict, names: list[str], n_sentences: int, seed: int = 0) -> dict:
    """Std of each score over random SUBSET-sentence subsets, per row, and of the difference
    between pairs of rows measured on the same subset."""
    rng = np.random.default_rng(seed)
    size = min(SUBSET, n_sentences)
    draws = [sorted(rng.choice(n_sentences, size, replace=False).tolist()) for _ in range(DRAWS)]
    values = {n: [_with_composite(rows[n].result.subset(d)) for d in draws] for n in names}
    out: dict = {"subset_size": size, "draws": DRAWS, "of_sentences": n_sentences, "std": {}, "paired_diff": {}}
    for n in names:
        out["std"][n] = {k: round(float(np.std([v[k] for v in values[n]])), 4) for k in values[n][0]}
    for a, b in zip(names, names[1:]):
        keys = [k for k in values[a][0] if k in values[b][0]]
        diffs = {k: np.array([x[k] - y[k] for x, y in zip(values[a], values[b])]) for k in keys}
        full_a, full_b = _with_composite(rows[a].scores), _with_composite(rows[b].scores)
        full = {k: full_a[k] - full_b[k] for k in keys}
        out["paired_diff"][f"{a} - {b}"] = {
            k: {"all_sentences": round(full[k], 4), "mean": round(float(d.mean()), 4), "std": round(float(d.std()), 4),
                "same_sign_as_all": round(float(np.mean(np.sign(d) == np.sign(full[k]))), 3)}
            for k, d in diffs.items()}
    return out


def _with_composite(scores: dict) -> dict:
    from voxtrain.listening import composite_score

    return {**scores, "composite": composite_score(scores)}


def determinism(first, second, n: int) -> dict:
    """Largest per-clip difference of each score between two evaluations of the same checkpoint
    (over the first n clips of `first`)."""
    out = {}
    for k, v in first.result.per_clip.items():
        w = second.result.per_clip.get(k)
        out[k] = None if w is None else float(np.max(np.abs(np.array(v[:n]) - np.array(w[:n]))))
    out["same_transcripts"] = first.result.transcripts[:n] == second.result.transcripts[:n]
    return out


def cost_of_eight(checkpoint: Path, sentences: list[str], scorers, reference) -> tuple[list[dict], list]:
    """Two 8-sentence evaluations in a fresh Synthesizer (the first pays its loads): their
    cost, and their rows (for the determinism check)."""
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.listening import score_synthesizer

    synth = Synthesizer(load_acoustic_model(checkpoint), "hifigan", precision="fp32")
    costs, rows = [], []
    for attempt in ("first (a fresh Synthesizer)", "second"):
        row = score_synthesizer(synth, sentences[:SUBSET], scorers, reference)
        rows.append(row)
        costs.append({"attempt": attempt, "load_average_1min": round(os.getloadavg()[0], 2),
                      "audio_s": round(row.audio_seconds, 2),
                      "seconds": {k: round(v, 2) for k, v in row.seconds.items()},
                      "cpu_seconds": {k: round(v, 2) for k, v in row.cpu_seconds.items()}})
    return costs, rows


def cost_only(args: argparse.Namespace, sentences: list[str], scorers) -> dict:
    """The speaker reference a trainer builds (copy-synthesis of 20 validation clips) and two
    8-sentence evaluations, timed."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.listening import validation_reference

    t0, c0 = time.perf_counter(), time.process_time()
    reference = validation_reference(FeatureStore(args.features))
    out: dict = {"reference_20_clips": {"seconds": round(time.perf_counter() - t0, 2),
                                        "cpu_seconds": round(time.process_time() - c0, 2)}}
    out["cost_8_sentences"] = cost_of_eight(RunDir(args.run).best_export, sentences, scorers, reference)[0]
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "demo" / "runs" / "tiny")
    ap.add_argument("--features", type=Path, default=ROOT / "demo" / "features")
    ap.add_argument("--corpus", type=Path, default=ROOT / "demo" / "corpus")
    ap.add_argument("--sentences", type=int, default=None, help="the first N held-out sentences (default: all)")
    ap.add_argument("--reference-clips", type=int, default=None,
                    help="validation clips of the references (default: all)")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="where the teacher's clips go (default bench/runs/listening)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--cost-only", action="store_true", help="only the cost of an 8-sentence evaluation")
    args = ap.parse_args()

    import torch

    from voxtrain.artifacts.layout import RunDir
    from voxtrain.listening import ANCHORS, Scorers, composite_score, default_sentences, evaluate_run

    t_start = time.perf_counter()
    sentences = default_sentences()[: args.sentences]
    scorers = Scorers()
    result: dict = {"run": shown(args.run), "features": shown(args.features), "corpus": shown(args.corpus),
                    "torch_threads": torch.get_num_threads(), "onnxruntime_threads": scorers.threads,
                    "cpu_count": os.cpu_count(), "load_average_1min_start": round(os.getloadavg()[0], 2)}
    if args.cost_only:
        print(json.dumps({**result, **cost_only(args, sentences, scorers)}, indent=1))
        return
    evaluation = evaluate_run(args.run, sentences, args.features, args.corpus, scorers, args.reference_clips)
    rows = {r.name: r for r in evaluation.rows}
    best = RunDir(args.run).best_export
    reference_info = evaluation.similarity_reference
    # The reference rows built the centroid; rebuild it here for the extra rows (same clips, same result).
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.listening import validation_reference

    reference = validation_reference(FeatureStore(args.features), args.corpus, args.reference_clips)
    rows["piper teacher (joe)"] = teacher_row(sentences, scorers, reference, args.workdir)
    checkpoints = [r.name for r in evaluation.rows if r.kind == "checkpoint"]
    result["rows"] = [r.to_json(per_clip=True) for r in [*evaluation.rows, rows["piper teacher (joe)"]]]
    for r in result["rows"]:
        r["path"] = shown(r["path"])
        r["composite"] = composite_score(r["scores"])
    result["composite_anchors"] = ANCHORS
    args.workdir.mkdir(parents=True, exist_ok=True)  # the rows so far, should a later step fail
    (args.workdir / "rows.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["similarity_reference"] = reference_info
    costs, repeats = cost_of_eight(best, sentences, scorers, reference)
    n = min(SUBSET, len(sentences))
    result["noise"] = {
        f"repeat_best_export_max_abs_diff_{n}_sentences": {
            "second_vs_first_evaluation": determinism(rows["best export"], repeats[0], n),
            "third_vs_first_evaluation": determinism(rows["best export"], repeats[1], n)},
        "subsets": subset_noise(rows, [*checkpoints, "piper teacher (joe)"], len(sentences)),
    }
    result["cost_8_sentences"] = costs
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.out)


def emit(result: dict, out: Path | None) -> None:
    """Print the result as JSON, and write it to `out` too when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
