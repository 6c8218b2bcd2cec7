"""``build_report``: one self-contained HTML file and a Markdown summary from a run directory."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import os
from pathlib import Path

import jinja2
import numpy as np
import yaml

from thyro import __version__, metrics
from thyro.data.audit import read_audit
from thyro.data.manifest import LabelMeaning
from thyro.errors import StatsError
from thyro.fileio import markdown_text, sha256_file, write_json, write_text
from thyro.report import figures
from thyro.report.analysis import analyse
from thyro.report.glossary import GLOSSARY, term
from thyro.report.text import fmt_p, one_line, set_heading, why
from thyro.run import OOF, REPORT, Results, Run, RunDir, load_run
from thyro.stats.format import format_p
from thyro.stats.support import check

TEMPLATES = Path(__file__).parent / "templates"
BAND_BOOT = 500


def _env(autoescape: bool) -> jinja2.Environment:
    """The HTML templates' environment (``autoescape``) or the Markdown one (every value through
    :func:`~thyro.fileio.markdown_text`, so no label or name from the data is rendered as HTML)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        finalize=None if autoescape else markdown_text,
        undefined=jinja2.StrictUndefined if not autoescape else jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _flatten(d, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + " · ")
        elif isinstance(v, list):
            rows.append((key, ", ".join(map(str, v))))
        else:
            rows.append((key, str(v)))
    return rows


def _ci(r: dict) -> str:
    return f"{r['auroc']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]"


def _sdiff(x: float) -> str:
    """Signed difference with 3 decimals; never "-0.000"."""
    r = round(float(x), 3) + 0.0
    return f"{r:+.3f}"


def _prop(p: dict) -> str:
    if p["n"] == 0 or p["value"] is None:
        return "— (0 cases)"
    return f"{p['value']:.2f} [{p['lower']:.2f}, {p['upper']:.2f}]"


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _any_valid(per_arm: dict) -> bool:
    return any(not v.get("missing") for v in per_arm.values())


def _outputs(run_dir: Path, out) -> tuple[Path, Path, Path]:
    """The report's files: in the run directory (or beside a bare CSV) unless ``out`` names a folder or file."""
    if out is None:
        html = RunDir(run_dir if run_dir.is_dir() else run_dir.parent).report_path
    else:
        out = Path(out)
        html = out if out.suffix.lower() in (".html", ".htm") else out / REPORT
    return html, html.with_suffix(".md"), html.with_suffix(".json")


def _relative_path(run: Run, value: str) -> str:
    """``value`` relative to the run directory when the whole value is an absolute path (a study's base
    folder, a manifest, a weight file); any other text (a label's description, a free-text note) as it is."""
    if value and "\n" not in value and os.path.isabs(value):
        return run.relative(value)
    return value


def _relative_config(run: Run, text: str) -> str:
    """The study record's text with the values that are absolute paths written relative to the run
    directory; text that is not YAML is shown as it is."""
    try:
        record = yaml.safe_load(text)
    except yaml.YAMLError:
        return text

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return _relative_path(run, v) if isinstance(v, str) else v

    return yaml.safe_dump(walk(record), sort_keys=False, allow_unicode=True) if isinstance(record, dict) else text


def _set_figures(a: dict, settings: metrics.Settings, band_boot: int) -> dict:
    """Each set's ROC curves (of the arms with an AUROC there), reliability diagram and decision curves."""
    out = {}
    for name, s in a["sets"].items():
        rows = {arm: r for arm, r in s.pop("_rows").items() if s["auroc"][arm].get("auroc") is not None}
        title = s["heading"]
        short = {"test": "Test set" if s["title"] == "the held-out test set" else "All images",
                 "oof": "Out of fold"}.get(s["kind"], name)
        out[name] = {
            "roc": figures.roc_figure(rows, s["auroc"], n_boot=band_boot, seed=settings.seed, level=settings.level,
                                      title=f"{short} ROC") if rows else None,
            "calibration": figures.calibration_figure(s["calibration"], title=f"Reliability ({title.lower()})",
                                                      observed=f"Observed fraction {s['labels']['positive']}")
            if s["kind"] != "oof" and _any_valid(s["calibration"]) else None,
            "decision": figures.decision_figure(s["decision"], title=f"Decision curves ({title.lower()})")
            if s["kind"] != "oof" and _any_valid(s["decision"]) else None,
        }
    return out


def _figures(run: Run, a: dict, settings: metrics.Settings, band_boot: int) -> dict:
    """Every figure of the report, as base64 PNG."""
    figs: dict = {"sets": _set_figures(a, settings, band_boot)}
    test = a["sets"].get("test", {}).get("auroc", {})
    rows = a["folds"]["rows"]
    figs["folds"] = figures.folds_figure(rows, [r for r in a["arms"] if any(x["arm"] == r for x in rows)],
                                         a["oof"], test) if rows else None
    figs["oof"] = figures.oof_vs_test_figure(a["arms"], a["oof"], test) if a["oof"] else None
    eff = a.get("efficiency")
    figs["efficiency"] = figures.efficiency_figure(eff["curves"], {
        "val": "out of fold", "test": "test set (ensemble)", **{n: f"{n} (ensemble)" for n in a["sets"] if n != "test"}}
    ) if eff else None
    logs = {arm: run.logs[arm] for arm in a["arms"] + sorted(run.logs) if arm in run.logs}
    figs["training"] = figures.training_figure(logs, _hidden_val(a))
    return figs


def _hidden_val(a: dict) -> dict[str, set[str]]:
    """``{arm: {"foldK", ...}}``: the folds whose validation AUROC the training curves leave out (their held-out
    part cannot support one)."""
    hidden: dict[str, set[str]] = {}
    for r in a["folds"]["rows"]:
        if r.get("val_why"):
            hidden.setdefault(r["arm"], set()).add(f"fold{r['fold']}")
    return hidden


def _audit_supported(audit: dict | None) -> dict | None:
    """The shortcut audit with its AUROCs replaced by the reason where its images are too few to support one
    (:mod:`thyro.stats.support`; the audit records images per class, so images are the cases here)."""
    if not audit:
        return audit
    audit = dict(audit)

    def short(r: dict | None):
        if not r or r.get("auroc") is None or r.get("n_pos") is None:
            return None
        return check("auroc", [1] * int(r["n_pos"]) + [0] * int(r["n_neg"]))

    mo = audit.get("marks_only") or {}
    why = short(mo)
    if why:
        audit["marks_only"] = {**mo, "auroc": None, "note": why.text}
    model = audit.get("model") or {}
    why = short(model.get("auroc_marks"))
    if why:
        audit["model"] = {**model, "comparison": None}
        audit["model_note"] = why.text
    return audit


def _provenance(run: Run, run_dir: Path, level: float) -> dict:
    """The report's provenance: predictions file and hash, versions, configuration, data, audit."""
    res = run.results or Results()
    config_text = run.config_text or (json.dumps(res.config, indent=2) if res.config else None)
    versions = dict(res.versions or {})
    versions.setdefault("thyro (report)", __version__)
    versions.setdefault("numpy (report)", np.__version__)
    versions.setdefault("python (report)", platform.python_version())
    audit = _audit_supported(read_audit(run_dir)) if run_dir.is_dir() else None
    return {
        "title": run.title,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "thyro_version": __version__,
        "predictions_name": run.relative(run.predictions_path) if run.from_dir else run.predictions_path.name,
        "predictions_sha": sha256_file(run.predictions_path),
        "level_pct": f"{level * 100:g}",
        "data_rows": ([(k, _relative_path(run, v)) for k, v in _flatten(run.data.to_dict())]
                      if run.data is not None else []),
        "versions": sorted(versions.items()),
        "git_commit": res.git_commit,
        "config_text": _relative_config(run, config_text) if config_text else None,
        # the shortcut audit, when `thyro data audit ... --out RUN_DIR` wrote one here
        "audit": audit,
        "audit_manifest": run.relative(audit["manifest"]) if audit and audit.get("manifest") else None,
    }


#: What the templates call to write a figure or a reason.
HELPERS = {"set_title": set_heading, "fmt_p": fmt_p, "format_p": format_p, "term": term, "ci": _ci, "sdiff": _sdiff,
           "prop": _prop, "one_line": one_line, "why": why, "oof_name": OOF, "glossary": list(GLOSSARY.values())}


def build_report(run_dir, out=None, *, method: str = "auto", n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, comparisons: list | None = None,
                 reference: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained, figures embedded) and ``report.md`` for a study.

    Parameters
    ----------
    run_dir : path
        A run directory (read through :mod:`thyro.run`) or a predictions CSV on its own.
    out : path, optional
        Output folder, or the HTML file name (the Markdown goes beside it).  Default: the run directory.
    method : {"auto", "delong", "bootstrap"}
        ``auto`` uses DeLong unless a patient (or group) has several images in a set; then the cluster
        bootstrap (:mod:`thyro.metrics`).
    comparisons : list of (arm, arm), optional
        The comparisons of interest (default: the study's ``report.comparisons``, else every pretrained arm
        against scratch and every pair of pretrained arms).
    reference : str, optional
        A line to show with the results (default: the study's ``report.reference``).

    Returns
    -------
    (html_path, md_path)
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    settings = metrics.Settings(method=method, n_boot=n_boot, seed=seed, level=level)
    a = analyse(run, settings, comparisons=comparisons, reference=reference)
    band_boot = min(BAND_BOOT, n_boot)
    figs = _figures(run, a, settings, band_boot)
    html_path, md_path, json_path = _outputs(run_dir, out)
    ctx = {"a": a, "figs": figs, "label": a["label"], "fold_arms": [r for r in a["arms"] if r in a["oof"]],
           "band_boot": band_boot, "html_name": html_path.name, "training_hidden": sorted(
               f"{arm} {fold}" for arm, folds in _hidden_val(a).items() for fold in folds),
           **_provenance(run, run_dir, level), **HELPERS}
    audit = ctx["audit"]
    ctx["audit_labels"] = (LabelMeaning.from_dict(audit.get("labels")).to_dict() if audit and audit.get("labels")
                           else a["label"])
    try:
        html = _env(True).get_template("report.html.j2").render(**ctx)
        md = _env(False).get_template("report.md.j2").render(**ctx)
    except jinja2.TemplateError as exc:  # a bug, but say where
        raise StatsError(f"report template failed: {exc}") from exc
    write_text(html_path, html)
    write_text(md_path, md)
    write_json(json_path, _json_safe(a))
    return html_path, md_path
