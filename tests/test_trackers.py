"""training.trackers: the run's scalars, images, audio and config reach every configured
experiment tracker through Accelerate, and a tracker that cannot start is a warning, not a dead run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import wave

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import Event
from voxtrain.config import ConfigError, TrainingConfig, config_from_dict

# Six steps, validation (images, audio) at 3 and 6.
SHORT = {"max_steps": 6, "log_every": 2, "validate_every": 3, "save_every": 6, "sample_vocoder": "griffin-lim"}
IMAGES = ("val/mel_target", "val/mel_predicted", "val/alignment_soft", "val/alignment_hard")


@pytest.fixture
def local_env(env, monkeypatch) -> dict:
    """The trainer's environment, with no MLflow settings of this machine and no telemetry."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS"):
        env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="offline")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # this process reads the file store back
    return env


def _flat(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def _tensorboard_steps(run: RunDir, tag: str) -> list[int]:
    events = EventAccumulator(str(run.tensorboard), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_tracker_names_are_the_ones_accelerate_knows():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    allowed = TrainingConfig.model_fields["trackers"].annotation.__args__[0].__args__
    assert set(allowed) == set(LOGGER_TYPE_TO_CLASS)
    assert TrainingConfig().trackers == ["tensorboard"]
    assert config_from_dict({"training": {"trackers": ["mlflow", "wandb"]}}).training.trackers == ["mlflow", "wandb"]
    with pytest.raises(ConfigError, match=r"training\.trackers\.0.*'tensorboard'"):
        config_from_dict({"training": {"trackers": ["tensorbord"]}})
    with pytest.raises(ConfigError, match="mlflow more than once"):
        config_from_dict({"training": {"trackers": ["mlflow", "tensorboard", "mlflow"]}})


def test_mlflow_gets_params_scalars_images_and_audio(trainer_factory, local_env, tmp_path):
    import mlflow
    from PIL import Image

    t = trainer_factory("mlrun", training={**SHORT, "trackers": ["tensorboard", "mlflow"]})
    r = t.run_to_end(env=local_env)
    assert r.returncode == 0, r.stderr
    run = RunDir(t.run)
    records = t.metrics()
    assert not [x for x in records if x.get("event") == Event.TRACKER_FAILED], r.stderr

    client = mlflow.MlflowClient(run.mlruns.resolve().as_uri())  # the default: a file store in the run
    experiment = client.get_experiment_by_name(TrainingConfig().tracker_project)
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    assert found.info.run_name == "mlrun" and found.info.status == "FINISHED"

    # The resolved config (config.yaml) as params, once, every key flattened.
    config = yaml.safe_load(run.config.read_text())
    params = found.data.params
    assert set(params) == _flat(config)
    assert json.loads(params["training.trackers"]) == ["tensorboard", "mlflow"]
    assert params["training.max_steps"] == "6" and params["model.hidden"] == "32"
    assert params["training.validation_sentences"] == json.dumps(config["training"]["validation_sentences"])

    # The numbers of metrics.jsonl, at their steps.
    train = {x["step"]: x for x in records if x["type"] == "train"}
    val = {x["step"]: x for x in records if x["type"] == "val"}
    history = client.get_metric_history(run_id, "train/loss_total")
    assert [m.step for m in history] == [2, 4, 6]
    assert [m.value for m in history] == pytest.approx([train[s]["loss_total"] for s in (2, 4, 6)], rel=1e-12)
    assert [m.step for m in client.get_metric_history(run_id, "train/lr")] == [2, 4, 6]
    history = client.get_metric_history(run_id, "val/mel")
    assert [m.step for m in history] == [3, 6]
    assert [m.value for m in history] == pytest.approx([val[s]["loss_mel"] for s in (3, 6)], rel=1e-12)
    assert not any(name.endswith(("/step", "/epoch", "/max_steps")) for name in found.data.metrics)

    # Images as PNG artifacts, audio as WAV artifacts, one per validation.
    out = tmp_path / "downloaded"
    for tag in IMAGES:
        assert [a.path for a in client.list_artifacts(run_id, f"images/{tag}")] == [
            f"images/{tag}/step_0000003.png", f"images/{tag}/step_0000006.png"]
    with Image.open(client.download_artifacts(run_id, "images/val/alignment_hard/step_0000006.png", str(out))) as im:
        assert im.mode == "L" and im.width > 1 and im.height > 1
    assert [a.path for a in client.list_artifacts(run_id, "audio/samples/001")] == [
        "audio/samples/001/step_0000003.wav", "audio/samples/001/step_0000006.wav"]
    with wave.open(client.download_artifacts(run_id, "audio/samples/001/step_0000006.wav", str(out))) as clip:
        assert clip.getframerate() == 22050 and clip.getnchannels() == 1 and clip.getnframes() > 0

    # TensorBoard alongside, unchanged.
    assert _tensorboard_steps(run, "train/loss_total") == [2, 4, 6]


def test_a_tracker_that_cannot_start_is_a_warning_not_a_dead_run(trainer_factory, local_env):
    # wandb is not installed here (it is in the `trackers` extra, not in `test`); should it be,
    # another tracker Accelerate knows and this machine lacks takes its place.
    missing = next(n for n in ("wandb", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
                   if importlib.util.find_spec(n) is None)
    t = trainer_factory("broken", training={**SHORT, "trackers": ["tensorboard", missing, "mlflow"],
                                            "mlflow_tracking_uri": "no-such-scheme://nowhere"})
    r = t.run_to_end(env=local_env)
    assert r.returncode == 0, r.stderr
    run = RunDir(t.run)

    failed = {x["tracker"]: x for x in t.metrics() if x.get("event") == Event.TRACKER_FAILED}
    assert set(failed) == {missing, "mlflow"}
    assert failed[missing]["during"] == "start" and f"No module named '{missing}'" in failed[missing]["error"]
    assert failed["mlflow"]["during"] == "start" and "no-such-scheme://nowhere" in failed["mlflow"]["error"]
    status = subprocess.run([sys.executable, "-m", "voxtrain.cli", "status", str(t.run), "--json"],
                            env=local_env, capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["counts"][Event.TRACKER_FAILED] == 2, status.stderr  # what the monitor sees
    log = run.latest_log_file().read_text()
    assert f"experiment tracker {missing} failed to start" in log and "WARNING" in log

    # The tracker that works keeps working, to the end of the run.
    assert _tensorboard_steps(run, "train/loss_total") == [2, 4, 6]
    assert _tensorboard_steps(run, "val/mel") == [3, 6]
    assert not run.mlruns.exists()
