"""`voxtrain evaluate`: listening scores of a checkpoint or of every checkpoint of a run,
beside the ceiling and floor rows measured on the same sentences."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from voxtrain.listening import Evaluation, evaluate_checkpoint, evaluate_run, read_sentences
from voxtrain.metrics import MEASURED


def evaluate(target: Path, sentences_file: Path | None = None, features: Path | None = None,
             corpus: Path | None = None, references: bool = True, vocoder_path: Path | None = None) -> Evaluation:
    """Score `target`: a run directory (every checkpoint and the best export) or one checkpoint,
    voiced by the bundled HiFi-GAN or by `vocoder_path` (a `train-vocoder` generator)."""
    sentences = read_sentences(sentences_file) if sentences_file else None
    if target.is_dir():
        return evaluate_run(target, sentences, features=features, corpus=corpus, vocoder_path=vocoder_path)
    return evaluate_checkpoint(target, sentences, features=features, corpus=corpus, references=references,
                               vocoder_path=vocoder_path)


def print_evaluation(evaluation: Evaluation, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"listening scores on {len(evaluation.sentences)} held-out sentences")
    for col in ("row", "kind", *MEASURED, "clips"):
        table.add_column(col, justify="left" if col in ("row", "kind") else "right")
    for row in evaluation.rows:
        cells = ["" if row.scores.get(c) is None else f"{row.scores[c]:.3f}" for c in MEASURED]
        table.add_row(row.name, row.kind, *cells, str(row.n_clips))
    console.print(table)
    reference = evaluation.similarity_reference
    if reference:
        console.print(f"similarity against: {reference.get('label', reference)}")
    for row in evaluation.rows:
        for scorer, error in row.errors.items():
            console.print(f"[red]{row.name}: scorer {scorer} failed: {error}[/red]")
        for r in row.refused:
            console.print(f"[yellow]{row.name}: sentence {r.index + 1} skipped: {r.why}[/yellow]")
    console.print(f"{evaluation.seconds:.0f} s")
