"""The installation's smoke test and the resolved configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import EXIT_FAILURE, ConfigOpt, SetOpt, app, cli_config, config_app


@app.command("smoke-test")
def smoke_test(
    workdir: Annotated[
        Path | None, typer.Option(help="Empty or new folder to work in (default: a temporary one).")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the corpus, features, run and WAVs afterwards.")] = False,
) -> None:
    """Check the installation end to end in about a minute: tiny corpus, 10 steps, resume, synth."""
    import tempfile

    from voxtrain.ops.smoke import PASS, SKIP, print_smoke, run_smoke_test

    if keep and workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="voxtrain-smoke-"))  # made here so its path can be shown

    def progress(check) -> None:
        mark = {PASS: "ok", SKIP: "skipped"}.get(check.status, "FAILED")
        typer.echo(f"  {check.name}: {mark} ({check.seconds:.1f} s)", err=True)

    checks = run_smoke_test(workdir, keep=keep, on_check=progress)
    raise typer.Exit(0 if print_smoke(checks, workdir if keep else None) else EXIT_FAILURE)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration as YAML, every default filled in (a valid --config file)."""
    typer.echo(cli_config(config, set_).to_yaml(), nl=False)

