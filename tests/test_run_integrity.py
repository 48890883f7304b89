"""Nothing silent at the run level: a damaged cached score is named and recomputed (never
trusted), and an output folder another run is writing with other settings is refused."""
from __future__ import annotations

import json
import os
import warnings

import pandas as pd
import pytest

from musecl import cli
from musecl.city import MIN_REGIONS
from musecl.config import RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.io import FolderBusyError
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
    out.mkdir()
    lock = out / ".musecl.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "settings": "another run's settings"}))  # a live owner
    with pytest.raises(FolderBusyError, match=rf"{out} is being written by another run \(pid {os.getpid()}\) with "
                                              "other settings"):
        quiet_run(toy, out, tmp_path / "cache")
    code = cli.main(["run", str(toy), "--out", str(out), "--methods", METHOD])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {out} is being written by another run")
    assert sorted(p.name for p in out.iterdir()) == [".musecl.lock"]  # untouched: still the other run's
    assert json.loads(lock.read_text())["settings"] == "another run's settings"


def test_console_summary_averages_the_headline_indicators_only():
    """`musecl run` printed a mean over every indicator, the derived ones (NP, MC) included, where
    the chapters' headline leaves them out: the two numbers disagreed for the same run."""
    from musecl.runner import summary_json

    rows = pd.DataFrame({"method": ["MuseCL"] * 3, "split": ["random"] * 3, "indicator": ["PD", "HD", "NP"],
                         "r2": [0.2, 0.4, 0.9]})
    assert json.loads(summary_json(rows, ["PD", "HD"])) == {"MuseCL/random": 0.3}
    assert json.loads(summary_json(rows)) == {"MuseCL/random": 0.5}
