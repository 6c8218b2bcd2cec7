"""The Python example in docs/python-api.md runs as it is written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (DOCS / "python-api.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(block, "docs/python-api.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "test AUROC" in out and "images scored" in out and "common test images" in out
    assert (tmp_path / "runs" / "notebook" / "report.html").is_file() and (tmp_path / "predictions.csv").is_file()


def test_python_api_is_linked_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    for doc in ("docs/python-api.md", "docs/config-reference.md", "docs/serve-api.md"):
        assert f"]({doc})" in readme, doc


def test_readme_study_config_parses():
    """The study configuration shown in the README is one thyro accepts, with the settings it claims."""
    import yaml

    from thyro.config import StudyConfig

    text = (DOCS.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1)
    cfg = StudyConfig.parse({"name": "readme", **yaml.safe_load(block)})
    assert [e.name for e in cfg.data.external] == ["site-b"]
    assert cfg.data.train_fractions == [0.25, 0.5, 1.0]
    assert [a.train_backbone for a in cfg.arms] == ["all", "all", "none"]
    assert cfg.train.selection == "last" and cfg.train.tracking == "mlflow" and cfg.train.tune.lr == [0.0003, 0.001]
