"""Streaming synthesis: chunks that join to the unstreamed audio, click-free, first chunk early."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from voxtrain.inference.streaming import STREAM_MAX_ABS, StreamSettings, chunk_bounds, context_frames, stream_windows

# HiFi-GAN V1 is most of the time here, so the texts are short: ~60, ~160 and ~360 mel frames.
SHORT = "A short test."
SENTENCE = "The quick brown fox jumps over the lazy dog."
LONG = "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark green woods."
HOP = 256


@pytest.fixture(scope="module")
def synth(trained):
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    return Synthesizer(load_acoustic_model(trained), "hifigan", precision="fp32")


@pytest.fixture(scope="module")
def whole(synth) -> np.ndarray:
    """SENTENCE unstreamed, the reference every stream is held to."""
    return synth.waveforms([SENTENCE])[0]


@pytest.fixture(scope="module")
def chunks(synth) -> list[np.ndarray]:
    """SENTENCE streamed with the default settings."""
    return list(synth.stream(SENTENCE))


def _joins(chunks: list[np.ndarray]) -> list[int]:
    return list(np.cumsum([len(c) for c in chunks])[:-1])


def _worst_join_excess(stream: np.ndarray, whole: np.ndarray, joins: list[int]) -> float:
    """How far the sample-to-sample jump at each join exceeds the largest jump of the unstreamed
    audio within one frame of it (0 when no join jumps more than the audio around it)."""
    excess = 0.0
    for j in joins:
        around = np.abs(np.diff(whole[max(0, j - HOP) : j + HOP])).max()
        excess = max(excess, abs(float(stream[j]) - float(stream[j - 1])) - around)
    return excess


def test_context_is_the_vocoders_receptive_radius(synth) -> None:
    """One mel frame changed changes samples within context_frames of it and nowhere else."""
    generator = synth.vocoder.generator
    context = context_frames(generator.params)
    assert context == 13  # HiFi-GAN V1: 12.73 frames, rounded up
    mel = torch.randn(1, 80, 64, generator=torch.Generator().manual_seed(0)) - 5
    bumped = mel.clone()
    bumped[0, :, 32] += 3.0
    with torch.no_grad():
        changed = np.flatnonzero((generator(bumped) - generator(mel)).abs().numpy().reshape(-1) > 0)
    reach = max(32 * HOP - changed.min(), changed.max() - 33 * HOP + 1) / HOP
    assert context - 1 < reach <= context, reach  # the bound holds, and no smaller whole number would


def test_stream_equals_the_unstreamed_audio_without_clicks(synth, whole, chunks) -> None:
    # The default chunks, and small ones with more joins (first chunk 3 frames, at most 24).
    small = list(synth.stream(SENTENCE, settings=StreamSettings(first_frames=3, growth=2.0, max_frames=24)))
    for pieces in (chunks, small):
        stream = np.concatenate(pieces)
        assert len(stream) == len(whole)
        assert np.abs(stream - whole).max() <= STREAM_MAX_ABS
        joins = _joins(pieces)
        assert len(joins) >= 4
        assert _worst_join_excess(stream, whole, joins) <= STREAM_MAX_ABS


def test_without_context_the_joins_click(synth, whole) -> None:
    """The check above can fail: windows vocoded without context frames differ and jump at joins."""
    mel = synth.mels([SENTENCE])[0]
    chunks = list(stream_windows(mel, synth.vocode, 0, HOP, StreamSettings(first_frames=8, max_frames=32)))
    stream = np.concatenate(chunks)
    assert np.abs(stream - whole).max() > 100 * STREAM_MAX_ABS
    assert _worst_join_excess(stream, whole, _joins(chunks)) > 10 * STREAM_MAX_ABS


def test_first_chunk_is_small_and_comes_before_the_rest_is_vocoded(synth, monkeypatch) -> None:
    calls: list[int] = []
    real = synth.vocode
    monkeypatch.setattr(synth, "vocode", lambda mel: calls.append(mel.shape[-1]) or real(mel))
    settings = StreamSettings(first_frames=8, growth=2.0, max_frames=64)
    chunks = synth.stream(SENTENCE, settings=settings)
    assert calls == []  # the acoustic model has run, the vocoder not yet
    first = next(chunks)
    context = context_frames(synth.vocoder.generator.params)
    assert len(first) == 8 * HOP and calls == [8 + context]  # its frames and the right context only
    sizes = [len(first)] + [len(c) for c in chunks]
    assert len(calls) == len(sizes)
    # Each chunk doubles the one before up to 64 frames; the last may be shorter or take in a sliver.
    assert [s // HOP for s in sizes[:4]] == [8, 16, 32, 64] and max(sizes) <= (64 + context) * HOP


def test_chunk_count_grows_with_the_text(synth, chunks) -> None:
    short = list(synth.stream(SHORT))
    assert len(short) < len(chunks), (len(short), len(chunks))
    # The plan for longer mels: 8, 16, 32, 64, 128, then 256 at most.
    settings, context = StreamSettings(), 13
    counts = [len(chunk_bounds(frames, settings, context)) for frames in (100, 400, 1000, 3000)]
    assert counts == [4, 6, 8, 16], counts
    # The plan alone: a sliver shorter than the context joins the chunk before it.
    assert chunk_bounds(8 + 16 + 5, StreamSettings(8, 2, 64), context=15) == [(0, 8), (8, 29)]
    assert chunk_bounds(3, StreamSettings(8, 2, 64), context=15) == [(0, 3)]


def test_streaming_refuses_griffin_lim_and_bad_settings(trained) -> None:
    from voxtrain.inference.errors import StreamError, SynthError
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    gl = Synthesizer(load_acoustic_model(trained), "griffin-lim", precision="fp32")
    with pytest.raises(SynthError, match="streaming needs the HiFi-GAN vocoder"):
        gl.stream(SHORT)
    with pytest.raises(StreamError, match="first_frames <= max_frames"):
        StreamSettings(first_frames=0)


def test_pcm_writer_hands_each_chunk_on_at_once() -> None:
    """Each chunk reaches the reader when written, not when a buffer fills (a player hears it)."""
    from voxtrain.inference.streaming import PcmWriter

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    with os.fdopen(write_end, "wb") as stream:  # buffered, as sys.stdout.buffer is
        write = PcmWriter(stream)
        write(np.array([0.0, 0.5, -1.0, 2.0], dtype=np.float32))
        got = os.read(read_end, 64)
    os.close(read_end)
    assert np.frombuffer(got, dtype="<i2").tolist() == [0, 16384, -32767, 32767]  # scaled, rounded, clipped


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrain.cli", *args], capture_output=True, timeout=300, **kwargs)


def test_cli_streams_pcm_to_stdout_as_it_is_made(trained, whole, tmp_path) -> None:
    want = whole
    cmd = [sys.executable, "-m", "voxtrain.cli", "synth", "--stream", "--precision", "fp32", "-k", str(trained),
           "-t", SENTENCE, "-o", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read(8 * HOP * 2)  # the first chunk: 8 frames of 16-bit samples
        running = proc.poll() is None  # the rest is still being vocoded
        rest = proc.stdout.read()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0, err
    finally:
        proc.kill()
    assert running and len(first) == 8 * HOP * 2
    pcm = np.frombuffer(first + rest, dtype="<i2").astype(np.float32) / 32767
    assert len(pcm) == len(want) and np.abs(pcm - want).max() <= STREAM_MAX_ABS + 1 / 32767
    assert "streamed" in err and "chunks to stdout (16-bit mono PCM): first audio after" in err


def test_cli_streams_into_a_wav(trained, synth, tmp_path) -> None:
    out = tmp_path / "short.wav"
    r = _cli("synth", "--stream", "--precision", "fp32", "-k", str(trained), "-t", SHORT, "-o", str(out), text=True)
    assert r.returncode == 0, r.stderr
    assert f"chunks to {out}: first audio after" in r.stderr and r.stdout == ""
    want = synth.waveforms([SHORT])[0]
    wav, sr = sf.read(out, dtype="float32")
    assert sr == 22050 and len(wav) == len(want) and np.abs(wav - want).max() <= STREAM_MAX_ABS + 1 / 32767


def test_cli_refuses_stdout_without_stream_and_stream_with_griffin_lim(trained) -> None:
    r = _cli("synth", "-k", str(trained), "-t", SHORT, "-o", "-", text=True)
    assert r.returncode == 2 and "needs --stream" in r.stderr
    r = _cli("synth", "--stream", "--vocoder", "griffin-lim", "-k", str(trained), "-t", SHORT, "-o", "-", text=True)
    assert r.returncode == 2 and "Griffin-Lim needs the whole mel" in r.stderr
