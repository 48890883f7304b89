"""The stage cache: entries appear whole, and processes wanting the same entry compute it once."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import musecl.cache as cache_module
from musecl.cache import CONTENTS, DONE, Cache
from musecl.io import sha256_of


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


def test_training_checkpoints_stay_while_a_stage_is_unfinished_and_go_once_it_is_in_place(tmp_path):
    cache, key = Cache(tmp_path), {"a": 1}

    def trains(folder, fail=False):
        cache.checkpoints(key).mkdir(parents=True, exist_ok=True)
        (cache.checkpoints(key) / "last.pt").write_text("weights")
        if fail:
            raise KeyboardInterrupt
        (folder / "x.txt").write_text("1")

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("stage", key, lambda folder: trains(folder, fail=True))
    assert (cache.checkpoints(key) / "last.pt").exists()  # what the next run resumes from
    other = {"a": 2}
    cache.checkpoints(other).mkdir(parents=True)
    entry = cache.get_or_compute("stage", key, trains)
    assert (entry / "x.txt").exists() and not cache.checkpoints(key).exists()
    assert cache.checkpoints(other).exists()  # another stage's, still training elsewhere
    # killed after the entry was renamed into place, before its checkpoints went: the next use removes them
    cache.checkpoints(key).mkdir(parents=True)
    assert cache.get_or_compute("stage", key, trains) == entry and not cache.checkpoints(key).exists()
    assert cache.checkpoints(other).exists()


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


# -- content checks and leftovers ----------------------------------------------------------


def _results(folder):
    pd.DataFrame({"method": ["m"] * 40, "r2": np.linspace(0, 1, 40).round(6)}).to_csv(folder / "results.csv",
                                                                                      index=False)


def test_truncated_entry_is_named_and_recomputed(tmp_path):
    cache, calls = Cache(tmp_path), []

    def evaluate(folder):
        calls.append(1)
        _results(folder)

    entry = cache.get_or_compute("evaluation", {"a": 1}, evaluate)
    whole = (entry / "results.csv").read_bytes()
    (entry / "results.csv").write_bytes(whole[:len(whole) // 2])  # as if cut off
    with pytest.warns(UserWarning, match=r"cache entry .*: file results.csv changed .*; recomputing"):
        again = cache_module.Cache(tmp_path).get_or_compute("evaluation", {"a": 1}, evaluate)
    assert again == entry and len(calls) == 2 and (again / "results.csv").read_bytes() == whole


def test_flipped_byte_is_a_hash_mismatch_and_hits_hash_once_per_process(tmp_path, monkeypatch):
    cache, calls = Cache(tmp_path), []
    entry = cache.get_or_compute("stage", {"a": 1}, lambda f: (calls.append(1), _results(f)))
    cache_module._CHECKED.clear()  # a new process: the first hit hashes, the next ones do not
    hashed = []
    monkeypatch.setattr(cache_module, "sha256_of", lambda p: hashed.append(p) or sha256_of(p))
    for _ in range(3):
        cache.get_or_compute("stage", {"a": 1}, lambda f: calls.append(1))
    assert len(calls) == 1 and len(hashed) == 2  # key.json and results.csv, once

    raw = bytearray((entry / "results.csv").read_bytes())
    raw[10] ^= 0x01  # the same size: only the hash can tell
    (entry / "results.csv").write_bytes(bytes(raw))
    cache_module._CHECKED.clear()
    with pytest.warns(UserWarning, match=r"file results.csv changed \(hash mismatch\); recomputing"):
        cache.get_or_compute("stage", {"a": 1}, lambda f: (calls.append(1), _results(f)))
    assert len(calls) == 2


def test_entry_of_an_older_version_is_recomputed_with_a_warning(tmp_path):
    cache, calls = Cache(tmp_path), []
    entry = cache.get_or_compute("stage", {"a": 1}, lambda f: (calls.append(1), _results(f)))
    (entry / CONTENTS).unlink()  # what entries looked like before content checks
    cache_module._CHECKED.clear()
    with pytest.warns(UserWarning, match=rf"has no {CONTENTS}.*; recomputing"):
        assert not cache.has("stage", {"a": 1})
    cache.get_or_compute("stage", {"a": 1}, lambda f: (calls.append(1), _results(f)))
    assert len(calls) == 2 and (entry / CONTENTS).exists()


def test_stale_temporary_folders_are_removed_at_the_next_start(tmp_path):
    stage = tmp_path / "stage"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = cache_module._host()
    killed = stage / f".abc123.{dead.pid}@{host}.x1y2z3"  # a run killed with SIGKILL on this host
    running = stage / f".abc123.{os.getpid()}@{host}.q7r8s9"  # a compute still in progress
    old = stage / ".def456.k9l8m7"  # named by an older musecl: judged by age
    recent_other_host = stage / ".def456.1234@elsewhere.k1l2m3"
    for folder in (killed, running, old, recent_other_host):
        folder.mkdir(parents=True)
        (folder / "half.txt").write_text("")
    two_days_ago = time.time() - (cache_module.STALE_TEMP_HOURS + 1) * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    (stage / "0123abcd").mkdir()  # an entry: never touched
    with pytest.warns(UserWarning, match="removed 2 temporary folder"):
        removed = cache_module.remove_stale_temporaries(tmp_path)
    assert set(removed) == {killed, old}
    assert running.exists() and recent_other_host.exists() and (stage / "0123abcd").exists()
    cache_module._SWEPT.discard(str(tmp_path.resolve()))
    os.utime(recent_other_host, (two_days_ago, two_days_ago))
    with pytest.warns(UserWarning, match="removed 1 temporary folder"):
        Cache(tmp_path)  # the first Cache on a root in a process sweeps it
    assert not recent_other_host.exists() and running.exists()


def test_temporary_folder_names_carry_pid_and_host(tmp_path):
    seen = []
    Cache(tmp_path).get_or_compute("stage", {"a": 1}, lambda f: seen.append(f.name))
    match = cache_module._TEMP_NAME.match(seen[0])
    assert match and int(match["pid"]) == os.getpid() and match["host"] == cache_module._host()


def test_tables_keep_region_ids_that_look_missing(tmp_path):
    """Embeddings are saved and read back by region id: "NA" or "null" is an id, an empty value is missing."""
    table = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0]}, index=pd.Index(["NA", "null", "None", "r4"], name="region_id"))
    cache_module.save_table(table, tmp_path / "t.csv")
    back = cache_module.load_table(tmp_path / "t.csv")
    assert list(back.index) == ["NA", "null", "None", "r4"] and np.isnan(back.loc["null", "x"])
    pd.testing.assert_frame_equal(back, table)


def test_city_fingerprint_changes_when_one_image_changes(tmp_path):
    """Same tables, one image's bytes changed: a stage trained on the old image must not be reused."""
    import warnings

    from musecl.cache import city_fingerprint
    from musecl.city import load_city
    from musecl.datasets.toy import make_toy_city

    root = make_toy_city(tmp_path / "toy", n_regions=20, seed=1, image_size=16, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the toy city leaves a few regions without a satellite image
        city = load_city(root)
    before = city_fingerprint(city)
    assert city_fingerprint(city) == before
    image = sorted(map(str, city.images["path"]))[0]
    data = bytearray(open(image, "rb").read())
    data[-1] ^= 0xFF  # same size, other bytes
    with open(image, "wb") as handle:
        handle.write(data)
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as a later write would
    assert city_fingerprint(city) != before


def test_files_written_whole_get_the_usual_permissions(tmp_path, monkeypatch):
    """`atomic_write` renames a temporary file that mkstemp makes private (0600): results and cache
    entries were unreadable to the group on a shared machine. They now get what open() would give."""
    import musecl.io as io_module

    mask = os.umask(0o022)
    os.umask(mask)
    assert io_module._UMASK == mask  # read at import
    io_module.atomic_save_json(tmp_path / "a.json", {"a": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    monkeypatch.setattr(io_module, "_UMASK", 0o027)
    io_module.atomic_save_json(tmp_path / "b.json", {"b": 1})
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640


def test_asking_whether_a_process_lives_never_ends_it(monkeypatch):
    """On Windows os.kill(pid, 0) ends the process (TerminateProcess): asking about a worker's parent or
    a cache folder's writer would have killed it. There a pid is taken as alive, without a signal."""
    from musecl.io import process_alive

    def no_signal(pid, sig):
        raise AssertionError("os.kill called")

    monkeypatch.setattr(os, "kill", no_signal)
    monkeypatch.setattr(os, "name", "nt")
    assert process_alive(os.getpid()) and process_alive(2 ** 22 + 12345)
    assert not process_alive(0) and not process_alive(-1)
