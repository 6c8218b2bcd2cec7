"""Library progress goes through a callback (thyro.progress); the command line draws it, nothing else does."""

from __future__ import annotations

import threading

import pytest

from thyro import progress
from thyro.errors import ConfigError
from thyro.settings import DEFAULT_MAX_PIXELS, get_settings, set_settings, settings_context


def test_track_reports_start_each_item_and_end_to_the_installed_reporter():
    seen: list[progress.Update] = []
    with progress.reporting(seen.append):
        assert list(progress.track([10, 20, 30], "counting", unit="image")) == [10, 20, 30]
    assert [u.completed for u in seen] == [0, 1, 2, 3, 3]
    assert [u.finished for u in seen] == [False, False, False, False, True]
    assert {u.task for u in seen} == {seen[0].task} and seen[0].total == 3 and seen[0].unit == "image"


def test_nothing_is_reported_without_a_reporter_and_a_block_restores_the_outer_one():
    outer: list = []
    progress.set_reporter(None)
    assert list(progress.track(range(3), "quiet")) == [0, 1, 2]
    with progress.reporting(outer.append):
        with progress.reporting(None):
            with progress.task("inner", 2) as t:
                t.advance(2)
        assert progress.current() is not None
    assert outer == [] and progress.current() is None


def test_rate_and_time_left_come_from_the_counts():
    u = progress.Update(1, "x", completed=10, total=30, elapsed=5.0)
    assert u.rate == pytest.approx(2.0) and u.remaining == pytest.approx(10.0)
    assert progress.Update(1, "x", 0, None).remaining is None


def test_a_reporter_in_one_thread_does_not_see_another_threads_tasks():
    seen: list = []
    with progress.reporting(seen.append):
        worker = threading.Thread(target=lambda: list(progress.track(range(5), "elsewhere")))
        worker.start()
        worker.join()
    assert seen == []


def test_settings_default_block_and_process_wide():
    assert get_settings().max_pixels == DEFAULT_MAX_PIXELS
    with settings_context(max_pixels=100) as s:
        assert s.max_pixels == 100 == get_settings().max_pixels
    assert get_settings().max_pixels == DEFAULT_MAX_PIXELS
    try:
        set_settings(max_pixels=123)
        assert get_settings().max_pixels == 123
        with settings_context(max_pixels=7):
            assert get_settings().max_pixels == 7
    finally:
        set_settings(max_pixels=DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize("changes", [{"max_pixels": 0}, {"max_pixels": "many"}, {"max_pixel": 5}])
def test_bad_settings_name_the_setting(changes):
    with pytest.raises(ConfigError, match="max_pixel"):
        with settings_context(**changes):
            pass
