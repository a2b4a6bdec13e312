"""What every command shares: the app, the exit codes, the common options and failure helpers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from voxtrain.errors import VoxtrainError

if TYPE_CHECKING:  # the real imports stay inside the commands: `voxtrain --help` must not load torch
    from voxtrain.config import Config

# Exit codes, the same for every command:
#   0    done;
#   1    the command line was fine but the work failed: bad config contents, a missing or unreadable
#        corpus, feature store, run or checkpoint, a refused file, a failed pre-flight. Every
#        VoxtrainError a command lets out becomes `error: <message>` on stderr and exit 1, here
#        in `_App` and nowhere else: commands do not catch voxtrain's errors to call `fail`;
#   2    the command line itself is wrong, knowable from argv alone (click's own checks and ours:
#        conflicting options, a malformed path suffix), so scripts can tell "fix the call" from "retry";
#   3-5  `train` only: the engine's stop codes (3 non-finite loss, 4 no checkpoint could be saved,
#        5 out of memory even one clip at a time), passed through; the last good weights are saved;
#   130  interrupted by Ctrl-C.
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class _App(TyperGroup):
    """The root command: a VoxtrainError from any command is a runtime failure (exit 1).

    Translated here, inside the command tree, so it holds however the app is started: the
    `voxtrain` script, `python -m voxtrain`, or `app([...])` from Python.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VoxtrainError as err:
            fail(str(err))


app = typer.Typer(
    cls=_App,
    no_args_is_help=True,
    help="Train FastSpeech2 + HiFi-GAN voices and run the trainings like production jobs.",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration a command would run with.")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: built-in defaults).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: --set training.lr=2e-4 (repeatable).")
]
# A deadline (seconds since the epoch) by which a training stage validates, saves and ends:
# how `voxtrain finetune` keeps its budget. Hidden: a person gives `finetune --budget`.
StopAtOpt = Annotated[float | None, typer.Option("--stop-at", hidden=True)]


def _print_version(value: bool) -> None:
    if value:
        from voxtrain import __version__

        typer.echo(f"voxtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    # No docstring on purpose: the app's help above is the one shown.
    pass


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=handlers,
        force=True,
    )


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """A runtime failure: the message on stderr, exit 1 (see the table above)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def usage_error(message: str, param: str) -> NoReturn:
    """A wrong command line: shown like click's own usage errors (usage line, then the error), exit 2."""
    # typer.BadParameter, not click's: newer typers vendor their own click and catch only its exceptions.
    raise typer.BadParameter(message, param_hint=param)


def cli_config(path: Path | None, overrides: list[str] | None) -> Config:
    from voxtrain.config import load_config

    return load_config(path, overrides or [])


def require_run_dir(run: Path) -> None:
    # Checked here rather than left to the ops functions, so every command that reads a run
    # reports a missing one the same way: on stderr, exit 1.
    if not run.is_dir():
        fail(f"no run directory at {run}")
