"""Nothing silent at the run level: a damaged cached score is named and recomputed (never
trusted), an output folder another run is writing with other settings is refused, and nothing a
killed run leaves behind blocks the next one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest

from musecl import cli
from musecl.city import MIN_REGIONS
from musecl.config import RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.io import LOCK_FILE, FolderBusyError, owned_folder, publish
from musecl.runner import run

# the cheapest run there is: Location kNN trains nothing and is read by its kNN probe
QUICK = RunConfig(seeds=(0,), splits=("random",), probe_max_epochs=10, probe_patience=3, jobs=1)
METHOD = "Location kNN"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_city(tmp_path_factory.mktemp("toy") / "toy", n_regions=MIN_REGIONS + 5, seed=0, image_size=16,
                         progress=False)


def quiet_run(city, out, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small city's regions without images or mobility
        return run(city, out, QUICK, methods=[METHOD], cache_dir=cache, progress=False)


HOLD = """
import sys, time
from musecl.io import owned_folder
with owned_folder(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def another_run(folder, settings: str, seconds: float) -> subprocess.Popen:
    """A live process that owns ``folder`` with ``settings`` for ``seconds``, as a second `musecl run` would."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), settings, str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_truncated_cached_score_is_named_and_recomputed(toy, tmp_path):
    cache = tmp_path / "cache"
    quiet_run(toy, tmp_path / "first", cache)
    entries = sorted((cache / "evaluation").glob("*/results.csv"))
    assert len(entries) == 1
    whole = entries[0].read_bytes()
    entries[0].write_bytes(whole[: len(whole) // 2])  # as if the disk filled up or a copy was cut off
    with pytest.warns(UserWarning, match=rf"cache entry .*{entries[0].parent.name}: file results\.csv changed "
                                         r".*; recomputing"):
        run(toy, tmp_path / "second", QUICK, methods=[METHOD], cache_dir=cache, progress=False)
    first, second = (pd.read_csv(tmp_path / out / "results.csv") for out in ("first", "second"))
    assert len(first) > 0
    pd.testing.assert_frame_equal(second, first)
    assert entries[0].read_bytes() == whole  # the entry was written again, whole


def test_a_folder_another_run_writes_is_refused(toy, tmp_path, capsys):
    """Two runs with other settings into one --out folder: the second stops at once, naming the
    folder and the other run (the first keeps the folder; nothing of the second is written)."""
    out = tmp_path / "out"
    other = another_run(out, "another run's settings", 60)
    try:
        with pytest.raises(FolderBusyError, match=rf"{out} is being written by another run \(pid {other.pid}\) with "
                                                  "other settings"):
            quiet_run(toy, out, tmp_path / "cache")
        code = cli.main(["run", str(toy), "--out", str(out), "--methods", METHOD])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {out} is being written by another run")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # untouched: still the other run's
        assert json.loads((out / LOCK_FILE).read_text())["settings"] == "another run's settings"
    finally:
        other.kill()
        other.wait()


@pytest.mark.timeout(60)  # each of these hung a run forever before the lock was an flock
def test_what_a_killed_run_leaves_does_not_block_the_next(tmp_path):
    """The folder lock follows the owning process, not a pid in a file: a lock file cut off while
    written, naming a pid that another process now has, or naming none, is taken over; a killed
    owner's lock is free at once; a live owner with the same settings is waited for, said once."""
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_FILE
    for left in ("", '{"pid": 1, "settings": "other"}', '{"settings": "other"}', "[1]"):
        lock.write_text(left)
        with owned_folder(out, "mine", poll_s=0.05):
            assert json.loads(lock.read_text()) == {"pid": os.getpid(), "settings": "mine"}
        assert lock.read_text() == ""  # between runs it names no owner
    (out / ".staging-1").mkdir()  # a killed run's, whatever its pid has become
    other = another_run(out, "other", 60)
    other.kill()  # SIGKILL: nothing of its own cleans up
    other.wait()
    with owned_folder(out, "mine"):
        assert not (out / ".staging-1").exists()
    same = another_run(out, "mine", 1.5)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match=rf"same settings \(pid {same.pid}\); waiting for it to end"):
        with owned_folder(out, "mine", poll_s=0.05):
            assert time.perf_counter() - start > 1.0  # entered only once the other had let go (1.5 s)
    same.wait()


def test_a_folder_cut_off_while_published_has_no_results_table(tmp_path):
    """`publish` removes the old results table first and moves the new one in last: a run killed
    half way through leaves no table that describes other files than those beside it."""
    folder, staging = tmp_path / "out", tmp_path / "out" / ".staging-1"
    (staging / "embeddings").mkdir(parents=True)
    for name in ("config.yaml", "results.csv", "run.json", "ceilings.csv"):
        (folder / name).write_text("old")
    for name in ("a.csv", "config.yaml", "results.csv", "run.json", "z.csv"):
        (staging / name).write_text("new")
    moved = []
    real = os.replace

    def recording(src, dst):
        moved.append(os.path.basename(dst))
        real(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", recording)
        publish(staging, folder, last=("results.csv", "run.json"), stale=("ceilings.csv", "attention.csv"))
    assert moved[-2:] == ["results.csv", "run.json"] and len(moved) == 6
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "config.yaml", "embeddings", "results.csv",
                                                        "run.json", "z.csv"]  # the stale ceilings.csv is gone
    assert all((folder / name).read_text() == "new" for name in ("config.yaml", "results.csv", "run.json"))
    # cut off after the first move: the old results table is already gone
    (staging := tmp_path / "again").mkdir()
    for name in ("a.csv", "results.csv"):
        (staging / name).write_text("newer")

    def cut_off(src, dst):
        real(src, dst)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(os, "replace", cut_off)
        publish(staging, folder, last=("results.csv", "run.json"))
    assert not (folder / "results.csv").exists() and not (folder / "run.json").exists()


def test_console_summary_averages_the_headline_indicators_only():
    """`musecl run` printed a mean over every indicator, the derived ones (NP, MC) included, where
    the chapters' headline leaves them out: the two numbers disagreed for the same run."""
    from musecl.runner import summary_json

    rows = pd.DataFrame({"method": ["MuseCL"] * 3, "split": ["random"] * 3, "indicator": ["PD", "HD", "NP"],
                         "r2": [0.2, 0.4, 0.9]})
    assert json.loads(summary_json(rows, ["PD", "HD"])) == {"MuseCL/random": 0.3}
    assert json.loads(summary_json(rows)) == {"MuseCL/random": 0.5}
