"""`train-vocoder`: fine-tune the HiFi-GAN generator to a new speaker, on the same harness as `train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import ConfigOpt, SetOpt, StopAtOpt, app, cli_config
from voxtrain.cli.training import confirm_start, finish, launch_in_background, start_logging


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
    stop_at: StopAtOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; log to RUN/logs/.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: bool = False,
) -> None:
    """Fine-tune the HiFi-GAN generator on the acoustic model's teacher-forced mels of the corpus;
    the best generator goes to RUN/checkpoints/generator_best.pt, and the whole voice (the acoustic
    model, its sidecar naming that generator) to RUN/checkpoints/best.safetensors for synth/export.
    SIGTERM/Ctrl-C (or `voxtrain stop`) saves and exits cleanly; the same command resumes exactly."""
    from voxtrain.ops.preflight import run_vocoder_preflight

    cfg = cli_config(config, set_)
    # Under `accelerate launch` / torchrun every rank runs this command; rank 0 speaks for all.
    is_rank0 = int(os.environ.get("RANK", "0")) == 0
    if is_rank0:
        checks = run_vocoder_preflight(cfg, checkpoint, features, corpus, run)
        confirm_start(checks, "Start the vocoder fine-tune?", yes)
    if detach:
        launch_in_background(run)
        return
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.vocoder_training import train_vocoder as run_fine_tune

    start_logging(run, verbose, is_rank0)
    result = run_fine_tune(checkpoint, features, corpus, run, cfg, until_step, stop_at)
    if not result.exit_code and result.best_step is not None:
        typer.echo(f"best generator: step {result.best_step}, val_mel {result.best_val_mel:.4f} -> "
                   f"{RunDir(run).vocoder_export}")
    finish(result)
