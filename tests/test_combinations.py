"""Combination baselines, the ablation and the location baselines on a tiny toy city; the kNN probe
on hand-made numbers; the runner honouring a method's own probe and expanding ``all``."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from musecl.city import CityMeta, Indicator, load_city, write_city
from musecl.config import RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.evaluation import PROBES, KNNProbe, evaluate_embedding, make_probe
from musecl.fusion import AlignedFusion, load_fusion
from musecl.methods import METHODS, MuseCL, make_method
from musecl.methods.combinations import ABLATION, ADDED, ALL_METHODS, PAPER_BASELINES, LocationKNN
from musecl.sampling import pretext_features

torch.set_num_threads(1)
TINY = RunConfig(n_triplets=60, rs_arch="tiny", sv_arch="tiny", rs_image_size=32, sv_image_size=32,
                 rs_epochs=1, sv_epochs=1, embedding_dim=16, text_epochs=1, fusion_epochs=3,
                 seeds=(0,), splits=("random", "spatial"), probe_max_epochs=10, probe_patience=3)
D = TINY.embedding_dim
OURS = {"Add-svrv": D, "Fusion-svrv": D, "Concat": 3 * D, "POI only": D, "SV only": D, "RS only": D,
        "SV+RS": 2 * D, "Location kNN": 2, "Location + MuseCL": 2 + D}


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny city: regions without POIs or images are expected
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = make_toy_city(tmp_path_factory.mktemp("toy") / "city", n_regions=40, seed=1, image_size=32,
                         progress=False)
    return quiet(load_city, root)


def fit_all(city, cache_dir) -> dict:
    return {name: quiet(make_method(name, TINY, cache_dir=cache_dir, progress=False).fit, city) for name in OURS}


@pytest.fixture(scope="module")
def fitted(city, tmp_path_factory):
    return fit_all(city, tmp_path_factory.mktemp("cache"))


# -- names -----------------------------------------------------------------------------------

def test_lists_and_registry():
    assert PAPER_BASELINES[-1] == "MuseCL" and len(PAPER_BASELINES) == 9
    assert ABLATION == ("POI only", "SV only", "RS only", "SV+RS", "MuseCL")
    assert "Location kNN" in ADDED
    assert ADDED.index("Pretext features") == ADDED.index("Location + MuseCL") - 1
    assert "Pretext features" in ALL_METHODS and METHODS["Pretext features"].name == "Pretext features"
    assert len(ALL_METHODS) == len(set(ALL_METHODS)) == len(set(PAPER_BASELINES + ABLATION + ADDED))
    for name in OURS:
        assert name in METHODS and METHODS[name].name == name
    assert METHODS["Location kNN"].probe == "knn" and METHODS["Concat"].probe is None
    assert METHODS["Pretext features"].probe is None  # read by the run's probe


# -- every method -------------------------------------------------------------------------------

def test_shapes_index_and_no_nan(city, fitted):
    for name, method in fitted.items():
        emb = method.transform(city)
        assert list(emb.index) == list(city.region_ids), name
        assert emb.shape == (len(city), OURS[name]), name
        assert np.isfinite(emb.to_numpy()).all(), name


def test_combinations_are_built_from_the_same_stages(city, fitted):
    sv, rs = fitted["SV only"].transform(city), fitted["RS only"].transform(city)
    np.testing.assert_allclose(fitted["Add-svrv"].transform(city).to_numpy(), sv.to_numpy() + rs.to_numpy())
    svrv = fitted["SV+RS"].transform(city)
    np.testing.assert_allclose(svrv.to_numpy(), np.hstack([sv.to_numpy(), rs.to_numpy()]))
    concat = fitted["Concat"].transform(city).to_numpy()
    np.testing.assert_allclose(concat[:, :2 * D], svrv.to_numpy())
    np.testing.assert_allclose(concat[:, 2 * D:], fitted["POI only"].transform(city).to_numpy())


def test_fusion_svrv_is_an_attentive_mix_of_the_two_views(city, fitted):
    method = fitted["Fusion-svrv"]
    beta = method.fusion_attention()
    assert list(beta.columns) == ["sv", "rs"] and np.allclose(beta.sum(axis=1), 1.0)  # eq. 9
    sv, rs = (torch.tensor(fitted[n].transform(city).to_numpy(), dtype=torch.float32) for n in ("SV only", "RS only"))
    b = beta.loc[city.region_ids].to_numpy()
    fused = method.transform(city).to_numpy()
    model = load_fusion(method.stage_dir / "fusion")
    assert isinstance(model, AlignedFusion)  # the default design mixes learned views of the two
    with torch.no_grad():
        views = model.views(sv, rs).numpy()
    np.testing.assert_allclose(fused, b[:, :1] * views[:, 0] + b[:, 1:] * views[:, 1], atol=1e-5)  # eq. 10
    assert not hasattr(method, "attention")  # the runner's attention map stays MuseCL's


def test_location_methods(city, fitted, tmp_path):
    xy = fitted["Location kNN"].transform(city)
    np.testing.assert_allclose(xy.to_numpy(), city.xy_m())
    both = fitted["Location + MuseCL"].transform(city)
    np.testing.assert_allclose(both[["x", "y"]].mean().to_numpy(), 0, atol=1e-9)
    np.testing.assert_allclose(both[["x", "y"]].std(ddof=0).to_numpy(), 1, atol=1e-9)
    musecl = quiet(MuseCL(TINY, cache_dir=fitted["Concat"].cache.root, progress=False).fit, city)
    np.testing.assert_allclose(both.drop(columns=["x", "y"]).to_numpy(), musecl.transform(city).to_numpy())


def test_deterministic_for_a_seed(city, fitted, tmp_path):
    again = fit_all(city, tmp_path / "other-cache")
    for name, method in fitted.items():
        pd.testing.assert_frame_equal(method.transform(city), again[name].transform(city), obj=name)


def test_save_load_round_trip(city, fitted, tmp_path):
    for name, method in fitted.items():
        folder = method.save(tmp_path / name.replace(" ", "_"))
        loaded = type(method).load(folder)
        pd.testing.assert_frame_equal(method.transform(city), loaded.transform(city), obj=name)
        assert loaded.config == TINY and loaded.probe == method.probe
    assert (tmp_path / "Fusion-svrv" / "fusion-svrv" / "fusion" / "weights.pt").exists()
    loaded = type(fitted["Fusion-svrv"]).load(tmp_path / "Fusion-svrv")
    pd.testing.assert_frame_equal(loaded.fusion_attention(), fitted["Fusion-svrv"].fusion_attention())
    with pytest.raises(ValueError, match="holds method 'Add-svrv', not 'Concat'"):
        type(fitted["Concat"]).load(tmp_path / "Add-svrv")


def test_errors(city, tmp_path):
    with pytest.raises(RuntimeError, match="Add-svrv is not fitted"):
        make_method("Add-svrv", TINY, cache_dir=tmp_path).transform(city)


def test_pretext_features_method_is_the_raw_inputs(city, tmp_path):
    """No training: the table is pretext_features, and it survives save/load."""
    method = quiet(make_method("Pretext features", TINY, cache_dir=tmp_path / "cache", progress=False).fit, city)
    table = method.transform(city)
    pd.testing.assert_frame_equal(table, pretext_features(city), check_names=False)
    assert table.shape == (len(city), 2 + city.pois.category.nunique()) and np.isfinite(table.to_numpy()).all()
    loaded = type(method).load(method.save(tmp_path / "saved"))
    pd.testing.assert_frame_equal(loaded.transform(city), table)


def test_pretext_and_lite0_features_sit_side_by_side(city, tmp_path):
    """Every raw input at once: the pretext columns unchanged, then the Lite0 features (imputed as the
    Lite0 baseline imputes them) under a prefix."""
    pytest.importorskip("efficientnet_lite_pytorch")
    cache = tmp_path / "cache"
    method = quiet(make_method("Pretext + Lite0 features", TINY, cache_dir=cache, progress=False).fit, city)
    table = method.transform(city)
    pretext = pretext_features(city)
    lite0 = quiet(make_method("EfficientNet-Lite0 (ImageNet)", TINY, cache_dir=cache, progress=False).fit,
                  city).transform(city)
    assert table.shape == (len(city), pretext.shape[1] + lite0.shape[1]) and np.isfinite(table.to_numpy()).all()
    pd.testing.assert_frame_equal(table.iloc[:, :pretext.shape[1]], pretext, check_names=False)
    np.testing.assert_array_equal(table.iloc[:, pretext.shape[1]:].to_numpy(), lite0.to_numpy())
    assert METHODS["Pretext + Lite0 features"].probe is None and "Pretext + Lite0 features" in ADDED


# -- location on a city whose indicator is a smooth function of position -------------------------

def smooth_city(root, n_side: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"g{i:03d}" for i in range(n_side * n_side)]
    lon = np.tile(np.arange(n_side) * 0.01, n_side) + 116.0
    lat = np.repeat(np.arange(n_side) * 0.01, n_side) + 40.0
    sq = [f"POLYGON (({x - .004} {y - .004}, {x + .004} {y - .004}, {x + .004} {y + .004}, "
          f"{x - .004} {y + .004}, {x - .004} {y - .004}))" for x, y in zip(lon, lat)]
    u, v = (lon - lon.mean()) / 0.05, (lat - lat.mean()) / 0.05
    smooth = np.sin(u) + np.cos(0.7 * v) + 0.5 * u * v + rng.normal(scale=0.05, size=len(ids))
    meta = CityMeta(name="smooth", crs="EPSG:4326", modalities=("poi",), hexagon_size_m=500,
                    indicators={"S": Indicator("S", "smooth in position", log=False, allow_negative=True)})
    pois = pd.DataFrame({"region_id": ids, "category": "cafe", "text": ""})
    write_city(root, meta, pd.DataFrame({"lon": lon, "lat": lat, "geometry": sq}, index=ids),
               pd.DataFrame({"S": smooth}, index=ids), pois=pois)
    return quiet(load_city, root)


def test_location_knn_beats_shuffled_coordinates(tmp_path):
    city = smooth_city(tmp_path / "smooth")
    method = LocationKNN(TINY, cache_dir=tmp_path / "cache", progress=False).fit(city)
    emb = method.transform(city)
    shuffled = pd.DataFrame(emb.to_numpy()[np.random.default_rng(0).permutation(len(emb))],
                            index=emb.index, columns=emb.columns)
    kw = dict(seeds=(0, 1), splits=("random",), probe="knn")
    real = evaluate_embedding(emb, city, "Location kNN", **kw)["r2"].mean()
    fake = evaluate_embedding(shuffled, city, "shuffled", **kw)["r2"].mean()
    assert real > 0.8 and fake < 0.2, (real, fake)


def test_runner_uses_the_methods_probe_and_expands_all(tmp_path, monkeypatch):
    import musecl.evaluation as evaluation
    from musecl.runner import expand_methods, run

    city = smooth_city(tmp_path / "smooth")
    used = []
    original = evaluation.make_probe
    monkeypatch.setattr(evaluation, "make_probe", lambda name, *a, **k: used.append(name) or original(name, *a, **k))
    results = run(city, tmp_path / "out", TINY, methods=["Location kNN"], progress=False)
    assert set(used) == {"knn"} and set(results["method"]) == {"Location kNN"}
    assert (tmp_path / "out" / "embeddings" / "Location kNN.csv").exists()

    assert expand_methods(["Location kNN", "MuseCL", "Location kNN"]) == ["Location kNN", "MuseCL"]
    for name in ALL_METHODS:  # baselines registered elsewhere may not be there yet
        if name not in METHODS:
            monkeypatch.setitem(METHODS, name, object)
    assert expand_methods(["MuseCL", "all"]) == ["MuseCL"] + [m for m in ALL_METHODS if m != "MuseCL"]
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['Nope'\]"):
        expand_methods(["all", "Nope"])


# -- the kNN probe on hand-made numbers ----------------------------------------------------------

def reference_knn(x_train, y_train, x, k=5):
    """Plain k nearest neighbours by Euclidean distance, weights 1/d (the mean of exact matches)."""
    out = []
    for q in x:
        d = np.sqrt(((x_train - q) ** 2).sum(axis=1))
        idx = np.argsort(d, kind="stable")[:k]
        if (d[idx] == 0).any():
            out.append(y_train[idx][d[idx] == 0].mean())
        else:
            w = 1 / d[idx]
            out.append((w * y_train[idx]).sum() / w.sum())
    return np.array(out)


def test_knn_probe_on_a_line():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])
    y = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0])
    probe = make_probe("knn", seed=0).fit(x, y)
    assert "knn" in PROBES and isinstance(probe, KNNProbe)
    # query 0.5: the 5 nearest are 0, 1, 2, 3, 10 at 0.5, 0.5, 1.5, 2.5, 9.5
    w = 1 / np.array([0.5, 0.5, 1.5, 2.5, 9.5])
    expected = (w * np.array([0, 1, 2, 3, 10])).sum() / w.sum()
    assert probe.predict([[0.5]])[0] == pytest.approx(expected)
    assert probe.predict([[2.0]])[0] == pytest.approx(2.0)  # an exact match returns its own value
    assert KNNProbe(k=2).fit(x, y).predict([[1.5]])[0] == pytest.approx(1.5)
    assert KNNProbe(k=10).fit(x[:3], y[:3]).predict([[1.0]])[0] == pytest.approx(1.0)  # k > n_train


def test_knn_probe_uses_raw_euclidean_distance():
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(60, 2)) * np.array([5000.0, 300.0])  # an elongated city, in metres
    y_train = rng.normal(size=60)
    x = rng.normal(size=(25, 2)) * np.array([5000.0, 300.0])
    got = KNNProbe().fit(x_train, y_train).predict(x)
    np.testing.assert_allclose(got, reference_knn(x_train, y_train, x), rtol=1e-10)
    scaled = KNNProbe().fit(x_train * 1e-3, y_train).predict(x * 1e-3)
    np.testing.assert_allclose(got, scaled, rtol=1e-10)


def test_knn_probe_errors():
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNProbe(k=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        KNNProbe().predict([[0.0]])
