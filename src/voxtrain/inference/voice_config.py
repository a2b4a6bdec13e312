"""The `VOICE.onnx.json` beside an exported voice: piper's voice-config format, plus a
`voxtrain` section that voxtrain's own onnxruntime voice (onnx_voice) reads (text settings,
symbol table). Written by `voxtrain export --onnx` (voxtrain.export.onnx).

What piper reads (piper.config.PiperConfig.from_dict): audio.sample_rate, espeak.voice,
phoneme_type, phoneme_id_map, num_symbols, num_speakers, inference.{noise_scale,
length_scale, noise_w}, and optionally speaker_id_map, hop_length, vowel_clusters.

No torch here: the onnx voice runs without it.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from voxtrain.config import AudioConfig, TextConfig
from voxtrain.errors import VoxtrainError
from voxtrain.text.symbols import BOS, EOS, PAD, UNK, SymbolTable

VOICE_FORMAT = "voxtrain-onnx-voice"
VOICE_FORMAT_VERSION = 1
# The voice-file format version piper 1.x voices carry (piper reads it but ignores it).
PIPER_VOICE_VERSION = "1.0.0"
# What phonemizer drops when a model is trained with keep_stress / keep_punctuation off
# (phonemizer's with_stress and its default punctuation marks); piper always emits them.
_STRESS = "ˈˌ"
_PUNCTUATION = ';:,.!?¡¿—…"«»“”(){}[]'
SCALES_NOTE = (
    "scales = [noise_scale, length_scale, noise_w]: length_scale is 1 / voxtrain's pace "
    "(> 1 speaks slower); noise_scale and noise_w do nothing, this model is deterministic"
)


class VoiceConfigError(VoxtrainError, ValueError):
    """A voice config cannot be used by voxtrain; the message says why."""


def phoneme_id_map(symbols: SymbolTable, text: TextConfig) -> tuple[dict[str, list[int]], list[list[str]]]:
    """Piper's phoneme -> ids map, and the vowel clusters it needs, for a model's symbol table.

    Each phoneme maps to the model's own id, so the graph needs no lookup. Piper's pad `_`
    maps to the pad id, which the graph drops; so do symbols the model was trained without
    (stress marks or punctuation when text settings removed them, `^`/`$` for tables older
    than them). Piper splits phonemes into NFD code points ("ç" -> "c" + U+0327); a cluster
    joins them back, and the joined key maps to the precomposed symbol's id.
    """
    pad = symbols.pad_id
    dropped = set(_STRESS if not text.keep_stress else "") | set(_PUNCTUATION if not text.keep_punctuation else "")
    id_map: dict[str, list[int]] = {}
    clusters: list[list[str]] = []
    for index, symbol in enumerate(symbols.symbols):
        if symbol in (PAD, UNK):
            continue
        id_map[symbol] = [pad if symbol in dropped else index]
        parts = unicodedata.normalize("NFD", symbol)
        if parts != symbol:
            id_map[parts] = id_map[symbol]
            clusters.append(list(parts))
    id_map[PAD] = [pad]
    id_map[BOS] = [pad if symbols.bos_id is None else symbols.bos_id]
    id_map[EOS] = [pad if symbols.eos_id is None else symbols.eos_id]
    return id_map, clusters


def piper_voice_config(
    audio: AudioConfig, text: TextConfig, symbols: SymbolTable, voxtrain: dict[str, Any]
) -> dict[str, Any]:
    """The whole voice config; `voxtrain` is provenance (step, vocoder, parity) to record."""
    id_map, clusters = phoneme_id_map(symbols, text)
    config: dict[str, Any] = {
        "audio": {"sample_rate": audio.sample_rate},
        "espeak": {"voice": text.language},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": id_map,
        "num_symbols": len(symbols),
        "num_speakers": 1,
        "speaker_id_map": {},
        # Zero noise says what the graph does with it: nothing (see SCALES_NOTE).
        "inference": {"noise_scale": 0.0, "length_scale": 1.0, "noise_w": 0.0},
        "hop_length": audio.hop_length,
        "piper_version": PIPER_VOICE_VERSION,
    }
    if clusters:
        config["vowel_clusters"] = clusters
    config["voxtrain"] = {
        "format": VOICE_FORMAT,
        "version": VOICE_FORMAT_VERSION,
        "scales": SCALES_NOTE,
        "pad_id": symbols.pad_id,
        "text": text.model_dump(),
        "symbols": symbols.to_dict(),
        **voxtrain,
    }
    return config


def read_voxtrain_section(config: dict[str, Any], source: str) -> tuple[TextConfig, SymbolTable]:
    """The text settings and symbol table voxtrain's onnx voice needs, checked."""
    section = config.get("voxtrain") if isinstance(config, dict) else None
    if not isinstance(section, dict) or section.get("format") != VOICE_FORMAT:
        raise VoiceConfigError(f"{source}: not a voxtrain voice (no 'voxtrain' section); "
                               "piper voices of other origin play with piper itself")
    if section.get("version") != VOICE_FORMAT_VERSION:
        raise VoiceConfigError(f"{source}: voice format version {section.get('version')!r}, "
                               f"this voxtrain reads version {VOICE_FORMAT_VERSION}")
    try:
        return TextConfig.model_validate(section["text"]), SymbolTable.from_dict(section["symbols"])
    except (KeyError, ValueError) as err:
        raise VoiceConfigError(f"{source}: malformed voxtrain section: {err}") from None


def stream_file_names(voice_name: str) -> dict[str, str]:
    """The streaming graphs' file names beside VOICE.onnx: {"acoustic": ..., "vocoder": ...}."""
    stem = voice_name.removesuffix(".onnx")
    return {"acoustic": f"{stem}.acoustic.onnx", "vocoder": f"{stem}.vocoder.onnx"}


def read_stream_section(config: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The voice's streaming graphs (file names) and the vocoder's context in frames, checked;
    None for a voice exported without them."""
    section = config["voxtrain"].get("stream")
    if section is None:
        return None
    try:
        names = {key: str(section[key]) for key in ("acoustic", "vocoder")}
        context = int(section["context_frames"])
    except (KeyError, TypeError, ValueError) as err:
        raise VoiceConfigError(f"{source}: malformed voxtrain.stream section: {err}") from None
    if any("/" in name or "\\" in name for name in names.values()) or context < 0:
        raise VoiceConfigError(f"{source}: voxtrain.stream must name files beside the voice and a "
                               f"context >= 0, got {section!r}")
    return {**names, "context_frames": context}


def intersperse_pads(ids: list[int], pad_id: int = 0) -> list[int]:
    """The ids as piper sends them: a pad after every id but the last (`^ _ a _ b _ $`)."""
    out: list[int] = []
    for i in ids:
        out += [i, pad_id]
    return out[:-1]
