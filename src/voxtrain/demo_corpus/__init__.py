"""`voxtrain make-corpus`: a synthetic LJSpeech-format corpus for demos, smoke tests and speaker
adaptation.

Two voices render the sentences in resources/sentences.txt:

- ``piper`` (piper.py): the joe (en_US, medium) voice of the `demo` extra, natural prosody, run
  as a separate program; it reports per-phoneme durations when piper's http server can run.
- ``espeak`` (espeak.py): libespeak-ng through ctypes; robotic but near-instant, and its voice
  variants (``en-us+f3``) are other speakers.

Other speakers for adaptation come from transforms of every rendered clip (options.py,
transforms.py): a speaker shift by resampling (pitch and formants move together), optionally
time-stretched back to the original tempo, and a degraded channel (telephone band plus noise).

The synthesizers read the normalized text, so the audio matches metadata column 3 exactly.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rich.progress as rp
import soundfile as sf
from rich.text import Text

from voxtrain.atomic import write_text_atomic
from voxtrain.demo_corpus.espeak import DEFAULT_ESPEAK_VOICE, _Espeak, _espeak_clips, espeak_variants
from voxtrain.demo_corpus.options import DEGRADE_PRESETS, SPEAKER_SHIFT_RANGE, Channel, VoiceOptions
from voxtrain.demo_corpus.piper import (
    MISSING_PIPER,
    PIPER_HOP_LENGTH,
    PIPER_VOICE_NAME,
    PIPER_VOICE_PACKAGE,
    _piper_cli_clips,
    _piper_python,
    _piper_server_clips,
    _server_supported,
    find_piper_executable,
    find_piper_voice,
)
from voxtrain.demo_corpus.sentences import (
    HELDOUT_PATH,
    RESOURCES,
    SENTENCES_PATH,
    CorpusError,
    load_sentences,
    select_sentences,
)
from voxtrain.demo_corpus.transforms import to_pcm16
from voxtrain.text import normalize_text

__all__ = [
    "DEFAULT_ESPEAK_VOICE", "DEGRADE_PRESETS", "HELDOUT_PATH", "MISSING_PIPER", "PIPER_HOP_LENGTH",
    "PIPER_VOICE_NAME", "PIPER_VOICE_PACKAGE", "RESOURCES", "SENTENCES_PATH", "SPEAKER_SHIFT_RANGE", "Channel",
    "CorpusError", "CorpusSummary", "VoiceOptions", "espeak_variants", "find_piper_executable",
    "find_piper_voice", "load_sentences", "make_corpus", "select_sentences", "_Espeak", "_piper_python",
    "_server_supported",
]

Aligned = tuple[list[str], list[float]] | None


@dataclass
class CorpusSummary:
    n_clips: int
    seconds: float
    voice: str
    out_dir: Path
    with_alignments: bool
    speaker: str = ""  # the voice with its transforms, e.g. "piper shift 1.15 keep-tempo"


class _RateColumn(rp.ProgressColumn):
    def render(self, task: rp.Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- clips/s" if speed is None else f"{speed:.1f} clips/s", style="cyan")


def _progress(enabled: bool, total: int, label: str) -> tuple[AbstractContextManager, Callable[[], None]]:
    if not enabled:
        return nullcontext(), lambda: None
    bar = rp.Progress(rp.TextColumn(label), rp.BarColumn(), rp.MofNCompleteColumn(), _RateColumn(),
                      rp.TimeElapsedColumn())
    task = bar.add_task(label, total=total)
    return bar, lambda: bar.advance(task)


def _alignment_record(clip_id: str, phonemes: list[str], seconds: list[float], sample_rate: int,
                      n_samples: int) -> dict | None:
    # Phoneme boundaries are rounded to frames, not each duration: after a transform scales the
    # times, per-phoneme rounding errors would add up along the clip; boundary rounding keeps
    # the sum within half a frame of the clip (piper's own whole-frame durations are unchanged).
    bounds = np.rint(np.cumsum([0.0, *seconds]) * sample_rate / PIPER_HOP_LENGTH).astype(int)
    frames = [int(d) for d in np.diff(bounds)]
    # A chunk piper could not align is silently missing from its list; the sum catches that.
    if abs(sum(frames) * PIPER_HOP_LENGTH - n_samples) > PIPER_HOP_LENGTH:
        return None
    return {"id": clip_id, "phonemes": phonemes, "durations": frames, "unit": "frames",
            "hop_length": PIPER_HOP_LENGTH, "sample_rate": sample_rate}


def make_corpus(
    out_dir: Path,
    voice: Literal["piper", "espeak"] = "piper",
    n_sentences: int = 400,
    seed: int = 0,
    progress: bool = True,
    sentences: list[str] | None = None,
    *,
    speaker_shift: float = 1.0,
    keep_tempo: bool = False,
    degrade: str | None = None,
    espeak_voice: str = DEFAULT_ESPEAK_VOICE,
) -> CorpusSummary:
    """Render n sentences (or the given `sentences`) into out_dir as LJSpeech metadata + wavs.

    The wavs are mono 16-bit PCM at 22050 Hz (both voices' own rate); `prepare` resamples.
    With piper's alignment support, alignments.jsonl holds one line per clip: piper's phonemes
    (``^``/``$`` mark sentence start/end, each phoneme's duration includes the pad after it)
    and their durations in frames of ``hop_length`` samples at ``sample_rate``.

    Another speaker (see VoiceOptions): `speaker_shift` resamples every clip (pitch and formants
    times the factor, duration divided by it; alignments follow), `keep_tempo` stretches it
    back to its rendered duration, `degrade` names a channel preset of DEGRADE_PRESETS
    (``"phone"``), whose noise is seeded by `seed` and the clip's index, and `espeak_voice`
    picks espeak's voice or variant (``"en-us+f3"``). Bad values raise CorpusError.
    Rerunning into the same folder replaces the files a previous run wrote.
    """
    if voice not in ("piper", "espeak"):
        raise CorpusError(f"unknown voice {voice!r}: use 'piper' or 'espeak'")
    options = VoiceOptions(speaker_shift, keep_tempo, degrade, espeak_voice)
    options.check(voice)
    out_dir = Path(out_dir)
    sentences = list(sentences) if sentences is not None else select_sentences(n_sentences, seed)
    # Fail before touching out_dir when the demo extra is missing. The package is read from this
    # module, where callers (and tests) set it.
    piper = (*find_piper_voice(PIPER_VOICE_PACKAGE), find_piper_executable()) if voice == "piper" else None
    normalized = [" ".join(normalize_text(s).replace("|", " ").split()) for s in sentences]
    width = max(4, len(str(len(sentences))))
    ids = [f"vox_{i:0{width}d}" for i in range(1, len(sentences) + 1)]
    wav_paths = _clear_previous_run(out_dir, ids)

    bar, advance = _progress(progress, len(ids), f"make-corpus ({voice})")
    with bar, tempfile.TemporaryDirectory(prefix="voxtrain-corpus-") as tmp:
        aligned = _render(piper, normalized, wav_paths, Path(tmp), advance, options.espeak_voice)
    if options.active:
        _transform_clips(wav_paths, options, seed, progress)
    seconds, records = _measure_and_align(ids, wav_paths, aligned, options.time_scale)
    _write_alignments(out_dir, records, len(ids))
    # Written last, so an interrupted run never leaves metadata pointing at missing wavs.
    rows = zip(ids, sentences, normalized, strict=True)
    write_text_atomic(out_dir / "metadata.csv", "".join(f"{i}|{t}|{n}\n" for i, t, n in rows))
    return CorpusSummary(n_clips=len(ids), seconds=seconds, voice=voice, out_dir=out_dir,
                         with_alignments=bool(records), speaker=options.describe(voice))


def _clear_previous_run(out_dir: Path, ids: list[str]) -> list[Path]:
    """Remove what an earlier make-corpus wrote here (its clips may be more or other ones);
    returns the wav path of each clip id."""
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*wav_dir.glob("vox_*.wav"), out_dir / "metadata.csv", out_dir / "alignments.jsonl"]:
        stale.unlink(missing_ok=True)
    return [wav_dir / f"{clip_id}.wav" for clip_id in ids]


def _render(
    piper: tuple[Path, Path, Path] | None, texts: list[str], wav_paths: list[Path], workdir: Path,
    advance: Callable[[], None], espeak_voice: str = DEFAULT_ESPEAK_VOICE,
) -> list[Aligned]:
    """Write one wav per text with espeak (piper None) or piper (model, config, executable);
    returns each clip's (phonemes, seconds per phoneme) where the voice reports them."""
    if piper is None:
        return _espeak_clips(texts, wav_paths, advance, espeak_voice)
    model, config, piper_exe = piper
    python = _piper_python(piper_exe)
    if _server_supported(python):
        return _piper_server_clips(python, model, texts, wav_paths, workdir, advance)
    return _piper_cli_clips(piper_exe, model, config, texts, wav_paths, workdir, advance)


def _transform_clips(wav_paths: list[Path], options: VoiceOptions, seed: int, progress: bool) -> None:
    """Rewrite every rendered wav through the options' transforms, in place, still 16-bit PCM."""
    bar, advance = _progress(progress, len(wav_paths), "transform")
    with bar:
        for index, path in enumerate(wav_paths):
            wav, rate = sf.read(str(path), dtype="float64")
            # One generator per clip: a clip's noise does not depend on which clips came before.
            rng = np.random.default_rng([seed, index])
            sf.write(str(path), to_pcm16(options.apply(wav, rate, rng)), rate, subtype="PCM_16")
            advance()


def _measure_and_align(
    ids: list[str], wav_paths: list[Path], aligned: list[Aligned], time_scale: float = 1.0,
) -> tuple[float, list[dict]]:
    """Total audio seconds, and the alignment records of the clips whose alignment fits their wav;
    `time_scale` is what a transform did to every duration."""
    seconds, records = 0.0, []
    for clip_id, path, clip in zip(ids, wav_paths, aligned, strict=True):
        info = sf.info(str(path))
        seconds += info.frames / info.samplerate
        if clip is not None:
            scaled = [s * time_scale for s in clip[1]]
            record = _alignment_record(clip_id, clip[0], scaled, info.samplerate, info.frames)
            if record is not None:
                records.append(record)
    return seconds, records


def _write_alignments(out_dir: Path, records: list[dict], n_clips: int) -> None:
    if not records:
        return
    write_text_atomic(out_dir / "alignments.jsonl",
                      "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    if len(records) < n_clips:
        print(f"warning: piper gave no usable alignment for {n_clips - len(records)} of {n_clips} "
              "clips; alignments.jsonl lists only the aligned ones", file=sys.stderr)
