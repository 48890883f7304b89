"""The stage cache: entries appear whole, and processes wanting the same entry compute it once."""
from __future__ import annotations

import threading
import time

import pytest

from musecl.cache import DONE, Cache


def test_entry_is_computed_once_and_then_read(tmp_path):
    cache, calls = Cache(tmp_path), []

    def compute(folder):
        calls.append(folder)
        (folder / "x.txt").write_text("1")

    first = cache.get_or_compute("stage", {"a": 1}, compute)
    second = cache.get_or_compute("stage", {"a": 1}, compute)
    assert first == second and len(calls) == 1 and (first / DONE).exists()
    assert cache.get_or_compute("stage", {"a": 2}, compute) != first and len(calls) == 2


def test_interrupted_compute_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)

    def fails(folder):
        (folder / "half.txt").write_text("")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("stage", {"a": 1}, fails)
    assert not cache.has("stage", {"a": 1})
    assert not [p for p in (tmp_path / "stage").iterdir() if p.is_dir()]  # no temporary folder left


def test_concurrent_callers_wait_for_one_compute(tmp_path):
    """Methods fitted side by side share stages: the second caller must wait and read the first's
    result, not train the same encoder again (flock locks also separate threads' open files)."""
    cache, calls, results = Cache(tmp_path), [], []

    def slow(folder):
        calls.append(1)
        time.sleep(0.5)
        (folder / "x.txt").write_text("done")

    def caller():
        results.append(cache.get_or_compute("stage", {"a": 1}, slow))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / "x.txt").read_text() == "done"
