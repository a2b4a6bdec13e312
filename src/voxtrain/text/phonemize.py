"""Grapheme-to-phoneme conversion with espeak-ng, shipped by the `espeakng_loader` wheel.

The phonemizer backend is built lazily and once per process: building costs a copy of the
shared library, and a backend inherited through fork must not be shared with the parent.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxtrain.config import TextConfig

log = logging.getLogger(__name__)
# phonemizer reports every word-count mismatch (espeak merging "Mister Smith" into one
# word, ...) as a warning; we never align words, so only its errors are worth showing.
_backend_log = logging.getLogger(f"{__name__}.espeak")
_backend_log.setLevel(logging.ERROR)

_configure_lock = threading.Lock()
_configured = False

# A dash standing alone between words is a pause. phonemizer only preserves marks from its
# list, which has the em dash but not "-" (a hyphen inside a word must stay a hyphen), so
# pause dashes travel as em dashes and come back as "-".
_PAUSE_DASH = re.compile(r"(?<!\S)-+(?!\S)")
_EM_DASH = "\u2014"


def _configure_espeak() -> None:
    """Point phonemizer at the espeak-ng library and data bundled in espeakng_loader."""
    global _configured
    with _configure_lock:
        if _configured:
            return
        try:
            import espeakng_loader
            from phonemizer.backend.espeak.wrapper import EspeakWrapper
        except ImportError as err:
            raise RuntimeError(
                f"phonemization needs the 'phonemizer' and 'espeakng-loader' packages ({err}); "
                "install them with: pip install phonemizer espeakng-loader"
            ) from None
        EspeakWrapper.set_library(espeakng_loader.get_library_path())
        # Passed to espeak_Initialize explicitly, so no process-wide ESPEAK_DATA_PATH is needed
        # (and none is set, which would leak into other espeak users such as piper).
        EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
        _configured = True


class Phonemizer:
    """Batched text -> IPA conversion.

    Output words are separated by single spaces, phones are not separated, and punctuation
    marks (when kept) stay as their own characters: "Hello world." -> "həlˈoʊ wˈɜːld.".
    Safe to pickle into worker processes: each process builds its own espeak backend.
    """

    def __init__(
        self, language: str = "en-us", keep_punctuation: bool = True, keep_stress: bool = True
    ) -> None:
        self.language = language
        self.keep_punctuation = keep_punctuation
        self.keep_stress = keep_stress
        self._backend: Any = None
        self._backend_pid: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: TextConfig) -> Phonemizer:
        return cls(language=cfg.language, keep_punctuation=cfg.keep_punctuation, keep_stress=cfg.keep_stress)

    def __repr__(self) -> str:
        return (
            f"Phonemizer(language={self.language!r}, keep_punctuation={self.keep_punctuation}, "
            f"keep_stress={self.keep_stress})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_backend_pid"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _get_backend(self) -> Any:
        pid = os.getpid()
        if self._backend is None or self._backend_pid != pid:
            _configure_espeak()
            from phonemizer.backend import EspeakBackend

            try:
                self._backend = EspeakBackend(
                    self.language,
                    preserve_punctuation=self.keep_punctuation,
                    with_stress=self.keep_stress,
                    # Foreign words keep their phones but lose espeak's "(fr)" markers.
                    language_switch="remove-flags",
                    logger=_backend_log,
                )
            except RuntimeError as err:
                raise RuntimeError(f"espeak-ng cannot phonemize language {self.language!r}: {err}") from None
            self._backend_pid = pid
        return self._backend

    def _run(self, backend: Any, lines: list[str]) -> list[str]:
        from phonemizer.separator import Separator

        separator = Separator(phone="", syllable="", word=" ")
        return backend.phonemize(lines, separator=separator, strip=True, njobs=1)

    def phonemize(self, texts: list[str]) -> list[str]:
        """IPA for each text, in order; empty or blank texts give empty strings."""
        if isinstance(texts, str):
            raise TypeError("Phonemizer.phonemize takes a list of strings, not a single string")
        # phonemizer works line by line and silently drops empty lines, which would shift
        # every later result: send only non-blank single-line texts and put results back.
        lines = [_PAUSE_DASH.sub(_EM_DASH, " ".join(t.split())) for t in texts]
        todo = [i for i, line in enumerate(lines) if line]
        results = [""] * len(lines)
        if not todo:
            return results
        batch = [lines[i] for i in todo]
        with self._lock:  # one espeak instance is not thread-safe
            backend = self._get_backend()
            out = self._run(backend, batch)
            if len(out) != len(batch):
                log.warning("phonemizer returned %d lines for %d; redoing one by one", len(out), len(batch))
                out = [(self._run(backend, [line]) or [""])[0] for line in batch]
        for i, phones in zip(todo, out, strict=True):
            results[i] = " ".join(phones.replace(_EM_DASH, "-").split())
        return results
