"""Cities with some modalities: which methods each supports, `methods: all`, `musecl methods`."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musecl.city import load_city, restrict_city
from musecl.config import RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.methods import METHODS
from musecl.methods.base import describe_needs, unsupported_reason
from musecl.methods.combinations import ALL_METHODS, IMAGE_FREE

TINY = RunConfig(n_triplets=60, text_epochs=1, fusion_epochs=3, embedding_dim=16, seeds=(0,),
                 splits=("random",), probe_max_epochs=10, probe_patience=3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_city(tmp_path_factory.mktemp("toy") / "toy", n_regions=40, seed=1, image_size=16,
                         progress=False)


def restricted(toy, folder, modalities, poi_text=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny city's regions without images or POIs
        return load_city(restrict_city(toy, folder, modalities, poi_text=poi_text))


def test_restrict_city_keeps_only_the_modalities_asked_for(toy, tmp_path):
    city = restricted(toy, tmp_path / "poi", ["poi"], poi_text=False)
    assert city.meta.modalities == ("poi",)
    assert city.images.empty and not (tmp_path / "poi" / "mobility.csv").exists()
    assert len(city.pois) and (city.pois["text"] == "").all()
    assert set(city.meta.modality_latents) <= {"poi"}
    images = restricted(toy, tmp_path / "img", ["satellite", "streetview"])
    assert set(images.images["kind"]) == {"satellite", "streetview"} and images.pois.empty
    assert all(p.is_file() and tmp_path / "img" in p.parents for p in images.images["path"])
    with pytest.raises(ValueError, match="unknown modalities"):
        restrict_city(toy, tmp_path / "bad", ["lidar"])
    plain = load_city(restrict_city(toy, tmp_path / "plain", ["poi", "mobility"], latents=False))
    assert plain.latents is None and plain.ceilings is None and not plain.meta.oracle_r2
    assert not plain.meta.latents and not plain.meta.modality_oracle_r2


def test_every_method_declares_what_it_needs(toy, tmp_path):
    full = restricted(toy, tmp_path / "full", ["satellite", "streetview", "poi", "mobility"])
    assert all(unsupported_reason(name, full) is None for name in METHODS)  # the toy city has everything
    poi = restricted(toy, tmp_path / "poi", ["poi"])
    assert unsupported_reason("POI only", poi) is None and unsupported_reason("Location kNN", poi) is None
    assert unsupported_reason("Pretext features", poi) is None  # POI counts are enough
    assert unsupported_reason("MuseCL", poi) == ("neither satellite images nor street-view images with "
                                                 "mobility (inflow/outflow)")
    assert unsupported_reason("OD SVD", poi) == "no origin-destination flows (od.csv)"
    images = restricted(toy, tmp_path / "img", ["satellite", "streetview"])
    assert unsupported_reason("Pretext features", images) == "neither mobility (inflow/outflow) nor POIs"
    assert unsupported_reason("Inception v3", images) is None
    assert describe_needs("Location kNN").startswith("nothing")
    assert describe_needs("SV only") == "street-view images and mobility (inflow/outflow)"


def test_a_method_refuses_a_city_without_what_it_needs(toy, tmp_path):
    """A city without trips still has a (zero) mobility table: street-view triplets sampled on it
    would train the encoder on nothing, silently, unless fit refuses."""
    from musecl.methods import make_method

    no_trips = restricted(toy, tmp_path / "no_trips", ["satellite", "streetview", "poi"])
    for name in ("MuseCL (fine-tuned heads)", "SV only", "OD SVD"):
        with pytest.raises(ValueError, match=f"{re.escape(name)} cannot run on .*: it has no "):
            make_method(name, TINY, cache_dir=tmp_path / "cache", progress=False).fit(no_trips)


def test_musecl_fuses_the_one_image_kind_a_city_has(toy, tmp_path):
    """Many real cities have satellite images but no street views: MuseCL then fuses the satellite
    view alone (beta = 1), still aligned to the POI text, instead of being skipped. Street views
    count only with the trips their triplets come from (eq. 1-2)."""
    from musecl import report
    from musecl.methods import make_method
    from musecl.methods.multisemantic import MuseCL
    from musecl.runner import run

    small = RunConfig(**{**TINY.to_dict(), "rs_arch": "tiny", "sv_arch": "tiny", "rs_image_size": 16,
                         "sv_image_size": 16, "rs_epochs": 2, "sv_epochs": 2})
    satellite = restricted(toy, tmp_path / "sat", ["satellite", "poi"])
    assert unsupported_reason("MuseCL", satellite) is None
    assert unsupported_reason("MuseCL (fine-tuned heads)", satellite) is not None  # it tunes both heads
    method = make_method("MuseCL", small, cache_dir=tmp_path / "cache", progress=False).fit(satellite)
    assert method.views == ("satellite",) and set(method.stage_dirs) == {"satellite", "text", "fusion"}
    embedding = method.transform(satellite)
    assert embedding.shape == (len(satellite), small.embedding_dim) and embedding.notna().all(axis=None)
    beta = method.attention()
    assert (beta["rs"] == 1).all() and (beta["sv"] == 0).all()
    loaded = MuseCL.load(method.save(tmp_path / "saved"))
    assert loaded.views == ("satellite",) and loaded.transform(satellite).equals(embedding)
    assert "fuses its satellite embedding alone" in report.one_view_note(satellite.name, method.views)
    assert report.one_view_note(satellite.name, ("satellite", "streetview")) is None
    results = run(satellite, tmp_path / "out", small, methods=["MuseCL"], cache_dir=tmp_path / "cache",
                  progress=False)
    assert set(results["method"]) == {"MuseCL"} and results["r2"].notna().all()
    assert not (tmp_path / "out" / "figures" / "attention_map.png").exists()  # beta = 1: nothing to map

    street = restricted(toy, tmp_path / "sv", ["streetview", "poi", "mobility"])
    assert make_method("MuseCL", small, cache_dir=tmp_path / "cache", progress=False).fit(street).views == (
        "streetview",)
    no_trips = restricted(toy, tmp_path / "sv_no_trips", ["streetview", "poi"])
    assert unsupported_reason("MuseCL", no_trips) == ("neither satellite images nor street-view images with "
                                                      "mobility (inflow/outflow)")
    assert describe_needs("MuseCL") == ("POIs; satellite images or street-view images with mobility "
                                        "(inflow/outflow)")


def test_all_means_what_the_city_supports(toy, tmp_path):
    from musecl.runner import supported_methods

    full = restricted(toy, tmp_path / "full", ["satellite", "streetview", "poi", "mobility"])
    run, skipped = supported_methods(["all"], full)
    assert run == list(ALL_METHODS) and not skipped
    trips = restricted(toy, tmp_path / "pm", ["poi", "mobility"])
    run, skipped = supported_methods(["all"], trips)
    assert run == ["POI only", "Location kNN", "Pretext features", *IMAGE_FREE]  # no images: the vector views
    assert skipped["SV only"] == "no street-view images" and "MuseCL" in skipped


def test_run_writes_the_vector_version_s_attention_on_a_city_without_images(toy, tmp_path):
    from musecl.runner import run

    trips = restricted(toy, tmp_path / "pm", ["poi", "mobility"])
    run(trips, tmp_path / "out", TINY, methods=["MuseCL (vector views)"], cache_dir=tmp_path / "cache",
        progress=False)
    beta = pd.read_csv(tmp_path / "out" / "attention.csv", index_col="region_id")
    assert list(beta.columns) == ["mobility", "poi"] and np.allclose(beta.sum(axis=1), 1.0)
    assert (tmp_path / "out" / "figures" / "attention_map.png").exists()


def test_run_skips_unsupported_methods_and_records_why(toy, tmp_path):
    from musecl.runner import UnsupportedMethodsError, run

    city = restricted(toy, tmp_path / "poi", ["poi"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run(city, tmp_path / "out", TINY, methods=["Location kNN", "RS only"],
                      cache_dir=tmp_path / "cache", progress=False)
    assert set(results["method"]) == {"Location kNN"}
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["skipped_methods"] == {"RS only": "no satellite images"} and info["failed_methods"] == {}
    assert any("skipped RS only" in str(w.message) for w in caught)
    with pytest.raises(UnsupportedMethodsError, match=r"none of the requested methods: MuseCL \(neither satel"):
        run(city, tmp_path / "out2", TINY, methods=["MuseCL"], cache_dir=tmp_path / "cache", progress=False)


def test_methods_command_lists_needs_and_what_runs(toy, tmp_path, capsys):
    from musecl.cli import main

    folder = restrict_city(toy, tmp_path / "pm", ["poi", "mobility"])
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in METHODS) and "runs here" not in listed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["methods", str(folder)]) == 0
    listed = capsys.readouterr().out.splitlines()
    row = next(line for line in listed if line.startswith("SV only "))
    assert row.rstrip().endswith("no: no street-view images")
    assert any("5 of" in line and "can run there" in line for line in listed)
    smoke = str(Path(__file__).parents[1] / "params" / "smoke.yaml")  # tiny CNNs: no feature heads to fine-tune
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["methods", str(toy), "--params", smoke]) == 0
    listed = capsys.readouterr().out.splitlines()
    row = next(line for line in listed if line.startswith("MuseCL (fine-tuned heads) "))
    assert "no: with these settings, fine-tuning heads needs rs_arch and sv_arch" in row
    assert next(line for line in listed if line.startswith("MuseCL ")).rstrip().endswith("yes")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "musecl methods" in capsys.readouterr().out.replace("\n", " ")


def test_only_renders_the_other_chapters_as_notes(tmp_path, monkeypatch):
    """``musecl book --only 01_data`` executes that chapter and writes every other one as a page
    that says it was not executed (the site still has every page); the next full run executes them."""
    import nbformat

    from musecl import book

    ran = []
    monkeypatch.setattr(book, "execute_chapters", lambda chapters, *a, **k: ran.extend(c.stem for c in chapters))
    monkeypatch.setattr(book, "stage_site", lambda *a, **k: tmp_path)
    monkeypatch.setattr(book, "build_book", lambda *a, **k: tmp_path)
    monkeypatch.setattr(book, "default_city", lambda out: tmp_path)
    book.build(out=tmp_path / "book", only=["01_data"])
    assert ran == ["01_data"]
    others = [s for s in book.chapter_sources(book.find_repo_root()) if s.stem != "01_data"]
    assert len(others) > 5
    for source in others:
        page = tmp_path / "book" / "executed" / f"{source.stem}.ipynb"
        nb = nbformat.read(page, as_version=4)
        assert nb.cells[0].source.startswith("# ") and "not executed in this build" in nb.cells[0].source
        assert nb.metadata[book.METADATA_KEY]["complete"] is False
        assert not book._is_current(page, "any")  # the next full run executes it


def test_a_run_owns_its_output_folder_and_publishes_at_the_end(toy, tmp_path, monkeypatch):
    from musecl.methods.base import METHODS as REGISTRY, RegionEmbedder
    from musecl.runner import run

    class Broken(RegionEmbedder):
        name = "Broken"

        def fit(self, city):
            raise ValueError("broken on purpose")

    monkeypatch.setitem(REGISTRY, "Broken", Broken)

    city = restricted(toy, tmp_path / "poi", ["poi"])
    out = tmp_path / "out"
    run(city, out, TINY, methods=["Location kNN"], cache_dir=tmp_path / "cache", progress=False)
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "results.csv")}
    with pytest.raises(RuntimeError, match="every method failed"):  # a failing rerun: old outputs stay, together
        run(city, out, TINY, methods=["Broken"], cache_dir=tmp_path / "cache", progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob(".staging-*")) and (out / ".musecl.lock").read_text() == ""  # no owner now


def test_a_worker_ends_itself_when_its_parent_dies(tmp_path):
    """The parent-watch of `in_worker`: a grandchild started with its parent's pid exits soon after
    that parent is killed, instead of lingering."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "worker.pid"
    code = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, time
from musecl.io import in_worker
open({str(marker)!r}, "w").write(str(os.getpid()))
in_worker(os.getppid(), time.sleep, 60)
'''])
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.1)
    worker = int(marker.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):  # the watch checks once a second
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its parent by 10 s")


def _warn_and_return(value):
    import warnings

    warnings.warn(f"careful with {value}", UserWarning)
    return value * 2


def test_warnings_in_a_worker_come_back_to_the_caller():
    """A worker's warnings return with its result and are raised again in the caller, where the
    notebook shows them as notes (not as stderr on the page)."""
    import os
    import warnings

    from joblib import Parallel, delayed

    from musecl.io import in_worker, rewarn

    outcomes = Parallel(n_jobs=2, backend="loky")(delayed(in_worker)(os.getpid(), _warn_and_return, v) for v in (1, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [rewarn(o) for o in outcomes] == [2, 4]
    assert sorted(str(w.message) for w in caught) == ["careful with 1", "careful with 2"]


def test_a_method_without_a_cache_folder_removes_its_temporary_one(toy):
    """Without cache_dir the stages go through a temporary cache, which can hold a city's decoded
    images: it goes with the method, not left in /tmp by every fit and every load."""
    import gc

    from musecl.methods import make_method

    method = make_method("Location kNN", TINY, progress=False)
    folder = method.cache.root
    method.fit(load_city(toy))
    assert folder.is_dir()
    del method
    gc.collect()
    assert not folder.exists()
