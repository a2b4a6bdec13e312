"""Commands that use a voice: synth and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxtrain.cli.common import app, fail, usage_error
from voxtrain.inference.plan import FOREIGN_TEXT_DEFAULT


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
    ] = FOREIGN_TEXT_DEFAULT,
    engine: Annotated[str, typer.Option(help="torch, or onnx: onnxruntime (no torch) on an `export --onnx` "
                                             "voice given as --checkpoint VOICE.onnx (HiFi-GAN built in).")] = "torch",
    stream: Annotated[bool, typer.Option("--stream", help="Write audio chunk by chunk as it is made (HiFi-GAN): "
                                                          "a growing WAV, or PCM on stdout (-o -).")] = False,
) -> None:
    """Synthesize text to WAV with a trained model and a neural vocoder."""
    if (text is None) == (text_file is None):
        usage_error("give exactly one of them", param="'--text' / '--text-file'")
    if str(out) == "-" and not stream:
        usage_error("'-' (PCM on stdout) needs --stream", param="'--out'")
    if stream and vocoder != "hifigan":
        usage_error("--stream runs HiFi-GAN over mel windows; Griffin-Lim needs the whole mel", param="'--vocoder'")
    misfit = (vocoder, vocoder_path) != ("hifigan", None) or precision not in ("auto", "fp32")
    if engine not in ("torch", "onnx") or (engine == "onnx" and misfit):
        usage_error(f"{engine!r}: choose torch, or onnx (fp32, HiFi-GAN built in: no --vocoder*, --precision)",
                     param="'--engine'")
    if text_file is not None:
        if not text_file.is_file():
            fail(f"--text-file {text_file}: no such file")
        texts = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = [text]
    from voxtrain.inference.entry import synthesize, synthesize_stream  # torch loads only for engine torch

    result = (synthesize_stream(texts, checkpoint, out, vocoder_path, pace, precision=precision,
                                foreign_text=foreign_text, engine=engine) if stream else
              synthesize(texts, checkpoint, out, vocoder, vocoder_path, pace, precision=precision,
                         foreign_text=foreign_text, engine=engine))
    for item in result:
        if stream:  # (where, stats), told on stderr: stdout may be the audio itself
            typer.echo(item[1].describe(item[0]), err=True)
        else:
            typer.echo(f"wrote {item}")



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
    from voxtrain.artifacts.layout import export_sidecar
    from voxtrain.artifacts.weights import export_checkpoint

    if vocoder_path is not None and not onnx:
        usage_error("a vocoder goes into --onnx exports only", param="'--vocoder-path'")
    if onnx:
        if out.suffix != ".onnx" or fp16:
            usage_error(f"{out}: an --onnx export must end in .onnx and is fp32 (no --fp16)", param="'OUT'")
        from voxtrain.export.onnx import export_onnx_voice

        typer.echo(export_onnx_voice(checkpoint, out, vocoder_path, stream=stream).describe())
        return
    if out.suffix != ".safetensors":
        usage_error(f"{out}: the export must end in .safetensors", param="'OUT'")
    export_checkpoint(checkpoint, out, fp16=fp16)
    typer.echo(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB) and {export_sidecar(out).name}")

