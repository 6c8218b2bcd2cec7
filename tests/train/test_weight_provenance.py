"""Each pretrained arm's starting weights carry one provenance line (where they came from, how they were verified)
into every output that names them: the study's results and console table, its report, and the model package's
summary and card; weights accepted as untrained or unverified are called so everywhere."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
import yaml
from markupsafe import escape
from torch import nn

from thyro.cli import main
from thyro.cli.train import results_table
from thyro.report import build_report
from thyro.run import RunDir


def _save(model: nn.Module, path, trained: bool):
    if trained:  # BatchNorm statistics moved from 0 and 1, as training moves them
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A study with a random start, a trained-looking file (verified by its names) and an untrained one (let in
    with allow_untrained_weights)."""
    from thyro.data.phantom import generate_cohort
    from thyro.train.study import run_study

    root = tmp_path_factory.mktemp("provenance")
    manifest = generate_cohort(root / "dev", n_patients=24, size=64, seed=5)
    torch.manual_seed(0)
    named = _save(torchvision.models.resnet18(weights=None), root / "named.pth", trained=True)
    fresh = _save(torchvision.models.resnet18(weights=None), root / "fresh.pth", trained=False)
    cfg = {"name": "prov", "data": {"manifest": str(manifest), "test_size": 0.25, "folds": 2, "seed": 1},
           "preprocess": {"size": 32},
           "arms": [{"name": "scratch", "weights": "none"},
                    {"name": "named", "weights": {"imagenet": str(named)}, "train_backbone": "none"},
                    {"name": "fresh", "weights": {"file": str(fresh)}, "train_backbone": "none",
                     "allow_untrained_weights": True}],
           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "selection": "last", "threads": 1}}
    (root / "study.yaml").write_text(yaml.safe_dump(cfg))
    results = run_study(root / "study.yaml", run_dir=root / "run")
    return root, results, named


def test_results_and_console_table_name_each_arms_weights(finished):
    _, results, named = finished
    arms = results.arms
    assert arms["scratch"].weights_status is None and arms["scratch"].provenance is None
    assert arms["named"].weights_status == "verified"
    line = arms["named"].provenance
    assert str(named) in line and "sha256 " in line and "coverage 100/100" in line
    assert "verified by name (timm/torchvision names)" in line
    assert arms["fresh"].weights_status == "untrained"
    assert "untrained (every BatchNorm layer" in arms["fresh"].provenance
    assert "accepted with allow_untrained=True" in arms["fresh"].provenance
    cols, rows = results_table(results)
    weights = dict((r[0], r[cols.index("weights")]) for r in rows)
    assert weights == {"scratch": "none", "named": "imagenet (verified)", "fresh": "file (untrained)"}


def test_the_report_shows_the_provenance_and_says_untrained(finished):
    root, results, _ = finished
    run = RunDir(root / "run")
    md = run.report_path.with_suffix(".md").read_text()
    html = run.report_path.read_text()
    assert "## Starting weights" in md and 'id="weights-table"' in html
    for arm in ("named", "fresh"):
        line = results.arms[arm].provenance
        assert f"- {arm} ({results.arms[arm].weights_status}): " in md
        assert line in md and str(escape(line)) in html
    assert "scratch (" not in md.split("## Starting weights")[1].split("##")[0]
    # the arm's weights cell and the warnings box say untrained; the verified arm's cell says nothing more
    assert "(untrained)" in md.split("## Starting weights")[0] and "fresh: started from untrained weights" in md
    assert "(verified)" not in md.split("## Starting weights")[0]
    data = json.loads(run.report_path.with_suffix(".json").read_text())
    assert [w["arm"] for w in data["weights"]] == ["named", "fresh"]


def test_a_report_says_unverified_for_weights_accepted_unverified(finished, tmp_path):
    """What results.json records is what the report says (here as a study with unverified_weights records it)."""
    import shutil

    root, results, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy)
    saved = json.loads((copy / "results.json").read_text())
    saved["arms"]["named"]["weights_status"] = "unverified"
    saved["arms"]["named"]["provenance"] = "resnet18 weights from x.pth: unverified: by position (other names)"
    (copy / "results.json").write_text(json.dumps(saved))
    _, md = build_report(copy)
    text = md.read_text()
    assert "named: started from unverified weights (resnet18 weights from x.pth: unverified" in text
    assert "- named (unverified): resnet18 weights from x.pth" in text


def test_the_model_package_and_its_card_carry_the_provenance(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root, results, _ = finished
    assert main(["bundle", str(root / "run"), "--arm", "fresh", "--out", str(tmp_path / "fresh")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "resnet18 at 32 px from file:" in out and "fresh.pth weights (untrained)" in out
    card = (tmp_path / "fresh" / "MODEL_CARD.md").read_text()
    assert card.splitlines()[0].endswith("(untrained))")
    assert "- Starting weights (untrained): resnet18 weights from" in card
    assert "The starting weights are untrained" in card
    meta = json.loads((tmp_path / "fresh" / "model.json").read_text())
    assert meta["source"]["weights_status"] == "untrained"
    assert meta["source"]["provenance"] == results.arms["fresh"].provenance
    assert main(["bundle", str(root / "run"), "--arm", "named", "--out", str(tmp_path / "named")]) == 0
    assert "weights (verified)" in " ".join(capsys.readouterr().out.split())
    card = (tmp_path / "named" / "MODEL_CARD.md").read_text()
    assert "- Starting weights (verified): resnet18 weights from" in card and "verified by name" in card
    assert "untrained" not in card and "unverified" not in card
