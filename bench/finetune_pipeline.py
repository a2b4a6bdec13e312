"""`voxtrain finetune` end to end under its budget, scored like bench/finetune.py's phase 2.
Prints one JSON object.

  python bench/finetune_pipeline.py --work bench/runs/levers_p2 --budget 10m \\
      --out bench/results/finetune_pipeline.json

The corpus is bench/finetune.py's 20-clip case of the new speaker (the demo voice shifted 1.3x,
tempo kept) in --work, which must have run first (it renders the corpus and the held-out
references). The pipeline runs as a user would run it, from the demo voice, with --yes; the
wall and CPU seconds are the whole command's (every stage's process). Its voice is scored on
the held-out sentences with the three ears, WER and similarity to the real held-out clips, and
held to the naturalness issue's goals.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import finetune_cases
from finetune import goals, references, score_checkpoint
from finetune_cases import log, run_logged

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "runs" / "levers_p2")
    ap.add_argument("--base", type=Path, default=ROOT / "demo" / "runs" / "tiny" / "checkpoints" / "best.safetensors")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--heldout", type=int, default=30)
    ap.add_argument("--name", default=None, help="the pipeline's folder in WORK/pipelines (default: from the budget)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work, base = args.work.resolve(), args.base.resolve()
    corpus = work / f"corpus_{args.clips}"
    if not (corpus / "metadata.csv").is_file():
        raise SystemExit(f"{corpus} is missing: run bench/finetune.py --sizes {args.clips} --work {work} first")
    from voxtrain.listening import Scorers

    scorers = Scorers()
    refs = references(work, args.heldout, scorers, base)
    run = work / "pipelines" / (args.name or f"budget_{args.budget}")
    log(f"finetune {run.name}: {corpus.name}, budget {args.budget}")
    t0 = time.perf_counter()
    cost = run_logged([*finetune_cases.VOXTRAIN, "finetune", "--base", str(base), "--corpus", str(corpus),
                       "--run", str(run), "--budget", args.budget, "--yes"], work / "logs" / f"{run.name}.log")
    wall = time.perf_counter() - t0
    stages = json.loads((run / "pipeline.json").read_text(encoding="utf-8"))["stages"]
    log(f"score {run.name}")
    scores = score_checkpoint(run / "voice.safetensors", work / "scores" / "pipelines" / f"{run.name}.json",
                              scorers, refs)
    ceiling = refs.rows["ceiling (new speaker, real clips)"]
    result = {
        "budget": args.budget, "corpus": corpus.name, "base": str(base.relative_to(ROOT)), **cost,
        "wall_s_measured_here": round(wall, 1),
        "stages": {k: {f: v.get(f) for f in ("status", "seconds", "step", "target_steps", "cause", "reason")
                       if v.get(f) is not None} for k, v in stages.items()},
        "voice": scores, "references": refs.rows,
        "goals": goals(scores, ceiling, cost["wall_s"]),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
