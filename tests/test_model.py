"""FastSpeech2 + aligner: MAS optimality, padding invariance, learnability, pace."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from voxtrain.config import AlignerConfig, ModelConfig, TrainingConfig
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss, monotonic_alignment_search
from voxtrain.model.variance import regulate_length

N_MELS = 24
N_SYMBOLS = 20


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(
        hidden=64,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        conv_filter=128,
        conv_kernel=3,
        predictor_filter=64,
        variance_embedding_kernel=3,
        dropout=0.0,
        predictor_dropout=0.0,
        aligner=AlignerConfig(attention_dim=32, binarization_start_step=50, binarization_ramp_steps=50),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def brute_force_alignment(logp: torch.Tensor) -> torch.Tensor:
    """Best monotonic path, each token >= 1 frame, by enumerating all segmentations."""
    t, n = logp.shape
    best, best_path = -math.inf, None
    for cuts in itertools.combinations(range(1, t), n - 1):
        bounds = (0, *cuts, t)
        path = torch.zeros(t, n)
        for token in range(n):
            path[bounds[token] : bounds[token + 1], token] = 1
        score = float((logp * path).sum())
        if score > best:
            best, best_path = score, path
    return best_path


def test_mas_matches_brute_force_single_and_batched() -> None:
    gen = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(30):
        n = int(torch.randint(1, 5, (1,), generator=gen))
        t = int(torch.randint(n, 8, (1,), generator=gen))
        cases.append(torch.randn(t, n, generator=gen, dtype=torch.float64).log_softmax(-1))
    for logp in cases:
        t, n = logp.shape
        hard = monotonic_alignment_search(logp[None], torch.tensor([n]), torch.tensor([t]))
        assert torch.equal(hard[0], brute_force_alignment(logp))

    # Batched with padding: padded cells hold attractive garbage that must be ignored.
    t_max, n_max = 7, 4
    batch = torch.full((len(cases), t_max, n_max), 5.0, dtype=torch.float64)
    for i, logp in enumerate(cases):
        batch[i, : logp.shape[0], : logp.shape[1]] = logp
    text_lens = torch.tensor([c.shape[1] for c in cases])
    mel_lens = torch.tensor([c.shape[0] for c in cases])
    hard = monotonic_alignment_search(batch, text_lens, mel_lens)
    for i, logp in enumerate(cases):
        t, n = logp.shape
        assert torch.equal(hard[i, :t, :n], brute_force_alignment(logp))
        assert hard[i].sum() == t  # nothing assigned in the padding
        assert torch.all(hard[i, :t].sum(1) == 1)


def test_length_regulator_matches_repeat_interleave() -> None:
    x = torch.randn(2, 4, 3)
    durations = torch.tensor([[2, 0, 3, 1], [1, 1, 0, 0]])
    out, lens = regulate_length(x, durations, max_len=8)
    assert lens.tolist() == [6, 2]
    for b in range(2):
        expected = torch.repeat_interleave(x[b], durations[b], dim=0)
        assert torch.equal(out[b, : lens[b]], expected)
        assert torch.all(out[b, lens[b] :] == 0)


def synthetic_clips(n_clips: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each symbol owns a mel vector; a clip repeats its phonemes' vectors for 2-6 frames."""
    gen = torch.Generator().manual_seed(seed)
    codebook = torch.randn(N_SYMBOLS, N_MELS, generator=gen)
    clips = []
    for _ in range(n_clips):
        n = int(torch.randint(5, 9, (1,), generator=gen))
        ids = torch.randint(1, N_SYMBOLS, (n,), generator=gen)
        durations = torch.randint(2, 7, (n,), generator=gen)
        mel = torch.repeat_interleave(codebook[ids], durations, dim=0)
        mel = mel + 0.05 * torch.randn(mel.shape, generator=gen)
        t = mel.shape[0]
        phase = torch.rand(2, generator=gen) * 6.28
        steps = torch.arange(t, dtype=torch.float32) / 8
        pitch, energy = torch.sin(steps + phase[0]), torch.cos(steps + phase[1])
        clips.append(dict(phonemes=ids, mels=mel, pitch=pitch, energy=energy))
    return clips


def collate(clips: list[dict[str, torch.Tensor]], pad_text: int = 0, pad_mel: int = 0) -> Batch:
    """Pad to the longest item (+ extra); padded mel/pitch/energy hold garbage on purpose."""
    n_max = max(len(c["phonemes"]) for c in clips) + pad_text
    t_max = max(len(c["mels"]) for c in clips) + pad_mel
    b = len(clips)
    batch = dict(
        phonemes=torch.zeros(b, n_max, dtype=torch.long),
        phoneme_lens=torch.tensor([len(c["phonemes"]) for c in clips]),
        mels=torch.full((b, t_max, N_MELS), 7.0),
        mel_lens=torch.tensor([len(c["mels"]) for c in clips]),
        pitch=torch.full((b, t_max), -3.0),
        energy=torch.full((b, t_max), 4.0),
    )
    for i, c in enumerate(clips):
        n, t = len(c["phonemes"]), len(c["mels"])
        batch["phonemes"][i, :n] = c["phonemes"]
        batch["mels"][i, :t] = c["mels"]
        batch["pitch"][i, :t] = c["pitch"]
        batch["energy"][i, :t] = c["energy"]
    return Batch(**batch)


def run(model: FastSpeech2, batch: Batch) -> dict:
    return model(batch)


def test_padding_does_not_change_real_outputs() -> None:
    torch.manual_seed(0)
    model = FastSpeech2(tiny_config(dropout=0.1, predictor_dropout=0.5), N_SYMBOLS, N_MELS).eval()
    short, long = synthetic_clips(2, seed=1)
    if len(short["mels"]) > len(long["mels"]):
        short, long = long, short
    n, t = len(short["phonemes"]), len(short["mels"])
    with torch.no_grad():
        alone = run(model, collate([short]))
        padded = run(model, collate([short, long], pad_text=2, pad_mel=5))
        inf_alone = model.infer(short["phonemes"][None])
        inf_padded = model.infer(collate([short, long]).phonemes, torch.tensor([n, len(long["phonemes"])]))
    assert torch.equal(alone["duration_target"][0], padded["duration_target"][0, :n])
    close = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(alone["mel_pred"][0], padded["mel_pred"][0, :t], **close)
    torch.testing.assert_close(alone["attn_soft"][0, 0], padded["attn_soft"][0, 0, :t, :n], **close)
    torch.testing.assert_close(alone["log_duration_pred"][0], padded["log_duration_pred"][0, :n], **close)
    assert torch.all(padded["mel_pred"][0, t:] == 0)
    assert torch.equal(inf_alone["durations"][0], inf_padded["durations"][0, :n])
    frames = int(inf_alone["mel_lens"][0])
    torch.testing.assert_close(inf_alone["mel"][0, :frames], inf_padded["mel"][0, :frames], **close)


def test_losses_ignore_padding() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(postnet_layers=2, postnet_channels=32)
    model = FastSpeech2(cfg, N_SYMBOLS, N_MELS).eval()
    loss_fn = FastSpeech2Loss(TrainingConfig(), cfg.aligner)
    clips = synthetic_clips(3, seed=2)
    tight, loose = collate(clips), collate(clips, pad_text=3, pad_mel=11)
    with torch.no_grad():
        total_a, terms_a = loss_fn(run(model, tight), tight, step=10_000)
        total_b, terms_b = loss_fn(run(model, loose), loose, step=10_000)
    assert set(terms_a) == {"mel", "duration", "pitch", "energy", "forward_sum", "binarization", "total"}
    for key in terms_a:
        assert torch.isfinite(terms_a[key])
        torch.testing.assert_close(terms_a[key], terms_b[key], atol=1e-5, rtol=1e-5)


def test_overfits_tiny_corpus() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = FastSpeech2(cfg, N_SYMBOLS, N_MELS)
    loss_fn = FastSpeech2Loss(TrainingConfig(), cfg.aligner)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = collate(synthetic_clips(4, seed=3))
    first = None
    for step in range(300):
        total, terms = loss_fn(run(model, batch), batch, step)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        assert torch.isfinite(total)
        first = terms["mel"].item() if first is None else first
        last = terms["mel"].item()
        if last * 5 <= first:
            break
    assert last * 5 <= first, f"mel loss only went {first:.3f} -> {last:.3f} in {step + 1} steps"


@pytest.mark.parametrize("pace", [2.0, 0.5])
def test_pace_scales_length(pace: float) -> None:
    torch.manual_seed(0)
    model = FastSpeech2(tiny_config(), N_SYMBOLS, N_MELS)
    with torch.no_grad():
        # Start the duration predictor around 10 frames per token so rounding is small.
        model.duration_predictor.proj.weight.mul_(0.05)
        model.duration_predictor.proj.bias.fill_(math.log(11.0))
    phonemes = torch.randint(1, N_SYMBOLS, (2, 12))
    base = model.infer(phonemes)
    fast = model.infer(phonemes, pace=pace)
    n_tokens = phonemes.shape[1]
    assert base["mel"].shape[1] == int(base["mel_lens"].max())
    for b in range(2):
        expected = base["mel_lens"][b].item() / pace
        # Each token rounds twice (base and paced): at most 0.5 + 0.5 / pace frames off.
        assert abs(fast["mel_lens"][b].item() - expected) <= (0.5 + 0.5 / pace) * n_tokens
    assert model.training  # infer restores the mode it found


def mixture_model(seed: int = 0, **overrides) -> FastSpeech2:
    """A K=3 model whose mixture layer is no longer fresh, so every component and bin differs."""
    torch.manual_seed(seed)
    model = FastSpeech2(tiny_config(mel_mixture=3, **overrides), N_SYMBOLS, N_MELS).eval()
    with torch.no_grad():
        model.mel_mixture.weight.normal_(0.0, 0.1)
    return model


def test_mixture_nll_is_lowest_with_a_sharp_component_on_the_target() -> None:
    model = mixture_model()
    loss_fn = FastSpeech2Loss(TrainingConfig(), model.cfg.aligner)
    batch = collate(synthetic_clips(3, seed=4), pad_mel=4)
    with torch.no_grad():
        out = run(model, batch)
    shape = (*batch.mels.shape, 3)
    log_b = math.log(0.05)

    def loss_with(shift: float) -> tuple[torch.Tensor, dict]:
        # Component 1 sits `shift` off the target; the others are far off and equally likely.
        locations = batch.mels[..., None] + torch.tensor([-40.0, shift, 40.0])
        mixture = (locations, torch.full(shape, log_b), torch.zeros(shape))
        return loss_fn(out | {"mel_mixture": mixture}, batch, step=10_000)

    total_on, terms_on = loss_with(0.0)
    total_off, terms_off = loss_with(0.5)
    assert total_on < total_off and terms_on["mel_mixture"] < terms_off["mel_mixture"]
    # -log(1/3 * 1/(2b)): the far components add nothing.
    torch.testing.assert_close(terms_on["mel_mixture"], torch.tensor(math.log(3) + math.log(2) + log_b))
    torch.testing.assert_close(terms_off["mel_mixture"] - terms_on["mel_mixture"], torch.tensor(0.5 / 0.05))
    assert terms_on["mel"] == terms_off["mel"]  # the reported mel is the spoken one's error, not the fit


def test_mixture_losses_ignore_padding() -> None:
    model = mixture_model(postnet_layers=2, postnet_channels=32)
    loss_fn = FastSpeech2Loss(TrainingConfig(), model.cfg.aligner)
    clips = synthetic_clips(3, seed=2)
    tight, loose = collate(clips), collate(clips, pad_text=3, pad_mel=11)
    with torch.no_grad():
        total_a, terms_a = loss_fn(run(model, tight), tight, step=10_000)
        total_b, terms_b = loss_fn(run(model, loose), loose, step=10_000)
    assert set(terms_a) == {"mel", "mel_mixture", "duration", "pitch", "energy", "forward_sum", "binarization",
                            "total"}
    for key in terms_a:
        assert torch.isfinite(terms_a[key])
        torch.testing.assert_close(terms_a[key], terms_b[key], atol=1e-5, rtol=1e-5)


def decoder_hidden(model: FastSpeech2, phonemes: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """infer's output and the decoder output it was made from."""
    seen = []
    handle = model.decoder.register_forward_hook(lambda _module, _args, output: seen.append(output))
    try:
        result = model.infer(phonemes)
    finally:
        handle.remove()
    return result, seen[0]


@pytest.mark.parametrize("winner", [1, 2])
def test_mixture_mel_is_the_location_of_the_most_probable_component(winner: int) -> None:
    model = mixture_model()
    k, width = 3, 3 * 3 - 1  # per bin: offsets of components 1 and 2, then 3 log-scales, then 3 logits
    with torch.no_grad():
        params = model.mel_mixture.weight.view(N_MELS, width, -1)
        params[:, 2 * k - 1 :] = 0.0
        model.mel_mixture.bias.view(N_MELS, width)[:, 2 * k - 1 + winner] = 5.0
        phonemes = torch.randint(1, N_SYMBOLS, (1, 9))
        result, hidden = decoder_hidden(model, phonemes)
        offset = model.mel_mixture(hidden).view(*hidden.shape[:2], N_MELS, width)[..., winner - 1]
        want = model.mel_head(hidden) + offset
    frames = int(result["mel_lens"][0])
    assert frames > 0 and offset.abs().min() > 0
    torch.testing.assert_close(result["mel"][0, :frames], want[0, :frames], atol=1e-6, rtol=0)


def test_a_fresh_mixture_speaks_as_its_mel_head() -> None:
    torch.manual_seed(0)
    mixed = FastSpeech2(tiny_config(mel_mixture=3), N_SYMBOLS, N_MELS).eval()
    plain = FastSpeech2(tiny_config(), N_SYMBOLS, N_MELS).eval()
    # A base checkpoint (no mixture) loads into the mixture model, leaving only the mixture fresh.
    missing, unexpected = mixed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["mel_mixture.bias", "mel_mixture.weight"] and not unexpected
    phonemes = torch.randint(1, N_SYMBOLS, (2, 10))
    batch = collate(synthetic_clips(2, seed=5))
    with torch.no_grad():
        assert torch.equal(mixed.infer(phonemes)["mel"], plain.infer(phonemes)["mel"])
        assert torch.equal(run(mixed, batch)["mel_pred"], run(plain, batch)["mel_pred"])
        locations = run(mixed, batch)["mel_mixture"].locations
    assert all(torch.any(locations[..., 0] != locations[..., i]) for i in (1, 2))  # the components start apart


def test_a_base_without_a_mixture_fine_tunes_into_one_with_skip_mismatched(caplog) -> None:
    from voxtrain.config import Config, ConfigError, config_from_dict
    from voxtrain.config.derive import model_from_checkpoint
    from voxtrain.train.session import SessionError, match_weights

    # A base saved before mel_mixture existed: its model section has no such key.
    saved = Config().to_dict()["model"]
    del saved["mel_mixture"]
    source = "--init-from base.pt"
    assert model_from_checkpoint(config_from_dict({"model": {"mel_mixture": 1}}), saved, source).model.mel_mixture == 1
    asked = config_from_dict({"model": {"mel_mixture": 3}})
    with pytest.raises(ConfigError, match=r"model\.mel_mixture: 3 in the config, 1 in the checkpoint.*\n.*"
                                          r"--skip-mismatched"):
        model_from_checkpoint(asked, saved, source)
    assert model_from_checkpoint(asked, saved, source, allow_changes=True).model.mel_mixture == 3

    torch.manual_seed(0)
    base = FastSpeech2(tiny_config(), N_SYMBOLS, N_MELS).state_dict()
    model = FastSpeech2(tiny_config(mel_mixture=3), N_SYMBOLS, N_MELS)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SessionError, match="mel_mixture.weight: missing from base.pt"):
        match_weights(fresh, base, skip_mismatched=False, source="base.pt")
    with caplog.at_level("WARNING", logger="voxtrain.train"):
        model.load_state_dict(match_weights(fresh, base, skip_mismatched=True, source="base.pt"))
    assert "init-from: skipped mel_mixture.weight: missing from base.pt" in caplog.text
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())
    assert torch.equal(model.mel_mixture.weight, fresh["mel_mixture.weight"])
