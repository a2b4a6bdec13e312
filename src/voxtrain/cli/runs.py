"""Commands that read a run: status, monitor, stop, checkpoints, evaluate, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import EXIT_FAILURE, app, require_run_dir, usage_error


def stage_run(run: Path, quiet: bool = False) -> Path:
    """The run itself, or for a `voxtrain finetune` folder its current stage's run (said on stderr)."""
    from voxtrain.ops.finetune_records import pipeline_stage

    found = pipeline_stage(run) if run.is_dir() else None
    if found is None:
        return run
    if not quiet:
        typer.echo(found[1], err=True)
    return found[0]


@app.command()
def status(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    json_: Annotated[bool, typer.Option("--json", help="One JSON object for scripts.")] = False,
) -> None:
    """Is the run training? Step, target, loss, speed, ETA, last checkpoint. For a `voxtrain
    finetune` folder: where the pipeline is, and its current stage."""
    from voxtrain.ops.monitor import print_status

    require_run_dir(run)
    raise typer.Exit(print_status(stage_run(run, quiet=json_), as_json=json_))


@app.command()
def monitor(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 5.0,
    once: Annotated[bool, typer.Option(help="Print one snapshot and exit.")] = False,
    plain: Annotated[bool, typer.Option(help="Plain text instead of the live dashboard.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="One JSON snapshot for scripts.")] = False,
) -> None:
    """Live dashboard of a run: progress, losses, speed, ETA, checkpoints, disk, warnings."""
    from voxtrain.ops.monitor import monitor as run_monitor

    require_run_dir(run)
    raise typer.Exit(run_monitor(stage_run(run, quiet=json_), interval=interval, once=once, plain=plain, as_json=json_))


@app.command()
def stop(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the graceful save.")] = 300.0,
    force: Annotated[bool, typer.Option(help="SIGKILL after the timeout.")] = False,
) -> None:
    """Stop a run's trainer gracefully (SIGTERM: finish the step, save, exit)."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.ops.process import stop_trainer

    outcome = stop_trainer(RunDir(stage_run(run)), timeout=timeout, force=force)
    messages = {
        "not running": f"no trainer is running on {run}",
        "stopped": "stopped after saving a checkpoint",
        "exited": f"the trainer exited without recording a clean stop: see `voxtrain status {run}` and its log",
        "killed": f"did not stop within {timeout:.0f}s: killed (the last saved checkpoint is intact)",
        "timeout": f"still saving/stopping after {timeout:.0f}s; wait, or use --force",
    }
    ok = outcome in ("stopped", "not running", "killed")
    typer.echo(messages[outcome], err=not ok)
    raise typer.Exit(0 if ok else EXIT_FAILURE)



@app.command()
def checkpoints(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """List a run's checkpoints: step, time, size, validity, best, total disk use."""
    from voxtrain.ops.listing import print_checkpoints

    require_run_dir(run)
    print_checkpoints(run)


@app.command()
def evaluate(
    target: Annotated[Path, typer.Argument(help="A checkpoint (.pt or .safetensors), or a run directory.")],
    sentences: Annotated[Path | None, typer.Option(help="Held-out sentences, one per line.")] = None,
    features: Annotated[Path | None, typer.Option(help="The feature store: adds ceiling and floor rows.")] = None,
    corpus: Annotated[Path | None, typer.Option(help="The corpus with the real validation clips.")] = None,
    vocoder_path: Annotated[Path | None, typer.Option(help="A HiFi-GAN generator file (e.g. train-vocoder's "
                                                           "generator_best.pt) instead of the bundled one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Listening scores (WER, DNSMOS, speaker similarity) of a checkpoint or of every checkpoint
    of a run, with the ceiling and floor measured on the same sentences (needs the eval extra)."""
    from voxtrain.ops.evaluation import evaluate as run_evaluation
    from voxtrain.ops.evaluation import print_evaluation

    if not target.exists():
        usage_error(f"{target} does not exist", "target")
    result = run_evaluation(target, sentences, features, corpus, vocoder_path=vocoder_path)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
    else:
        print_evaluation(result)


@app.command()
def report(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN/report.html: curves, targets and their forecast, checkpoints with their scores,
    the latest alignment and every evaluation's clips, in one page that opens offline."""
    from voxtrain.report import write_report

    require_run_dir(run)
    typer.echo(f"wrote {write_report(run)}")

