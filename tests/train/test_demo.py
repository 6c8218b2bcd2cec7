"""`thyro demo` end to end, shrunk: phantoms, both pretrained backbones, three arms, external set, report."""

from __future__ import annotations

import json

import pytest

from thyro.train.demo import DEMO_STUDY, run_demo


@pytest.mark.slow
def test_demo_runs_three_arms_with_an_external_set_and_resumes(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(out, patients=40, external_patients=15, epochs=1, pretrain_epochs=1, corpus_scale=0.1,
                       device="cpu")
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
    assert (out / "run" / "predictions.csv").read_bytes() == before
