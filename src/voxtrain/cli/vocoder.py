"""`train-vocoder`: fine-tune the HiFi-GAN generator to a new speaker."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import EXIT_FAILURE, ConfigOpt, SetOpt, app, cli_config, fail, setup_logging


@app.command("train-vocoder")
def train_vocoder(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", "-k", help="The acoustic model (.pt or .safetensors) trained on --features.")],
    features: Annotated[Path, typer.Option("--features", "-f", help="Feature store the acoustic model trained on.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="The corpus folder `prepare` made the store from.")],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory of the fine-tune (resumed if it has "
                                                          "checkpoints).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    until_step: Annotated[
        int | None, typer.Option(help="Stop this invocation at this step (a stage target).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: bool = False,
) -> None:
    """Fine-tune the HiFi-GAN generator on the acoustic model's teacher-forced mels of the corpus;
    the best generator goes to RUN/checkpoints/generator_best.pt, and the whole voice (the acoustic
    model, its sidecar naming that generator) to RUN/checkpoints/best.safetensors for synth/export.
    SIGTERM/Ctrl-C saves and exits cleanly; the same command resumes exactly."""
    cfg = cli_config(config, set_)
    if sys.stdin.isatty() and not yes and not typer.confirm("Start the vocoder fine-tune?", default=True):
        typer.echo("not started", err=True)
        raise typer.Exit(EXIT_FAILURE)
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.lock import RunLockedError
    from voxtrain.artifacts.store import StoreError
    from voxtrain.vocoder_training import VocoderTrainingError
    from voxtrain.vocoder_training import train_vocoder as run_fine_tune

    setup_logging(verbose, RunDir(run).new_log_file())
    try:
        result = run_fine_tune(checkpoint, features, corpus, run, cfg, until_step)
    except (StoreError, VocoderTrainingError, RunLockedError) as err:
        fail(str(err))
    if result.exit_code:
        typer.secho(result.reason, fg=typer.colors.RED, err=True)
    elif result.best_step is not None:
        typer.echo(f"best generator: step {result.best_step}, val_mel {result.best_val_mel:.4f} -> "
                   f"{RunDir(run).vocoder_export}")
    raise typer.Exit(result.exit_code)
