"""`voxtrain export --onnx`: one ONNX graph that matches PyTorch, plays in piper, and runs without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from voxtrain.config import AudioConfig, TextConfig
from voxtrain.inference.errors import OnnxVoiceError
from voxtrain.inference.onnx_voice import OnnxVoice
from voxtrain.inference.streaming import STREAM_MAX_ABS, StreamSettings
from voxtrain.inference.voice_config import intersperse_pads, phoneme_id_map
from voxtrain.text import SymbolTable

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SENTENCE = "The quick brown fox jumps over the lazy dog."
TOLERANCE = 1e-4  # export.onnx.PARITY_MAX_ABS, restated: the tests hold the graph to the same number


@pytest.fixture(scope="module")
def voice(trained, tmp_path_factory):
    """The micro model exported by the real command; (path, its stdout)."""
    out = tmp_path_factory.mktemp("onnx_voice") / "micro.onnx"
    r = subprocess.run([sys.executable, "-m", "voxtrain.cli", "export", "--onnx", str(trained), str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


@pytest.fixture(scope="module")
def synth(trained):
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    return Synthesizer(load_acoustic_model(trained), "hifigan", precision="fp32")


def _mel_correlation(a: np.ndarray, b: np.ndarray) -> float:
    from voxtrain.audio.features import mel_spectrogram

    frames = min(len(a), len(b)) // 256
    ma, mb = (mel_spectrogram(w.astype(np.float32), AudioConfig())[:frames] for w in (a, b))
    # Each band's mean removed: any two voices share the spectral tilt (a shifted id map still
    # scored 0.96 on raw log-mels), the phonemes are in how each band moves over time (it: 0.29).
    ma, mb = ma - ma.mean(axis=0), mb - mb.mean(axis=0)
    return float(np.corrcoef(ma.ravel(), mb.ravel())[0, 1])


def test_phoneme_id_map_uses_the_model_ids_and_sends_the_rest_to_pad() -> None:
    table = SymbolTable.default()
    ids, clusters = phoneme_id_map(table, TextConfig())
    assert ids["_"] == [0] and ids["^"] == [table.bos_id] and ids["$"] == [table.eos_id]
    assert ids["ə"] == table.encode("ə") and ids["ˈ"] == table.encode("ˈ") and "\ufffd" not in ids
    # piper splits "ç" into c + U+0327; the cluster joins it back to the model's one id.
    assert ["c", "\u0327"] in clusters and ids["c\u0327"] == table.encode("ç")
    untrained, _ = phoneme_id_map(table, TextConfig(keep_stress=False, keep_punctuation=False))
    assert untrained["ˈ"] == untrained[","] == [0] and untrained["ə"] == table.encode("ə")
    assert intersperse_pads([7, 8, 9]) == [7, 0, 8, 0, 9]


def test_export_writes_a_piper_voice_with_dynamic_lengths(voice) -> None:
    path, stdout = voice
    assert "parity onnxruntime vs PyTorch" in stdout and "worst max |diff|" in stdout
    config = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    for key in ("audio", "espeak", "phoneme_type", "phoneme_id_map", "num_symbols", "num_speakers", "inference"):
        assert key in config, key
    assert config["audio"]["sample_rate"] == 22050 and config["espeak"]["voice"] == "en-us"
    parity = config["voxtrain"]["parity"]
    assert parity["max_abs"] <= parity["tolerance_max_abs"] == TOLERANCE
    engine = OnnxVoice.load(path)
    inputs = {i.name: (i.type, i.shape) for i in engine.session.get_inputs()}
    assert inputs == {"input": ("tensor(int64)", ["batch_size", "phonemes"]),
                      "input_lengths": ("tensor(int64)", ["batch_size"]), "scales": ("tensor(float)", [3])}
    # Audio, then the frames of each input id: piper reads a second output as alignments.
    outputs = [(o.name, o.type, o.shape) for o in engine.session.get_outputs()]
    assert outputs == [("output", "tensor(float)", ["batch_size", 1, 1, "time"]),
                       ("durations", "tensor(float)", ["batch_size", 1, "phonemes"])]
    # The streaming graphs beside it, named in the config and parity-checked like the piper graph.
    assert config["voxtrain"]["stream"] == {"acoustic": "micro.acoustic.onnx", "vocoder": "micro.vocoder.onnx",
                                            "context_frames": 13, "tolerance_max_abs": STREAM_MAX_ABS}
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "micro.acoustic.onnx", "micro.onnx", "micro.onnx.json", "micro.vocoder.onnx"]
    feeds = [r["feed"] for r in parity["results"]]
    assert feeds[:4] == ["piper", "voxtrain", "split", "stream"]
    assert all(r["max_abs"] <= STREAM_MAX_ABS for r in parity["results"] if r["feed"] == "stream")


def test_graph_drops_pads_reads_input_lengths_and_scales_length(voice, synth) -> None:
    engine = OnnxVoice.load(voice[0], threads=2)
    ids = synth.phoneme_ids([SENTENCE])[0]
    plain = engine.run(ids)
    assert np.array_equal(plain, engine.run(intersperse_pads(ids)))
    # Ids past input_lengths are padding of a batch: they must change nothing.
    feed = {"input": np.array([ids + [40, 41, 42]]), "input_lengths": np.array([len(ids)]),
            "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32)}
    assert np.array_equal(engine.session.run(None, feed)[0].reshape(-1), plain)
    want = synth.waveforms([SENTENCE])[0]
    assert len(plain) == len(want) and np.abs(plain - want).max() <= TOLERANCE
    # length_scale 2 is voxtrain's pace 0.5, and noise does nothing.
    slow = engine.run(ids, length_scale=2.0)
    want_slow = synth.waveforms([SENTENCE], pace=0.5)[0]
    assert len(slow) == len(want_slow) and abs(len(slow) - 2 * len(plain)) <= 0.1 * len(plain)
    assert np.abs(slow - want_slow).max() <= TOLERANCE
    feed["scales"] = np.array([5.0, 1.0, 5.0], dtype=np.float32)
    assert np.array_equal(engine.session.run(None, feed)[0].reshape(-1), plain)


def _perturbed(path, name_part: str, scale: float) -> bytes:
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if name_part in t.name)
    values = onnx.numpy_helper.to_array(weight) * scale
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    return model.SerializeToString()


def test_parity_check_catches_a_perturbed_graph(voice, synth) -> None:
    from voxtrain.export.onnx import check_parity

    path, _ = voice
    config = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    texts = ["Hello world."]
    assert check_parity(OnnxVoice(path.read_bytes(), config), synth, texts).ok  # the piper graph alone
    # 1% on the vocoder's last conv: same length, samples off by ~1e-3, ten times the tolerance.
    report = check_parity(OnnxVoice(_perturbed(path, "conv_post.weight", 1.01), config), synth, texts)
    assert not report.ok and TOLERANCE < report.max_abs < 1, report.describe()
    assert "FAILED 'Hello world.' (piper ids): max |diff|" in report.describe()
    # Durations from a disturbed duration predictor: a different length, named as such.
    report = check_parity(OnnxVoice(_perturbed(path, "duration_predictor.proj.bias", -3.0), config), synth, texts)
    assert not report.ok and "samples vs PyTorch's" in report.describe(), report.describe()


def test_export_refuses_a_graph_that_differs_and_writes_nothing(trained, tmp_path, monkeypatch) -> None:
    import torch

    from voxtrain.export import onnx as export_onnx

    real_build = export_onnx.build_graph

    def build_perturbed(synth):
        graph = real_build(synth)
        with torch.no_grad():
            graph.acoustic.model.mel_head.bias.add_(0.5)  # the graph's copy only: PyTorch's reference stays right
        return graph

    monkeypatch.setattr(export_onnx, "build_graph", build_perturbed)
    out = tmp_path / "bad.onnx"
    with pytest.raises(export_onnx.ExportError, match=r"refusing to write .*bad\.onnx.*\n.*worst max \|diff\| "):
        export_onnx.export_onnx_voice(trained, out, texts=["Hello world."])
    assert sorted(tmp_path.iterdir()) == []


def test_export_without_stream_writes_the_piper_files_only(trained, tmp_path) -> None:
    from voxtrain.export.onnx import export_onnx_voice

    export_onnx_voice(trained, tmp_path / "p.onnx", texts=["Hello world."], stream=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx", "p.onnx.json"]
    config = json.loads((tmp_path / "p.onnx.json").read_text(encoding="utf-8"))
    assert "stream" not in config["voxtrain"]
    assert [r["feed"] for r in config["voxtrain"]["parity"]["results"]] == ["piper", "voxtrain"]


def test_piper_plays_the_voice_with_voxtrains_length_and_sound(voice, synth, tmp_path) -> None:
    from voxtrain.demo_corpus import CorpusError, find_piper_executable

    try:
        piper = find_piper_executable()
    except CorpusError as err:
        pytest.skip(str(err))
    want = {1.0: synth.waveforms([SENTENCE])[0], 0.5: synth.waveforms([SENTENCE], pace=0.5)[0]}
    for pace, reference in want.items():
        out = tmp_path / f"piper_{pace}.wav"
        r = subprocess.run([str(piper), "-m", str(voice[0]), "-f", str(out), "--length-scale", str(1 / pace)],
                           input=SENTENCE + "\n", capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        wav, sr = sf.read(out, dtype="float32")
        assert sr == 22050
        # piper phonemizes with its own espeak-ng; a few percent covers a differing phoneme.
        assert abs(len(wav) - len(reference)) <= 0.03 * len(reference), (pace, len(wav), len(reference))
        # piper scales to full range (normalize_audio): a level shift, which correlation ignores.
        assert _mel_correlation(wav, reference) > 0.9, pace


def test_onnx_engine_synthesizes_and_streams_without_torch(voice, synth, tmp_path) -> None:
    out, streamed = tmp_path / "fox.wav", tmp_path / "fox_stream.wav"
    script = (
        "import sys\n"
        "from voxtrain.cli import app\n"
        f"app(['synth', '--engine', 'onnx', '-k', {str(voice[0])!r}, '-t', {SENTENCE!r}, '-o', {str(out)!r}],\n"
        "    standalone_mode=False)\n"
        f"app(['synth', '--engine', 'onnx', '--stream', '-k', {str(voice[0])!r}, '-t', {SENTENCE!r},\n"
        f"     '-o', {str(streamed)!r}], standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
        "assert not loaded, loaded[:5]\n"
        "print('torch-free')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "torch-free" in r.stdout, r.stderr
    assert f"chunks to {streamed}: first audio after" in r.stderr
    want = synth.waveforms([SENTENCE])[0]
    for path, tolerance in ((out, TOLERANCE), (streamed, TOLERANCE + STREAM_MAX_ABS)):
        wav, sr = sf.read(path, dtype="float32")
        # The torch engine's audio, within parity tolerance (+ the stream's) plus 16-bit rounding.
        assert sr == 22050 and len(wav) == len(want) and np.abs(wav - want).max() <= tolerance + 2**-15, path


def test_onnx_stream_joins_to_the_unstreamed_audio(voice, synth) -> None:
    engine = OnnxVoice.load(voice[0], threads=2)
    ids = synth.phoneme_ids([SENTENCE])[0]
    plain = engine.run(ids)
    chunks = list(engine.stream(SENTENCE, settings=StreamSettings(first_frames=4, growth=2.0, max_frames=32)))
    assert len(chunks[0]) == 4 * engine.hop_length and len(chunks) >= 5
    stream = np.concatenate(chunks)
    assert len(stream) == len(plain) and np.abs(stream - plain).max() <= STREAM_MAX_ABS
    # Whole waveforms take the same two graphs: the stream's audio, unstreamed.
    assert np.array_equal(engine.waveforms([SENTENCE])[0], engine.run_split(ids))
    slow = np.concatenate(list(engine.stream(SENTENCE, pace=0.5)))  # pace 0.5 is length_scale 2
    assert abs(len(slow) - 2 * len(plain)) <= 0.1 * len(plain)


def test_onnx_stream_says_when_the_streaming_graphs_are_missing(voice, tmp_path) -> None:
    path, _ = voice
    config = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    del config["voxtrain"]["stream"]  # as `export --onnx --no-stream` writes it
    with pytest.raises(OnnxVoiceError, match="no streaming graphs: export it again"):
        OnnxVoice(path, config).stream(SENTENCE)
    alone = tmp_path / "alone.onnx"  # the piper files copied without the streaming graphs
    alone.write_bytes(path.read_bytes())
    alone.with_name("alone.onnx.json").write_text(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    with pytest.raises(OnnxVoiceError, match=r"micro\.acoustic\.onnx: missing; the voice config names it"):
        OnnxVoice.load(alone).stream(SENTENCE)
    # The piper graph alone still speaks, and whole waveforms fall back to it.
    spoken = OnnxVoice.load(alone).waveforms(["Hello world."])[0]
    assert np.array_equal(spoken, OnnxVoice.load(path).run(OnnxVoice.load(path).phoneme_ids(["Hello world."])[0]))


def test_durations_output_is_what_piper_reads_as_alignments(voice, synth) -> None:
    import torch

    piper_voice = pytest.importorskip("piper.voice")
    engine = OnnxVoice.load(voice[0])
    ids = synth.phoneme_ids([SENTENCE])[0]
    with torch.no_grad():
        want = synth.acoustic.model.infer(torch.tensor([ids]))["durations"][0].numpy() * engine.hop_length
    padded = engine.durations(intersperse_pads(ids))
    assert np.array_equal(padded[::2], want) and not padded[1::2].any()  # pads last no time
    assert np.array_equal(engine.durations(ids), want) and want.sum() == len(engine.run(ids))
    # piper's own API: per-phoneme alignments that add up to the audio it returns.
    piper = piper_voice.PiperVoice.load(voice[0])
    chunk = next(iter(piper.synthesize(SENTENCE, include_alignments=True)))
    assert chunk.phoneme_alignments, "piper found no alignments in the voice"
    assert sum(a.num_samples for a in chunk.phoneme_alignments) == len(chunk.audio_float_array)


def test_cli_refuses_options_the_onnx_paths_do_not_take(voice, tmp_path) -> None:
    def cli(*args: str) -> tuple[int, str]:
        r = subprocess.run([sys.executable, "-m", "voxtrain.cli", *args], capture_output=True, text=True, timeout=120)
        # Usage errors come in a rich panel that wraps lines: compare its words only.
        return r.returncode, " ".join(re.sub("[│╭╮╰╯─]", " ", r.stderr).split())

    code, err = cli("export", "--onnx", str(voice[0]), str(tmp_path / "v.safetensors"))
    assert code == 2 and "must end in .onnx" in err
    code, err = cli("synth", "--engine", "onnx", "--vocoder", "griffin-lim", "-k", str(voice[0]), "-t", "Hi.",
                    "-o", str(tmp_path / "a.wav"))
    assert code == 2 and "HiFi-GAN built in" in err
    code, err = cli("synth", "--engine", "onnx", "-k", str(tmp_path / "none.onnx"), "-t", "Hi.",
                    "-o", str(tmp_path / "a.wav"))
    assert code == 1 and "none.onnx: no such voice file" in err


def test_a_mel_mixture_voice_exports_and_passes_its_parity_check(trained, tmp_path) -> None:
    import torch

    from voxtrain.artifacts.checkpoint_format import load_state
    from voxtrain.artifacts.weights import export_metadata, export_weights
    from voxtrain.config import ModelConfig
    from voxtrain.export.onnx import export_onnx_voice
    from voxtrain.model import FastSpeech2

    state = load_state(trained)
    config = json.loads(json.dumps(state["config"]))
    config["model"]["mel_mixture"] = 3
    n_symbols, n_mels = state["model"]["embedding.weight"].shape[0], config["audio"]["n_mels"]
    base = FastSpeech2(ModelConfig(**state["config"]["model"]), n_symbols, n_mels).eval()
    base.load_state_dict(state["model"])
    model = FastSpeech2(ModelConfig(**config["model"]), n_symbols, n_mels).eval()
    model.load_state_dict(state["model"], strict=False)
    torch.manual_seed(0)
    with torch.no_grad():
        model.mel_mixture.weight.normal_(0.0, 0.3)  # winners that vary by frame and bin, as a trained head's do
        ids = torch.randint(1, n_symbols, (1, 12))
        assert not torch.equal(model.infer(ids)["mel"], base.infer(ids)["mel"])
    path = export_weights(model.state_dict(), export_metadata(config, state["symbols"], state["step"]),
                          tmp_path / "mix.safetensors")
    result = export_onnx_voice(path, tmp_path / "mix.onnx", texts=["Hello world."], stream=False)
    assert result.parity.ok, result.parity.describe()
