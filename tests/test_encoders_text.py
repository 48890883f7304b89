"""POI text encoder: eq. 7 on a hand-made region, determinism (also across PYTHONHASHSEED), save/load."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from musecl.city import CityMeta, Indicator, load_city, write_city
from musecl.encoders.text import PoiTextEncoder, TextEncoderConfig, category_token, tokenize

SMALL = TextEncoderConfig(vector_size=16, epochs=20, seed=7)


def square_wkt(lon: float, lat: float, r: float = 0.004) -> str:
    pts = [(lon - r, lat - r), (lon + r, lat - r), (lon + r, lat + r), (lon - r, lat + r), (lon - r, lat - r)]
    return "POLYGON ((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in pts) + "))"


def make_poi_city(root):
    """Region a: cafe, Bank, cafe; b: park with text; c: no POI at all; d: two bars."""
    ids = ["a", "b", "c", "d"]
    regions = pd.DataFrame({"lon": [0.0, 0.01, 0.02, 0.03], "lat": 0.0,
                            "geometry": [square_wkt(0.01 * i, 0.0) for i in range(4)]}, index=ids)
    pois = pd.DataFrame({
        "region_id": ["a", "a", "a", "b", "d", "d"],
        "category": ["cafe", "Bank", "cafe", "Park", "bar", "bar"],
        "text": ["Good coffee, nice cake", "cash machine", "", "quiet green trees", "late beer", "loud music"],
    })
    indicators = pd.DataFrame({"PD": [1.0, 2.0, 3.0, 4.0]}, index=ids)
    meta = CityMeta(name="poi", crs="EPSG:4326", modalities=("poi",),
                    indicators={"PD": Indicator("PD", "population density")})
    write_city(root, meta, regions, indicators, pois=pois)
    return load_city(root)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_poi_city(tmp_path_factory.mktemp("poi") / "poi")


def test_tokenize_and_category_token():
    assert tokenize("Good coffee, NICE cake!") == ["good", "coffee", "nice", "cake"]
    assert tokenize("don't_stop 24h") == ["don't", "stop", "24h"]
    assert tokenize(float("nan")) == []
    assert category_token("  Fast   Food ") == "fast food"


def test_eq7_region_vector_is_mean_of_its_category_vectors(city):
    enc = PoiTextEncoder(SMALL).fit(city)
    with pytest.warns(UserWarning, match="1 of 4 regions have no POI"):
        table = enc.transform(city)
    assert table.index.name == "region_id" and list(table.index) == ["a", "b", "c", "d"]
    assert table.shape == (4, 16)
    cafe, bank = enc.word_vector("cafe"), enc.word_vector("bank")
    np.testing.assert_allclose(table.loc["a"].to_numpy(), (2 * cafe.astype(float) + bank) / 3, rtol=1e-6)
    np.testing.assert_allclose(table.loc["d"].to_numpy(), enc.word_vector("bar"), rtol=1e-6)
    assert (table.loc["c"] == 0).all()
    # text words are in the vocabulary (training phase) but only categories enter eq. 7
    assert "coffee" in enc.keys and "park" in enc.keys


def test_two_fits_give_identical_vectors(city):
    a = PoiTextEncoder(SMALL).fit(city)
    b = PoiTextEncoder(SMALL).fit(city)
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.vectors, b.vectors)
    c = PoiTextEncoder(SMALL, seed=8).fit(city)
    assert not np.array_equal(a.vectors, c.vectors)


def test_vectors_do_not_depend_on_pythonhashseed(city, tmp_path):
    script = ("import sys, numpy as np; from musecl.city import load_city; "
              "from musecl.encoders.text import PoiTextEncoder, TextEncoderConfig; "
              "e = PoiTextEncoder(TextEncoderConfig(vector_size=16, epochs=20, seed=7)).fit(load_city(sys.argv[1])); "
              "np.save(sys.argv[2], e.vectors)")
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        subprocess.run([sys.executable, "-c", script, str(city.root), str(tmp_path / f"v{hs}.npy")],
                       check=True, env=env, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "v1.npy"), np.load(tmp_path / "v2.npy"))


def test_nearest_words_and_save_load_round_trip(city, tmp_path):
    enc = PoiTextEncoder(SMALL).fit(city)
    near = enc.nearest_words("cafe", k=3)
    assert len(near) == 3 and all(w != "cafe" for w, _ in near)
    assert near[0][1] >= near[1][1] >= near[2][1]
    enc.save(tmp_path / "text")
    back = PoiTextEncoder.load(tmp_path / "text")
    assert back.config == enc.config and back.keys == enc.keys
    np.testing.assert_array_equal(back.vectors, enc.vectors)
    with pytest.warns(UserWarning):
        pd.testing.assert_frame_equal(back.transform(city), enc.transform(city))


def test_errors_are_clear(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PoiTextEncoder().nearest_words("cafe")
    with pytest.raises(FileNotFoundError, match="vectors.npy is missing"):
        PoiTextEncoder.load(tmp_path)
    with pytest.raises(ValueError, match="hs=1"):
        TextEncoderConfig(hs=0, negative=0)
