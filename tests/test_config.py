"""Config validation: errors name the key path, the bad value and what is allowed."""

from pathlib import Path

import pytest

from voxtrain.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["ljspeech.yaml", "tiny.yaml", "finetune.yaml"])
def test_bundled_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.audio.hop_length == 256


def test_reference_hyperparameters():
    cfg = load_config(CONFIGS / "ljspeech.yaml")
    m, t = cfg.model, cfg.training
    assert (m.encoder_layers, m.decoder_layers, m.hidden, m.heads, m.conv_filter) == (4, 4, 256, 4, 1024)
    assert (m.predictor_layers, m.dropout) == (2, 0.1)
    assert (t.max_steps, t.batch_size, t.grad_accum, t.lr, tuple(t.betas)) == (200000, 16, 2, 1e-4, (0.9, 0.999))
    assert (t.grad_clip, t.scheduler, t.warmup_steps) == (1.0, "noam", 4000)
    w = t.loss_weights
    assert (w.mel, w.duration, w.pitch, w.energy) == (1.0, 0.1, 0.1, 0.1)
    assert (t.save_every, t.validate_every, t.log_every) == (5000, 1000, 100)
    assert len(t.validation_sentences) >= 2


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_path_and_allowed_keys(tmp_path):
    p = _write(tmp_path, "training:\n  batch_sise: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "training.batch_sise" in msg and "unknown key" in msg
    assert "batch_size" in msg  # the allowed keys are listed
    assert str(p) in msg


def test_wrong_type_names_path_and_value(tmp_path):
    p = _write(tmp_path, "model:\n  hidden: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "model.hidden" in str(err.value) and "'lots'" in str(err.value)


def test_negative_batch_size(tmp_path):
    p = _write(tmp_path, "training:\n  batch_size: -4\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "training.batch_size" in msg and "-4" in msg and "greater than or equal to 1" in msg


def test_cross_field_check_names_section():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.hidden=250", "model.heads=4"])
    assert "model" in str(err.value) and "divisible by heads" in str(err.value)


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS / "tiny.yaml", ["training.lr=2e-4", "model.aligner.temperature=0.001",
                                              "training.validation_sentences=[Hi.]"])
    assert cfg.training.lr == 2e-4 and isinstance(cfg.training.lr, float)
    assert cfg.model.aligner.temperature == 0.001
    assert cfg.training.validation_sentences == ["Hi."]


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["training.lr"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "training: [\n"))
