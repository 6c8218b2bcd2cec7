"""`thyro demo` end to end, shrunk: phantoms, both pretrained backbones, three arms, external set, report."""

from __future__ import annotations

import json

import pytest

from thyro.train.demo import DEMO_STUDY, demo_work, expected_seconds, run_demo


@pytest.mark.slow
def test_demo_runs_three_arms_with_an_external_set_and_resumes(tmp_path, caplog):
    out = tmp_path / "demo"
    with caplog.at_level("INFO", logger="thyro.train.demo"):
        results = run_demo(out, patients=40, external_patients=15, epochs=1, pretrain_epochs=1, corpus_scale=0.1,
                           device="cpu")
    # the plan and its expected time come first, before any phase starts
    first = [r.getMessage() for r in caplog.records if r.name == "thyro.train.demo"]
    assert first[0].startswith("expected time on this machine: about ") and "1/5 phantom cohort" in first[1]
    assert results.expected_seconds > 0 and results.seconds > 0
    arms = [a["name"] for a in DEMO_STUDY["arms"]]
    assert list(results.arms) == arms
    assert all(results.arms[a].external_auroc.get("new-patients") is not None for a in arms)
    assert 0.5 < results.best_auroc["new-patients"] <= 1.0
    for name in ("generic", "radiology"):
        assert (out / "backbone" / f"resnet18-{name}.safetensors").is_file()
    report = json.loads((out / "run" / "report.json").read_text())
    ext = report["sets"]["new-patients"]
    assert ext["n"] == 30 and ext["n_clusters"] == 15 and set(ext["auroc"]) == set(arms)
    assert {(c["a"], c["b"]) for c in ext["comparisons"]} == {("domain", "generic"), ("domain", "scratch")}
    # a second run finds everything done and changes nothing
    before = (out / "run" / "predictions.csv").read_bytes()
    again = run_demo(out, patients=40, external_patients=15, epochs=1, pretrain_epochs=1, corpus_scale=0.1,
                     device="cpu")
    assert again.arms["domain"].external_auroc == results.arms["domain"].external_auroc
    assert again.expected_seconds == 0.0  # every phase finished on disk: nothing left to expect
    assert (out / "run" / "predictions.csv").read_bytes() == before


def test_the_expected_time_follows_the_work_each_phase_does():
    """Each phase's work grows with its own settings and only with them; the estimate is that work at speeds
    timed on this machine (the same timed training steps a study's dry run uses)."""
    base = dict(patients=20, external_patients=10, epochs=2, pretrain_epochs=1, corpus_scale=0.05)
    small = demo_work(**base)
    study = [demo_work(**{**base, "epochs": e})["study"] for e in (2, 4, 6)]
    assert study[0] < study[1] < study[2] and study[2] - study[1] == pytest.approx(study[1] - study[0])
    assert demo_work(**{**base, "epochs": 6})["pretraining"] == small["pretraining"]
    assert demo_work(**{**base, "pretrain_epochs": 4})["pretraining"] == 4 * small["pretraining"]
    assert demo_work(**{**base, "external_patients": 100})["study"] > small["study"]
    assert demo_work(**{**base, "patients": 40})["phantoms"] == small["phantoms"] + 20
    seconds = expected_seconds(**base, device="cpu")
    assert set(seconds) == set(small) and all(v > 0 for v in seconds.values())
    # training and pretraining at one measured speed: their ratio is the ratio of their work
    assert seconds["study"] / seconds["pretraining"] == pytest.approx(small["study"] / small["pretraining"])
