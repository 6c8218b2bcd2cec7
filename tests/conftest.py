"""Shared fixtures.  Real-data tests use ../shared/data and skip with a reason when it is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("THYRO_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests must never reach the network: make hub libraries fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """The README walkthrough first: it takes minutes, so under xdist it runs beside the rest, not after it."""
    items.sort(key=lambda item: item.get_closest_marker("readme") is None)


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
    monkeypatch.setenv("THYRO_HOME", str(home / "thyro-home"))
    yield
    # Weight stores and caches can hold hundreds of MB per test; a whole run must fit a small disk.
    shutil.rmtree(home, ignore_errors=True)


def write_bomb_png(path: Path, width: int, height: int, *, complete: bool = False) -> Path:
    """A grey 8-bit PNG declaring ``width`` x ``height`` pixels, written without ever holding them.

    ``complete=False`` writes the header and a few rows (a few hundred bytes: whatever reads past the
    header fails on truncated data); ``complete=True`` streams every row of zeros through zlib, the
    real "decompression bomb" (13000 x 13000 is about 200 KB on disk, 169 MB decoded).
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the row
    parts = []
    for _ in range(height if complete else min(height, 4)):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                           + chunk(b"IEND", b""))
    return Path(path)


@pytest.fixture
def bomb_png():
    """:func:`write_bomb_png`, for tests in any folder."""
    return write_bomb_png


@pytest.fixture
def pixel_limit():
    """``thyro.settings``, restored after the test (a ``thyro --max-pixels`` run sets the pixel limit for the
    process)."""
    import dataclasses

    import thyro.settings as settings

    saved = settings.get_settings()
    yield settings
    settings.set_settings(**dataclasses.asdict(saved))
