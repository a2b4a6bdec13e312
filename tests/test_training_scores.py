"""Listening scores during a real (micro) training run: eval records, clips, the best checkpoint
by a score, and the listing replaying the trainer's choice."""

from __future__ import annotations

import pytest

from voxtrain.artifacts.checkpoints import list_checkpoints
from voxtrain.artifacts.layout import RunDir

pytest.importorskip("pocketsphinx", reason="the eval extra (pip install 'voxtrain[eval]')")


def test_a_run_scores_itself_and_picks_its_best_by_a_score(trainer_factory, tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("# two short held-out sentences\nThe sun is warm today.\nWe walked to the old bridge.\n")
    t = trainer_factory(
        "scored",
        training={"max_steps": 20, "validate_every": 10, "save_every": 10, "sample_vocoder": "griffin-lim"},
        evaluation={"enabled": True, "sentences": 2, "sentences_file": str(sentences), "reference_clips": 2},
        checkpoint={"best_by": "composite", "keep_last": 1},
    )
    r = t.run_to_end(timeout=600)
    assert r.returncode == 0, r.stderr
    evals = [x for x in t.metrics() if x["type"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20]
    for e in evals:
        assert set(e) >= {"wer", "cer", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "similarity", "composite"}
        assert 0 <= e["wer"] and 1 <= e["dnsmos_ovrl"] <= 5 and -1 <= e["similarity"] <= 1
        assert e["seconds"] > 0 and e["sentences"] == 2 and e["texts"][0] == "The sun is warm today."
        clips = sorted(p.name for p in RunDir(t.run).eval_sample_dir(e["step"]).iterdir())
        assert clips == ["sample_001.wav", "sample_002.wav"]
    best_step = max(evals, key=lambda e: e["composite"])["step"]
    exported = [x for x in t.metrics() if x.get("event") == "best_exported"][-1]
    assert exported["step"] == best_step and exported["best_by"] == "composite"
    # keep_last 1 would delete step 10's checkpoint unless it is the best.
    listed = list_checkpoints(RunDir(t.run), t.metrics())
    assert [c.step for c in listed if c.best] == [best_step]
    assert best_step in [c.step for c in listed]
    assert "listening scores at step 20" in r.stderr
    assert RunDir(t.run).report.is_file()
