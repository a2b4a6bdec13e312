"""The data and training phases of bench/finetune.py: corpora, feature stores, the acoustic
fine-tune, the scratch run, the vocoder fine-tune. Every phase leaves its product in the work
directory with a small JSON record of its cost, and is skipped on a rerun when that record is
there, so an interrupted bench resumes where it stopped."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOXTRAIN = [sys.executable, "-m", "voxtrain"]
SHIFT = 1.3  # the new speaker: piper joe, resampled up (GE2E similarity to joe ~0.53)
TRAIN_THREADS = "2"  # the trainers get both cores (the bench only waits meanwhile); --train-threads sets it
# Extra `--set KEY=VALUE` of the fine-tunes and of train-vocoder (--finetune-set, --vocoder-set),
# after the bench's own so they win: the knobs of an experiment, recorded in the result.
FINETUNE_SETS: list[str] = []
VOCODER_SETS: list[str] = []


def log(msg: str) -> None:
    print(f"[finetune {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def val_size(n_train: int) -> int:
    """Validation clips beside n train clips: enough for a val_mel, few enough to spare clips."""
    return 4 if n_train <= 20 else 10 if n_train <= 100 else 20


@dataclass
class Case:
    name: str  # "20", "100", "300", "hard20"
    n_train: int
    degrade: str | None = None
    steps: int = 300
    every: int = 75
    vocoder_steps: int = 100
    vocoder_every: int = 100  # train-vocoder steps between kept (and scored) generators
    variant: str = ""  # a lever's name: its runs and scores beside the plain case's, on the same data

    @property
    def run_name(self) -> str:
        """The case's runs, records and scores: the data's name, plus the variant's."""
        return f"{self.name}_{self.variant}" if self.variant else self.name

    @property
    def n_clips(self) -> int:
        return self.n_train + val_size(self.n_train)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def corpus_sentences(n: int, seed: int = 0) -> list[str]:
    """n corpus sentences, none of them (after normalization) a held-out one."""
    from voxtrain.demo_corpus import load_sentences, select_sentences
    from voxtrain.listening import default_sentences
    from voxtrain.text import normalize_text

    def key(s: str) -> str:
        return " ".join(normalize_text(s).lower().split())

    heldout = {key(s) for s in default_sentences()}
    pool = [s for s in load_sentences() if key(s) not in heldout]
    return select_sentences(n, seed, pool)


def render(out: Path, sentences: list[str], shift: float, degrade: str | None = None) -> Path:
    """A piper corpus of the sentences (the new speaker when shift != 1), made once."""
    from voxtrain.demo_corpus import make_corpus

    if (out / "metadata.csv").is_file():
        return out
    log(f"rendering {len(sentences)} clips -> {out.name} (shift {shift}, degrade {degrade})")
    make_corpus(out, voice="piper", sentences=sentences, progress=False, speaker_shift=shift,
                keep_tempo=shift != 1.0, degrade=degrade)
    return out


def subset_corpus(full: Path, out: Path, n: int) -> Path:
    """The first n clips of a rendered corpus: identical to rendering the first n sentences
    (same ids, same seeded shuffle prefix, deterministic transforms), without running piper again."""
    if (out / "metadata.csv").is_file():
        return out
    rows = (full / "metadata.csv").read_text(encoding="utf-8").splitlines()[:n]
    ids = {r.split("|", 1)[0] for r in rows}
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    for clip in ids:
        shutil.copy2(full / "wavs" / f"{clip}.wav", out / "wavs" / f"{clip}.wav")
    align = full / "alignments.jsonl"
    if align.is_file():
        keep = [line for line in align.read_text(encoding="utf-8").splitlines() if json.loads(line)["id"] in ids]
        (out / "alignments.jsonl").write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
    (out / "metadata.csv").write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
    return out


def case_corpus(work: Path, case: Case, largest: int) -> Path:
    """The case's corpus: a prefix of the largest clean corpus, or its own degraded rendering."""
    if case.degrade:
        return render(work / f"corpus_{case.name}", corpus_sentences(case.n_clips), SHIFT, case.degrade)
    full = render(work / "corpus_full", corpus_sentences(largest), SHIFT)
    return subset_corpus(full, work / f"corpus_{case.name}", case.n_clips)


def run_logged(cmd: list[str], logfile: Path) -> dict:
    """Run a voxtrain command with its output in logfile; its wall and CPU seconds."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": TRAIN_THREADS}  # read at call time: main sets it
    t0, c0 = time.perf_counter(), _children_cpu()
    with logfile.open("a", encoding="utf-8") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc != 0:
        tail = "\n".join(logfile.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed (exit {rc}); log {logfile.name}:\n{tail}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_children_cpu() - c0, 1)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def features(work: Path, case: Case, corpus: Path) -> Path:
    """The case's feature store, prepared as the base's (configs/tiny.yaml) with its own split."""
    out = work / f"features_{case.name}"
    if (out / "COMPLETE").is_file():
        return out
    log(f"prepare {corpus.name} -> {out.name}")
    cost = run_logged([*VOXTRAIN, "prepare", str(corpus), "--out", str(out), "--config", "configs/tiny.yaml",
                       "--set", f"data.val_size={val_size(case.n_train)}", "--workers", "2"],
                      work / "logs" / f"prepare_{case.name}.log")
    write_json(work / "records" / f"prepare_{case.name}.json", cost)
    return out


def new_symbols(base: Path, store_dir: Path) -> list[str]:
    """Symbols of the case's training clips the base never learned (then --new-symbols is needed)."""
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.artifacts.weights import load_weights
    from voxtrain.text import SymbolTable
    from voxtrain.text.coverage import missing_symbols

    store = FeatureStore(store_dir)
    meta = load_weights(base)[1]
    table = SymbolTable.from_dict(meta["symbols"]) if meta.get("symbols") else store.symbols
    return [m.symbol for m in missing_symbols(table, meta.get("symbol_clips"), store.symbol_clips("train"))]


def finetune(work: Path, case: Case, base: Path, store: Path) -> dict:
    """The acoustic fine-tune from the base, every `every` steps kept (they make the curve)."""
    record = work / "records" / f"train_{case.run_name}.json"
    if (done := read_json(record)) is not None:
        return done
    run = work / "runs" / case.run_name
    if run.exists():  # a fine-tune that died half-way: --init-from starts only a new run
        shutil.rmtree(run)
    fresh = new_symbols(base, store)
    cmd = [*VOXTRAIN, "train", "--init-from", str(base), "--features", str(store), "--run", str(run),
           "--config", "configs/finetune.yaml", "--yes", *_sets(
               "finetune.lr=2e-4", f"training.batch_size={min(16, case.n_train)}", f"training.max_steps={case.steps}",
               f"training.validate_every={case.every}", f"training.save_every={case.every}",
               "finetune.keep_last=1000", "evaluation.enabled=false", *FINETUNE_SETS)]
    if fresh:
        cmd.append("--new-symbols")
    log(f"fine-tune {case.run_name}: {case.steps} steps" + (f", new symbols {fresh}" if fresh else ""))
    cost = run_logged(cmd, work / "logs" / f"train_{case.run_name}.log")
    done = {**cost, "new_symbols": fresh, "walls": checkpoint_walls(run), "lr": run_lr(run)}
    write_json(record, done)
    return done


def run_lr(run: Path) -> float | None:
    """The LR the run really trained with (its saved config), to catch a --set that did not apply."""
    import yaml

    from voxtrain.artifacts.layout import RunDir

    config = yaml.safe_load(RunDir(run).config.read_text(encoding="utf-8"))
    return config.get("training", {}).get("lr")


def _sets(*values: str) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def checkpoint_walls(run: Path) -> dict[str, float]:
    """Training wall-clock seconds at each saved checkpoint, from the run's metrics: time since
    the start event, summed over sessions when the run was resumed."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.metrics_format import read_metrics

    walls, offset, start, last = {}, 0.0, None, 0.0
    for rec in read_metrics(RunDir(run).metrics):
        if rec.get("event") == "start":
            offset, start = last, rec["time"]
        elif start is not None and "time" in rec:
            last = offset + rec["time"] - start
            if rec.get("event") == "checkpoint_saved":
                walls[str(rec["step"])] = round(last, 1)
    return walls


def train_speed(run: Path) -> float | None:
    """Median steps/s of a run's train records (training alone, no validation pauses)."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.metrics_format import read_metrics

    speeds = [r["steps_per_s"] for r in read_metrics(RunDir(run).metrics) if r.get("steps_per_s")]
    return float(sorted(speeds)[len(speeds) // 2]) if speeds else None


def scratch(work: Path, case: Case, store: Path, wall_s: float, steps_per_s: float) -> dict:
    """configs/tiny.yaml from random weights on the same clips, stopped (SIGTERM: it saves and
    exits) once it has trained as long as the fine-tune did. Its step budget (1.1x what the
    fine-tune's training speed gives in that time; scratch validates only at its end) shapes
    the LR schedule so that it nearly completes, and the clock ends the run."""
    record = work / "records" / f"scratch_{case.run_name}.json"
    if (done := read_json(record)) is not None:
        return done
    run = work / "runs" / f"{case.run_name}_scratch"
    if run.exists():
        shutil.rmtree(run)
    budget = max(2, math.ceil(steps_per_s * wall_s * 1.1))
    # tiny.yaml warms up over 12 % of its 2500 steps; keep that share of the shorter budget.
    warmup = max(1, round(0.12 * budget))
    cmd = [*VOXTRAIN, "train", "--config", "configs/tiny.yaml", "--features", str(store), "--run", str(run),
           "--yes", *_sets(f"training.batch_size={min(16, case.n_train)}", f"training.max_steps={budget}",
                           f"training.warmup_steps={warmup}", f"training.validate_every={budget}",
                           f"training.save_every={budget}", "evaluation.enabled=false")]
    log(f"scratch {case.run_name}: up to {budget} steps or {wall_s:.0f} s of training")
    logfile = work / "logs" / f"scratch_{case.run_name}.log"
    with logfile.open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": TRAIN_THREADS})
        _stop_after(proc, run / "metrics.jsonl", wall_s)
    if proc.returncode != 0:
        raise RuntimeError(f"scratch {case.run_name} failed (exit {proc.returncode}); see {logfile.name}")
    walls = checkpoint_walls(run)
    step = max((int(s) for s in walls), default=0)
    done = {"step_budget": budget, "warmup_steps": warmup, "steps": step, "wall_s": walls.get(str(step)),
            "target_wall_s": wall_s, "stopped_by": "step budget" if step >= budget else "clock"}
    write_json(record, done)
    return done


def _stop_after(proc: subprocess.Popen, metrics: Path, wall_s: float) -> None:
    """SIGTERM proc wall_s after its start event (what the fine-tune's clock counts from)."""
    from voxtrain.artifacts.metrics_format import read_metrics

    started = None
    while proc.poll() is None:
        if started is None and any(r.get("event") == "start" for r in read_metrics(metrics)):
            started = time.monotonic()
        if started is not None and time.monotonic() - started >= wall_s:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.5)
    proc.wait()


def vocoder(work: Path, case: Case, checkpoint: Path, store: Path, corpus: Path) -> dict:
    """train-vocoder on the last acoustic checkpoint, a checkpoint every vocoder_every steps (their
    generators make the vocoder's curve); validation only at the end (it is slow)."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.metrics_format import read_metrics

    record = work / "records" / f"vocoder_{case.run_name}.json"
    if (done := read_json(record)) is not None:
        return done
    run = work / "runs" / f"{case.run_name}_vocoder"
    if run.exists():  # no record: its acoustic checkpoint may be another one than this
        shutil.rmtree(run)
    n, every = case.vocoder_steps, min(case.vocoder_every, case.vocoder_steps)
    cmd = [*VOXTRAIN, "train-vocoder", "--checkpoint", str(checkpoint), "--features", str(store),
           "--corpus", str(corpus), "--run", str(run), "--yes",
           *_sets(f"vocoder_training.max_steps={n}", f"vocoder_training.validate_every={n}",
                  f"vocoder_training.save_every={every}", f"checkpoint.keep_last={n // every + 1}",
                  *VOCODER_SETS)]
    log(f"train-vocoder {case.run_name}: {n} steps, a generator kept every {every}")
    cost = run_logged(cmd, work / "logs" / f"vocoder_{case.run_name}.log")
    generator = RunDir(run).vocoder_export
    if not generator.is_file():
        raise RuntimeError(f"train-vocoder {case.run_name} wrote no {generator.name}")
    records = read_metrics(RunDir(run).metrics)
    best = [r for r in records if r.get("event") == "best_exported"]
    walls = checkpoint_walls(run)
    # train-vocoder validates the bundled generator at step 0 too: when no later step beats it,
    # the "tuned" generator is the bundled one, and the result must say so.
    # wall_s/cpu_s are the process's (mels of the corpus, both validations); train_wall_s is from
    # its metrics, summed over sessions, so it stays right when a rerun finished an interrupted one.
    # A kept generator's cost is its training time plus the process's overhead (pairs, validations).
    overhead = cost["wall_s"] - (walls.get(str(n)) or 0.0)
    done = {**cost, "train_wall_s": walls.get(str(n)), "steps": n, "overhead_s": round(overhead, 1),
            "generator": str(generator.relative_to(work)),
            "kept": {step: {"generator": str(kept_generator(work, case.run_name, RunDir(run).checkpoint(int(step)))
                                              .relative_to(work)),
                            "seconds": round(wall + overhead, 1)} for step, wall in walls.items()},
            "best_step": best[-1]["step"] if best else None,
            "val_mel": {str(r["step"]): round(r["loss_mel"], 4) for r in records if r.get("type") == "val"}}
    write_json(record, done)
    return done


def kept_generator(work: Path, name: str, checkpoint: Path) -> Path:
    """The generator of a train-vocoder checkpoint, in the format load_hifigan reads."""
    import torch

    out = work / "generators" / f"{name}_{checkpoint.stem}.pt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        model = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        if any(k.startswith("generator.") for k in model):  # a joint fine-tune holds both models
            model = {k.removeprefix("generator."): v for k, v in model.items() if k.startswith("generator.")}
        torch.save({"generator": model}, out)
    return out


def kept_acoustic(work: Path, name: str, checkpoint: Path, base: Path) -> Path:
    """The acoustic model of a joint train-vocoder checkpoint as a voice export (the base's
    sidecar, these weights), which load_acoustic_model reads."""
    import torch

    from voxtrain.artifacts.weights import export_weights, load_weights

    out = work / "acoustic" / f"{name}_{checkpoint.stem}.safetensors"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        model = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        meta = load_weights(base)[1]
        meta.pop("vocoder", None)  # the generator is given beside it
        export_weights({k.removeprefix("acoustic."): v for k, v in model.items() if k.startswith("acoustic.")},
                       meta, out)
    return out
