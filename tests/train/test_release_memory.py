"""A study gives the memory a finished job freed back to the operating system before the next job."""

from __future__ import annotations

import sys

import psutil
import pytest

from thyro.device import _malloc_trim, release_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None,
                    reason="malloc_trim is glibc's; elsewhere release_memory only collects garbage")
def test_freed_heap_returns_to_the_system():
    proc = psutil.Process()
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # about 200 MB of heap (each block below mmap's threshold)
    for b in blocks:  # touched: resident
        b[::4096] = b"\x01" * len(b[::4096])
    keep = blocks[-1]  # the heap's top stays in use, so free() alone cannot shrink it
    del blocks
    before = proc.memory_info().rss
    release_memory()
    after = proc.memory_info().rss
    assert before - after > 100 * 2**20, (before, after)
    assert keep[0] == 1


def test_release_memory_runs_anywhere(monkeypatch):
    """Without malloc_trim (macOS, musl) it still collects garbage and returns."""
    from thyro import device

    monkeypatch.setattr(device, "_malloc_trim", lambda: None)
    device.release_memory()

