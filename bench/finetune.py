"""Phase-2 benchmark: adapting a base voice to a new speaker from ~20, 100 and 300 clips on this
CPU, scored on held-out sentences over training wall-clock. Prints one JSON object.

  python bench/finetune.py --base demo/runs/tiny/checkpoints/best.safetensors
  python bench/finetune.py --base B --only 20 --skip-scratch          # one case, fine-tune only
  python bench/finetune.py --base B --sizes 6 --hard 0 --heldout 2 --steps 10 --every 5 \\
      --vocoder-steps 4 --vocoder-every 2 --work bench/runs/finetune_smoke \\
      --out bench/runs/finetune_smoke.json  # ~3 min

The new speaker is piper joe resampled by 1.3 (keep-tempo), the voice the base learned is piper
joe itself. Per case (N train clips plus a validation split; `hard`: N clips over a telephone
channel): fine-tune the base (configs/finetune.yaml, lr 2e-4), keep a checkpoint every
--every steps, and score each (and the base, step 0) with the bundled HiFi-GAN: GE2E
similarity to the centroid of the new speaker's real held-out clips and to that of the base
voice's, pocketsphinx WER, DNSMOS OVRL and SIG, median F0. Then the last checkpoint with the
HiFi-GAN fine-tuned on it (train-vocoder), scored every --vocoder-every steps, and
configs/tiny.yaml trained from scratch on the same clips for the same wall-clock. Ceiling: the
new speaker's real held-out clips (each against the centroid of the others). Goals (at the
smallest clean case): similarity >= 95 % of the ceiling, WER <= 1.2x the real clips', OVRL
within 0.15 of theirs, both trainings within 10 minutes (fine-tune wall-clock + the
train-vocoder process up to the scored generator): `goals` are judged on the longest-trained
generator within that budget, `goals_longest_vocoder` on the last one. train-vocoder keeps the
best generator by val_mel including the bundled one at step 0, so "tuned" may be the bundled
generator: `tuned_is_bundled` says so. Everything lives in --work, and a rerun reuses every
finished piece (delete work/records/<phase>_<case>.json or work/scores/<case>/ to redo one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import finetune_cases
from finetune_cases import (
    SHIFT,
    Case,
    case_corpus,
    features,
    finetune,
    log,
    read_json,
    render,
    scratch,
    vocoder,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
GOAL_SIMILARITY, GOAL_WER, GOAL_OVRL, GOAL_SECONDS = 0.95, 1.2, 0.15, 600.0
F0_GATE_DB = 30.0  # frames this far below a clip's loudest are pauses: their (interpolated) F0 is not speech


@dataclass
class References:
    texts: list[str]
    new: object  # SpeakerReference of the new speaker's real held-out clips
    base: object  # SpeakerReference of the base voice's clips of the same sentences
    audio: object  # AudioConfig (sample rate, hop, pitch range) of the base model
    rows: dict


def median_f0(clips: list[np.ndarray], audio) -> float | None:
    """Median F0 (Hz) over the speech frames of all clips, by voxtrain's own pitch tracker."""
    from voxtrain.audio import frame_energy, pitch_track

    voiced = []
    for wav in clips:
        energy = frame_energy(wav, audio)
        f0 = pitch_track(wav, audio, n_frames=len(energy))
        loud = energy > energy.max() * 10 ** (-F0_GATE_DB / 20)
        voiced.append(f0[loud & (f0 > 0)])
    frames = np.concatenate(voiced) if voiced else np.zeros(0)
    return round(float(np.median(frames)), 1) if len(frames) else None


def score(clips: list[np.ndarray], texts: list[str], scorers, refs: References, own: bool = False) -> dict:
    """The bench's scores of clips at the base's sample rate; own: they are the new speaker's
    reference clips (similarity_new leaves each out of its centroid)."""
    from voxtrain.listening.common import to_scorer_rate
    from voxtrain.listening.speaker import shared_encoder

    sr = refs.audio.sample_rate
    result = scorers.score(clips, sr, texts, refs.new, leave_one_out=own)
    base_sim = [refs.base.similarity(e) for e in shared_encoder().embed_many([to_scorer_rate(c, sr) for c in clips])]
    s = result.scores
    out = {"similarity_new": s.get("similarity"), "similarity_base": float(np.mean(base_sim)), "wer": s.get("wer"),
           "ovrl": s.get("dnsmos_ovrl"), "sig": s.get("dnsmos_sig"), "p808": s.get("dnsmos_p808"),
           "distillmos": s.get("distillmos"), "f0_median": median_f0(clips, refs.audio)}
    out = {k: None if v is None else round(v, 4) for k, v in out.items()}
    out["n_clips"] = len(clips)
    if result.errors:
        out["errors"] = result.errors
    return out


def references(work: Path, n: int, scorers, base: Path) -> References:
    """Held-out sentences rendered in the new voice (similarity reference and ceiling) and in
    the base voice (the base reference)."""
    from voxtrain.audio import load_audio
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.listening import default_sentences, speaker_reference

    texts = default_sentences()[:n]
    audio = load_acoustic_model(base).config.audio
    clips = {}
    for name, shift in (("new", SHIFT), ("base", 1.0)):
        corpus = render(work / f"heldout_{name}_{n}", texts, shift)
        clips[name] = [load_audio(p, audio.sample_rate) for p in sorted((corpus / "wavs").glob("*.wav"))]
    refs = References(texts, speaker_reference(clips["new"], audio.sample_rate, "new speaker, real held-out clips"),
                      speaker_reference(clips["base"], audio.sample_rate, "base voice, held-out clips"), audio, {})
    cache = work / "scores" / f"references_{n}.json"
    refs.rows = read_json(cache) or {
        "ceiling (new speaker, real clips)": score(clips["new"], texts, scorers, refs, own=True),
        "base voice (real clips)": score(clips["base"], texts, scorers, refs)}
    write_json(cache, refs.rows)
    return refs


def scores_dir(work: Path, case: Case, refs: References) -> Path:
    """Where a case's scores are kept: per held-out set, so a rerun with another --heldout rescores."""
    return work / "scores" / f"heldout{len(refs.texts)}" / case.run_name


def score_checkpoint(path: Path, cache: Path, scorers, refs: References, generator: Path | None = None) -> dict:
    """Synthesize the held-out sentences with a checkpoint (and a vocoder) and score them, once."""
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.listening.synthesis import synthesize_sentences

    if (done := read_json(cache)) is not None:
        return done
    t0 = time.perf_counter()
    synth = Synthesizer(load_acoustic_model(path), "hifigan", vocoder_path=generator, precision="fp32")
    spoken, clips, refused = synthesize_sentences(synth, refs.texts)
    out = score(clips, [refs.texts[i] for i in spoken], scorers, refs) if clips else {"errors": "nothing spoken"}
    out["refused"] = [r.index for r in refused]
    out["eval_s"] = round(time.perf_counter() - t0, 1)
    write_json(cache, out)
    return out


def curve(work: Path, case: Case, base: Path, walls: dict, scorers, refs: References) -> list[dict]:
    """Every kept checkpoint of the fine-tune (and the base at step 0) with the bundled vocoder."""
    from voxtrain.artifacts.layout import RunDir

    points = [(0, base, 0.0)] + [(step, path, walls.get(str(step)))
                                 for step, path in RunDir(work / "runs" / case.run_name).checkpoint_files()]
    rows = []
    for step, path, wall in points:
        log(f"score {case.run_name} step {step}")
        # The base (step 0) is the same model in every variant of a case: scored once.
        where = scores_dir(work, case, refs).with_name(case.name) if step == 0 else scores_dir(work, case, refs)
        scores = score_checkpoint(path, where / f"step{step}.json", scorers, refs)
        rows.append({"step": step, "wall_s": wall, **scores})
    return rows


def goals(final: dict, ceiling: dict, train_s: float) -> dict:
    """Pass/fail of the issue's goals, with the margin (positive: better than the goal)."""
    def goal(value, target, higher: bool) -> dict:
        if value is None or target is None:
            return {"value": value, "target": target, "pass": None}
        margin = value - target if higher else target - value
        return {"value": round(value, 4), "target": round(target, 4), "pass": bool(margin >= 0),
                "margin": round(margin, 4)}

    sim, wer, ovrl = ceiling.get("similarity_new"), ceiling.get("wer"), ceiling.get("ovrl")
    return {"similarity_new": goal(final.get("similarity_new"), sim and GOAL_SIMILARITY * sim, True),
            "wer": goal(final.get("wer"), None if wer is None else GOAL_WER * wer, False),
            "ovrl": goal(final.get("ovrl"), ovrl and ovrl - GOAL_OVRL, True),
            "train_seconds_both_models": goal(train_s, GOAL_SECONDS, False)}


class Clock:
    """Wall seconds per phase of this invocation (a reused piece costs ~0)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, phase: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - t0, 1)


def _train_audio_minutes(store: Path) -> float:
    """Minutes of audio in the store's train split: the "how much data" of a case."""
    from voxtrain.artifacts.store import FeatureStore

    fs = FeatureStore(store)
    return round(sum(float(fs.records[i]["seconds"]) for i in fs.split_indices("train")) / 60, 2)


def run_case(args, case: Case, largest: int, scorers, refs: References, clock: Clock) -> dict:
    """One case end to end; the pieces a rerun finds finished are reused."""
    from voxtrain.artifacts.layout import RunDir

    work = args.work
    corpus = clock.run("corpus", case_corpus, work, case, largest)
    store = clock.run("prepare", features, work, case, corpus)
    trained = clock.run("finetune", finetune, work, case, args.base, store)
    rows = clock.run("score_curve", curve, work, case, args.base, trained["walls"], scorers, refs)
    last = rows[-1]
    last_ckpt = RunDir(work / "runs" / case.run_name).checkpoint_files()[-1][1]
    out = {"clips": case.n_train, "val_clips": case.n_clips - case.n_train, "degrade": case.degrade,
           "audio_minutes": _train_audio_minutes(store),
           "steps": case.steps, "lr": trained.get("lr"), "train_wall_minutes": round((last["wall_s"] or 0) / 60, 2),
           "train_process": {k: trained[k] for k in ("wall_s", "cpu_s")}, "new_symbols": trained["new_symbols"],
           "curve": rows}
    final, train_s, judged = last, last["wall_s"] or 0.0, "last checkpoint, bundled vocoder"
    if not args.skip_vocoder:
        out["vocoder"] = vocoder_row(work, case, last, last_ckpt, store, corpus, scorers, refs, clock)
        longest = out["vocoder"]["curve"][-1]
        out["goals_longest_vocoder"] = {
            "judged_on": f"last checkpoint, vocoder step {longest['vocoder_step']}",
            **goals(longest, refs.rows["ceiling (new speaker, real clips)"], train_s + longest["seconds"])}
        final = within_budget(train_s, out["vocoder"])
        judged = f"last checkpoint, vocoder step {final['vocoder_step']} (the longest within {GOAL_SECONDS:.0f} s)"
        train_s = final["seconds_both_models"]
    # --skip-scratch trains nothing from scratch, but still reports a scratch run a rerun finds finished.
    finished = (work / "records" / f"scratch_{case.run_name}.json").is_file()
    if (not args.skip_scratch or finished) and last["wall_s"]:
        steps_per_s = finetune_cases.train_speed(work / "runs" / case.run_name) or last["step"] / last["wall_s"]
        sc = clock.run("scratch_train", scratch, work, case, store, last["wall_s"], steps_per_s)
        ckpt = RunDir(work / "runs" / f"{case.run_name}_scratch").checkpoint_files()[-1][1]
        out["scratch"] = {**sc, **clock.run("score_scratch", score_checkpoint, ckpt,
                                            scores_dir(work, case, refs) / "scratch.json", scorers, refs)}
    ceiling = refs.rows["ceiling (new speaker, real clips)"]
    out["goals"] = {"judged_on": judged, **goals(final, ceiling, train_s)}
    return out


def vocoder_row(work: Path, case: Case, last: dict, ckpt: Path, store: Path, corpus: Path, scorers,
                refs: References, clock: Clock) -> dict:
    """The last checkpoint through the bundled HiFi-GAN against the generators fine-tuned on it:
    one every vocoder_every steps (the curve) and the best by val_mel (the run's export)."""
    voc = clock.run("vocoder_train", vocoder, work, case, ckpt, store, corpus)
    where = scores_dir(work, case, refs)
    curve = []
    for step, kept in sorted(voc["kept"].items(), key=lambda kv: int(kv[0])):
        log(f"score {case.run_name} vocoder step {step}")
        scores = clock.run("score_vocoder", score_checkpoint, ckpt, where / f"tuned_step{step}.json", scorers, refs,
                           work / kept["generator"])
        curve.append({"vocoder_step": int(step), "seconds": kept["seconds"], **scores})
    by_step = {row["vocoder_step"]: row for row in curve}
    tuned = by_step.get(voc["best_step"]) or clock.run("score_vocoder", score_checkpoint, ckpt, where / "tuned.json",
                                                         scorers, refs, work / voc["generator"])
    return {"acoustic_step": last["step"], "steps": voc["steps"], "seconds": voc["wall_s"],
            "cpu_seconds": voc["cpu_s"], "train_wall_s": voc["train_wall_s"], "overhead_s": voc.get("overhead_s"),
            "best_generator_step": voc["best_step"], "tuned_is_bundled": voc["best_step"] == 0,
            "val_mel": voc["val_mel"], "fixed": {k: last[k] for k in last if k != "step"}, "tuned": tuned,
            "curve": curve}


def within_budget(acoustic_s: float, vocoder: dict) -> dict:
    """The longest-trained vocoder point whose cost with the acoustic fine-tune's fits the goal's
    seconds (else the shortest), with `seconds_both_models` added."""
    points = [dict(p, seconds_both_models=round(acoustic_s + p["seconds"], 1)) for p in vocoder["curve"]]
    fits = [p for p in points if p["seconds_both_models"] <= GOAL_SECONDS]
    return fits[-1] if fits else points[0]


def build_cases(args) -> list[Case]:
    sizes = [int(x) for x in args.sizes.split(",") if x]
    params = [[int(x) for x in v.split(",")] for v in (args.steps, args.every, args.vocoder_steps,
                                                        args.vocoder_every)]
    if any(len(p) != len(sizes) for p in params):
        raise SystemExit("--steps, --every, --vocoder-steps and --vocoder-every need one value per --sizes entry")
    by_size = {n: tuple(p) for n, *p in zip(sizes, *params)}
    cases = [Case(str(n), n, None, *by_size[n], variant=args.variant) for n in sizes]
    if args.hard:
        # The hard case trains like the clean case of its size (or the smallest one).
        cases.append(Case(f"hard{args.hard}", args.hard, "phone", *by_size.get(args.hard, by_size[sizes[0]]),
                          variant=args.variant))
    if args.only:
        cases = [c for c in cases if c.name == args.only]
        if not cases:
            raise SystemExit(f"--only {args.only}: no such case")
    return cases


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="base acoustic model (best.safetensors of tiny.yaml)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "runs" / "finetune", help="work directory")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune.json")
    ap.add_argument("--sizes", default="20,100,300", help="train clips per case")
    ap.add_argument("--steps", default="300,600,900", help="fine-tune steps per size")
    ap.add_argument("--every", default="75,150,300", help="steps between kept checkpoints per size")
    ap.add_argument("--vocoder-steps", default="400,300,300", help="train-vocoder steps per size")
    ap.add_argument("--vocoder-every", default="100,100,100", help="train-vocoder steps between scored generators")
    ap.add_argument("--hard", type=int, default=20, help="clips of the telephone-channel case (0: none)")
    ap.add_argument("--heldout", type=int, default=10, help="held-out sentences scored")
    ap.add_argument("--only", default=None, help="run one case: a size, or hardN")
    ap.add_argument("--skip-scratch", action="store_true",
                    help="train no case from scratch (one a rerun finds finished is still reported)")
    ap.add_argument("--skip-vocoder", action="store_true")
    ap.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra --set of every fine-tune, e.g. finetune.freeze=[decoder] (repeatable)")
    ap.add_argument("--vocoder-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra --set of train-vocoder, e.g. vocoder_training.lr=1e-4 (repeatable)")
    ap.add_argument("--variant", default="",
                    help="a lever's name: its runs, records and scores sit beside the plain case's, on the same "
                         "corpus, features and references (say what it changes with --finetune-set/--vocoder-set)")
    ap.add_argument("--train-threads", type=int, default=2, help="OMP_NUM_THREADS of the training processes")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    args.base, args.work = args.base.resolve(), args.work.resolve()
    cases = build_cases(args)
    finetune_cases.TRAIN_THREADS = str(args.train_threads)
    finetune_cases.FINETUNE_SETS[:], finetune_cases.VOCODER_SETS[:] = args.finetune_set, args.vocoder_set
    from voxtrain.listening import Scorers
    from voxtrain.precision import cpu_has_native_bf16

    t0, clock = time.perf_counter(), Clock()
    scorers = Scorers()
    refs = clock.run("references", references, args.work, args.heldout, scorers, args.base)
    largest = max(c.n_clips for c in build_cases(argparse.Namespace(**{**vars(args), "only": None})) if not c.degrade)
    result: dict = {
        "base": _shown(args.base), "work": args.work.name, "new_speaker": f"piper joe, shift {SHIFT}, keep tempo",
        "heldout_sentences": len(refs.texts), "cpu_count": os.cpu_count(), "cpu": cpu_model(),
        "training_precision": "bf16" if cpu_has_native_bf16() else "fp32",
        "variant": args.variant, "overrides": {"finetune": args.finetune_set, "vocoder": args.vocoder_set},
        "load_average_1min_start": round(os.getloadavg()[0], 2), "references": refs.rows, "cases": {}}
    for case in cases:
        log(f"case {case.run_name}: {case.n_train} train clips")
        result["cases"][case.run_name] = run_case(args, case, largest, scorers, refs, clock)
    clean = [c for c in cases if not c.degrade]
    if clean:  # the goals are stated for the smallest clean case (~20 clips)
        result["goals"] = {"case": clean[0].run_name, **result["cases"][clean[0].run_name]["goals"]}
    result["phase_seconds"] = clock.seconds
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")


def cpu_model() -> str | None:
    """The CPU's model name (timings are this CPU's: fp32 on AVX2 runs at about half bf16's speed)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def _shown(path: Path) -> str:
    """Repository-relative, else the bare name: results name no machine path."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


if __name__ == "__main__":
    sys.exit(main())
