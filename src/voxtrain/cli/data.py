"""Commands that make data: a demo corpus, and the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import EXIT_INTERRUPTED, ConfigOpt, SetOpt, app, cli_config


@app.command()
def prepare(
    corpus: Annotated[Path, typer.Argument(help="LJSpeech-format folder: metadata.csv + wavs/.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature store directory to write (resumable).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: core count).")] = None,
) -> None:
    """Turn a corpus into a compact feature store (mel, pitch, energy, phoneme ids)."""
    from voxtrain.data import prepare_corpus

    cfg = cli_config(config, set_)
    try:
        report = prepare_corpus(corpus, out, cfg, workers=workers, progress=True)
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
    seed: Annotated[int, typer.Option(help="Seed of the sentence selection (and of --degrade's noise).")] = 0,
    speaker_shift: Annotated[float, typer.Option(
        help="Another speaker by resampling: pitch and formants times this factor (0.6-1.6; 1.15 = 15% "
             "higher), duration divided by it unless --keep-tempo.")] = 1.0,
    keep_tempo: Annotated[bool, typer.Option(
        "--keep-tempo", help="Time-stretch a shifted clip back to its original duration.")] = False,
    degrade: Annotated[str | None, typer.Option(
        help="Channel preset: phone (300-3400 Hz band, noise at 15 dB SNR) or noisy (noise at 10 dB).")] = None,
    espeak_voice: Annotated[str, typer.Option(
        help="espeak-ng voice, with an optional variant as another speaker (en-us+f3, en-us+m3).")] = "en-us",
) -> None:
    """Write a demo corpus spoken by a pretrained voice, from voxtrain's own sentence list."""
    from voxtrain.demo_corpus import make_corpus

    summary = make_corpus(out, voice=voice, n_sentences=sentences, seed=seed, progress=True,
                          speaker_shift=speaker_shift, keep_tempo=keep_tempo, degrade=degrade,
                          espeak_voice=espeak_voice)
    typer.echo(f"wrote {summary.n_clips} clips ({summary.seconds / 60:.1f} min, voice {summary.speaker}) to {out}")

