"""`finetune`: a folder of recordings and a base voice to a finished voice, in a time budget."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import EXIT_FAILURE, ConfigOpt, SetOpt, app, fail, setup_logging
from voxtrain.cli.training import launch_in_background


def parse_minutes(text: str) -> float:
    """`10m`, `90s`, `1.5h` or a bare number of minutes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r}: give minutes (10 or 10m), seconds (90s) or hours (1.5h)")
    value, unit = float(match.group(1)), match.group(2) or "m"
    return value * {"s": 1 / 60, "m": 1.0, "h": 60.0}[unit]


@app.command()
def finetune(
    base: Annotated[Path, typer.Option("--base", "-b", help="The voice to adapt (.safetensors or .pt).")],
    corpus: Annotated[Path, typer.Option("--corpus", help="The new speaker's recordings: metadata.csv + wavs/.")],
    run: Annotated[Path, typer.Option("--run", "-r", help="The pipeline's folder (continued if it exists).")],
    budget: Annotated[str | None, typer.Option(
        help="Wall-clock time for everything: 10m, 600s, 1h (default: finetune.budget_minutes).")] = None,
    features: Annotated[Path | None, typer.Option(
        "--features", "-f", help="A feature store prepared from --corpus already (else RUN/features).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write the piper voice RUN/voice.onnx (+ .onnx.json).")]
    = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; log to RUN/logs/.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: bool = False,
) -> None:
    """Prepare the corpus, fine-tune the acoustic model and the vocoder within the budget, and write
    the voice to RUN/voice.safetensors (synth, evaluate and export take it as it is). Stopped or
    killed, the same command continues where it was and never redoes a finished stage."""
    from voxtrain.ops.finetune import FinetuneRequest, run_finetune

    minutes = parse_minutes(budget) if budget is not None else None
    if detach:  # the plan goes to the log; `voxtrain status RUN` shows where the pipeline is
        launch_in_background(run)
        return
    # The console only: each stage logs into its own run, and a detached pipeline into RUN/logs/.
    setup_logging(verbose)

    def confirm(rows: list[str]) -> None:
        typer.echo("fine-tune plan:\n  " + "\n  ".join(rows), err=True)
        if sys.stdin.isatty() and not yes and not typer.confirm("Start?", default=True):
            typer.echo("not started", err=True)
            raise typer.Exit(EXIT_FAILURE)

    outcome = run_finetune(FinetuneRequest(base, corpus, run, config, list(set_ or []), minutes, features, onnx),
                           confirm)
    if outcome.exit_code:
        fail(outcome.message, outcome.exit_code)
    typer.echo(outcome.message)
