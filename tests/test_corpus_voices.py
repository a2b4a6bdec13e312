"""make-corpus's other speakers: speaker shift (resampling), keep-tempo (WSOLA), the phone channel,
espeak variants, alignments after a transform, and the option checks. Real rendered clips: espeak
is deterministic, so a transformed corpus is compared clip by clip with the plain one; piper
(random per render) is used where its alignments or natural prosody matter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtrain.audio.features import frame_energy, pitch_track
from voxtrain.config import AudioConfig
from voxtrain.demo_corpus import CorpusError, make_corpus, transforms

SENTENCES = ["Our neighbors planted three apple trees along the fence last spring.",
             "Please send the report to the whole team before Friday."]
RATE = 22050
CFG = AudioConfig()


def _wavs(out: Path) -> list[np.ndarray]:
    clips = []
    for i in range(1, len(SENTENCES) + 1):
        wav, rate = sf.read(str(out / "wavs" / f"vox_{i:04d}.wav"), dtype="float64")
        info = sf.info(str(out / "wavs" / f"vox_{i:04d}.wav"))
        assert (rate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        clips.append(wav)
    return clips


def _median_f0(wav: np.ndarray) -> float:
    """Median F0 of voxtrain's pitch track over the frames within 20 dB of the loudest (the
    track interpolates through pauses, which would otherwise weigh in)."""
    f0 = pitch_track(wav.astype(np.float32), CFG)
    energy = frame_energy(wav.astype(np.float32), CFG)
    n = min(len(f0), len(energy))
    return float(np.median(f0[:n][energy[:n] > 0.1 * energy[:n].max()]))


@pytest.fixture(scope="module")
def espeak(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """The two sentences in espeak's plain voice and through each transform under test."""
    root = tmp_path_factory.mktemp("voices")
    variants = {"base": {}, "up": {"speaker_shift": 1.25}, "down_keep": {"speaker_shift": 0.8, "keep_tempo": True},
                "phone": {"degrade": "phone"}, "f3": {"espeak_voice": "en-us+f3"}}
    out = {}
    for name, options in variants.items():
        summary = make_corpus(root / name, voice="espeak", sentences=SENTENCES, progress=False, **options)
        assert summary.n_clips == 2 and not summary.with_alignments
        out[name] = _wavs(root / name)
    return out


def test_speaker_shift_raises_f0_by_the_factor_and_shortens_the_clip(espeak) -> None:
    for base, up in zip(espeak["base"], espeak["up"], strict=True):
        assert len(up) == round(len(base) / 1.25)
        assert _median_f0(up) / _median_f0(base) == pytest.approx(1.25, rel=0.04)


def test_resampling_is_band_limited_and_nearly_lossless(espeak) -> None:
    # There and back again loses only what the way up cut (above 0.8 x 11025 Hz): any aliasing
    # or interpolation error would show up as error within the band kept.
    x = espeak["base"][0]
    back = transforms.speaker_shift(transforms.speaker_shift(x, 1.25), 0.8)[: len(x)]
    kept = transforms.band_limit(x, RATE, None, 8000.0)
    error = transforms.band_limit(back, RATE, None, 8000.0) - kept
    assert 10 * np.log10(np.sum(kept**2) / np.sum(error**2)) > 60.0


def test_keep_tempo_keeps_duration_and_timing_while_f0_moves(espeak) -> None:
    for base, shifted in zip(espeak["base"], espeak["down_keep"], strict=True):
        assert len(shifted) == len(base)
        assert _median_f0(shifted) / _median_f0(base) == pytest.approx(0.8, rel=0.04)
        # The words stay where they were: the loudness contours line up frame by frame.
        contour = [np.log(frame_energy(w.astype(np.float32), CFG) + 1e-3) for w in (base, shifted)]
        assert np.corrcoef(*contour)[0, 1] > 0.9
    x = espeak["base"][1]
    assert np.allclose(transforms.time_stretch(x, len(x), RATE), x, atol=1e-9)  # stretch 1: the identity


def _band_energy_fraction(wav: np.ndarray, above_hz: float) -> float:
    power = np.abs(np.fft.rfft(wav)) ** 2
    return float(power[np.fft.rfftfreq(len(wav), 1 / RATE) > above_hz].sum() / power.sum())


def test_phone_preset_is_band_limited_and_reaches_its_snr(espeak, tmp_path: Path) -> None:
    for base, phone in zip(espeak["base"], espeak["phone"], strict=True):
        assert _band_energy_fraction(base, 3400.0) > 0.01  # espeak has energy up there to remove
        assert _band_energy_fraction(phone, 3400.0) < 1e-5
        assert _band_energy_fraction(phone, 0.0) - _band_energy_fraction(phone, 300.0) < 1e-5
        # The speech in the degraded clip is the band-limited clean clip, at whatever gain the
        # peak normalization chose; what remains is the noise.
        speech = transforms.band_limit(base, RATE, 300.0, 3400.0)
        gain = float(np.dot(phone, speech) / np.dot(speech, speech))
        noise = phone - gain * speech
        assert 10 * np.log10(np.sum((gain * speech) ** 2) / np.sum(noise**2)) == pytest.approx(15.0, abs=0.3)
    # The noise is seeded: the same seed gives the same clips, another seed other noise.
    make_corpus(tmp_path / "again", voice="espeak", sentences=SENTENCES, progress=False, degrade="phone")
    make_corpus(tmp_path / "other", voice="espeak", sentences=SENTENCES, progress=False, degrade="phone", seed=1)
    assert np.array_equal(_wavs(tmp_path / "again")[0], espeak["phone"][0])
    assert not np.array_equal(_wavs(tmp_path / "other")[0], espeak["phone"][0])


def test_espeak_variant_is_another_voice(espeak) -> None:
    for base, f3 in zip(espeak["base"], espeak["f3"], strict=True):
        assert _median_f0(f3) > 1.5 * _median_f0(base)  # f3 is a female variant of a male voice


def _piper_ready() -> bool:
    from voxtrain import demo_corpus

    try:
        python = demo_corpus._piper_python(demo_corpus.find_piper_executable())
        demo_corpus.find_piper_voice()
    except CorpusError:
        return False
    return demo_corpus._server_supported(python)


@pytest.mark.skipif(not _piper_ready(), reason="piper with alignments (voxtrain[demo], piper-tts[http,alignment])")
@pytest.mark.parametrize(("shift", "keep_tempo"), [(1.2, False), (0.85, True)])
def test_piper_alignments_stay_true_after_a_transform(tmp_path: Path, shift: float, keep_tempo: bool) -> None:
    out = tmp_path / "p"
    summary = make_corpus(out, voice="piper", sentences=SENTENCES, progress=False, speaker_shift=shift,
                          keep_tempo=keep_tempo)
    assert summary.with_alignments
    records = [json.loads(line) for line in (out / "alignments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["vox_0001", "vox_0002"]
    clips = _wavs(out)
    for record, wav in zip(records, clips, strict=True):
        assert (record["hop_length"], record["sample_rate"]) == (256, RATE)
        assert all(isinstance(d, int) and d >= 0 for d in record["durations"])
        # The records were made from piper's durations before the transform: they only add up
        # to the clip when their times were scaled as the clip was.
        assert abs(sum(record["durations"]) * 256 - len(wav)) <= 256
    assert summary.speaker == f"piper shift {shift:g}" + (" keep-tempo" if keep_tempo else "")


@pytest.mark.parametrize(("options", "message"), [
    ({"speaker_shift": 2.5}, r"speaker_shift=2\.5 is out of range: give a number from 0\.6 to 1\.6"),
    ({"speaker_shift": float("nan")}, r"speaker_shift=nan is out of range"),
    ({"speaker_shift": 0}, r"speaker_shift=0 is out of range"),
    ({"keep_tempo": "yes"}, r"keep_tempo='yes': give True or False"),
    ({"degrade": "tin-can"}, r"degrade='tin-can' is not a preset: use None or one of 'phone'"),
    ({"espeak_voice": "en-us+nosuch"}, r"espeak_voice='en-us\+nosuch': espeak-ng has no variant 'nosuch'"),
    ({"espeak_voice": "zz-nosuch"}, r"espeak-ng has no voice 'zz-nosuch'"),
])
def test_bad_option_values_are_named(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        make_corpus(tmp_path / "c", voice="espeak", sentences=SENTENCES[:1], progress=False, **options)


def test_espeak_voice_needs_the_espeak_voice(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"espeak_voice='en-us\+f3' only applies to voice='espeak'"):
        make_corpus(tmp_path / "c", voice="piper", sentences=SENTENCES[:1], progress=False, espeak_voice="en-us+f3")
    assert not (tmp_path / "c").exists()
