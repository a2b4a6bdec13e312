"""Command line: a thin layer over functions a user can call from Python."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:  # the real imports stay inside the commands: `voxtrain --help` must not load torch
    from voxtrain.config import Config
    from voxtrain.train.session import TrainOptions

# Exit codes, the same for every command:
#   0    done;
#   1    the command line was fine but the work failed: bad config contents, a missing or unreadable
#        corpus, feature store, run or checkpoint, a refused file, a failed pre-flight;
#   2    the command line itself is wrong, knowable from argv alone (click's own checks and ours:
#        conflicting options, a malformed path suffix), so scripts can tell "fix the call" from "retry";
#   3-5  `train` only: the engine's stop codes (3 non-finite loss, 4 no checkpoint could be saved,
#        5 out of memory even one clip at a time), passed through; the last good weights are saved;
#   130  interrupted by Ctrl-C.
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

app = typer.Typer(
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


def _setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
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


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """A runtime failure: the message on stderr, exit 1 (see the table above)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _usage_error(message: str, param: str) -> NoReturn:
    """A wrong command line: shown like click's own usage errors (usage line, then the error), exit 2."""
    # typer.BadParameter, not click's: newer typers vendor their own click and catch only its exceptions.
    raise typer.BadParameter(message, param_hint=param)


def _config(path: Path | None, overrides: list[str] | None) -> Config:
    from voxtrain.config import ConfigError, load_config

    try:
        return load_config(path, overrides or [])
    except ConfigError as err:
        _fail(str(err))


def _require_run_dir(run: Path) -> None:
    # Checked here rather than left to the ops functions, so every command that reads a run
    # reports a missing one the same way: on stderr, exit 1.
    if not run.is_dir():
        _fail(f"no run directory at {run}")


@app.command()
def prepare(
    corpus: Annotated[Path, typer.Argument(help="LJSpeech-format folder: metadata.csv + wavs/.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature store directory to write (resumable).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: core count).")] = None,
) -> None:
    """Turn a corpus into a compact feature store (mel, pitch, energy, phoneme ids)."""
    from voxtrain.data import PrepareError, prepare_corpus

    cfg = _config(config, set_)
    try:
        report = prepare_corpus(corpus, out, cfg, workers=workers, progress=True)
    except PrepareError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        # Shards are written atomically and reused by the next run, so nothing finished is lost.
        typer.echo(
            f"\ninterrupted: the finished shards in {out} are kept; run the same command again to resume",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(report.summary() if hasattr(report, "summary") else str(report))


@app.command("make-corpus")
def make_corpus_cmd(
    out: Annotated[Path, typer.Argument(help="Directory of the LJSpeech-format corpus to write.")],
    voice: Annotated[str, typer.Option(help="piper (natural, needs the demo extra) or espeak (fast).")] = "piper",
    sentences: Annotated[int, typer.Option("--sentences", "-n", help="Number of sentences.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the sentence selection.")] = 0,
) -> None:
    """Write a demo corpus spoken by a pretrained voice, from voxtrain's own sentence list."""
    from voxtrain.demo_corpus import CorpusError, make_corpus

    try:
        summary = make_corpus(out, voice=voice, n_sentences=sentences, seed=seed, progress=True)
    except CorpusError as err:
        _fail(str(err))
    typer.echo(f"wrote {summary.n_clips} clips ({summary.seconds / 60:.1f} min, voice {summary.voice}) to {out}")


@app.command()
def train(
    features: Annotated[Path, typer.Option("--features", "-f", help="Feature store written by `prepare`.")],
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
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; log to RUN/logs/.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: bool = False,
) -> None:
    """Train (or resume, or fine-tune) to a stage target; SIGTERM/Ctrl-C saves and exits cleanly."""
    from voxtrain.ops.preflight import print_preflight, run_preflight

    cfg = _config(config, set_)
    # Under `accelerate launch` / torchrun every rank runs this command; rank 0 speaks for all.
    is_rank0 = int(os.environ.get("RANK", "0")) == 0
    if is_rank0 and not print_preflight(run_preflight(cfg, features, run)):
        _fail("pre-flight failed: fix the FAIL rows above")
    if is_rank0 and sys.stdin.isatty() and not yes and not typer.confirm("Start training?", default=True):
        typer.echo("not started", err=True)
        raise typer.Exit(EXIT_FAILURE)
    if detach:
        # argv after `train`: the child re-runs this very command in the foreground.
        _launch_in_background(sys.argv[2:], run)
        return
    from voxtrain.train.session import TrainOptions

    _train_in_foreground(
        TrainOptions(run_dir=run, features=features, config=cfg, until_step=until_step,
                     init_from=init_from, skip_mismatched=skip_mismatched),
        verbose, is_rank0,
    )


def _launch_in_background(train_argv: list[str], run: Path) -> None:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.ops.launcher import launch_detached, tail

    try:
        launch = launch_detached(train_argv, RunDir(run))
    except RuntimeError as err:
        _fail(str(err))
    if launch.exited is not None:
        typer.echo(tail(launch.log_file), err=True)
        _fail(f"the trainer exited during start-up with code {launch.exited}; log: {launch.log_file}")
    typer.echo(
        f"training in the background: pid {launch.pid}\n"
        f"  log:     {launch.log_file}\n"
        f"  monitor: voxtrain monitor {run}\n"
        f"  status:  voxtrain status {run}\n"
        f"  stop:    voxtrain stop {run}\n"
        f"  tail:    tail -f {launch.log_file}"
    )


def _train_in_foreground(opts: TrainOptions, verbose: bool, is_rank0: bool) -> NoReturn:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.lock import RunLockedError
    from voxtrain.artifacts.store import StoreError
    from voxtrain.ops.launcher import DETACHED_ENV
    from voxtrain.train.engine import train as run_training
    from voxtrain.train.session import SessionError

    # A detached child's stdout already is its log file: a second log would double every line.
    is_child = os.environ.get(DETACHED_ENV) == "1"
    _setup_logging(verbose, RunDir(opts.run_dir).new_log_file() if is_rank0 and not is_child else None)
    try:
        result = run_training(opts)
    except (StoreError, SessionError, RunLockedError) as err:
        _fail(str(err))
    if result.exit_code:
        typer.secho(result.reason, fg=typer.colors.RED, err=True)
    raise typer.Exit(result.exit_code)


@app.command()
def preflight(
    features: Annotated[Path, typer.Option("--features", "-f", help="Feature store written by `prepare`.")],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check versions, device, config, features, disk, memory and the resume plan."""
    from voxtrain.ops.preflight import print_preflight, run_preflight

    ok = print_preflight(run_preflight(_config(config, set_), features, run))
    raise typer.Exit(0 if ok else EXIT_FAILURE)


@app.command()
def status(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    json_: Annotated[bool, typer.Option("--json", help="One JSON object for scripts.")] = False,
) -> None:
    """Is the run training? Step, target, loss, speed, ETA, last checkpoint."""
    from voxtrain.ops.monitor import print_status

    _require_run_dir(run)
    raise typer.Exit(print_status(run, as_json=json_))


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

    _require_run_dir(run)
    raise typer.Exit(run_monitor(run, interval=interval, once=once, plain=plain, as_json=json_))


@app.command()
def stop(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the graceful save.")] = 300.0,
    force: Annotated[bool, typer.Option(help="SIGKILL after the timeout.")] = False,
) -> None:
    """Stop a run's trainer gracefully (SIGTERM: finish the step, save, exit)."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.ops.process import stop_trainer

    outcome = stop_trainer(RunDir(run), timeout=timeout, force=force)
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
def synth(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-k", help="Checkpoint .pt or exported .safetensors.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .wav (one text) or directory; with --stream, "
                                                        "'-' is raw 16-bit mono PCM on stdout.")],
    text: Annotated[str | None, typer.Option("--text", "-t", help="Text to speak.")] = None,
    text_file: Annotated[Path | None, typer.Option(help="File with one sentence per line.")] = None,
    vocoder: Annotated[str, typer.Option(help="hifigan or griffin-lim.")] = "hifigan",
    vocoder_path: Annotated[Path | None, typer.Option(help="A jik876-format HiFi-GAN generator file.")] = None,
    pace: Annotated[float, typer.Option(help="Speaking rate: 1.0 normal, 1.2 faster.")] = 1.0,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on CPUs/GPUs with native bf16, else fp32), fp32, bf16 or fp16.")
    ] = "auto",
    foreign_text: Annotated[
        str, typer.Option(help="Letters outside the voice's language (e.g. Japanese for an English voice): "
                               "spell (espeak reads their names), drop, or refuse. Always named in a warning.")
    ] = "spell",
    engine: Annotated[str, typer.Option(help="torch, or onnx: onnxruntime (no torch) on an `export --onnx` "
                                             "voice given as --checkpoint VOICE.onnx (HiFi-GAN built in).")] = "torch",
    stream: Annotated[bool, typer.Option("--stream", help="Write audio chunk by chunk as it is made (HiFi-GAN): "
                                                          "a growing WAV, or PCM on stdout (-o -).")] = False,
) -> None:
    """Synthesize text to WAV with a trained model and a neural vocoder."""
    if (text is None) == (text_file is None):
        _usage_error("give exactly one of them", param="'--text' / '--text-file'")
    if str(out) == "-" and not stream:
        _usage_error("'-' (PCM on stdout) needs --stream", param="'--out'")
    if stream and vocoder != "hifigan":
        _usage_error("--stream runs HiFi-GAN over mel windows; Griffin-Lim needs the whole mel", param="'--vocoder'")
    misfit = (vocoder, vocoder_path) != ("hifigan", None) or precision not in ("auto", "fp32")
    if engine not in ("torch", "onnx") or (engine == "onnx" and misfit):
        _usage_error(f"{engine!r}: choose torch, or onnx (fp32, HiFi-GAN built in: no --vocoder*, --precision)",
                     param="'--engine'")
    if text_file is not None:
        if not text_file.is_file():
            _fail(f"--text-file {text_file}: no such file")
        texts = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = [text]
    if engine == "onnx":  # imported alone: the onnx engine runs without torch
        from voxtrain.export.engine import OnnxVoiceError, synthesize_onnx, synthesize_onnx_stream

        try:
            result = (synthesize_onnx_stream if stream else synthesize_onnx)(texts, checkpoint, out, pace, None,
                                                                              foreign_text)
        except OnnxVoiceError as err:
            _fail(str(err))
    else:
        from voxtrain.synth import SynthError, synthesize, synthesize_stream
        from voxtrain.vocoder import VocoderError

        try:
            result = (synthesize_stream(texts, checkpoint, out, vocoder_path, pace, precision=precision,
                                        foreign_text=foreign_text) if stream else
                      synthesize(texts, checkpoint, out, vocoder, vocoder_path, pace, precision=precision,
                                 foreign_text=foreign_text))
        except (SynthError, VocoderError) as err:
            _fail(str(err))
    for item in result:
        if stream:  # (where, stats), told on stderr: stdout may be the audio itself
            typer.echo(item[1].describe(item[0]), err=True)
        else:
            typer.echo(f"wrote {item}")


@app.command()
def checkpoints(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """List a run's checkpoints: step, time, size, validity, best, total disk use."""
    from voxtrain.ops.listing import print_checkpoints

    _require_run_dir(run)
    print_checkpoints(run)


@app.command()
def evaluate(
    target: Annotated[Path, typer.Argument(help="A checkpoint (.pt or .safetensors), or a run directory.")],
    sentences: Annotated[Path | None, typer.Option(help="Held-out sentences, one per line.")] = None,
    features: Annotated[Path | None, typer.Option(help="The feature store: adds ceiling and floor rows.")] = None,
    corpus: Annotated[Path | None, typer.Option(help="The corpus with the real validation clips.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Listening scores (WER, DNSMOS, speaker similarity) of a checkpoint or of every checkpoint
    of a run, with the ceiling and floor measured on the same sentences (needs the eval extra)."""
    from voxtrain.listening import ListeningUnavailable, SentenceError
    from voxtrain.ops.evaluation import evaluate as run_evaluation
    from voxtrain.ops.evaluation import print_evaluation
    from voxtrain.synth import SynthError

    if not target.exists():
        _usage_error(f"{target} does not exist", "target")
    try:
        result = run_evaluation(target, sentences, features, corpus)
    except (ListeningUnavailable, SentenceError, SynthError, FileNotFoundError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
    else:
        print_evaluation(result)


@app.command()
def report(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN/report.html: curves, targets and their forecast, checkpoints with their scores,
    the latest alignment and every evaluation's clips, in one page that opens offline."""
    from voxtrain.report import write_report

    _require_run_dir(run)
    typer.echo(f"wrote {write_report(run)}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint .pt to export (--onnx: or a .safetensors).")],
    out: Annotated[Path, typer.Argument(help="Output .safetensors path (a .json sidecar is written beside it).")],
    fp16: Annotated[bool, typer.Option(help="Store weights in float16 (half the size).")] = False,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write OUT.onnx (+ .onnx.json): model and HiFi-GAN as one "
                                                      "piper voice, only if it speaks like PyTorch.")] = False,
    vocoder_path: Annotated[Path | None, typer.Option(help="--onnx: a jik876 HiFi-GAN generator file.")] = None,
    stream: Annotated[bool, typer.Option(help="--onnx: also write OUT.acoustic.onnx and OUT.vocoder.onnx, which "
                                              "`synth --engine onnx --stream` needs (piper does not).")] = True,
) -> None:
    """Export inference weights (safetensors + JSON with config and symbols) that `synth` loads."""
    from voxtrain.artifacts.checkpoints import CheckpointError
    from voxtrain.artifacts.layout import export_sidecar
    from voxtrain.artifacts.weights import export_checkpoint

    if vocoder_path is not None and not onnx:
        _usage_error("a vocoder goes into --onnx exports only", param="'--vocoder-path'")
    if onnx:
        if out.suffix != ".onnx" or fp16:
            _usage_error(f"{out}: an --onnx export must end in .onnx and is fp32 (no --fp16)", param="'OUT'")
        from voxtrain.export.onnx import ExportError, export_onnx_voice

        try:
            typer.echo(export_onnx_voice(checkpoint, out, vocoder_path, stream=stream).describe())
        except ExportError as err:
            _fail(str(err))
        return
    if out.suffix != ".safetensors":
        _usage_error(f"{out}: the export must end in .safetensors", param="'OUT'")
    try:
        export_checkpoint(checkpoint, out, fp16=fp16)
    except CheckpointError as err:
        _fail(str(err))
    typer.echo(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB) and {export_sidecar(out).name}")


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

    try:
        checks = run_smoke_test(workdir, keep=keep, on_check=progress)
    except ValueError as err:
        _fail(str(err))
    raise typer.Exit(0 if print_smoke(checks, workdir if keep else None) else EXIT_FAILURE)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration as YAML, every default filled in (a valid --config file)."""
    typer.echo(_config(config, set_).to_yaml(), nl=False)


def main() -> None:
    """The `voxtrain` command, also behind `python -m voxtrain` and `python -m voxtrain.cli`."""
    # A fixed name, so help and shell completion say `voxtrain` however the CLI was started.
    app(prog_name="voxtrain")


if __name__ == "__main__":
    main()
