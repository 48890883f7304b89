"""POI text encoder: eq. 7 on a hand-made region, determinism (also across PYTHONHASHSEED), save/load,
and the context of category-only POIs (region co-occurrence)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from musecl.city import CityMeta, Indicator, load_city, write_city
from musecl.encoders.text import (POI_TEXT, REGION_COOCCURRENCE, PoiTextEncoder, TextEncoderConfig,
                                  category_token, has_text, poi_sentences, region_sentences, text_context,
                                  tokenize, training_sentences, untrained_words)

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
    with pytest.warns(UserWarning, match="1 of 4 regions has no POI"):
        table = enc.transform(city)
    assert table.index.name == "region_id" and list(table.index) == ["a", "b", "c", "d"]
    assert table.shape == (4, 16)
    cafe, bank = enc.word_vector("cafe"), enc.word_vector("bank")
    np.testing.assert_allclose(table.loc["a"].to_numpy(), (2 * cafe.astype(float) + bank) / 3, rtol=1e-6)
    np.testing.assert_allclose(table.loc["d"].to_numpy(), enc.word_vector("bar"), rtol=1e-6)
    assert (table.loc["c"] == 0).all()
    # text words are in the vocabulary (training phase) but only categories enter eq. 7
    assert "coffee" in enc.keys and "park" in enc.keys


def test_log_scaled_pooling_keeps_eq7_direction_and_grows_with_the_number_of_pois(city):
    import dataclasses

    mean = PoiTextEncoder(SMALL).fit(city)
    scaled = PoiTextEncoder(dataclasses.replace(SMALL, pooling="log-scaled")).fit(city)
    np.testing.assert_array_equal(mean.vectors, scaled.vectors)  # the same word vectors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # region c has no POI
        a, b = mean.transform(city), scaled.transform(city)
    counts = pd.Series({"a": 3, "b": 1, "c": 0, "d": 2})
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy() * np.log1p(counts.to_numpy())[:, None], rtol=1e-6)
    assert (b.loc["c"] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd.testing.assert_frame_equal(mean.transform(city, pooling="log-scaled"), b)  # the same, asked per call
    with pytest.raises(ValueError, match="pooling"):
        TextEncoderConfig(pooling="sum")


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


# -- the context a category is learnt from ----------------------------------------------------

def make_category_only_city(root, text: str | None = None):
    """Eight regions: four 'town' regions of cafe, bakery and bookshop POIs, four 'port' regions of
    warehouse, crane and depot POIs; no category of one kind ever shares a region with one of the
    other. ``text``: no text column (None), empty texts ("") or texts repeating the category ("same")."""
    ids = [f"r{i}" for i in range(8)]
    regions = pd.DataFrame({"lon": [0.01 * i for i in range(8)], "lat": 0.0,
                            "geometry": [square_wkt(0.01 * i, 0.0) for i in range(8)]}, index=ids)
    town, port = ["cafe", "bakery", "Book Shop"], ["warehouse", "crane", "depot"]
    rows = [(rid, cat) for k, rid in enumerate(ids) for cat in (town if k < 4 else port) for _ in range(1 + k % 3)]
    pois = pd.DataFrame(rows, columns=["region_id", "category"]).sort_values("category", kind="stable")
    if text == "":
        pois["text"] = ""
    elif text == "same":
        pois["text"] = pois["category"].str.upper()
    indicators = pd.DataFrame({"PD": np.arange(8.0)}, index=ids)
    meta = CityMeta(name="tags", crs="EPSG:4326", modalities=("poi",),
                    indicators={"PD": Indicator("PD", "population density")})
    root.mkdir(parents=True)
    regions.index.name = "region_id"
    regions.reset_index().to_csv(root / "regions.csv", index=False)
    indicators.rename_axis("region_id").reset_index().to_csv(root / "indicators.csv", index=False)
    pois.to_csv(root / "pois.csv", index=False)  # as a user writes it: maybe without a text column
    write_city(root, meta, regions, indicators)  # city.yaml (pois.csv above is kept)
    return load_city(root)


@pytest.fixture(scope="module")
def tags_city(tmp_path_factory):
    return make_category_only_city(tmp_path_factory.mktemp("tags") / "tags")


def test_context_detection(city, tags_city, tmp_path):
    assert "text" not in pd.read_csv(tags_city.root / "pois.csv").columns
    assert not has_text(tags_city.pois) and text_context(tags_city.pois) == REGION_COOCCURRENCE
    for kind in ("", "same"):  # empty texts, texts that only repeat the category: no text either
        other = make_category_only_city(tmp_path / f"t{kind or 'empty'}", text=kind)
        assert text_context(other.pois) == REGION_COOCCURRENCE
    assert has_text(city.pois) and text_context(city.pois) == POI_TEXT
    assert text_context(tags_city.pois, POI_TEXT) == POI_TEXT  # an explicit context is kept
    with pytest.raises(ValueError, match="context must be one of"):
        TextEncoderConfig(context="reviews")


def test_region_sentences_one_per_region_shuffled_and_seeded(tags_city):
    pois = tags_city.pois
    sentences = region_sentences(pois, seed=3)
    assert len(sentences) == 8  # one per region, every POI once
    assert sorted(w for s in sentences for w in s) == sorted(pois["category"].map(category_token))
    assert sentences == region_sentences(pois, seed=3)
    assert sentences != region_sentences(pois, seed=4)  # the order is drawn from the seed
    assert sorted(sentences[2]) == sorted(region_sentences(pois, seed=4)[2])
    assert "book shop" in {w for s in sentences for w in s}  # a category is one token
    assert training_sentences(pois, seed=3, region_copies=1) == sentences
    copies = region_sentences(pois, seed=3, copies=4)  # each copy shuffled anew
    assert len(copies) == 32 and copies[:8] == sentences and copies[8:16] != sentences
    assert [sorted(s) for s in copies[8:16]] == [sorted(s) for s in sentences]
    assert training_sentences(pois, seed=3) == region_sentences(pois, seed=3, copies=10)
    assert untrained_words(sentences) == []
    assert untrained_words(poi_sentences(pois)) == sorted(set(pois["category"].map(category_token)))


def test_cooccurrence_context_puts_categories_that_share_regions_close(tags_city, tmp_path):
    cfg = TextEncoderConfig(vector_size=8, window=3, epochs=10, seed=1)
    enc = PoiTextEncoder(cfg).fit(tags_city)
    assert enc.context == REGION_COOCCURRENCE

    def cos(a, b):
        u, v = enc.word_vector(a).astype(float), enc.word_vector(b).astype(float)
        return u @ v / np.linalg.norm(u) / np.linalg.norm(v)

    town, port = ["cafe", "bakery", "book shop"], ["warehouse", "crane", "depot"]
    for group, others in ((town, port), (port, town)):
        for w in group:
            together = min(cos(w, o) for o in group if o != w)
            apart = max(cos(w, o) for o in others)
            assert together > apart + 0.2, (w, together, apart)
        assert {v for v, _ in enc.nearest_words(group[0], k=2)} == set(group[1:])
    # saved with the encoder, and read back
    enc.save(tmp_path / "enc")
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["context_used"] == REGION_COOCCURRENCE
    assert PoiTextEncoder.load(tmp_path / "enc").context == REGION_COOCCURRENCE
    # the old behaviour, forced: one-token sentences teach nothing, and fit says so
    with pytest.warns(UserWarning, match="6 of 6 categories have no POI with text"):
        forced = PoiTextEncoder(cfg, context=POI_TEXT).fit(tags_city)
    assert forced.context == POI_TEXT


def test_city_with_text_trains_exactly_as_before(city, tmp_path):
    """Poi text context: the corpus is poi_sentences and the vectors are those of a plain
    Word2Vec on it with the same settings (the behaviour before contexts existed)."""
    from gensim.models import Word2Vec

    from musecl.encoders.text import stable_hash

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every category has text: no warning
        enc = PoiTextEncoder(SMALL).fit(city)
    assert enc.context == POI_TEXT
    assert training_sentences(city.pois, seed=SMALL.seed) == poi_sentences(city.pois)
    c = SMALL
    plain = Word2Vec(sentences=poi_sentences(city.pois), vector_size=c.vector_size, window=c.window,
                     min_count=c.min_count, sg=c.sg, hs=c.hs, negative=c.negative, epochs=c.epochs,
                     seed=c.seed, workers=1, hashfxn=stable_hash)
    assert enc.keys == list(plain.wv.index_to_key)
    np.testing.assert_array_equal(enc.vectors, plain.wv.vectors)
    np.testing.assert_array_equal(PoiTextEncoder(SMALL, context=POI_TEXT).fit(city).vectors, enc.vectors)


def test_encoder_saved_before_contexts_loads_as_poi_text(city, tmp_path):
    enc = PoiTextEncoder(SMALL).fit(city)
    enc.save(tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("context", "sample", "region_copies", "context_used"):  # keys added with contexts
        raw.pop(key)
    (tmp_path / "old" / "config.json").write_text(json.dumps(raw))
    back = PoiTextEncoder.load(tmp_path / "old")
    assert back.context == POI_TEXT and back.config.context == "auto"
