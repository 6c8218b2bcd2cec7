"""Shared fixtures.  Real-data tests use ../shared/data and skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("THYRO_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests must never reach the network: make hub libraries fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (DDTI and the UD-TN sample); skips when absent, as in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ddti_dir(shared_data: Path) -> Path:
    path = shared_data / "ddti"
    if not path.is_dir():
        pytest.skip(f"DDTI not found at {path}")
    return path


@pytest.fixture(scope="session")
def udtn_dir(shared_data: Path) -> Path:
    path = shared_data / "udtn-sample"
    if not path.is_dir():
        pytest.skip(f"UD-TN sample not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Point every weight cache at an empty temporary folder so no test sees a user's files."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("THYRO_CACHE_DIR", str(home / "thyro-cache"))
