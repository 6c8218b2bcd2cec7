"""A study's worker processes (spawned) are handed the parent's settings and run the caller's set-up first."""

from __future__ import annotations

import functools

from thyro.settings import get_settings, settings_context
from thyro.train.workers import run_processes


def _code(text: str):
    """A picklable callable that runs ``text`` (a spawned process imports nothing of the test module)."""
    return functools.partial(exec, text)


def test_workers_get_the_settings_and_the_set_up_and_a_failure_is_reported(tmp_path):
    seen, init = tmp_path / "seen", tmp_path / "init"
    init.mkdir()
    with settings_context(max_pixels=1234):
        assert get_settings().max_pixels == 1234
        problems = run_processes(
            [_code(f"from thyro.settings import get_settings\nimport pathlib\n"
                   f"pathlib.Path({str(seen)!r}).write_text(str(get_settings().max_pixels))"),
             _code("from thyro.errors import DataError\nraise DataError('no such images')")],
            worker_init=_code(f"import os, pathlib\npathlib.Path({str(init)!r}, str(os.getpid())).touch()"))
    assert seen.read_text() == "1234"  # the parent's settings, though a spawned process starts from the defaults
    assert len(list(init.iterdir())) == 2  # each worker ran the set-up
    assert problems == {"thyro-worker-1": "exited with code 2"}
