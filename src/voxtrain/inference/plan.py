"""The synthesis plan: which texts to speak, where each one goes, and what to do with letters
outside the voice's language. The one rule of every synth entry point (both voices, whole or
streamed), and the one home of the foreign-text default.

Cheap to import (no torch, no text front end): the CLI reads FOREIGN_TEXT_DEFAULT at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voxtrain.inference.errors import SynthError

# spell: espeak-ng reads foreign letters by their names, with a warning (the policies:
# voxtrain.text.speakable.FOREIGN_TEXT). A voice should say every text it is given.
FOREIGN_TEXT_DEFAULT = "spell"


@dataclass(frozen=True)
class SynthesisPlan:
    """texts: stripped, none empty; paths: one WAV per text, or None for raw PCM on stdout."""

    texts: list[str]
    paths: list[Path] | None
    foreign_text: str = FOREIGN_TEXT_DEFAULT


def synthesis_outputs(n_texts: int, out: Path) -> list[Path]:
    """Where `synth` writes: `out` itself for one text and a .wav name, else out/001.wav, ...
    Raises ValueError for several texts and a .wav name."""
    out = Path(out)
    if n_texts == 1 and out.suffix.lower() == ".wav":
        return [out]
    if out.suffix.lower() == ".wav":
        raise ValueError(f"{n_texts} texts need a directory for --out, not the file {out}")
    return [out / f"{i + 1:03d}.wav" for i in range(n_texts)]


def plan_synthesis(text: str | list[str], out: str | Path, foreign_text: str = FOREIGN_TEXT_DEFAULT,
                   stdout_allowed: bool = False) -> SynthesisPlan:
    """The plan of one synth call, or SynthError saying why it cannot be made: no text, several
    texts for one .wav, an unknown policy. out "-" is stdout, where `stdout_allowed` (streaming)."""
    from voxtrain.text.speakable import TextRefused, check_foreign_policy

    try:
        check_foreign_policy(foreign_text)
    except TextRefused as err:
        raise SynthError(str(err)) from None
    texts = [text] if isinstance(text, str) else list(text)
    texts = [t for t in (t.strip() for t in texts) if t]
    if not texts:
        raise SynthError("no text to synthesize")
    if stdout_allowed and str(out) == "-":
        return SynthesisPlan(texts, None, foreign_text)
    try:
        return SynthesisPlan(texts, synthesis_outputs(len(texts), Path(out)), foreign_text)
    except ValueError as err:
        raise SynthError(str(err)) from None
