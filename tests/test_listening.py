"""Listening scores on real audio made here: the piper joe voice, an espeak voice, a Griffin-Lim
resynthesis of the piper clip, and noise. Each scorer must order clearly different inputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from voxtrain.audio import load_audio
from voxtrain.config import AudioConfig, config_from_dict

pytest.importorskip("pocketsphinx")
pytest.importorskip("onnxruntime")
if importlib.util.find_spec("distillmos") is None:  # never imported: it imports torchaudio, which we do not install
    pytest.skip("distillmos is not installed (pip install --no-deps distillmos==0.9.1)",
                allow_module_level=True)

RATE = 22050
SAID = "Our neighbors planted three apple trees along the fence last spring."
OTHER = "Please send the report to the whole team before Friday."
ENROL = "My grandmother still writes letters by hand every week."


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, np.ndarray]:
    """piper (SAID, ENROL), espeak (SAID), HiFi-GAN copy-synthesis and Griffin-Lim of both piper
    clips, and white noise."""
    from voxtrain.audio import mel_spectrogram
    from voxtrain.demo_corpus import CorpusError, make_corpus
    from voxtrain.vocoder import GriffinLimVocoder, load_vocoder

    root = tmp_path_factory.mktemp("listening")
    try:
        make_corpus(root / "piper", voice="piper", sentences=[SAID, ENROL], progress=False)
    except CorpusError as err:
        pytest.skip(f"the demo extra (piper) is needed: {err}")
    make_corpus(root / "espeak", voice="espeak", sentences=[SAID], progress=False)
    piper = [load_audio(root / "piper" / "wavs" / f"vox_000{i}.wav", RATE) for i in (1, 2)]
    import torch

    mels = [torch.from_numpy(mel_spectrogram(p, AudioConfig()).T.copy()) for p in piper]
    vocoder, hifigan = GriffinLimVocoder(AudioConfig()), load_vocoder("hifigan")
    griffin_lim = [vocoder(mel)[0].numpy() for mel in mels]
    with torch.inference_mode():
        copies = [hifigan(mel[None])[0].numpy() for mel in mels]
    noise = np.random.default_rng(0).normal(0, 0.1, len(piper[0])).astype(np.float32)
    return {"piper": piper[0], "enrol": piper[1], "espeak": load_audio(root / "espeak" / "wavs" / "vox_0001.wav", RATE),
            "griffin_lim": griffin_lim[0], "griffin_lim_enrol": griffin_lim[1], "noise": noise,
            "hifigan": copies[0], "hifigan_enrol": copies[1]}


@pytest.fixture(scope="module")
def scored(clips):
    """All three scorers over the five versions of SAID and the three of ENROL, similarity
    against piper's ENROL."""
    from voxtrain.listening import Scorers, speaker_reference

    names = ["piper", "espeak", "griffin_lim", "noise", "hifigan", "enrol", "griffin_lim_enrol", "hifigan_enrol"]
    reference = speaker_reference([clips["enrol"]], RATE, "piper, another sentence")
    result = Scorers().score([clips[n] for n in names], RATE, [SAID] * 5 + [ENROL] * 3, reference)
    return {name: {k: v[i] for k, v in result.per_clip.items()} for i, name in enumerate(names)}, result


def ear(per: dict, score: str) -> dict[str, float]:
    """One ear's verdicts, each version the mean over both sentences (piper samples its noise
    afresh each run, so one clip alone wanders): real, copy (HiFi-GAN copy-synthesis),
    griffin_lim, and noise (SAID only), all in 1-5."""
    mean = {version: (per[a][score] + per[b][score]) / 2 for version, (a, b) in {
        "real": ("piper", "enrol"), "copy": ("hifigan", "hifigan_enrol"),
        "griffin_lim": ("griffin_lim", "griffin_lim_enrol")}.items()}
    assert all(1.0 <= per[n][score] <= 5.0 for n in per), {n: per[n][score] for n in per}
    return mean | {"noise": per["noise"][score]}


def test_dnsmos_ranks_real_over_griffin_lim_over_noise(scored):
    per, result = scored
    assert not result.errors
    # One clip's real-over-Griffin-Lim gap wandered 0.24-0.63 over nine runs; the mean over two
    # sentences stayed at 0.31-0.42.
    ovrl = ear(per, "dnsmos_ovrl")
    assert ovrl["real"] > ovrl["griffin_lim"] + 0.15 > ovrl["noise"] + 0.6, ovrl
    assert per["piper"]["dnsmos_bak"] > per["noise"]["dnsmos_bak"] + 1.0


def test_dnsmos_p808_ranks_real_over_copy_synthesis_over_griffin_lim_over_noise(scored):
    per, _ = scored
    # Measured over three piper runs: real - copy-synthesis 0.17-0.19, copy-synthesis -
    # Griffin-Lim 0.44-0.49, Griffin-Lim - noise 1.1-1.3.
    m = ear(per, "dnsmos_p808")
    assert m["real"] > m["copy"] + 0.05 and m["copy"] > m["griffin_lim"] + 0.15 > m["noise"] + 0.75, m


def test_distillmos_ranks_real_over_copy_synthesis_and_griffin_lim_over_noise(scored):
    per, _ = scored
    # Measured over eight piper runs: real - copy-synthesis 0.33-0.52, real - Griffin-Lim
    # 0.44-0.83, Griffin-Lim - noise 1.97-2.43. Copy-synthesis - Griffin-Lim wandered from -0.08
    # to 0.37: this ear does not reliably hear Griffin-Lim's phasiness on two sentences, so that
    # order is not asserted.
    m = ear(per, "distillmos")
    assert m["real"] > m["copy"] + 0.15 and m["real"] > m["griffin_lim"] + 0.2 and m["griffin_lim"] > \
        m["noise"] + 1.0, m


def test_distillmos_network_takes_every_weight_and_is_deterministic():
    """The reference network needs torchaudio, which voxtrain never installs, so it is not run
    here; what is checked: every entry of the weights file is a parameter or buffer of ours of
    the same shape (a strict load), the file's position table is the one we would compute, and
    the scores are repeatable, in 1-5, and made without importing distillmos or torchaudio."""
    import sys

    import torch

    from voxtrain.listening.distillmos import (
        SEGMENT,
        DistillMos,
        load_weights,
        our_name,
        position_table,
        segment_starts,
        segments,
    )

    state = load_weights(torch)
    model = DistillMos(threads=1)
    ours = model.network.state_dict()
    renamed = {our_name(k): v for k, v in state.items()}
    assert len(renamed) == len(state) == len(ours) == 120
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert all(torch.equal(ours[our_name(k)], v) for k, v in state.items())
    table = state["transformer_pool_attn.transformer.position_encoding.pe"].numpy()
    assert np.abs(table - position_table()).max() < 1e-4  # the file's was computed in float32

    # A shorter clip is one padded segment; a longer one segments <= 1 s apart, the last at its end.
    assert segment_starts(1000) == segment_starts(SEGMENT) == [0]
    assert segment_starts(SEGMENT + 1) == [0, 1] and segment_starts(SEGMENT + 16001) == [0, 8000, 16001]
    assert segments(np.full(100, 0.25, np.float32)).max() == pytest.approx(1.0, abs=1e-6)

    rng = np.random.default_rng(3)
    t = np.arange(16000 * 9) / 16000
    tone = (0.3 * np.sin(2 * np.pi * (150 + 100 * t) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    first = model.score_many([tone, tone[:16000], np.zeros(0, np.float32)])
    assert first == model.score_many([tone, tone[:16000], np.zeros(0, np.float32)])
    assert all(1.0 <= s <= 5.0 for s in first), first
    assert "distillmos" not in sys.modules and "torchaudio" not in sys.modules


def test_p808_features_are_the_reference_features():
    """The reference computes P.808's input with librosa (a dependency of resemblyzer, so present
    with the eval extra); voxtrain computes the same numbers without importing it."""
    librosa = pytest.importorskip("librosa")
    from voxtrain.listening.dnsmos import p808_features

    rng = np.random.default_rng(1)
    t = np.arange(16000 * 2) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=321, hop_length=160, n_mels=120)
    want = ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T
    got = p808_features(audio)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_similarity_prefers_the_same_speaker(scored):
    per, _ = scored
    same, other = per["piper"]["similarity"], per["espeak"]["similarity"]
    assert same > 0.8 and same > other + 0.1, (same, other)


def test_wer_of_the_right_text_beats_a_wrong_text(clips, scored):
    from voxtrain.listening import word_error_rate

    per, result = scored
    heard = result.transcripts[0]  # piper samples its noise afresh each run, so this varies a little
    right, wrong = per["piper"]["wer"], word_error_rate([OTHER], [heard])
    assert right < 0.5 and wrong > right + 0.4, (heard, right, wrong)
    assert per["noise"]["wer"] >= 0.9 and per["noise"]["cer"] > per["piper"]["cer"]


def test_wer_reads_numbers_as_words_and_pools_clips():
    from voxtrain.listening.asr import error_counts, pooled_rates

    counts = error_counts("He bought 12 eggs.", "he bought twelve eggs")
    assert (counts.word_errors, counts.words, counts.char_errors) == (0, 4, 0)
    # All errors over all reference words: a one-word clip does not weigh as much as a long one.
    wer, _ = pooled_rates([error_counts("yes", "no"), error_counts("one two three four five six seven", "one two "
                                                                   "three four five six seven")])
    assert wer == pytest.approx(1 / 8)


def test_a_failing_scorer_leaves_the_others(clips):
    from voxtrain.listening import Scorers, SpeakerReference

    # An embedding of the wrong width makes the speaker scorer raise part-way through scoring.
    broken = SpeakerReference(np.ones((1, 10)), "wrong width")
    result = Scorers(["asr", "speaker"]).score([clips["piper"]], RATE, [SAID], broken)
    assert set(result.errors) == {"speaker"} and "ValueError" in result.errors["speaker"]
    assert set(result.scores) == {"wer", "cer"} and result.scores["wer"] < 0.6, result.transcripts
    assert "similarity" not in result.per_clip
    # Audio no scorer can take (a diverged model's NaNs) is an error per scorer, not an exception.
    nan = Scorers(["asr", "speaker"]).score([np.full(RATE, np.nan, np.float32)], RATE, [SAID], broken)
    assert set(nan.errors) == {"asr", "speaker"} and "NaN" in nan.errors["asr"] and not nan.scores


def test_a_refused_sentence_is_reported_by_index(tmp_path):
    from conftest import MICRO_CONFIG
    from voxtrain.inference.loader import AcousticModel
    from voxtrain.inference.torch_voice import Synthesizer
    from voxtrain.listening import Scorers, score_synthesizer
    from voxtrain.model import FastSpeech2
    from voxtrain.text import SymbolTable

    config = config_from_dict(MICRO_CONFIG)
    # A voice that never saw "θ": "Thank you" needs it.
    symbols = SymbolTable([s for s in SymbolTable.default().symbols if s != "θ"])
    model = FastSpeech2(config.model, len(symbols), config.audio.n_mels)
    synth = Synthesizer(AcousticModel(model, config, symbols), "griffin-lim", precision="fp32")
    sentences = ["Good morning.", "Thank you very much.", "See you soon."]
    row = score_synthesizer(synth, sentences, Scorers(["asr"]), None, tmp_path)
    assert [(r.index, r.text) for r in row.refused] == [(1, "Thank you very much.")]
    assert "θ" in row.refused[0].why
    assert row.n_clips == 2 and set(row.scores) == {"wer", "cer"} and not row.errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_001.wav", "sample_003.wav"]
    assert row.to_json()["refused"][0]["index"] == 1


_BLOCKED = """
import sys
sys.modules[{module!r}] = None  # as if the package were not installed
from voxtrain.listening import ASR, ListeningUnavailable, Scorers
Scorers({others!r})  # the scorers that do not need it still start
for make in (lambda: Scorers(), {direct}):
    try:
        make()
    except ListeningUnavailable as err:
        print(err)
    else:
        sys.exit("no ListeningUnavailable")
"""


@pytest.mark.parametrize("module, others, direct, hint", [
    ("pocketsphinx", ["dnsmos", "distillmos", "speaker"], "ASR", "pip install 'voxtrain[eval]'"),
    ("speechmos", ["asr", "distillmos", "speaker"], "lambda: Scorers(['dnsmos'])", "pip install 'voxtrain[eval]'"),
    # Outside the extra (pip would pull torchaudio with it): its own install line.
    ("distillmos", ["asr", "dnsmos", "speaker"], "lambda: Scorers(['distillmos'])",
     "pip install --no-deps distillmos==0.9.1"),
])
def test_missing_extra_names_the_module_and_the_extra(module, others, direct, hint):
    code = textwrap.dedent(_BLOCKED).format(module=module, others=others, direct=direct)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert repr(module) in line and hint in line


def test_heldout_sentences_are_not_in_the_demo_corpus():
    from voxtrain.demo_corpus import load_sentences
    from voxtrain.listening import default_sentences, words_for_wer

    heldout = default_sentences()
    assert 25 <= len(heldout) <= 40 and len(set(heldout)) == len(heldout)
    assert all(6 <= len(words_for_wer(s).split()) <= 20 for s in heldout)
    # The demo corpus speaks only lines of this file (make-corpus picks a seeded subset).
    corpus = {words_for_wer(s) for s in load_sentences()}
    assert not [s for s in heldout if words_for_wer(s) in corpus]


def test_read_sentences_skips_comments_and_names_bad_lines(tmp_path):
    from voxtrain.listening import SentenceError, read_sentences

    good = tmp_path / "good.txt"
    good.write_text("# mine\n\nFirst one.\n  Second one.  \n", encoding="utf-8")
    assert read_sentences(good) == ["First one.", "Second one."]
    bad = tmp_path / "bad.txt"
    bad.write_text("Fine.\n...\n", encoding="utf-8")
    with pytest.raises(SentenceError, match=r"bad\.txt: line 2"):
        read_sentences(bad)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("Fine.\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SentenceError, match=r"latin1\.txt: line 2 is not UTF-8"):
        read_sentences(binary)


def test_composite_ranks_by_every_measured_score_and_skips_missing_ones():
    from voxtrain.listening import ANCHORS, composite_score

    good = {"wer": 0.2, "cer": 0.1, "dnsmos_ovrl": 3.0, "similarity": 0.9}
    assert composite_score(good) > composite_score({**good, "wer": 0.5}) > composite_score({**good, "wer": 0.9})
    assert composite_score(good) > composite_score({**good, "dnsmos_ovrl": 2.5})
    assert composite_score(good) > composite_score({**good, "similarity": 0.7})
    # A scorer that failed leaves its score out: the rest are averaged, not counted as 0.
    floors_and_ceilings = {name: hi for name, (lo, hi) in ANCHORS.items()}
    assert composite_score(floors_and_ceilings) == pytest.approx(1.0)
    assert composite_score({"similarity": ANCHORS["similarity"][1]}) == pytest.approx(1.0)
    assert composite_score({"cer": 0.1}) is None
    # Every naturalness ear counts, and together they weigh as much as intelligibility alone.
    ears = {**good, "dnsmos_p808": 3.8, "distillmos": 3.5}
    assert composite_score(ears) > composite_score({**ears, "distillmos": 2.0})
    assert composite_score(ears) > composite_score({**ears, "dnsmos_p808": 3.3})
    at_floor = {"wer": ANCHORS["wer"][1], "dnsmos_ovrl": ANCHORS["dnsmos_ovrl"][0],
                "dnsmos_p808": ANCHORS["dnsmos_p808"][0], "distillmos": ANCHORS["distillmos"][0]}
    assert composite_score(at_floor) == pytest.approx(0.5)


def test_very_short_and_empty_clips_are_scored(clips):
    from voxtrain.listening import Scorers, speaker_reference

    reference = speaker_reference([clips["enrol"]], RATE)
    # 0.18 s of speech: fewer 30 ms windows than the pause trim's dilation spans (the untrained model's case)
    short = clips["piper"][RATE : RATE + RATE * 18 // 100]
    result = Scorers().score([short, short[:0]], RATE, [SAID, SAID], reference)
    assert not result.errors, result.errors
    assert all(np.isfinite(v).all() for v in result.per_clip.values())
    assert result.per_clip["wer"][1] == 1.0 and -1.0 <= result.per_clip["similarity"][0] <= 1.0
