"""thyro report: numbers match the statistics, missing pieces are marked, bad input stops clearly."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from fakerun import make_run
from thyro.cli import main
from thyro.errors import StatsError
from thyro.report import build_report
from thyro.run import ArmResult, RunDir
from thyro.stats import auroc, bootstrap_auroc

FAST = {"n_boot": 200}


def _headline(html: str, name: str = "test") -> str:
    return html.split(f'<table id="headline-{name}"', 1)[1].split("</table>", 1)[0]


def _preds(run):
    return RunDir(run).read_predictions()


def _edit(run, fn):
    """Change a run's predictions table (through its owner) with ``fn(df) -> df``."""
    r = RunDir(run)
    r.write_predictions(fn(r.read_predictions().df))


def test_report_numbers_match_statistics(fake_run, built_report):
    html_path, md_path = built_report
    html = html_path.read_text()
    md = md_path.read_text()
    preds = _preds(fake_run)
    head = _headline(html)
    for arm in ("scratch", "imagenet", "radimagenet"):
        t = preds.rows(arm=arm, split="test", ensemble=True)
        # the cluster bootstrap CI with the report's seed and resamples
        r = bootstrap_auroc(t.label, t.probability, t.group, n_boot=500, seed=0)
        text = f"{auroc(t.label, t.probability):.3f} [{r.lower:.3f}, {r.upper:.3f}]"
        assert text in head, (arm, text)
        assert text in md
    assert "cluster bootstrap" in html and "cluster bootstrap" in md
    assert "Obuchowski" in html and "power" in md.lower()
    # self-contained: every image is embedded, nothing is fetched
    srcs = re.findall(r'<img[^>]*src="([^"]{0,30})', html)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    # provenance and data summary
    assert "0123456789abcdef0123456789abcdef01234567" in html
    assert "duplicates_merged" in html and "synthetic-example" in html
    assert "Label 1 = malignant." in html and "pathology" in html
    data = json.loads(html_path.with_suffix(".json").read_text())
    assert data["sets"]["test"]["method"] == "cluster-bootstrap" and data["folds"]["k"] == 5 and not data["missing"]


def test_holm_in_headline(built_report):
    data = json.loads(built_report[0].with_suffix(".json").read_text())
    ps = [c["p_value"] for c in data["sets"]["test"]["comparisons"]]
    adj = [c["p_holm"] for c in data["sets"]["test"]["comparisons"]]
    assert len(ps) == 3  # imagenet-scratch, radimagenet-scratch, radimagenet-imagenet
    assert all(a >= p for a, p in zip(adj, ps))
    assert max(adj) == pytest.approx(min(1.0, max(adj)))


def test_minimal_csv_alone_uses_delong(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    rows = []
    for arm, sep in (("model_x", 1.0), ("model_y", 0.3)):
        for i in range(80):
            rows.append((f"img{i}.png", y[i], arm, 1 / (1 + np.exp(-(rng.normal() + sep * y[i])))))
    csv = tmp_path / "preds.csv"
    pd.DataFrame(rows, columns=["image", "label", "arm", "probability"]).to_csv(csv, index=False)
    html, md = build_report(csv, tmp_path / "out", **FAST)
    assert html == tmp_path / "out" / "report.html" and md.exists()
    text = html.read_text()
    data = json.loads(html.with_suffix(".json").read_text())
    assert data["sets"]["test"]["method"] == "delong"
    # no scratch arm: every pair compared (here the one pair)
    assert data["sets"]["test"]["family"] == "every pair of arms" and len(data["sets"]["test"]["comparisons"]) == 1
    assert "no out-of-fold predictions" in text
    assert "No training logs" in text and "No data summary" in text


def test_missing_folds_and_failed_arm_are_marked(tmp_path):
    run = make_run(tmp_path / "run", n_cv=120, n_test=60, logs=False)
    _edit(run, lambda df: df[~(((df.arm == "imagenet") & (df.split == "val") & (df.fold == 2))
                               | ((df.arm == "radimagenet") & (df.split == "test") & df.ensemble))])
    r = RunDir(run)
    res = r.read_results()
    res.arms["swav"] = ArmResult(status="failed", reason="NaN loss in fold 1", backbone="resnet18", weights="swav")
    r.write_results(res)
    html, md = build_report(run, **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    head = _headline(html.read_text())
    assert "missing: no ensemble predictions (fold mean)" in head  # radimagenet
    skipped = html.read_text().split('<div id="skipped">', 1)[1].split("</div>", 1)[0]
    assert "swav (failed: NaN loss in fold 1)" in skipped and "swav" not in head  # one line, not a table row
    assert data["oof"]["imagenet"]["folds"] == [0, 1, 3, 4] and not data["oof"]["imagenet"]["complete"]
    assert "folds 0, 1, 3, 4 only" in html.read_text()
    assert any("imagenet fold 2: no out-of-fold" in m for m in data["missing"])
    rad = [c for c in data["sets"]["test"]["comparisons"] if "radimagenet" in (c["a"], c["b"])]
    assert rad and all(c["missing"] and "p_value" not in c for c in rad)
    assert "missing" in md.read_text()


def test_nan_probabilities_mark_arm_not_number(tmp_path):
    run = make_run(tmp_path / "run", n_cv=100, n_test=50, logs=False)

    def nan2(df):
        idx = df.index[(df.arm == "scratch") & (df.split == "test") & df.ensemble][:2]
        df.loc[idx, "probability"] = np.nan
        return df

    _edit(run, nan2)
    html, _ = build_report(run, **FAST)
    head = _headline(html.read_text())
    assert "2 NaN or infinite probabilities" in head
    data = json.loads(html.with_suffix(".json").read_text())
    assert data["sets"]["test"]["auroc"]["scratch"].get("auroc") is None
    assert data["sets"]["test"]["auroc"]["imagenet"]["auroc"] is not None


def test_different_test_cases_not_compared(tmp_path):
    run = make_run(tmp_path / "run", n_cv=100, n_test=50, logs=False)
    _edit(run, lambda df: df.drop(index=df[(df.arm == "imagenet") & (df.split == "test") & df.ensemble].index[0]))
    html, _ = build_report(run, **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    c = [c for c in data["sets"]["test"]["comparisons"] if {c["a"], c["b"]} == {"imagenet", "scratch"}][0]
    assert "different cases" in c["missing"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.assign(label=d.label.where(d.index != 3, 2)), "0 \\(benign\\) or 1"),
        (lambda d: pd.concat([d, d.iloc[[0]]]), "repeat the same"),
        (lambda d: d.assign(label=np.where(d.index == 0, 1 - d.label, d.label)), "different labels"),
        (lambda d: d.drop(columns=["probability"]), "missing column"),
        (lambda d: d.assign(fold=np.where(d.index == 4, "x", d.fold)), "line 6: fold 'x' is not a fold number"),
        (lambda d: d.assign(label_source="histology"), "label_source"),
    ],
)
def test_bad_predictions_raise(tmp_path, edit, match):
    run = make_run(tmp_path / "run", n_cv=50, n_test=30, logs=False, arms={"a": ("none", 1.0), "b": ("imagenet", 1.0)})
    path = RunDir(run).predictions_path
    df = pd.read_csv(path, dtype=str)  # the file as a user might edit it
    df["label"] = df["label"].astype(int)
    edit(df).to_csv(path, index=False)
    with pytest.raises(StatsError, match=match):
        build_report(run, **FAST)


def test_no_predictions_is_clear(tmp_path):
    with pytest.raises(StatsError, match="no predictions.csv"):
        build_report(tmp_path)


def test_cli_report_and_compare(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_cv=60, n_test=100, logs=False)
    out = tmp_path / "r" / "study.html"
    assert main(["--quiet", "report", str(run), "--out", str(out), "--n-boot", "100"]) == 0
    assert out.exists() and out.with_suffix(".md").exists()
    preds = _preds(run)
    sa, sb = (preds.rows(arm=a, split="test", ensemble=True) for a in ("scratch", "imagenet"))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    sa.drop(columns=["cluster"]).to_csv(a, index=False)
    sb[["image", "label", "probability"]].to_csv(b, index=False)
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json", "--n-boot", "100"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_common"] == 100 and r["comparison"]["paired"] and r["clustered"]
    assert r["comparison"]["diff"] == pytest.approx(auroc(sa.label, sa.probability) - auroc(sb.label, sb.probability))
    # several arms in one file: must pick
    predictions = RunDir(run).predictions_path
    assert main(["compare", str(predictions), str(b)]) == 2
    assert "--arm-a" in capsys.readouterr().err
    assert main(["compare", str(predictions), str(b), "--arm-a", "radimagenet", "--method", "delong"]) == 0
    # no common images
    c = tmp_path / "c.csv"
    sb.assign(image=lambda d: "other/" + d.image).to_csv(c, index=False)
    assert main(["compare", str(a), str(c)]) == 2
    assert "share no image ids" in capsys.readouterr().err
    # labels disagree
    d = tmp_path / "d.csv"
    sb.assign(label=lambda d: 1 - d.label).to_csv(d, index=False)
    assert main(["compare", str(a), str(d)]) == 2
    assert "disagree on the label" in capsys.readouterr().err


def test_roles_come_from_the_typed_weight_source_not_names(tmp_path):
    """An arm's role is its weight source's kind: file weights whose path says 'imagenet' are not ImageNet."""
    from thyro.run import load_run

    arms = {"base": ("none", 0.5), "in1k": ("imagenet", 0.8), "rad": ("file", 1.0)}
    run_dir = make_run(tmp_path / "run", n_cv=60, n_test=30, folds=3, logs=False, arms=arms)
    r = RunDir(run_dir)
    rec = r.read_record()
    cfg = rec.config.model_copy(update={"arms": [rec.config.arms[0], rec.config.arms[1],
                                                 rec.config.arms[2].model_copy(update={"weights": {
                                                     "file": "/w/imagenet-copies/radimagenet.safetensors"}})]})
    r.write_record(cfg, rec.base_dir)
    run = load_run(run_dir)
    order, info = run.arm_table()
    assert order == ["base", "in1k", "rad"]
    assert [info[a]["role"] for a in order] == ["scratch", "imagenet", "pretrained"]
    assert run.expected_folds() == (3, "the study configuration (data.folds)")


def test_patient_and_group_join_into_clusters(tmp_path):
    from thyro.run import read_predictions

    csv = tmp_path / "p.csv"
    pd.DataFrame({
        "image": ["a1", "a2", "b1", "c1", "d1"],
        "patient": ["A", "A", "B", "C", "D"],
        "group": ["g1", "g2", "g2", "g3", "g4"],  # b1 duplicates a2: A and B form one cluster
        "label": [1, 1, 1, 0, 0],
        "probability": [0.9, 0.8, 0.7, 0.2, 0.1],
    }).to_csv(csv, index=False)
    preds = read_predictions(csv)
    assert preds.clustered_by == "patient and group"
    c = dict(zip(preds.df.image, preds.df.cluster))
    assert c["a1"] == c["a2"] == c["b1"] and len({c["a1"], c["c1"], c["d1"]}) == 3


def test_scores_that_are_not_probabilities(tmp_path):
    """Logits from another tool: AUROC and tests work; calibration and decision curves say why they are absent."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    csv = tmp_path / "logits.csv"
    pd.DataFrame({"image": [f"i{i}" for i in range(60)], "label": y, "score": rng.normal(size=60) * 3 + 2 * y}).to_csv(csv, index=False)
    html, _ = build_report(csv, tmp_path / "o", **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    arm = data["arms"][0]
    assert data["sets"]["test"]["auroc"][arm]["auroc"] == pytest.approx(auroc(y, pd.read_csv(csv).score))
    assert "[0, 1]" in data["sets"]["test"]["calibration"][arm]["missing"]
    assert "missing" in html.read_text()


def test_compare_other_split_and_fold(fake_run, capsys):
    path = str(RunDir(fake_run).predictions_path)
    assert main(["compare", path, path, "--arm-a", "imagenet",
                 "--arm-b", "scratch", "--split", "val", "--fold", "2", "--json", "--method", "delong"]) == 0
    r = json.loads(capsys.readouterr().out)
    v = _preds(fake_run).rows(arm="imagenet", split="val", fold=2)
    assert r["n_common"] == len(v) and r["comparison"]["method"] == "delong"
    assert main(["compare", path, path, "--arm-a", "imagenet",
                 "--arm-b", "scratch", "--split", "val", "--fold", "9"]) == 2
    assert "no rows with split='val' and fold='9'" in capsys.readouterr().err


def test_skip_reason_stays_on_one_line(tmp_path):
    """A multi-line weight-file message from results.json is one short line, with the whole text folded."""
    rows = [{"image": f"i{k}", "label": k % 2, "arm": "scratch", "split": "test", "fold": "mean",
             "probability": (k % 2) * 0.5 + 0.1 * (k % 5) / 5} for k in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "results.json").write_text(json.dumps({"arms": {
        "scratch": {"status": "done", "weights": "none"},
        "imagenet": {"status": "skipped", "weights": "imagenet",
                     "reason": "ImageNet weights not found. Looked in:\n  - /a\n  - /b"}}}))
    html, md = build_report(tmp_path)
    text = md.read_text()
    assert "**Not run:** imagenet (skipped: ImageNet weights not found)." in text
    full = [line for line in text.splitlines() if line.startswith("- imagenet (skipped):")]
    assert len(full) == 1 and "/a" in full[0] and "/b" in full[0]  # the whole reason, on one line
    page = html.read_text()
    assert "<details><summary>Why, in full</summary>" in page and "| imagenet |" not in text


# ---------------------------------------------------------------- the answer first

@pytest.fixture(scope="module")
def external_report(tmp_path_factory):
    """A fake study with an external set, and its report (built once)."""
    run = make_run(tmp_path_factory.mktemp("ext") / "study", n_cv=200, n_test=80, external={"site-b": 160},
                   logs=False)
    html, md = build_report(run, **FAST)
    return run, html, md, json.loads(html.with_suffix(".json").read_text())


def test_headline_comes_first_and_names_the_best_arm_on_the_external_set(external_report):
    run, html, md, data = external_report
    h = data["headline"]
    ext = data["sets"]["site-b"]
    best = max((r for r in ext["table"]), key=lambda r: r["auroc"])
    assert h["set"] == "site-b" and h["best"]["arm"] == best["arm"]
    page = html.read_text()
    # the answer before any section, then the external set, the test set, out of fold
    assert page.index('id="answer"') < page.index("<h2")
    order = [page.index(f'<h2 id="set-{name}"') for name in ("site-b", "test", "val")]
    assert order == sorted(order) and data["set_order"] == ["site-b", "test", "val"]
    first = h["text"][0]
    b = ext["auroc"][best["arm"]]
    assert first.startswith("On the external set site-b (160 images")
    ci = f"(95% CI {b['lower']:.3f} to {b['upper']:.3f})"
    assert f"{best['arm']} has the highest AUROC: {b['auroc']:.3f} {ci}" in first
    # every other arm: difference, CI and the Holm-adjusted p of the comparison of interest
    for v in h["versus"]:
        c = next(c for c in ext["comparisons"] if {c["a"], c["b"]} == {best["arm"], v["arm"]})
        sign = 1 if c["a"] == best["arm"] else -1
        assert v["diff"] == pytest.approx(sign * c["diff"]) and v["p_holm"] == c["p_holm"]
        line = next(t for t in h["text"] if t.startswith(f"{best['arm']} − {v['arm']} "))
        assert f"{round(v['diff'], 3):+.3f}" in line and "Holm-adjusted p" in line
        assert "p = <" not in line
    assert h["text"][0] in md.read_text()


def test_no_observed_power_no_empty_holm_and_no_reference_line_by_default(external_report):
    _, html, md, data = external_report
    for text in (html.read_text(), md.read_text()):
        low = text.lower()
        assert "observed difference" not in low and "power to detect the observed" not in low
        assert "over 0 comparison" not in low and "p = <" not in text
        assert "J Am Coll Radiol" not in text  # only where the study asks for it (report.reference)
    assert "smallest detectable difference" in html.read_text()


def test_smallest_detectable_difference_is_a_design_quantity(external_report):
    """It depends on the sizes, the reference arm's AUROC and the score correlations, not on the other arm's."""
    from thyro.stats.power import minimal_detectable_difference

    _, _, _, data = external_report
    for c in data["sets"]["test"]["comparisons"]:
        expected = minimal_detectable_difference(c["auroc_b"], c["n_pos"], c["n_neg"], r_controls=c["r_controls"],
                                                 r_cases=c["r_cases"])
        assert c["mdd"] == pytest.approx(expected) if expected is not None else c["mdd"] is None


def test_glossary_and_hover_explanations(external_report):
    _, html, _, _ = external_report
    page = html.read_text()
    assert '<h2 id="glossary">' in page
    for term in ("DeLong", "Holm", "ECE", "calibration intercept", "calibration slope", "temperature",
                 "cluster bootstrap", "decision curve", "net benefit"):
        assert f"<dt>{term}</dt>" in page, term
    assert '<abbr title="Holm&#39;s correction' in page and '<abbr title="Expected calibration error' in page


def test_comparisons_of_interest_from_the_config_and_the_command_line(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_cv=100, n_test=60, logs=False)
    r = RunDir(run)
    rec = r.read_record()
    cfg = rec.config.model_copy(update={"report": rec.config.report.model_copy(update={
        "comparisons": [("radimagenet", "imagenet")], "reference": "Published: radimagenet 0.83."})})
    r.write_record(cfg, rec.base_dir)
    html, md = build_report(run, **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    test = data["sets"]["test"]
    assert [(c["a"], c["b"]) for c in test["comparisons"]] == [("radimagenet", "imagenet")]
    assert test["comparisons"][0]["p_holm"] == test["comparisons"][0]["p_value"]  # one comparison: no correction
    page = html.read_text()
    assert "a single comparison needs no correction" in page and "For comparison: Published: radimagenet 0.83." in page
    # the command line wins over the record
    assert main(["-q", "report", str(run), "--compare", "imagenet:scratch", "--compare", "radimagenet:scratch",
                 "--n-boot", "100"]) == 0
    data = json.loads(RunDir(run).report_path.with_suffix(".json").read_text())
    assert [(c["a"], c["b"]) for c in data["sets"]["test"]["comparisons"]] == [("imagenet", "scratch"),
                                                                                ("radimagenet", "scratch")]
    assert "Holm&#39;s correction</abbr>&#39;s correction runs over the 2 together" not in page
    capsys.readouterr()
    assert main(["report", str(run), "--compare", "swav:scratch"]) == 2
    assert "names no arm swav" in capsys.readouterr().err
    assert main(["report", str(run), "--compare", "swav"]) == 2
    assert "ARM_A:ARM_B" in capsys.readouterr().err


def test_report_paths_are_relative_to_the_run_directory(tmp_path):
    weights = tmp_path / "weights" / "radimagenet-resnet18.h5"
    run = make_run(tmp_path / "runs" / "study", n_cv=60, n_test=40, logs=False)
    r = RunDir(run)
    rec = r.read_record()
    arms = [a.model_copy(update={"weights": {"radimagenet": str(weights)}}) if a.name == "radimagenet" else a
            for a in rec.config.arms]
    r.write_record(rec.config.model_copy(update={"arms": arms}), run.resolve())
    html, md = build_report(run, **FAST)
    for text in (html.read_text(), md.read_text()):
        assert str(tmp_path) not in text
        assert "radimagenet:../../weights/radimagenet-resnet18.h5" in text


def _predict_csv(path, *, model_source="tirads", labels_source=None, labels_definition=None, n=60, seed=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"image": [f"img{i}.png" for i in range(n)],
                       "probability": 1 / (1 + np.exp(-(rng.normal(size=n) + y))),
                       "probability_of": "TI-RADS ≥ 4c" if model_source == "tirads" else "malignant",
                       "model_label_source": model_source,
                       "model_label_definition": "TI-RADS ≥ 4c" if model_source == "tirads" else "",
                       "class": 0, "prediction": "", "roi": "", "warning": "", "error": "", "label": y,
                       "patient_id": [f"p{i}" for i in range(n)]})
    if labels_source:
        df["label_source"] = labels_source
    if labels_definition:
        df["label_definition"] = labels_definition
    df.to_csv(path, index=False)
    return path


def test_report_of_a_predict_csv_honours_probability_of(tmp_path):
    csv = _predict_csv(tmp_path / "p.csv", labels_source="cytology")
    html, md = build_report(csv, tmp_path / "r", **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    assert data["label"]["positive"] == "TI-RADS ≥ 4c" and data["label"]["source"] == "tirads"
    s = data["sets"]["test"]
    assert s["labels"]["source"] == "cytology"
    assert s["label_warning"].startswith("Labels differ: the model was trained on TI-RADS ≥ 4c")
    page = html.read_text()
    assert "Every probability in this report is a TI-RADS ≥ 4c probability" in page
    assert page.count("Labels differ") >= 2  # the headline and the set's section
    # the same labels: no warning; labels of unknown provenance: it cannot be checked, and the report says so
    same = build_report(_predict_csv(tmp_path / "q.csv", labels_source="tirads", labels_definition="TI-RADS >= 4c"),
                        tmp_path / "r2", **FAST)[0]
    assert "Labels differ" not in same.read_text() and "cannot be checked" not in same.read_text()
    unknown = build_report(_predict_csv(tmp_path / "u.csv"), tmp_path / "r3", **FAST)[0]
    assert "cannot be checked: record label_source" in unknown.read_text()


def test_compare_splits_by_name(external_report, capsys):
    run, _, _, data = external_report
    path = str(RunDir(run).predictions_path)
    capsys.readouterr()
    assert main(["compare", path, path, "--arm-a", "radimagenet", "--arm-b", "scratch", "--split", "external",
                 "--json", "--n-boot", "200"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["split"] == "site-b" and r["n_common"] == data["sets"]["site-b"]["n"]
    assert main(["compare", path, path, "--arm-a", "radimagenet", "--arm-b", "scratch", "--split", "val",
                 "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "split=val, fold=pooled" in out and "p = <" not in out and ("p < 0.001" in out or "p = 0." in out)
    assert main(["compare", path, path, "--arm-a", "radimagenet", "--arm-b", "scratch", "--split", "site-c"]) == 2
    assert "choose val (pooled out-of-fold), test, external or one of site-b" in capsys.readouterr().err


def test_free_text_that_looks_like_a_path_is_shown_as_written(tmp_path):
    """Only values that are whole absolute paths are made relative; a label's description with ``</script>``
    or ``/`` in it is text, shown as typed (escaped in HTML), never rewritten as a path."""
    from thyro.data.manifest import LabelMeaning

    run = make_run(tmp_path / "runs" / "study", n_cv=60, n_test=40, logs=False)
    r = RunDir(run)
    definition = "TI-RADS </script> 4c and/or /5 (see /notes)"
    summary = r.read_data()
    r.write_data(summary.model_copy(update={"labels": LabelMeaning("tirads", definition)}))
    html, md = build_report(run, **FAST)
    page = html.read_text()
    assert "TI-RADS &lt;/script&gt; 4c and/or /5 (see /notes)" in page
    assert "../" not in page.split("TI-RADS &lt;/script&gt;")[1][:40]


def test_a_probe_is_spoken_of_as_a_probe(tmp_path):
    """A linear probe trains no epochs: the report's note on model selection says what was chosen for it."""
    run = make_run(tmp_path / "runs" / "study", n_cv=60, n_test=40, logs=False)
    r = RunDir(run)
    rec = r.read_record()
    probe = rec.config.arms[-1].name
    arms = [a.model_copy(update={"train_backbone": "cached"}) if a.name == probe else a for a in rec.config.arms]
    r.write_record(rec.config.model_copy(update={"arms": arms}), run.resolve())
    html, _ = build_report(run, **FAST)
    text = json.loads(html.with_suffix(".json").read_text())["selection"]["text"]
    assert f"linear probe ({probe}) trains no epochs" in text and "inner folds" in text
