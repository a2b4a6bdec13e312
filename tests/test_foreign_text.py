"""Text a voice cannot speak: letters of another script are named, and spelled, dropped or refused."""

from __future__ import annotations

import subprocess
import sys

import soundfile as sf

from voxtrain.text.script import foreign_characters


def test_foreign_characters_by_script() -> None:
    assert foreign_characters("Hello こんにちは世界", "en-us") == list("こんにちは世界")
    assert foreign_characters("Привет, John", "en-gb") == list("Привет")
    assert foreign_characters("I 😀 it", "en-us") == ["😀"]  # espeak would say "grinning face"
    # Accented Latin letters, digits and the symbols the normalizer expands are English text.
    assert foreign_characters("Naïve café in Zürich, 3 dogs, 50% off & $5.", "en-us") == []
    assert foreign_characters("Привет мир", "ru") == []
    assert foreign_characters("こんにちは", "ja") == []  # a script this table does not know: no claim


def _synth(checkpoint, out, text: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrain", "synth", "--checkpoint", str(checkpoint), "--text",
                           text, "--out", str(out), "--vocoder", "griffin-lim", *extra],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_synth_names_foreign_letters_and_applies_the_policy(trained, tmp_path) -> None:
    text = "Hello こんにちは friend."
    spelled = _synth(trained, tmp_path / "spell.wav", text)
    assert spelled.returncode == 0, spelled.stderr
    assert "HIRAGANA LETTER KO" in spelled.stderr and "spelled" in spelled.stderr

    dropped = _synth(trained, tmp_path / "drop.wav", text, "--foreign-text", "drop")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped" in dropped.stderr and "HIRAGANA LETTER KO" in dropped.stderr
    # Five "Japanese letter"s are many phonemes; without them the same voice says less.
    assert sf.info(tmp_path / "drop.wav").frames < sf.info(tmp_path / "spell.wav").frames

    refused = _synth(trained, tmp_path / "refuse.wav", text, "--foreign-text", "refuse")
    assert refused.returncode == 1 and "HIRAGANA LETTER KO" in refused.stderr
    assert not (tmp_path / "refuse.wav").exists()

    plain = _synth(trained, tmp_path / "plain.wav", "Hello friend.")
    assert plain.returncode == 0 and "outside the voice's language" not in plain.stderr
