"""The configuration reference and JSON Schemas in docs/ are generated from the models and up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thyro import config_reference as ref

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", sorted(ref.documents()))
def test_generated_documents_match_the_committed_ones(name):
    committed = DOCS / name
    assert committed.is_file(), f"{committed} missing: run python -m thyro.config_reference docs/"
    assert committed.read_text(encoding="utf-8") == ref.documents()[name], (
        f"docs/{name} is out of date: run python -m thyro.config_reference docs/")


@pytest.mark.parametrize("stem, model", [(stem, model) for stem, model, *_ in ref.DOCUMENTS])
def test_every_key_is_described_with_its_type_and_default(stem, model):
    rows = ref.rows(model)
    assert len(rows) > 20
    for key, kind, default, allowed, description in rows:
        assert description and kind and default, key
    keys = {r[0].strip("`") for r in rows}
    if stem == "study":
        assert {"data.manifest", "arms[].weights", "train.selection", "preprocess.size", "train.augment.hflip",
                "data.external[].manifest", "train.tune.lr"} <= keys
        row = {r[0].strip("`"): r for r in rows}
        assert row["train.selection"][3] == "`inner`, `last`, `oof`" and row["train.selection"][2] == '`"last"`'
        assert row["arms[].in_chans_mode"][3] == "`repeat`, `sum`" and "timm" in row["arms[].backbone"][4]
        assert row["data.folds"][3] == "≥ 2, ≤ 20" and row["data.manifest"][1] == "path"


def test_the_schema_is_strict_and_carries_descriptions_and_allowed_values():
    schema = json.loads((DOCS / "study.schema.json").read_text())
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["additionalProperties"] is False
    arm = schema["$defs"]["ArmConfig"]["properties"]
    assert arm["backbone"]["default"] == "resnet18" and arm["in_chans_mode"]["enum"] == ["repeat", "sum"]
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["selection"]["enum"] == ["inner", "last", "oof"] and train["epochs"]["default"] == 40

    def described(node, where):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}.{name}"
    for name, node in schema["$defs"].items():
        described(node, name)
    pretrain = json.loads((DOCS / "pretrain.schema.json").read_text())
    assert pretrain["properties"]["mode"]["enum"] == ["supervised", "simclr"]
