"""The ``espeak`` voice: libespeak-ng from espeakng_loader through ctypes; robotic but near-instant.

A voice name may carry a variant after ``+`` (``en-us+f3``: another pitch, formant set and
breathiness, so another speaker). espeak accepts any variant name and silently falls back to the
plain voice when it has no such file, so the variant is checked against the variant files here.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from voxtrain.demo_corpus.sentences import CorpusError

DEFAULT_ESPEAK_VOICE = "en-us"


def espeak_variants() -> list[str]:
    """Names of the voice variants espeak-ng ships (usable as ``<voice>+<variant>``)."""
    import espeakng_loader

    variant_dir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in variant_dir.iterdir() if p.is_file())


def check_espeak_voice(voice: str) -> None:
    """CorpusError unless the variant part of `voice` (after '+') is one espeak-ng ships."""
    name, _, variant = voice.partition("+")
    if not name:
        raise CorpusError(f"espeak_voice={voice!r}: give a voice name, e.g. 'en-us' or 'en-us+f3'")
    if variant and variant not in espeak_variants():
        raise CorpusError(f"espeak_voice={voice!r}: espeak-ng has no variant {variant!r}; "
                          f"choose one of {', '.join(espeak_variants())}")


class _Espeak:
    """Synchronous libespeak-ng synthesis. The library keeps global state, so we load a private
    copy of it: other users in this process (phonemizer, voxtrain.text) keep their own."""

    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _CHARS_UTF8 = 1
    _Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self, voice: str = DEFAULT_ESPEAK_VOICE) -> None:
        import espeakng_loader

        check_espeak_voice(voice)
        self._tmp = tempfile.mkdtemp(prefix="voxtrain-espeak-")
        lib_path = Path(self._tmp) / "libespeak-ng.so"
        shutil.copy(espeakng_loader.get_library_path(), lib_path)
        lib = ctypes.CDLL(str(lib_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # espeak wants the folder that *contains* espeak-ng-data.
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.sample_rate = lib.espeak_Initialize(self._AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if self.sample_rate <= 0:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise CorpusError(f"espeak-ng failed to initialize with data from {data_parent.decode()}")
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            lib.espeak_Terminate()
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise CorpusError(f"espeak-ng has no voice {voice!r}")
        self._chunks: list[np.ndarray] = []
        self._callback = self._Callback(self._collect)  # must outlive every synth call
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _collect(self, wav: ctypes.Array, n_samples: int, events: int) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def synthesize(self, text: str) -> np.ndarray:
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(data, len(data), 0, 0, 0, self._CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise CorpusError(f"espeak-ng produced no audio (status {status}) for {text!r}")
        return np.concatenate(self._chunks).astype(np.int16)

    def close(self) -> None:
        self._lib.espeak_Terminate()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _espeak_clips(texts: list[str], wav_paths: list[Path], advance: Callable[[], None],
                  voice: str = DEFAULT_ESPEAK_VOICE) -> list[None]:
    engine = _Espeak(voice)
    try:
        for text, path in zip(texts, wav_paths, strict=True):
            sf.write(path, engine.synthesize(text), engine.sample_rate, subtype="PCM_16")
            advance()
    finally:
        engine.close()
    return [None] * len(texts)
