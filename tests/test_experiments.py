"""experiments/: how the book's experimentally set weights were chosen (on a toy city drawn with
another seed, never the book's)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from musecl.config import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str = "select_on_a_second_city"):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_scores_each_value_on_a_second_city(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("n_triplets: 60\nrs_arch: tiny\nsv_arch: tiny\nrs_image_size: 16\nsv_image_size: 16\n"
                      "rs_epochs: 1\nsv_epochs: 1\ntext_epochs: 1\nfusion_epochs: 2\nseeds: [0, 1]\n"
                      "splits: [random]\nprobe: ridge\n")
    table = _script().select("fusion_reconstruction", [0, 5], params=str(params), out=tmp_path / "sel",
                             n_regions=60, image_size=16)
    assert list(table.index) == [0, 5] and table.index.name == "fusion_reconstruction"
    assert np.isfinite(table[["score", "seed 0", "seed 1"]].to_numpy()).all()
    assert table["score"].to_numpy() == pytest.approx(table[["seed 0", "seed 1"]].mean(axis=1).to_numpy())
    assert (tmp_path / "sel" / "toy-seed1-60" / "city.yaml").exists()  # the second city, not the book's
    with pytest.raises(ConfigError, match="fusion_reconstruction"):
        _script().select("fusion_reconstruction", [-1], params=str(params), out=tmp_path / "sel", n_regions=60,
                         image_size=16)


def test_backbone_readout_scores_both_layer_choices_on_the_latents_each_kind_shows(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    params = tmp_path / "params.yaml"
    params.write_text("rs_image_size: 32\nsv_image_size: 32\n")
    table = _script("backbone_readout").readout(tmp_path / "sel", str(params), n_regions=60, image_size=16)
    assert list(table.index) == [(kind, layers) for kind in ("satellite", "streetview")
                                 for layers in ("last", "stages")]
    assert list(table["columns"]) == [1280, 816, 1280, 816]
    shown = table.loc["satellite"].drop(columns=["columns", "mean R2"]).dropna(axis=1)
    assert set(shown.columns) == {"footprint", "landuse", "green", "water", "farm"}
    assert np.isfinite(shown.to_numpy()).all()
    assert table["mean R2"].to_numpy() == pytest.approx(
        table.drop(columns=["columns", "mean R2"]).mean(axis=1).to_numpy())


def test_gpu_paper_scale_writes_each_seed_as_it_goes_and_stops_at_its_budget(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("n_triplets: 40\nrs_arch: tiny\nsv_arch: tiny\nrs_image_size: 16\nsv_image_size: 16\n"
                      "rs_epochs: 1\nsv_epochs: 1\ntext_epochs: 1\nfusion_epochs: 2\nseeds: [0, 1]\n"
                      "splits: [random]\nprobe: ridge\n")
    script = _script("gpu_paper_scale")
    fit, calls, clock = script.fit_and_score, [], [0.0]

    def recorded(name, city, config, *args, **kwargs):  # what was written before each fit
        written = tmp_path / "out" / "results.csv"
        calls.append((name, config.seed, len(pd.read_csv(written)) if written.exists() else 0))
        clock[0] += 60.0  # each fit "takes" a minute on the clock the budget reads
        return fit(name, city, config, *args, **kwargs)

    monkeypatch.setattr(script, "fit_and_score", recorded)
    monkeypatch.setattr(script, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    out = tmp_path / "out"
    script.main(["--out", str(out), "--params", str(params), "--city", "toy-small", "--work", str(tmp_path / "w"),
                 "--methods", "MuseCL", "Pretext features", "--budget", "1000"])
    # seed by seed, every method of a seed before the next seed, results.csv growing after each fit
    assert [(name, seed) for name, seed, _ in calls] == [
        ("MuseCL", 0), ("Pretext features", 0), ("MuseCL", 1), ("Pretext features", 1)]
    written = [n for _, _, n in calls]
    assert written[0] == 0 and all(a < b for a, b in zip(written, written[1:]))
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) > written[-1] and sorted(rows.groupby(["method", "seed"]).size().index) == [
        ("MuseCL", 0), ("MuseCL", 1), ("Pretext features", 0), ("Pretext features", 1)]
    info = json.loads((out / "run.json").read_text())
    assert info["not_started"] == [] and list(info["seconds"]) == [
        "MuseCL, seed 0", "Pretext features, seed 0", "MuseCL, seed 1", "Pretext features, seed 1"]
    assert {(e["stage"], e["seed"]) for e in info["encoders"]} >= {("encoder-satellite", 0), ("encoder-streetview", 1)}
    assert (out / "ceilings.csv").exists()
    # a budget spent after seed 0's two fits: seed 0 is kept whole, seed 1 is said not started
    clock[0], out = 0.0, tmp_path / "cut"
    script.main(["--out", str(out), "--params", str(params), "--city", "toy-small", "--work", str(tmp_path / "w"),
                 "--methods", "MuseCL", "Pretext features", "--budget", "100"])
    info = json.loads((out / "run.json").read_text())
    assert info["not_started"] == ["MuseCL, seed 1", "Pretext features, seed 1"]
    assert list(info["seconds"]) == ["MuseCL, seed 0", "Pretext features, seed 0"]
    assert set(pd.read_csv(out / "results.csv")["seed"]) == {0}
