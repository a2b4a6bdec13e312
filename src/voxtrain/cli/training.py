"""`train` (foreground or detached) and its pre-flight."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from voxtrain.cli.common import EXIT_FAILURE, ConfigOpt, SetOpt, StopAtOpt, app, cli_config, fail, setup_logging

if TYPE_CHECKING:
    from voxtrain.train.engine import TrainResult
    from voxtrain.train.session import TrainOptions

FeaturesOpt = Annotated[Path, typer.Option("--features", "-f", help="Feature store written by `prepare`.")]
NewSymbolsOpt = Annotated[
    bool, typer.Option("--new-symbols", help="With --init-from: give symbols the base never learned fresh "
                                             "embedding rows (finetune.new_symbols) instead of refusing.")
]


def _overrides(set_: list[str] | None, new_symbols: bool) -> list[str]:
    return [*(set_ or []), *(["finetune.new_symbols=true"] if new_symbols else [])]


@app.command()
def train(
    features: FeaturesOpt,
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory (resumed if it has checkpoints).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    until_step: Annotated[
        int | None, typer.Option(help="Stop this invocation at this step (a stage target).")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Fine-tune: start a NEW run from these weights (.pt or .safetensors).")
    ] = None,
    skip_mismatched: Annotated[
        bool, typer.Option(help="With --init-from: keep tensors whose shapes differ freshly initialised.")
    ] = False,
    new_symbols: NewSymbolsOpt = False,
    stop_at: StopAtOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; log to RUN/logs/.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: bool = False,
) -> None:
    """Train (or resume, or fine-tune) to a stage target; SIGTERM/Ctrl-C saves and exits cleanly."""
    from voxtrain.ops.preflight import run_preflight

    cfg = cli_config(config, _overrides(set_, new_symbols))
    # Under `accelerate launch` / torchrun every rank runs this command; rank 0 speaks for all.
    is_rank0 = int(os.environ.get("RANK", "0")) == 0
    if is_rank0:
        confirm_start(run_preflight(cfg, features, run, init_from, skip_mismatched), "Start training?", yes)
    if detach:
        launch_in_background(run)
        return
    from voxtrain.train.session import TrainOptions

    _train_in_foreground(
        TrainOptions(run_dir=run, features=features, config=cfg, until_step=until_step,
                     init_from=init_from, skip_mismatched=skip_mismatched, stop_at=stop_at),
        verbose, is_rank0,
    )


def confirm_start(checks: list, question: str, yes: bool) -> None:
    """Print the pre-flight table; stop on a FAIL row, and ask before a start at a terminal."""
    from voxtrain.ops.preflight import failed_rows, print_preflight

    if not print_preflight(checks):
        fail(f"pre-flight failed: fix these rows, then run the same command again\n{failed_rows(checks)}")
    if sys.stdin.isatty() and not yes and not typer.confirm(question, default=True):
        typer.echo("not started", err=True)
        raise typer.Exit(EXIT_FAILURE)


def launch_in_background(run: Path) -> None:
    """Re-run this very command line (`train` or `train-vocoder`) detached, in the foreground there."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.ops.launcher import launch_detached, tail

    try:
        launch = launch_detached(sys.argv[1:], RunDir(run))
    except RuntimeError as err:
        fail(str(err))
    if launch.exited is not None:
        typer.echo(tail(launch.log_file), err=True)
        fail(f"the trainer exited during start-up with code {launch.exited}; log: {launch.log_file}")
    typer.echo(
        f"training in the background: pid {launch.pid}\n"
        f"  log:     {launch.log_file}\n"
        f"  monitor: voxtrain monitor {run}\n"
        f"  status:  voxtrain status {run}\n"
        f"  stop:    voxtrain stop {run}\n"
        f"  tail:    tail -f {launch.log_file}"
    )


def start_logging(run: Path, verbose: bool, is_rank0: bool = True) -> None:
    """The console, and (rank 0 in the foreground) a new log file in RUN/logs/."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.ops.launcher import DETACHED_ENV

    # A detached child's stdout already is its log file: a second log would double every line.
    is_child = os.environ.get(DETACHED_ENV) == "1"
    setup_logging(verbose, RunDir(run).new_log_file() if is_rank0 and not is_child else None)


def finish(result: TrainResult) -> NoReturn:
    """The harness's exit code, with its reason on stderr when the run did not end well."""
    if result.exit_code:
        typer.secho(result.reason, fg=typer.colors.RED, err=True)
    raise typer.Exit(result.exit_code)


def _train_in_foreground(opts: TrainOptions, verbose: bool, is_rank0: bool) -> NoReturn:
    from voxtrain.train.acoustic import train as run_training

    start_logging(opts.run_dir, verbose, is_rank0)
    finish(run_training(opts))


@app.command()
def preflight(
    features: FeaturesOpt,
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Plan a fine-tune from these weights: data, budget, symbols, disk.")
    ] = None,
    new_symbols: NewSymbolsOpt = False,
) -> None:
    """Check versions, device, config, features, disk, memory and the resume plan (with
    --init-from: the fine-tune's plan from its data)."""
    from voxtrain.ops.preflight import failed_rows, print_preflight, run_preflight

    cfg = cli_config(config, _overrides(set_, new_symbols))
    checks = run_preflight(cfg, features, run, init_from)
    if not print_preflight(checks):
        fail(f"pre-flight failed:\n{failed_rows(checks)}")

