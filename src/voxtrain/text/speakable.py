"""What a voice can be asked to say: one check, shared by the PyTorch and onnx engines.

A text is refused (TextRefused, whose message says why and what to do) when it needs
symbols the model never saw or phonemizes to nothing; letters outside the voice's language
are spelled, dropped or refused by policy and always named.
"""

from __future__ import annotations

import logging

from voxtrain.errors import VoxtrainError
from voxtrain.text.processor import TextProcessor
from voxtrain.text.script import describe, foreign_characters

log = logging.getLogger("voxtrain.text")

# What synthesis does with letters of another script and with pictographic symbols:
# spell: espeak-ng reads each by its name (an English voice says "Japanese letter"), with a
# warning; drop: removed before phonemization, with a warning; refuse: an error naming them.
FOREIGN_TEXT = ("spell", "drop", "refuse")


class TextRefused(VoxtrainError, ValueError):
    """The voice cannot speak this text as asked; the message names the text and the fix."""


def check_foreign_policy(policy: str) -> None:
    if policy not in FOREIGN_TEXT:
        raise TextRefused(f"foreign_text must be one of {', '.join(FOREIGN_TEXT)}, got {policy!r}")


def screen_foreign(text: str, language: str, policy: str) -> str:
    """`text` after the foreign-text policy; every character affected is named in a warning."""
    chars = foreign_characters(text, language)
    if not chars:
        return text
    if policy == "refuse":
        raise TextRefused(f"{text!r} has characters outside the voice's language ({language}): "
                          f"{describe(chars)}. Rewrite them, or choose foreign_text='spell' or 'drop'")
    if policy == "drop":
        log.warning("dropped characters outside the voice's language (%s) from %r: %s", language, text,
                    describe(chars))
        return "".join(c for c in text if c not in chars)
    log.warning("characters outside the voice's language (%s) in %r are spelled by espeak-ng as their "
                "names (e.g. 'Japanese letter'): %s", language, text, describe(chars))
    return text


def speakable_ids(processor: TextProcessor, texts: list[str], foreign_text: str,
                  allow_unknown: bool = False) -> list[list[int]]:
    """Model input ids for each text, or TextRefused naming the text that cannot be spoken.
    foreign_text: one of FOREIGN_TEXT; the voices pass theirs (default: inference.plan)."""
    check_foreign_policy(foreign_text)
    texts = [screen_foreign(t, processor.cfg.language, foreign_text) for t in texts]
    out = []
    for text, p in zip(texts, processor.process(texts), strict=True):
        unknown = processor.symbols.unknown(p.phonemes)
        if unknown and not allow_unknown:
            raise TextRefused(
                f"the model has never seen the symbol(s) {' '.join(sorted(set(unknown)))!r} "
                f"(from {text!r} -> /{p.phonemes}/); rephrase the text or pass allow_unknown"
            )
        if not p.phonemes.strip():
            raise TextRefused(f"{text!r} has nothing to speak (it phonemizes to nothing)")
        out.append(p.ids)
    return out
