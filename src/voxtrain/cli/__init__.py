"""Command line: a thin layer over functions a user can call from Python.

One module per kind of command; each registers on the shared `app` of `common`, and the
order of the imports below is the order of `voxtrain --help`. Every command imports its
real work inside its body, so `voxtrain --help` never loads torch.
"""

from __future__ import annotations

# isort: off
from voxtrain.cli import data, training, vocoder, finetune, runs, voice, checks  # noqa: F401  (registers the commands)
# isort: on
from voxtrain.cli.common import app


def main() -> None:
    """The `voxtrain` command, also behind `python -m voxtrain` and `python -m voxtrain.cli`."""
    # A fixed name, so help and shell completion say `voxtrain` however the CLI was started.
    app(prog_name="voxtrain")


__all__ = ["app", "main"]
