"""The naturalness levers, each alone and combined, on the `make demo` voice; and the one table of
every lever for the demo voice and for phase 2 (20 clips of a new speaker). Prints one JSON object.

  python bench/naturalness.py                                  # the demo voice's rows (~45 min)
  python bench/naturalness.py --phase2 bench/runs/levers_p2    # plus the phase-2 rows
  python bench/naturalness.py --sentences 4 --vocoder-steps 20 --vocoder-every 10 --acoustic-steps 10 \\
      --work bench/runs/naturalness_smoke                     # a smoke run (~6 min)

Demo rows (demo/runs/tiny's best export unless a row trains another; the held-out sentences;
columns: DNSMOS OVRL, DNSMOS P.808, DistillMOS, WER, similarity to the real validation clips,
and the CPU seconds of the training the row adds to `make demo`):
- baseline: the best export through the bundled LJSpeech HiFi-GAN (what `make demo` gives);
- gv post-filter: the same mels, each bin's variance over time restored to the training mels'
  (voxtrain.audio.global_variance), no training;
- universal start: the bundled universal generator instead, no training;
- vocoder, reconstruction only: train-vocoder (mel + STFT losses) from the LJSpeech generator;
- vocoder + spectral critic: the same steps with the CPU critic (warm-up, then its ramp), the
  losses in HiFi-GAN's balance; and once with adversarial weights 45 times that (1 and 2
  against the mel loss's 1, the first defaults);
- acoustic, no critic / with mel critic: the demo model trained on further on its own corpus
  (configs/finetune.yaml, --init-from), the same steps without and with the mel critic, so the
  critic's row is compared with the control's and not with a shorter training;
- combined: the mel-critic model with the critic-trained generator;
- acoustic + Laplacian-mixture loss: as the control, with three Laplace components per mel bin
  (model.mel_mixture=3, the new head starting fresh beside the demo model's);
- joint: the vocoder critic's row with the acoustic model trained through the generator
  (vocoder_training.joint), both scored as the joint run left them; once at the acoustic LR of a
  fine-tune (2e-4) and once at a quarter of it.
The critic vocoder's generator is also scored every --vocoder-every steps (its curve).

Phase-2 rows come from bench/finetune.py runs with --variant in one work directory (see
docs/NATURALNESS.md for the commands): each variant's JSON is read from --phase2.

Everything trained lives in --work and is reused on a rerun (delete a run's record to redo it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import finetune_cases
from finetune_cases import _sets, kept_acoustic, kept_generator, log, read_json, run_logged, write_json
from listening_scores import emit, shown, teacher_row

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN, FEATURES, CORPUS = ROOT / "demo" / "runs" / "tiny", ROOT / "demo" / "features", ROOT / "demo" / "corpus"
COLUMNS = {"dnsmos_ovrl": "ovrl", "dnsmos_p808": "p808", "distillmos": "distillmos", "wer": "wer",
           "similarity": "similarity"}
VOCODER_CRITIC = ["vocoder_training.critic=spectral"]
MEL_CRITIC = ["training.adversarial.critic=mel"]
NO_CRITIC = ["training.adversarial.critic=none"]


def trainings(args) -> dict[str, tuple[str, list[str]]]:
    """Every training a row may need: name -> (kind, its --set values)."""
    warm = max(1, args.vocoder_steps // 4)  # a quarter warms the critic up, a quarter ramps it in
    acoustic_warm = max(1, args.acoustic_steps // 4)
    critic = ["vocoder_training.start=ljspeech", *VOCODER_CRITIC, f"vocoder_training.critic_warmup_steps={warm}",
              f"vocoder_training.adversarial_ramp_steps={warm}"]
    return {
        "vocoder_reconstruction": ("vocoder", ["vocoder_training.start=ljspeech"]),
        "vocoder_spectral_critic": ("vocoder", critic),
        # The critic's first settings: adversarial and feature-matching weights of 1 and 2 against
        # the mel loss's 1, 45 times HiFi-GAN's balance (its mel weight is 45).
        "vocoder_spectral_critic_x45": ("vocoder", [*critic, "vocoder_training.adversarial_weight=1",
                                                    "vocoder_training.feature_weight=2"]),
        # JETS-style: the same critic steps, the acoustic model trained through the generator.
        "joint_spectral_critic": ("vocoder", [*critic, "vocoder_training.joint=true"]),
        # The same at a quarter of the acoustic LR: at 2e-4 the acoustic model's own mel error rose.
        "joint_spectral_critic_slow": ("vocoder", [*critic, "vocoder_training.joint=true",
                                                   "vocoder_training.joint_lr=5e-5"]),
        # configs/finetune.yaml trains with the mel critic: the control and the mixture turn it off.
        "acoustic_control": ("acoustic", NO_CRITIC),
        # Ren et al. 2022: three Laplace components per mel bin, the head added to the demo model.
        "acoustic_laplace_mixture": ("acoustic", [*NO_CRITIC, "model.mel_mixture=3", "--skip-mismatched"]),
        "acoustic_mel_critic": ("acoustic", [*MEL_CRITIC, f"training.adversarial.warmup_steps={acoustic_warm}",
                                             f"training.adversarial.ramp_steps={acoustic_warm}"]),
    }


# name -> (acoustic: a training or None for the demo export, vocoder: a training, "universal"
# or None for the bundled LJSpeech generator, global-variance post-filter)
ROWS = {
    "baseline (make demo)": (None, None, False),
    "gv post-filter": (None, None, True),
    "universal start": (None, "universal", False),
    "vocoder, reconstruction only": (None, "vocoder_reconstruction", False),
    "vocoder + spectral critic, 45x adversarial weight": (None, "vocoder_spectral_critic_x45", False),
    "vocoder + spectral critic": (None, "vocoder_spectral_critic", False),
    "acoustic, no critic (control)": ("acoustic_control", None, False),
    "acoustic + mel critic": ("acoustic_mel_critic", None, False),
    "combined: mel critic + vocoder critic": ("acoustic_mel_critic", "vocoder_spectral_critic", False),
    "acoustic + Laplacian-mixture loss": ("acoustic_laplace_mixture", None, False),
    "joint: acoustic through the vocoder + spectral critic": ("joint_spectral_critic", "joint_spectral_critic",
                                                              False),
    "joint at acoustic lr 5e-5": ("joint_spectral_critic_slow", "joint_spectral_critic_slow", False),
}


def train(args, name: str) -> dict:
    """One training of the demo voice, run once: its CPU seconds and what it left."""
    from voxtrain.artifacts.layout import RunDir

    record = args.work / "records" / f"{name}.json"
    if (done := read_json(record)) is not None:
        return done
    kind, given = trainings(args)[name]
    flags, sets = [s for s in given if s.startswith("--")], [s for s in given if not s.startswith("--")]
    run = args.work / "runs" / name
    base = RunDir(DEMO_RUN).best_export
    if kind == "vocoder":
        n, every = args.vocoder_steps, args.vocoder_every
        cmd = [*finetune_cases.VOXTRAIN, "train-vocoder", "--checkpoint", str(base), "--features", str(FEATURES),
               "--corpus", str(CORPUS), "--run", str(run), "--yes", *flags, *_sets(
                   f"vocoder_training.max_steps={n}", f"vocoder_training.validate_every={n}",
                   f"vocoder_training.save_every={every}", f"checkpoint.keep_last={n // every + 1}", *sets)]
    else:
        n = args.acoustic_steps
        cmd = [*finetune_cases.VOXTRAIN, "train", "--init-from", str(base), "--features", str(FEATURES),
               "--run", str(run), "--config", "configs/finetune.yaml", "--yes", *flags, *_sets(
                   f"training.max_steps={n}", f"training.save_every={n}", f"training.validate_every={n}",
                   "evaluation.enabled=false", *sets)]
    log(f"{name}: {n} steps")
    cost = run_logged(cmd, args.work / "logs" / f"{name}.log")
    kept = {step: str(path) for step, path in RunDir(run).checkpoint_files()}
    done = {"kind": kind, "steps": n, "sets": given, **cost}
    if "vocoder_training.joint=true" in sets:
        done["kept_acoustic"] = {str(s): str(kept_acoustic(args.work, name, Path(p), base)) for s, p in kept.items()}
    if kind == "vocoder":
        kept = {step: str(kept_generator(args.work, name, Path(path))) for step, path in kept.items()}
    done["kept"] = {str(s): p for s, p in kept.items()}
    write_json(record, done)
    return done


def last(done: dict, key: str = "kept") -> str:
    return done[key][str(max(int(s) for s in done[key]))]


def score_row(args, name: str, acoustic: Path, generator: Path | None, postfilter, scorers, reference) -> dict:
    """Synthesize the held-out sentences with one recipe and score them, once."""
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.listening import default_sentences, score_synthesizer

    cache = args.work / "scores" / f"{len(default_sentences()[: args.sentences])}" / f"{name}.json"
    if (done := read_json(cache)) is not None:
        return done
    log(f"score {name}")
    synth = Synthesizer(load_acoustic_model(acoustic), "hifigan", vocoder_path=generator, precision="fp32",
                        postfilter=postfilter)
    row = score_synthesizer(synth, default_sentences()[: args.sentences], scorers, reference, name=name)
    out = {"scores": {COLUMNS[k]: round(v, 4) for k, v in row.scores.items() if k in COLUMNS},
           "errors": row.errors, "refused": [r.index for r in row.refused], "n_clips": row.n_clips,
           "per_clip": {COLUMNS[k]: [round(x, 4) for x in v] for k, v in row.result.per_clip.items() if k in COLUMNS}}
    write_json(cache, out)
    return out


def gv_postfilter():
    """The post-filter with the demo corpus's training mels as its target."""
    import torch

    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.audio.global_variance import GlobalVariancePostFilter, global_variance

    store = FeatureStore(FEATURES)
    target = global_variance(torch.from_numpy(store.item(i)["mel"].T.copy()) for i in store.split_indices("train"))
    return GlobalVariancePostFilter(target)


def demo_rows(args, scorers, reference) -> dict:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.vocoder.hifigan import bundled_hifigan_path

    rows = {}
    for name, (acoustic, vocoder, post) in ROWS.items():
        costs = [train(args, t) for t in dict.fromkeys((acoustic, vocoder)) if t not in (None, "universal")]
        model = RunDir(DEMO_RUN).best_export
        if acoustic:
            done = train(args, acoustic)
            model = Path(last(done, "kept_acoustic" if "kept_acoustic" in done else "kept"))
        generator = (bundled_hifigan_path("universal") if vocoder == "universal"
                     else Path(last(train(args, vocoder))) if vocoder else None)
        row = score_row(args, name, model, generator, gv_postfilter() if post else None, scorers, reference)
        rows[name] = {**row, "train_cpu_s": round(sum(c["cpu_s"] for c in costs), 1),
                      "train_wall_s": round(sum(c["wall_s"] for c in costs), 1),
                      "trained": {t: train(args, t)["sets"] for t in (acoustic, vocoder)
                                  if t not in (None, "universal")}}
    return rows


def critic_curves(args, scorers, reference) -> dict[str, list[dict]]:
    """Each critic-trained generator every --vocoder-every steps: how many steps pay."""
    from voxtrain.artifacts.layout import RunDir

    model, curves = RunDir(DEMO_RUN).best_export, {}
    for row, (_, training, _) in ROWS.items():
        if training is None or not training.startswith("vocoder_spectral_critic") or row.startswith("combined"):
            continue
        if args.curve and row not in args.curve:
            continue
        done = train(args, training)
        curves[row] = [{"vocoder_step": int(step), **score_row(args, f"{row}, step {step}", model, Path(path),
                                                               None, scorers, reference)}
                       for step, path in sorted(done["kept"].items(), key=lambda kv: int(kv[0]))]
    return curves


def ears_noise(rows: dict, baseline: str, size: int = 8, draws: int = 2000, seed: int = 0) -> dict:
    """How far to trust one ear on `size` sentences: each row's std over random subsets, and for
    each lever against the baseline the share of subsets whose difference has the sign of the
    difference over all sentences (the same subset for both rows; WER is pooled per subset as a
    mean of per-clip rates here, which is close enough for a sign)."""
    rng = np.random.default_rng(seed)
    base = rows[baseline]["per_clip"]
    n = min(len(v) for v in base.values())
    subsets = [rng.choice(n, min(size, n), replace=False) for _ in range(draws)]
    out: dict = {"subset_size": min(size, n), "draws": draws, "std": {}, "sign_agreement_with_baseline": {}}
    for name, row in rows.items():
        clips = row.get("per_clip") or {}
        out["std"][name] = {k: round(float(np.std([np.mean(np.asarray(v)[s]) for s in subsets])), 4)
                            for k, v in clips.items() if len(v) == n}
        if name == baseline:
            continue
        agree = {}
        for k, v in clips.items():
            if k not in base or len(v) != n:
                continue
            diff = np.asarray(v) - np.asarray(base[k])
            agree[k] = round(float(np.mean([np.sign(diff[s].mean()) == np.sign(diff.mean()) for s in subsets])), 3)
        out["sign_agreement_with_baseline"][name] = agree
    return out


def phase2_rows(folder: Path) -> dict:
    """Each bench/finetune.py variant's 20-clip result as a row of the table."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        case = next(iter(result["cases"].values()))
        acoustic = case["train_process"]["cpu_s"]
        fixed = case["curve"][-1]
        row = {"variant": result.get("variant") or "base", "overrides": result["overrides"],
               "acoustic_only": _columns(fixed), "train_cpu_s_acoustic": acoustic}
        if case.get("vocoder"):
            voc = case["vocoder"]
            row["with_tuned_vocoder"] = _columns(voc["curve"][-1])
            row["train_cpu_s_both"] = round(acoustic + voc["cpu_seconds"], 1)
            row["vocoder_curve"] = [{"step": p["vocoder_step"], **_columns(p)} for p in voc["curve"]]
        out[path.stem] = row
        out.setdefault("references", {k: _columns(v) for k, v in result["references"].items()})
    return out


def _columns(scores: dict) -> dict:
    return {k: scores.get(k) for k in ("ovrl", "p808", "distillmos", "wer", "similarity_new")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "runs" / "naturalness")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--sentences", type=int, default=None, help="the first N held-out sentences (default: all)")
    ap.add_argument("--vocoder-steps", type=int, default=400)
    ap.add_argument("--vocoder-every", type=int, default=100)
    ap.add_argument("--acoustic-steps", type=int, default=400)
    ap.add_argument("--curve", action="append", default=[], metavar="ROW",
                    help="score only these critic rows' curves (default: every critic row's)")
    ap.add_argument("--phase2", type=Path, default=None, help="a bench/finetune.py work directory's variant JSONs")
    ap.add_argument("--skip-demo", action="store_true", help="only the phase-2 rows")
    args = ap.parse_args()
    args.work = args.work.resolve()

    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.listening import Scorers, default_sentences, validation_reference

    t0 = time.perf_counter()
    result: dict = {"demo_run": shown(DEMO_RUN), "cpu_count": os.cpu_count(),
                    "load_average_1min_start": round(os.getloadavg()[0], 2),
                    "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out", "phase2")}}
    if not args.skip_demo:
        scorers = Scorers()
        reference = validation_reference(FeatureStore(FEATURES), CORPUS)
        sentences = default_sentences()[: args.sentences]
        teacher = args.work / "scores" / f"{len(sentences)}" / "teacher.json"
        if read_json(teacher) is None:
            row = teacher_row(sentences, scorers, reference, args.work / f"teacher_{len(sentences)}")
            write_json(teacher, {"scores": {COLUMNS[k]: round(v, 4) for k, v in row.scores.items() if k in COLUMNS}})
        result["demo"] = {"sentences": len(sentences), "teacher (piper joe)": read_json(teacher),
                          "rows": demo_rows(args, scorers, reference),
                          "critic_curves": critic_curves(args, scorers, reference)}
        result["demo"]["ears_noise"] = ears_noise(result["demo"]["rows"], next(iter(ROWS)))
        for row in result["demo"]["rows"].values():
            row.pop("per_clip", None)
    if args.phase2:
        result["phase2"] = phase2_rows(args.phase2)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
