"""Eq. 1-4 on hand-made numbers, and the invariants of triplet sampling."""
import dataclasses
import math
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musecl.city import CATEGORY, INFLOW, KIND, OUTFLOW, PATH, REGION_ID, TEXT, City, CityMeta, Indicator
from musecl.sampling import (
    TRANSFORMS,
    Triplets,
    TripletSampler,
    geographic_triplets,
    mobility_distance,
    mobility_triplets,
    most_similar,
    poi_distance,
    poi_triplets,
    pretext_features,
    similarity,
    transform_features,
)


def brute_distances(X):
    """Test-only N x N distances (N = 200), to check the sampler against the definition."""
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)  # a region is never its own partner
    return D


@pytest.fixture()
def X200():
    return np.random.default_rng(7).normal(size=(200, 4))


# ---------------------------------------------------------------- eq. 1-4


def test_mobility_distance_eq1():
    # region i: inflow 3, outflow 4; region j: no flow -> sqrt(3^2 + 4^2) = 5
    assert mobility_distance([3, 4], [0, 0]) == 5
    # inflow 10 vs 7, outflow 2 vs 6 -> sqrt(9 + 16) = 5; identical rows -> 0
    np.testing.assert_allclose(mobility_distance([[10, 2], [1, 1]], [[7, 6], [1, 1]]), [5, 0])
    with pytest.raises(ValueError, match="inflow, outflow"):
        mobility_distance([1, 2, 3], [0, 0, 0])


def test_poi_distance_eq3():
    # K = 3 categories: (1, 2, 2) POIs vs none -> sqrt(1 + 4 + 4) = 3
    assert poi_distance([1, 2, 2], [0, 0, 0]) == 3
    # one shop vs one school -> sqrt(2)
    np.testing.assert_allclose(poi_distance([[1, 0], [5, 5]], [[0, 1], [5, 5]]), [math.sqrt(2), 0])
    with pytest.raises(ValueError, match="same K categories"):
        poi_distance([1, 2, 3], [1, 2])


def test_similarity_eq2_eq4():
    assert similarity(2.0) == 0.5
    np.testing.assert_allclose(similarity([0.5, 4.0]), [2.0, 0.25])
    # identical vectors: finite and the largest similarity of all
    s = similarity([0.0, 1e-3, 1.0, 5.0], eps=1e-6)
    assert np.isfinite(s).all() and s[0] == 1e6 and s[0] == s.max()
    with pytest.raises(ValueError, match=">= 0"):
        similarity(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        similarity([1.0, np.nan])
    with pytest.raises(ValueError, match="eps"):
        similarity(1.0, eps=0)


def test_transform_features():
    X = np.array([[2.0, 2.0], [0.0, 0.0], [1.0, 3.0]])
    np.testing.assert_allclose(transform_features(X, "share"), [[0.5, 0.5], [0, 0], [0.25, 0.75]])
    np.testing.assert_allclose(transform_features([[0.0, math.e - 1]], "log1p"), [[0.0, 1.0]])
    np.testing.assert_array_equal(transform_features(X, "raw"), X)  # the paper: counts as they are
    with pytest.raises(ValueError, match="non-negative"):
        transform_features([[1.0, -1.0]], "log1p")
    with pytest.raises(ValueError, match="transform must be one of"):
        transform_features(X, "zscore")


# ---------------------------------------------------------------- sampler invariants


@pytest.mark.parametrize("negative", ["dissimilar", "far"])
def test_paper_rule_invariants(X200, negative):
    sampler = TripletSampler(n_triplets=1000, negative=negative, seed=1)
    t = sampler.sample(X200)
    D = brute_distances(X200)
    a, p, n = t.anchor, t.positive, t.negative
    assert len(t) == 1000 and (a != p).all() and (a != n).all()
    assert (t.d_pos <= t.d_neg).all()
    np.testing.assert_allclose(t.d_pos, poi_distance(X200[a], X200[p]))
    np.testing.assert_allclose(t.d_neg, D[a, n])
    # positive among the k = 5 most similar others
    kth = np.sort(D, axis=1)[:, 4]
    assert (t.d_pos <= kth[a] + 1e-12).all()
    if negative == "dissimilar":  # negative outside the top-M = 50 most similar
        assert t.info["n_exclude"] == 50
        assert (t.d_neg > np.sort(D, axis=1)[:, 49][a]).all()
    else:  # negative among the least similar: far above the median distance
        assert (t.d_neg > np.median(D[np.isfinite(D)])).mean() > 0.9
    assert t.info["n_relaxed"] == 0


def test_paper_rule_positive_is_drawn_among_the_top_k_not_always_the_nearest(X200):
    """Rule "paper": an anchor's positives spread over its k = 5 most similar others, and only those."""
    t = TripletSampler(n_triplets=20_000, seed=2).sample(X200)
    top5 = np.argsort(brute_distances(X200), axis=1)[:, :5]
    for anchor in (0, 1, 2):
        positives = set(t.positive[t.anchor == anchor].tolist())
        assert positives <= set(top5[anchor].tolist())
        assert len(positives) > 1, f"anchor {anchor} always got the same positive"


def test_official_rule_positive_is_single_nearest(X200):
    t = TripletSampler(n_triplets=1000, rule="official", seed=1).sample(X200)
    D = brute_distances(X200)
    np.testing.assert_allclose(t.d_pos, D[t.anchor].min(axis=1))
    assert (t.anchor != t.positive).all() and (t.anchor != t.negative).all()
    # negatives are uniform over the other regions (similar ones included): spread all over
    assert len(np.unique(t.negative)) > 150


def test_determinism_and_seeds(X200):
    t1 = TripletSampler(n_triplets=500, seed=3).sample(X200)
    t2 = TripletSampler(n_triplets=500, seed=3).sample(X200)
    t3 = TripletSampler(n_triplets=500, seed=4).sample(X200)
    for name in ("anchor", "positive", "negative", "d_pos", "d_neg"):
        np.testing.assert_array_equal(getattr(t1, name), getattr(t2, name))
    assert (t1.anchor != t3.anchor).any() and (t1.negative != t3.negative).any()


def test_anchor_replacement(X200):
    once = TripletSampler(n_triplets=150).sample(X200)
    assert len(np.unique(once.anchor)) == 150  # each region at most once when n <= N
    many = TripletSampler(n_triplets=1000).sample(X200)
    assert len(many) == 1000 and len(np.unique(many.anchor)) <= 200


def test_duplicates_half_zero(X200):
    X = np.abs(X200)
    X[:100] = 0.0  # half the regions have no POI at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = TripletSampler(n_triplets=2000, seed=0).sample(X)
    zero = t.anchor < 100
    assert (t.anchor != t.positive).all() and (t.anchor != t.negative).all()
    assert (t.d_pos <= t.d_neg).all()
    # a POI-less anchor pairs with another POI-less region, spread over many of them ...
    assert (t.positive[zero] < 100).all() and (t.d_pos[zero] == 0).all()
    assert len(np.unique(t.positive[zero])) > 50
    # ... and its negative is never identical to it
    assert (t.d_neg[zero] > 0).all()
    off = TripletSampler(n_triplets=500, rule="official").sample(X)
    assert (off.d_pos[off.anchor < 100] == 0).all()


def test_all_identical_relaxes_with_warning():
    X = np.zeros((6, 3))
    with pytest.warns(UserWarning, match="could not be drawn"):
        t = TripletSampler(n_triplets=20).sample(X)
    assert (t.anchor != t.positive).all() and (t.anchor != t.negative).all()
    assert (t.positive != t.negative).all() and (t.d_pos <= t.d_neg).all()
    assert t.info["n_relaxed"] == 20


def test_three_regions_smallest_case():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    t = TripletSampler(n_triplets=30).sample(X)
    assert t.info["n_positive_candidates"] == 1
    # each anchor's positive is its nearest, its negative the other one
    np.testing.assert_array_equal(t.positive, np.array([1, 0, 1])[t.anchor])
    np.testing.assert_array_equal(t.negative, np.array([2, 2, 0])[t.anchor])


def test_to_frame_uses_region_ids(X200):
    ids = [f"r{i:03d}" for i in range(200)]
    t = TripletSampler(n_triplets=10).sample(X200, region_ids=ids)
    df = t.to_frame()
    assert list(df.columns) == ["anchor", "positive", "negative", "d_pos", "d_neg"]
    assert df["anchor"].tolist() == [ids[i] for i in t.anchor]
    frame = TripletSampler(n_triplets=10).sample(pd.DataFrame(X200, index=ids)).to_frame()
    assert frame["negative"].str.startswith("r").all()
    with pytest.raises(ValueError, match="region ids given"):
        t.to_frame(ids[:5])


def test_triplets_read_back_with_ids_that_look_missing(X200, tmp_path):
    ids = ["NA", "null", "None", "nan", "N/A"] + [f"r{i}" for i in range(195)]
    t = TripletSampler(n_triplets=50).sample(X200, region_ids=ids)
    t.to_frame().to_csv(tmp_path / "triplets.csv", index=False)
    back = Triplets.read_frame(tmp_path / "triplets.csv")
    assert set(ids[:5]) & set(back[["anchor", "positive", "negative"]].stack())  # the case in question occurs
    pd.testing.assert_frame_equal(back, t.to_frame(), check_dtype=False)
    again = Triplets.from_frame(back, ids)
    np.testing.assert_array_equal(again.anchor, t.anchor)


def test_bad_input_messages(X200):
    sampler = TripletSampler(n_triplets=10)
    bad = X200.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*r017"):
        sampler.sample(bad, region_ids=[f"r{i:03d}" for i in range(200)])
    with pytest.raises(ValueError, match="at least 3 regions"):
        sampler.sample(X200[:2])
    with pytest.raises(ValueError, match="region_ids has 5 entries but features has 200 rows"):
        sampler.sample(X200, region_ids=list("abcde"))
    with pytest.raises(ValueError, match="unique"):
        sampler.sample(X200[:3], region_ids=["a", "a", "b"])
    with pytest.raises(ValueError, match="2-D"):
        sampler.sample(X200[:, 0])
    with pytest.raises(ValueError, match="rule must be one of"):
        TripletSampler(rule="random")
    with pytest.raises(ValueError, match="n_exclude"):
        TripletSampler(n_exclude=2, n_positive_candidates=5)


# ---------------------------------------------------------------- helpers and city views


def test_most_similar_on_a_line():
    X = np.array([[0.0], [1.0], [3.0], [10.0], [3.0]])
    idx, dist = most_similar(X, k=2)
    assert idx[0].tolist() == [1, 2] or idx[0].tolist() == [1, 4]
    np.testing.assert_allclose(dist[0], [1, 3])
    assert idx[2, 0] == 4 and dist[2, 0] == 0  # the duplicate, never itself
    assert idx[4, 0] == 2 and dist[4, 0] == 0
    assert not (idx == np.arange(5)[:, None]).any()
    with pytest.raises(ValueError, match="k must be between"):
        most_similar(X, k=5)


def test_geographic_triplets_near_and_far():
    g = np.arange(20) * 100.0
    xy = np.array([(x, y) for x in g for y in g])  # 20 x 20 grid, 100 m apart
    t = geographic_triplets(xy, n_triplets=500, n_neighbors=8, radius=150, seed=0)
    assert (t.d_pos <= 150).all()
    assert (t.d_neg > 600).all()
    assert (t.d_pos <= t.d_neg).all()


def tiny_city():
    ids = pd.Index([f"h{i}" for i in range(8)], name=REGION_ID)
    rng = np.random.default_rng(0)
    meta = CityMeta(name="tiny", crs="EPSG:4326", modalities=("poi", "mobility"),
                    indicators={"PD": Indicator(name="PD", long_name="population density")})
    regions = pd.DataFrame({"lon": rng.random(8), "lat": rng.random(8), "geometry": ""}, index=ids)
    mobility = pd.DataFrame({INFLOW: [0, 1, 2, 3, 40, 41, 42, 43.0], OUTFLOW: [0, 1, 2, 3, 40, 41, 42, 43.0]},
                            index=ids)
    pois = pd.DataFrame({REGION_ID: ["h0", "h0", "h1", "h5", "h6", "h6", "h7"],
                         CATEGORY: ["shop", "shop", "shop", "school", "school", "school", "shop"], TEXT: ""})
    return City(root=Path("."), meta=meta, regions=regions,
                images=pd.DataFrame(columns=[REGION_ID, KIND, PATH]), pois=pois, mobility=mobility,
                indicators=pd.DataFrame({"PD": np.arange(8.0)}, index=ids))


def test_city_views():
    city = tiny_city()
    sampler = TripletSampler(n_triplets=40, n_positive_candidates=1, n_exclude=3)
    mob = mobility_triplets(city, sampler).to_frame()
    low = {"h0", "h1", "h2", "h3"}
    # with flows in two clusters, a positive shares its anchor's cluster, a negative does not
    assert (mob["anchor"].isin(low) == mob["positive"].isin(low)).all()
    assert (mob["anchor"].isin(low) != mob["negative"].isin(low)).all()
    # 5 regions: (2 shops), (1 shop), (none), (1 school), (2 schools); exclude only the nearest
    poi_sampler = TripletSampler(n_triplets=40, n_positive_candidates=1, n_exclude=1)
    poi = poi_triplets(city, poi_sampler, regions=["h0", "h1", "h2", "h5", "h6"]).to_frame()
    assert set(poi["anchor"]) <= {"h0", "h1", "h2", "h5", "h6"}
    counts = {"h0": [0, 2], "h1": [0, 1], "h2": [0, 0], "h5": [1, 0], "h6": [2, 0]}  # (school, shop)
    for row in poi.itertuples():  # paired by their POI counts (eq. 3): the positive is one POI away
        assert row.d_pos == poi_distance(counts[row.anchor], counts[row.positive]) == 1.0
        assert row.d_neg == poi_distance(counts[row.anchor], counts[row.negative])
    assert set(poi.loc[poi["anchor"] == "h0", "positive"]) == {"h1"}
    assert set(poi.loc[poi["anchor"] == "h6", "positive"]) == {"h5"}
    with pytest.raises(ValueError, match="not in the city"):
        poi_triplets(city, sampler, regions=["h0", "nowhere", "h1"])


def test_memory_guard_against_n_by_n():
    # 20,000 regions: an N x N float matrix alone would be 3.2 GB
    X = np.random.default_rng(0).poisson(2.0, size=(20_000, 8)).astype(float)
    tracemalloc.start()
    try:
        t = TripletSampler(seed=0).sample(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(t) == 10_000 and (t.d_pos <= t.d_neg).all()
    assert peak < 200 * 2**20, f"peak traced memory {peak / 2**20:.0f} MB"


def test_pretext_features_are_the_log_counts_the_pairings_read():
    """ln(1 + inflow, outflow) and ln(1 + POIs per category), one row per region, nothing learned."""
    city = tiny_city()
    feats = pretext_features(city)
    assert list(feats.columns) == ["ln1p_inflow", "ln1p_outflow", "ln1p_poi_school", "ln1p_poi_shop"]
    assert list(feats.index) == list(city.region_ids) and feats.index.name == REGION_ID
    np.testing.assert_allclose(feats["ln1p_inflow"], np.log1p(city.mobility[INFLOW].to_numpy()))
    np.testing.assert_allclose(feats["ln1p_poi_shop"], np.log1p([2, 1, 0, 0, 0, 0, 0, 1]))
    np.testing.assert_allclose(feats["ln1p_poi_school"], np.log1p([0, 0, 0, 0, 0, 1, 2, 0]))
    # only what the city has
    only_pois = dataclasses.replace(city, meta=dataclasses.replace(city.meta, modalities=("poi",)))
    assert list(pretext_features(only_pois).columns) == ["ln1p_poi_school", "ln1p_poi_shop"]
    only_trips = dataclasses.replace(city, meta=dataclasses.replace(city.meta, modalities=("mobility",)))
    assert list(pretext_features(only_trips).columns) == ["ln1p_inflow", "ln1p_outflow"]
    images_only = dataclasses.replace(city, meta=dataclasses.replace(city.meta, modalities=("satellite",)))
    with pytest.raises(ValueError, match="neither trips nor POIs"):
        pretext_features(images_only)


def test_poi_count_ties_give_the_same_triplets_whatever_the_thread_count():
    """POI counts tie often; the triplets of a seed must not depend on how many threads the
    neighbour search used (a brute-force search broke ties by thread, 11% other positives)."""
    from threadpoolctl import threadpool_limits

    from musecl.sampling import _benchmark_features

    counts = _benchmark_features(2000, 37, np.random.default_rng(7))
    drawn = []
    for threads in (1, 4):
        with threadpool_limits(threads):
            t = TripletSampler(n_triplets=10_000, seed=0).sample(counts)
        drawn.append(np.stack([t.anchor, t.positive, t.negative]))
    np.testing.assert_array_equal(drawn[0], drawn[1])


def test_the_blocked_search_is_exact_with_ties_by_row_index(monkeypatch):
    """For many columns the neighbour search is blocked (memory bounded, time linear in N): its
    neighbours are the exact ones, ties ordered by row index, and blocks of any size agree."""
    import musecl.sampling as sampling

    rng = np.random.default_rng(3)
    X = rng.poisson(0.4, size=(300, 20)).astype(float)  # counts: identical rows, equal distances (exact sums)
    X[::7] = X[0]  # one big tie
    queries = np.arange(0, 300, 3)
    d2 = ((X[queries, None, :] - X[None, :, :]) ** 2).sum(-1)
    expected = np.stack([np.lexsort((np.arange(len(X)), row))[:25] for row in d2])
    search = sampling._exact_search(X)
    assert isinstance(search, sampling._BlockedSearch)
    dist, idx = search.kneighbors(X[queries], n_neighbors=25)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(d2, expected, axis=1)), rtol=0, atol=1e-12)
    monkeypatch.setattr(sampling, "_BLOCK", 350)  # one query row per block
    np.testing.assert_array_equal(sampling._exact_search(X).kneighbors(X[queries], n_neighbors=25)[1], expected)
    with pytest.raises(ValueError, match="n_neighbors"):
        search.kneighbors(X[:2], n_neighbors=301)


# ---------------------------------------------------------------- sparse features (OD rows and columns)


def od_like(n=300, d=600, seed=0, empty=30, copies=10, density=0.03):
    """Sparse non-negative counts with ``empty`` regions without trips and ``copies`` copies of
    one region, so the search meets ties, the sampler big groups of identical rows."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = (rng.poisson(2.0, size=(n, d)) * (rng.random((n, d)) < density)).astype(float)
    X[:empty] = 0.0
    X[empty:empty + copies] = X[empty + copies]
    return sp.csr_matrix(X)


def assert_same_triplets(a, b):
    for name in ("anchor", "positive", "negative", "d_pos", "d_neg"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.info == b.info


@pytest.mark.parametrize("density, settings", [
    (0.03, dict()), (0.03, dict(negative="far")), (0.03, dict(rule="official")),
    (0.03, dict(positive_radius=3.0)), (0.03, dict(transform="log1p")), (0.03, dict(transform="share")),
    # ~3 trips a region: many distinct regions equally far, distances that tie up to rounding
    (0.005, dict(transform="log1p")), (0.005, dict(transform="share")),
    (0.01, dict(transform="log1p", negative="far", n_positive_candidates=20, n_exclude=40,
                positive_radius=1.0)),
], ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) if isinstance(p, dict) else f"density={p}")
def test_sparse_features_draw_the_dense_triplets_bit_for_bit(density, settings):
    """A scipy.sparse matrix (a region's OD row and column: d = 2N) gives the triplets of the
    same matrix passed dense, floats and warnings included, whatever the settings."""
    X = od_like(density=density)
    sampler = TripletSampler(n_triplets=1000, seed=5, **settings)
    with warnings.catch_warnings(record=True) as dense_warnings:
        warnings.simplefilter("always")
        dense = sampler.sample(X.toarray())
    with warnings.catch_warnings(record=True) as sparse_warnings:
        warnings.simplefilter("always")
        sparse = sampler.sample(X)
    assert_same_triplets(dense, sparse)
    assert [str(w.message) for w in dense_warnings] == [str(w.message) for w in sparse_warnings]


def test_sparse_most_similar_and_transforms_match_dense():
    import scipy.sparse as sp

    X = od_like(n=200, d=400, seed=1)
    for transform in TRANSFORMS:
        out = transform_features(X, transform)
        assert sp.issparse(out) and np.array_equal(out.toarray(), transform_features(X.toarray(), transform))
        dense, sparse = most_similar(X.toarray(), 8, transform), most_similar(sp.coo_array(X), 8, transform)
        assert np.array_equal(dense[0], sparse[0]) and np.array_equal(dense[1], sparse[1])
    # a few columns take the k-d tree: densified, N x d is small
    flows = sp.csr_matrix(np.abs(np.random.default_rng(2).normal(size=(100, 2))))
    assert_same_triplets(TripletSampler(n_triplets=300).sample(flows.toarray()),
                         TripletSampler(n_triplets=300).sample(flows))


def test_sparse_search_over_8192_columns_sums_as_the_dense_one():
    """numpy sums a lone row of over 8192 columns in other chunks than a row among others; the
    sparse search sums its candidates a few at a time yet must get the dense search's floats."""
    import musecl.sampling as sampling

    X = transform_features(od_like(n=60, d=20_000, seed=3, empty=3, copies=3), "log1p")  # inexact sums
    queries = np.arange(0, 60, 4)
    dense, sparse = sampling._exact_search(X.toarray()), sampling._exact_search(X)
    d_dense, i_dense = dense.kneighbors(X[queries].toarray(), n_neighbors=12)
    d_sparse, i_sparse = sparse.kneighbors(X[queries].toarray(), n_neighbors=12)
    np.testing.assert_array_equal(i_sparse, i_dense)
    np.testing.assert_array_equal(d_sparse, d_dense)
    # only some positions read (the sampler's top k and M-th): those are exact, the others NaN or exact
    needed = np.array([0, 1, 2, 10, 11])
    d_part, i_part = sparse.kneighbors(X[queries].toarray(), n_neighbors=12, needed=needed)
    np.testing.assert_array_equal(i_part[:, needed], i_dense[:, needed])
    np.testing.assert_array_equal(d_part[:, needed], d_dense[:, needed])
    assert np.isnan(d_part).any()
    assert (np.isnan(d_part) | (d_part == d_dense)).all()
    assert (np.sort(i_part, axis=1) == np.sort(i_dense, axis=1)).all()


def test_sparse_search_puts_the_exact_rows_at_the_needed_positions():
    """Between the positions it is asked for, the sparse search keeps the approximate order; at
    those positions it must hold the exact neighbours whatever the approximation's error, up to
    half the margin (here a coarse one, so near-ties abound)."""
    import musecl.sampling as sampling

    X = transform_features(od_like(n=200, d=400, seed=4, empty=0, copies=0), "log1p")
    dense = X.toarray()
    search, reference = sampling._BlockedSearch(X), sampling._BlockedSearch(dense)
    rng = np.random.default_rng(0)
    needed, margin = np.array([0, 1, 2, 3, 28, 29]), 2.0
    for r in range(0, 200, 10):
        q = dense[r]
        approx = ((dense - q) ** 2).sum(axis=1) - q @ q + rng.uniform(-margin / 2, margin / 2, size=200)
        idx, dist = search._nearest_at(np.arange(200), approx, margin, q, 30, needed)
        ref_dist, ref_idx = reference.kneighbors(dense[r:r + 1], n_neighbors=30)
        np.testing.assert_array_equal(idx[needed], ref_idx[0, needed])
        np.testing.assert_array_equal(dist[needed], ref_dist[0, needed])


def test_sparse_sampling_never_densifies_more_than_a_block(monkeypatch):
    """The library never holds N x d numbers for sparse features: with the block lowered to 4,000
    floats (N x d = 45 blocks) every densified piece fits one block, and the triplets still equal
    the dense array's."""
    import scipy.sparse as sp

    import musecl.sampling as sampling

    X = od_like()
    dense_X = X.toarray()
    monkeypatch.setattr(sampling, "_BLOCK", 4000)
    sampler = TripletSampler(n_triplets=1000, seed=2, transform="share")
    dense = sampler.sample(dense_X)
    sizes = []
    toarray = sp.csr_matrix.toarray

    def recording_toarray(self, *args, **kwargs):
        out = toarray(self, *args, **kwargs)
        sizes.append(out.size)
        return out

    monkeypatch.setattr(sp.csr_matrix, "toarray", recording_toarray)
    sparse = sampler.sample(X)
    assert_same_triplets(dense, sparse)
    assert len(sizes) > 100 and max(sizes) <= 4000 < X.shape[0] * X.shape[1] // 40


def test_sparse_duplicates_and_stored_zeros_read_as_the_dense_matrix():
    """Any scipy.sparse format: duplicate entries add up (before ln(1 + x)), stored zeros and -0.0
    are zeros, so a region without trips stays identical to the others without, and the input is
    left as it was."""
    import scipy.sparse as sp

    X = od_like(density=0.01)
    r, c = X.nonzero()
    v = np.asarray(X[r, c]).ravel()
    zero_rows = np.arange(12)  # among the 30 regions without trips
    coo = sp.coo_array((np.r_[v / 2, v / 2, np.zeros(6), -np.zeros(6)],
                        (np.r_[r, r, zero_rows], np.r_[c, c, zero_rows * 7])), shape=X.shape)
    assert np.array_equal(coo.toarray(), X.toarray())
    sampler = TripletSampler(n_triplets=1000, seed=1, transform="log1p")
    dense = sampler.sample(X.toarray())
    for features in (coo, coo.tocsc(), sp.csr_array(X.astype(np.int64))):
        assert_same_triplets(dense, sampler.sample(features))
    assert coo.nnz == 2 * len(v) + 12


def test_sparse_bad_input_gives_the_dense_messages():
    import scipy.sparse as sp

    ids = [f"r{i:03d}" for i in range(300)]
    sampler = TripletSampler(n_triplets=10)
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = od_like().toarray()
        bad[17, 2] = bad[250, 599] = bad_value
        messages = []
        for features in (bad, sp.csr_matrix(bad)):
            with pytest.raises(ValueError, match=r"NaN or infinite values in 2 region\(s\).*r017.*r250") as e:
                sampler.sample(features, region_ids=ids)
            messages.append(str(e.value))
        assert messages[0] == messages[1]
    negative = od_like().toarray()
    negative[33, 5] = -1.0
    for transform in ("log1p", "share"):
        with pytest.raises(ValueError, match="non-negative counts; row 33"):
            TripletSampler(n_triplets=10, transform=transform).sample(sp.csr_matrix(negative))
    with pytest.raises(ValueError, match="at least 3 regions"):
        sampler.sample(sp.csr_matrix(np.ones((2, 5))))
    with pytest.raises(ValueError, match="2-D"):
        sampler.sample(sp.coo_array(np.ones(5)))
