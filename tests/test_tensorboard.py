"""TensorBoard gets what metrics.jsonl gets, plus images and audio, and survives the trainer's exit."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_tensorboard_events_are_written_and_read_back(trainer_factory):
    t = trainer_factory("tb", training={"max_steps": 6, "log_every": 2, "validate_every": 3, "save_every": 6,
                                        "sample_vocoder": "griffin-lim"})
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    events = EventAccumulator(str(t.run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    events.Reload()
    tags = events.Tags()
    # The trainer closes its writer at exit: the last train record (step 6) is on disk too.
    assert [e.step for e in events.Scalars("train/loss_total")] == [2, 4, 6]
    logged = {rec["step"]: rec["loss_total"] for rec in t.metrics() if rec["type"] == "train"}
    assert [round(e.value, 4) for e in events.Scalars("train/loss_total")] == [round(v, 4) for v in logged.values()]
    assert [e.step for e in events.Scalars("val/mel")] == [3, 6]
    assert {"val/mel_target", "val/mel_predicted", "val/alignment_soft", "val/alignment_hard"} <= set(tags["images"])
    image = events.Images("val/alignment_hard")[-1]
    assert image.step == 6 and image.width > 1 and image.height > 1
    clips = events.Audio("samples/001")
    assert [c.step for c in clips] == [3, 6] and clips[-1].sample_rate == 22050 and clips[-1].length_frames > 0
