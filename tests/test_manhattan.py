"""Manhattan-180: the converter on hand-made raw files, the benchmark protocol, the vector methods."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from musecl.city import load_city, validate_city
from musecl.config import RunConfig
from musecl.datasets import manhattan as mh
from musecl.evaluation import (KNNProbe, kfold_predictions, landuse_scores, location_kfold_scores,
                               ridge_fit_predict, ridge_kfold_predictions, ridge_kfold_scores, ridge_kfold_select)

# ------------------------------------------------------------------------------------------
# a tiny Manhattan: 4 square regions of 0.01 degree in a row, near (-73.99, 40.75)

X0, Y0, STEP = -74.0, 40.75, 0.01


def _square(k: int):
    return box(X0 + k * STEP, Y0, X0 + (k + 1) * STEP, Y0 + STEP)


def _feature(geom, props):
    return {"type": "Feature", "properties": props, "geometry": geom.__geo_interface__}


def _to_tract_crs(geom):
    """A WGS84 polygon in the tracts' CRS (the raw tract file's coordinates)."""
    import pyproj
    import shapely

    to = pyproj.Transformer.from_crs(mh.WGS84, mh.TRACT_CRS, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(to.transform(xy[:, 0], xy[:, 1])))


def _write_raw(tmp_path, n_regions: int = 4):
    raw = tmp_path / "raw"
    raw.mkdir()
    squares = [_square(k) for k in range(n_regions)]
    order = list(range(n_regions))[::-1]  # features out of order: the reader sorts by id
    (raw / "regions.json").write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature(squares[k], {"region_id": k}) for k in order]}))
    od = np.arange(n_regions * n_regions, dtype=float).reshape(1, n_regions, n_regions)
    od[0, 0, 1] = 0.0
    np.save(raw / "od.npy", od)
    np.save(raw / "crime.npy", np.arange(n_regions, dtype=float).reshape(-1, 1) * 10)
    np.save(raw / "check.npy", np.arange(n_regions) * 100)
    (raw / "cd.json").write_text(json.dumps({str(k): k % 2 for k in range(n_regions)}))
    centre = [(X0 + (k + 0.5) * STEP, Y0 + 0.5 * STEP) for k in range(n_regions)]
    pois = pd.DataFrame({
        "osmid": [1, 2, 3, 4, 5],
        "geometry": [f"POINT ({centre[0][0]} {centre[0][1]})", f"POINT ({centre[1][0]} {centre[1][1]})",
                     f"POINT ({centre[1][0] + 0.001} {centre[1][1]})", "POINT (-70 40)",
                     f"POINT ({centre[2][0]} {centre[2][1]})"],
        "man_made": ["", "", "", "", "tower"],
        "name": ["Joe's Cafe", "", "P.S. 1", "Far away", ""],
        "leisure": ["", "park", "", "", ""],
        "amenity": ["cafe", "", "school", "bank", ""],
    })
    pois.loc[len(pois)] = [6, f"POINT ({centre[0][0]} {centre[0][1]})", "", "no tag", "", ""]
    pois.to_csv(raw / "pois.csv", index=False)
    # two tracts in EPSG:32118 covering the west and east halves of the row of squares
    half = n_regions // 2
    west = _to_tract_crs(box(X0 - STEP, Y0 - STEP, X0 + half * STEP, Y0 + 2 * STEP))
    east = _to_tract_crs(box(X0 + half * STEP, Y0 - STEP, X0 + (n_regions + 1) * STEP, Y0 + 2 * STEP))
    (raw / "tracts.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature(west, {"BoroCT2020": "1000100", "population_density": 1000.0}),
        _feature(east, {"BoroCT2020": "1000200", "population_density": 3000.0})]}))
    (raw / "income.csv").write_text(
        "GEO_ID,NAME,B19013_001E\nGeography,Geographic Area Name,Estimate\n"
        "1400000US36061000100,Tract 1,\"50,000\"\n1400000US36061000200,Tract 2,250000+\n")
    (raw / "arrests.csv").write_text(
        "ARREST_KEY,Latitude,Longitude\n"
        f"1,{centre[3][1]},{centre[3][0]}\n2,{centre[3][1]},{centre[3][0]}\n3,40.0,-70.0\n4,,\n")
    return {"regions": raw / "regions.json", "od": raw / "od.npy", "crime": raw / "crime.npy",
            "check_in": raw / "check.npy", "landuse": raw / "cd.json", "pois": raw / "pois.csv",
            "tracts": raw / "tracts.geojson", "income": raw / "income.csv", "arrests": raw / "arrests.csv"}


@pytest.fixture
def tiny_city(tmp_path):
    return mh.convert_manhattan(_write_raw(tmp_path), tmp_path / "city")


def valid_but_small(root) -> bool:
    """Four regions keep the expected values checkable by hand; the only problem allowed is the
    city's size (fewer regions than a run needs, MIN_REGIONS)."""
    return all("MIN_REGIONS" in p.message for p in validate_city(root))


def test_converter_writes_a_valid_city(tiny_city):
    assert valid_but_small(tiny_city)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        city = load_city(tiny_city)
    assert list(city.region_ids) == ["0", "1", "2", "3"]
    assert city.meta.modalities == ("poi", "mobility")
    # OD: zero cells dropped, flows kept; in/outflows follow from the table
    assert len(city.od) == 14  # cells (0, 0) and (0, 1) are zero
    assert city.mobility.loc["0", "outflow"] == pytest.approx(0 + 2 + 3)
    assert city.mobility.loc["1", "inflow"] == pytest.approx(5 + 9 + 13)
    # POIs: the first tag wins (amenity before leisure), untagged and outside points dropped
    pois = city.pois.sort_values(["region_id", "category"]).reset_index(drop=True)
    assert pois[["region_id", "category", "text"]].values.tolist() == [
        ["0", "cafe", "Joe's Cafe"], ["1", "park", ""], ["1", "school", "P.S. 1"], ["2", "tower", ""]]
    ind = city.indicators
    assert ind["crime"].tolist() == [0, 10, 20, 30]
    assert ind["check_in"].tolist() == [0, 100, 200, 300]
    assert ind["arrests"].tolist() == [0, 0, 0, 2]
    # area weighting: regions 0-1 lie in the west tract, 2-3 in the east one
    assert ind["population_density"].tolist() == pytest.approx([1000, 1000, 3000, 3000], rel=1e-6)
    assert ind["median_income"].tolist() == pytest.approx([50000, 50000, 250000, 250000], rel=1e-6)
    assert not city.meta.indicators["crime"].log
    assert mh.read_landuse(tiny_city).tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("share, income_2", [(0.25, 50000.0), (0.002, np.nan)])
def test_converter_keeps_income_of_a_region_mostly_in_a_tract_without_one(tmp_path, share, income_2):
    """Region 2 keeps the income of the quarter it shares with the tract that has one; a border
    sliver (0.2% of it) gives no income."""
    paths = _write_raw(tmp_path)
    cut = X0 + (2 + share) * STEP  # region 2: ``share`` of it in the west tract, the rest in the east
    west = _to_tract_crs(box(X0 - STEP, Y0 - STEP, cut, Y0 + 2 * STEP))
    east = _to_tract_crs(box(cut, Y0 - STEP, X0 + 5 * STEP, Y0 + 2 * STEP))
    paths["tracts"].write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature(west, {"BoroCT2020": "1000100", "population_density": 1000.0}),
        _feature(east, {"BoroCT2020": "1000200", "population_density": 3000.0})]}))
    paths["income"].write_text(  # the east tract has no estimate
        "GEO_ID,NAME,B19013_001E\nGeography,Geographic Area Name,Estimate\n"
        "1400000US36061000100,Tract 1,\"50,000\"\n1400000US36061000200,Tract 2,-\n")
    root = mh.convert_manhattan(paths, tmp_path / "city")
    assert valid_but_small(root)
    ind = pd.read_csv(root / "indicators.csv", dtype={"region_id": str}).set_index("region_id")
    density_2 = 1000 * share + 3000 * (1 - share)
    assert ind["population_density"].tolist() == pytest.approx([1000, 1000, density_2, 3000], rel=1e-4)
    assert ind["median_income"].iloc[:2].tolist() == pytest.approx([50000] * 2, rel=1e-6)
    assert 0.002 < mh.INCOME_MIN_COVERAGE < 0.25  # the two cases lie either side of the threshold
    assert ind.loc["2", "median_income"] == pytest.approx(income_2, rel=1e-6, nan_ok=True)
    assert np.isnan(ind.loc["3", "median_income"])


def test_converter_records_sources(tiny_city, tmp_path):
    import yaml

    meta = yaml.safe_load((tiny_city / "city.yaml").read_text())
    assert set(meta["sources"]) == set(mh.FILES)
    assert meta["sources"]["od"] == {"path": str(tmp_path / "raw" / "od.npy")}
    assert all(Path(s["path"]).parent == tmp_path / "raw" and Path(s["path"]).is_file()
               for s in meta["sources"].values())
    assert mh.LANDUSE_CSV in meta["extra_files"]


def test_readers_sort_regions_and_read_tracts_in_their_crs(tmp_path):
    paths = _write_raw(tmp_path)
    regions = mh.read_regions(paths["regions"])
    assert list(regions.ids) == ["0", "1", "2", "3"]  # numeric order, not file order
    assert regions.table.loc["1", "lon"] == pytest.approx(X0 + 1.5 * STEP)  # the centroid
    assert regions.geometries()[2].equals_exact(_square(2), 0)  # full-precision WKT
    props, tracts = mh.read_tracts(paths["tracts"])
    assert props["BoroCT2020"].tolist() == ["1000100", "1000200"] and list(tracts.ids) == ["0", "1"]
    minx, miny, _, _ = tracts.geometries()[0].bounds  # back in WGS84
    assert (minx, miny) == pytest.approx((X0 - STEP, Y0 - STEP), abs=1e-6)


def test_small_helpers():
    assert mh.tract_geoid("1000100") == "36061000100"
    with pytest.raises(ValueError, match="Manhattan"):
        mh.tract_geoid("2000100")
    assert mh.parse_income("250,000+") == 250000
    assert mh.parse_income("2,500-") == 2500
    assert np.isnan(mh.parse_income("-"))
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        mh.od_table(np.ones((3, 3)), ["a", "b"])


def test_converter_names_a_missing_role(tmp_path):
    paths = _write_raw(tmp_path)
    del paths["arrests"]
    with pytest.raises(ValueError, match="arrests"):
        mh.convert_manhattan(paths, tmp_path / "city")


@pytest.mark.skipif(not __import__("musecl.datasets.sources", fromlist=["available"]).available("manhattan"),
                    reason="the Manhattan-180 raw files are not on this machine")
def test_real_manhattan_converts(tmp_path):
    root = mh.make_manhattan_city(tmp_path / "manhattan")
    assert validate_city(root) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        city = load_city(root)
    assert len(city) == 180 and city.od["flow"].sum() == pytest.approx(9_332_740)
    assert city.indicators["population_density"].notna().all()


# ------------------------------------------------------------------------------------------
# the published protocol


def test_ridge_kfold_matches_a_hand_computed_linear_case():
    x = np.arange(20, dtype=float).reshape(-1, 1)
    y = 3 * x[:, 0] + 1
    pred = ridge_kfold_predictions(x, y, alpha=1e-9, folds=5)
    assert pred == pytest.approx(y, rel=1e-6)
    s = ridge_kfold_scores(x, y, alpha=1e-9)
    assert s["r2"] == pytest.approx(1.0) and s["mae"] == pytest.approx(0, abs=1e-5)


def test_ridge_kfold_does_not_shuffle_and_clips_at_zero():
    # the target is 0 on the first fold and rises on the others: extrapolating the later folds'
    # line into fold 0 gives negative predictions, which the protocol sets to 0
    x = np.arange(10, dtype=float).reshape(-1, 1)
    y = np.r_[0.0, 0.0, np.arange(2, 10) * 2.0 - 2]
    pred = ridge_kfold_predictions(x, y, alpha=1e-9, folds=5)
    assert (pred >= 0).all() and pred[0] == 0.0
    # fold k (rows 2k, 2k+1, in order) predicted by the least-squares line through the other rows
    expected = np.concatenate([np.polyval(np.polyfit(np.delete(x[:, 0], np.s_[k:k + 2]), np.delete(y, np.s_[k:k + 2]),
                                                     1), x[k:k + 2, 0]) for k in range(0, 10, 2)])
    assert expected[0] == pytest.approx(-2.0)  # fold 0 extrapolates below zero
    assert pred == pytest.approx(np.clip(expected, 0.0, None), abs=1e-6)


def test_kfold_predictions_fits_each_contiguous_fold_on_the_others():
    # a model that predicts its training mean: fold k's prediction is the mean of the other folds,
    # set to 0 where negative (the folds that train on the -40s)
    y = np.r_[np.full(4, -40.0), np.arange(16, dtype=float)]
    x = np.zeros((20, 1))
    pred = kfold_predictions(x, y, lambda x_train, y_train, x_test: np.full(len(x_test), y_train.mean()), folds=5)
    expected = np.concatenate([np.full(4, np.delete(y, np.s_[k:k + 4]).mean()) for k in range(0, 20, 4)])
    assert pred == pytest.approx(np.clip(expected, 0.0, None))
    assert pred[0] == pytest.approx(7.5) and (pred[4:] == 0).all()


def test_ridge_kfold_aligns_by_region_id():
    rng = np.random.default_rng(0)
    emb = pd.DataFrame(rng.normal(size=(30, 3)), index=[str(i) for i in range(30)])
    y = pd.Series(emb.to_numpy() @ [1.0, 2.0, 3.0] + 10, index=emb.index)
    shuffled = emb.sample(frac=1.0, random_state=1)
    assert ridge_kfold_scores(shuffled, y) == ridge_kfold_scores(emb, y)
    with pytest.raises(ValueError, match="lacks 1 region"):
        ridge_kfold_scores(emb.iloc[1:], y)


def test_location_kfold_reads_neighbours_within_the_published_folds():
    """Location alone under the benchmark's protocol: a smooth field of the coordinates is read
    from neighbours, noise is not; five contiguous folds, each predicted by a kNN fitted on the
    other four, pooled and scored once; rows aligned by region id."""
    rng = np.random.default_rng(0)
    xy = pd.DataFrame(rng.uniform(0, 5_000, size=(200, 2)), index=[f"r{i}" for i in range(200)])
    y = pd.Series(100 + xy[0] / 50 + xy[1] / 100, index=xy.index)
    assert location_kfold_scores(xy, y)["r2"] > 0.9
    assert location_kfold_scores(xy.sample(frac=1.0, random_state=1), y) == location_kfold_scores(xy, y)
    noise = pd.Series(rng.normal(size=200), index=xy.index)
    assert location_kfold_scores(xy, noise)["r2"] < 0.1
    pred = np.concatenate([KNNProbe().fit(xy.drop(xy.index[k:k + 40]), y.drop(y.index[k:k + 40]))
                           .predict(xy.iloc[k:k + 40]) for k in range(0, 200, 40)])
    assert location_kfold_scores(xy, y)["mae"] == pytest.approx(np.abs(pred - y.to_numpy()).mean())


def test_select_picks_the_informative_candidate_without_the_test_fold():
    rng = np.random.default_rng(0)
    n = 100
    signal = rng.normal(size=(n, 2))
    y = signal @ [5.0, -3.0] + 20
    candidates = {"noise": rng.normal(size=(n, 40)), "signal": signal}
    out = ridge_kfold_select(candidates, y)
    assert out["chosen"] == ["signal"] * 5
    assert out["r2"] > 0.99


@pytest.mark.parametrize("n_cols", [3, 60])  # primal (rows >= columns) and dual solve
def test_ridge_fit_predict_matches_sklearn(n_cols):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, n_cols)) * 3 + 1, rng.normal(size=40) * 10 + 5
    expected = Ridge(alpha=1.0).fit(x[:30], y[:30]).predict(x[30:])
    assert ridge_fit_predict(x[:30], y[:30], x[30:], 1.0) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_select_never_reads_the_outer_test_fold():
    # two candidates of similar quality, so the choice is fragile; scrambling (and wildly
    # rescaling) the targets of outer test fold k must leave fold k's choice and inner errors as
    # they were, and must change its predictions' score only through fold k's own targets
    rng = np.random.default_rng(0)
    n = 100
    base = rng.normal(size=(n, 3))
    y = base @ [4.0, 2.0, 2.0] + 30 + rng.normal(size=n)
    candidates = {"a": base[:, [0, 1]] + rng.normal(scale=0.6, size=(n, 2)),
                  "b": base[:, [0, 2]] + rng.normal(scale=0.6, size=(n, 2)),
                  "c": rng.normal(size=(n, 5))}
    ref = ridge_kfold_select(candidates, y)
    assert len(set(ref["chosen"])) > 1  # the test is only telling if the folds disagree
    for k in range(5):
        test = np.arange(k * 20, (k + 1) * 20)
        scrambled = y.copy()
        scrambled[test] = rng.permutation(y[test])[::-1] * 100 - 7
        out = ridge_kfold_select(candidates, scrambled)
        assert out["chosen"][k] == ref["chosen"][k]
        pd.testing.assert_series_equal(out["inner_mse"].loc[k], ref["inner_mse"].loc[k])
        assert out["predictions"][test] == pytest.approx(ref["predictions"][test])


def test_select_reports_inner_errors_and_predictions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    y = x @ [2.0, 1.0] + 10
    out = ridge_kfold_select({"x": x, "noise": rng.normal(size=(50, 8))}, y)
    assert list(out["inner_mse"].columns) == ["x", "noise"] and len(out["inner_mse"]) == 5
    assert (out["inner_mse"]["x"] < out["inner_mse"]["noise"]).all()
    assert out["predictions"].shape == (50,) and (out["predictions"] >= 0).all()
    with pytest.raises(ValueError, match="at least one"):
        ridge_kfold_select({}, y)


def test_landuse_scores_recover_separated_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    emb = rng.normal(scale=0.05, size=(60, 2)) + np.eye(3)[labels][:, :2] * 10 + labels[:, None]
    s = landuse_scores(emb, labels, n_clusters=3)
    assert s["nmi"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)
    # district names, matched to the embedding's rows by region id (here in reverse order)
    ids = [f"r{i}" for i in range(60)]
    named = pd.Series([f"MN0{k + 1}" for k in labels], index=ids)[::-1]
    assert landuse_scores(pd.DataFrame(emb, index=ids), named, n_clusters=3) == s
    with pytest.raises(ValueError, match="missing values"):
        landuse_scores(emb, np.where(labels == 0, np.nan, labels), n_clusters=3)


# ------------------------------------------------------------------------------------------
# the vector methods on a small synthetic city


@pytest.fixture
def synthetic_city(tmp_path):
    from musecl.city import CityMeta, Indicator, write_city

    rng = np.random.default_rng(0)
    n = 24
    ids = [str(i) for i in range(n)]
    regions = pd.DataFrame({"lon": X0 + np.arange(n) * STEP + STEP / 2, "lat": Y0 + STEP / 2,
                            "geometry": [_square(k).wkt for k in range(n)]}, index=ids)
    flows = rng.poisson(5.0, size=(n, n)) * (1 + np.arange(n)[:, None] % 3)
    o, d = np.nonzero(flows)
    od = pd.DataFrame({"origin": np.array(ids)[o], "destination": np.array(ids)[d], "flow": flows[o, d]})
    cats = np.array(["cafe", "school", "park", "bank"])
    pois = pd.DataFrame({"region_id": rng.choice(ids, 200), "category": rng.choice(cats, 200),
                         "text": rng.choice(["blue door", "corner shop", "big park", ""], 200)})
    indicators = pd.DataFrame({"crime": flows.sum(axis=1).astype(float)}, index=ids)
    meta = CityMeta(name="tiny", crs="EPSG:4326", modalities=("poi", "mobility"),
                    indicators={"crime": Indicator("crime", "crime", log=False)})
    root = write_city(tmp_path / "syn", meta, regions=regions, indicators=indicators, pois=pois, od=od)
    return load_city(root)


def test_od_views_are_sparse_and_equal_the_dense_definitions(synthetic_city):
    """The OD matrix and the mobility view are stored sparse (memory grows with the OD table, not
    with N^2) and hold exactly what their dense definitions say."""
    from scipy import sparse

    from musecl.methods.vector import mobility_view, od_matrix

    ids, od = synthetic_city.region_ids, synthetic_city.od
    dense = np.zeros((len(ids), len(ids)))
    np.add.at(dense, (ids.get_indexer(od["origin"]), ids.get_indexer(od["destination"])), od["flow"])
    m, view = od_matrix(synthetic_city), mobility_view(synthetic_city)
    assert sparse.issparse(m) and sparse.issparse(view)
    assert np.array_equal(m.toarray(), dense)
    assert np.array_equal(view.toarray(), np.log1p(np.hstack([dense, dense.T])))


def test_od_svd_is_the_truncated_svd_with_a_fixed_sign(synthetic_city):
    from musecl.methods import make_method
    from musecl.methods.vector import od_matrix, od_svd

    n, k = len(synthetic_city), 5
    logs = np.log1p(od_matrix(synthetic_city).toarray())
    u_np, s_np, vt_np = np.linalg.svd(logs)
    table = od_svd(synthetic_city, k)
    u, v = table.iloc[:, :k].to_numpy(), table.iloc[:, k:].to_numpy()
    # the best rank-k approximation (Eckart-Young), whatever signs the solver chose
    assert u @ v.T == pytest.approx((u_np[:, :k] * s_np[:k]) @ vt_np[:k], abs=1e-8)
    assert np.linalg.norm(u, axis=0) ** 2 == pytest.approx(s_np[:k], rel=1e-8)  # sqrt(s) on each side
    assert (u[np.abs(u).argmax(axis=0), np.arange(k)] > 0).all()  # the sign convention
    pd.testing.assert_frame_equal(table, od_svd(synthetic_city, k))  # deterministic
    with pytest.raises(ValueError, match="dim must be between 1 and"):
        od_svd(synthetic_city, n)
    emb = make_method("OD SVD", progress=False).fit_transform(synthetic_city)
    assert emb.shape == (n, 32) and list(emb.index) == list(synthetic_city.region_ids)
    from musecl.methods.vector import ODSVD
    with pytest.warns(UserWarning, match=f"{n} regions allow at most {n - 1} factors"):
        small = ODSVD(progress=False, dim=n + 5).fit_transform(synthetic_city)  # a city smaller than the default
    assert small.shape == (n, 2 * (n - 1))


def test_od_svd_names_a_table_without_trips(synthetic_city):
    from musecl.methods.vector import od_svd

    synthetic_city.od = synthetic_city.od.assign(flow=0.0)  # every pair listed, none with a trip
    with pytest.raises(ValueError, match="has no trips"):
        od_svd(synthetic_city, 3)


@pytest.mark.parametrize("width", [90, 89])  # 89: a last block of one column, which numpy sums otherwise
def test_view_rows_are_standardised_block_by_block_as_the_whole_matrix(monkeypatch, width):
    """A view made dense a few rows (and, for the column scales, a few columns) at a time gives
    the numbers of standardising the whole dense matrix, bit for bit; the embedding is the
    model applied to those rows, in row order."""
    import torch
    from scipy import sparse

    import musecl.methods.vector as vector
    from musecl.tables import column_scale, standardise_columns

    rng = np.random.default_rng(3)
    dense = np.log1p(sparse.random(500, width, density=0.5, random_state=rng).toarray() * 50)
    dense[:, 7] = 0.0  # a constant column
    monkeypatch.setattr(vector, "DENSE_BLOCK", 2000)  # 4 columns of 500 rows, 22 rows of all columns
    expected = standardise_columns(dense).astype(np.float32)
    model = torch.nn.Linear(width, 3)
    for values in (sparse.csr_matrix(dense), dense):
        rows = vector.StandardisedRows(values)
        assert rows.block == 2000 // width
        assert all(np.array_equal(a, b) for a, b in zip((rows.mean, rows.std), column_scale(dense)))
        order = rng.permutation(500)
        assert np.array_equal(rows(order).numpy(), expected[order])
        with torch.no_grad():
            assert torch.allclose(rows.embed(model), model(torch.from_numpy(expected)), atol=1e-6)


def test_vector_methods_save_and_load_with_their_options(synthetic_city, tmp_path):
    """OD SVD and MuseCL (vector views) are table methods: the table, the city it belongs to and
    the method's own options (dim, view settings) come back from the folder."""
    from musecl.methods.vector import ODSVD, VectorMuseCL, VectorViewConfig

    svd = ODSVD(dim=3, progress=False).fit(synthetic_city)
    loaded = ODSVD.load(svd.save(tmp_path / "svd"))
    assert loaded.dim == 3
    pd.testing.assert_frame_equal(loaded.transform(synthetic_city), svd.transform(synthetic_city))
    cfg = RunConfig(seed=0, n_triplets=200, embedding_dim=4, fusion_epochs=1, fusion_batch_size=8, text_epochs=1)
    vcfg = VectorViewConfig(hidden=8, epochs=1, batch_size=32, mobility_similarity="od")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vec = VectorMuseCL(cfg, cache_dir=tmp_path / "cache", progress=False, view_config=vcfg).fit(synthetic_city)
    loaded = VectorMuseCL.load(vec.save(tmp_path / "vec"))
    assert loaded.view_config == vcfg and loaded.config == cfg
    pd.testing.assert_frame_equal(loaded.transform(synthetic_city), vec.transform(synthetic_city))
    # its stages came back too: the attention, each history, and the fusion model that remakes the table
    pd.testing.assert_frame_equal(loaded.attention(), vec.attention())
    pd.testing.assert_frame_equal(loaded.history("fusion"), vec.history("fusion"))
    from musecl.fusion import fuse

    remade, _ = fuse(loaded.fusion_model(), loaded.stage_table("mobility"), loaded.stage_table("poi"))
    np.testing.assert_allclose(remade.to_numpy(), loaded.transform(synthetic_city).to_numpy(), atol=1e-6)
    loaded.save(tmp_path / "vec")  # again where it was loaded from
    pd.testing.assert_frame_equal(VectorMuseCL.load(tmp_path / "vec").attention(), vec.attention())
    with pytest.raises(ValueError, match="OD SVD"):
        ODSVD.load(tmp_path / "vec")


def test_vector_museCL_is_deterministic_and_learns(synthetic_city):
    from musecl.fusion import fuse
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig, view_parts

    cfg = RunConfig(seed=0, n_triplets=300, embedding_dim=8, fusion_epochs=3, fusion_batch_size=8,
                    text_epochs=2)
    vcfg = VectorViewConfig(hidden=16, epochs=3, batch_size=32, mobility_similarity="od")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
        b = VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
    ea, eb = a.transform(synthetic_city), b.transform(synthetic_city)
    assert ea.shape == (len(synthetic_city), 8) and np.isfinite(ea.to_numpy()).all()
    pd.testing.assert_frame_equal(ea, eb)
    loss = a.histories_["mobility"]["train_loss"]
    assert loss.iloc[-1] < loss.iloc[0]
    att = a.stage_table("attention")
    assert list(att.columns) == ["mobility", "poi"] and att.sum(axis=1).to_numpy() == pytest.approx(1.0)
    assert a.triplets_["poi"].info["n_regions"] == len(synthetic_city)
    # the fusion kept in the cache (chapter 6 reads it) is the one that made the embedding and beta
    embedding, beta = fuse(a.fusion_model(), a.stage_table("mobility"), a.stage_table("poi"))
    np.testing.assert_allclose(embedding.to_numpy(), ea.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(beta.to_numpy(), a.attention().to_numpy(), atol=1e-6)
    assert "train_infonce" in a.history("fusion") and len(a.history("fusion")) == 3
    with pytest.raises(ValueError, match="no stage 'satellite'"):
        a.history("satellite")
    parts = view_parts(a)  # its ablation: each view alone and the two side by side
    assert list(parts) == ["mobility view only", "POI view only", "mobility view + POI view"]
    np.testing.assert_array_equal(parts["mobility view only"].to_numpy(), a.stage_table("mobility").to_numpy())
    np.testing.assert_array_equal(parts["mobility view + POI view"].to_numpy(),
                                  np.hstack([a.stage_table("mobility"), a.stage_table("poi")]))
    assert parts["mobility view + POI view"].columns.is_unique
    with pytest.raises(ValueError, match="mobility_similarity"):
        VectorViewConfig(mobility_similarity="distance")


def test_vector_museCL_reuses_identical_poi_stages(synthetic_city, monkeypatch):
    import musecl.methods.vector as vector
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig

    trained, real_training = [], vector.train_view_encoder
    monkeypatch.setattr(vector, "train_view_encoder",
                        lambda view, *a, **k: trained.append(view.shape[1]) or real_training(view, *a, **k))

    cfg = RunConfig(seed=0, n_triplets=200, embedding_dim=8, fusion_epochs=2, fusion_batch_size=8,
                    text_epochs=1)
    small = dict(hidden=16, epochs=2, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = VectorMuseCL(cfg, progress=False, view_config=VectorViewConfig(**small)).fit(synthetic_city)
        fresh = VectorMuseCL(cfg, progress=False, view_config=VectorViewConfig(
            **small, mobility_similarity="od")).fit(synthetic_city)
        trained.clear()
        reused = VectorMuseCL(cfg, progress=False, reuse=first, view_config=VectorViewConfig(
            **small, mobility_similarity="od")).fit(synthetic_city)
    assert trained == [2 * len(synthetic_city)]  # the mobility view alone (another similarity); POI from `first`
    pd.testing.assert_frame_equal(fresh.stage_table("poi"), reused.stage_table("poi"))
    pd.testing.assert_frame_equal(fresh.transform(synthetic_city), reused.transform(synthetic_city))
    other_cfg = VectorMuseCL(RunConfig(seed=1), progress=False, reuse=first)
    other_cfg.fitted_on = first.fitted_on
    assert other_cfg._shared_stages(synthetic_city) is None


def test_procrustes_align_undoes_a_rotation():
    from musecl.methods.vector import procrustes_align

    rng = np.random.default_rng(0)
    target = pd.DataFrame(rng.normal(size=(30, 4)))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    source = pd.DataFrame(target.to_numpy() @ q * 2.5 + 7.0, columns=list("abcd"))
    out = procrustes_align(source, target)
    assert list(out.columns) == list("abcd")
    assert out.to_numpy() == pytest.approx(target.to_numpy(), abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        procrustes_align(source.iloc[:, :3], target)


@pytest.mark.parametrize("alignment", ["procrustes", "joint"])
def test_vector_museCL_alignment_options(synthetic_city, alignment):
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig

    cfg = RunConfig(seed=0, n_triplets=300, embedding_dim=8, fusion_epochs=2, fusion_batch_size=8,
                    text_epochs=1, temperature=0.1)
    vcfg = VectorViewConfig(hidden=16, epochs=3, batch_size=32, mobility_similarity="od", alignment=alignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
        b = VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
    pd.testing.assert_frame_equal(a.transform(synthetic_city), b.transform(synthetic_city))
    assert np.isfinite(a.transform(synthetic_city).to_numpy()).all()
    if alignment == "joint":
        hist = a.histories_["joint"]
        assert {"epoch", "train_loss", "train_mobility_loss", "train_poi_loss", "train_align_loss"} <= set(hist.columns)
        assert hist["train_align_loss"].iloc[-1] < hist["train_align_loss"].iloc[0]
    else:
        assert "poi_unaligned" in a.views_ and a.stage_table("poi").shape == a.stage_table("mobility").shape
    with pytest.raises(ValueError, match="alignment"):
        VectorViewConfig(alignment="cca")


@pytest.mark.parametrize("alignment", ["none", "joint"])
def test_vector_museCL_never_makes_the_mobility_view_dense_whole(synthetic_city, monkeypatch, alignment):
    """The mobility view (N x 2N) is only ever dense a block or a batch of rows at a time: with the
    blocks lowered, every sparse-to-dense conversion of a whole fit (OD similarity, encoders,
    fusion) stays far below the view's N x 2N numbers."""
    from scipy import sparse

    import musecl.methods.vector as vector
    import musecl.sampling as sampling

    n = len(synthetic_city)
    monkeypatch.setattr(vector, "DENSE_BLOCK", 96)  # 2 rows or 4 columns of the view
    monkeypatch.setattr(sampling, "_BLOCK", 96)
    sizes, toarray = [], sparse.csr_matrix.toarray

    def recording_toarray(self, *args, **kwargs):
        out = toarray(self, *args, **kwargs)
        sizes.append(out.size)
        return out

    monkeypatch.setattr(sparse.csr_matrix, "toarray", recording_toarray)
    cfg = RunConfig(seed=0, n_triplets=100, embedding_dim=8, fusion_epochs=1, fusion_batch_size=8, text_epochs=1)
    vcfg = vector.VectorViewConfig(hidden=8, epochs=1, batch_size=4, mobility_similarity="od", alignment=alignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = vector.VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
    assert np.isfinite(fitted.transform(synthetic_city).to_numpy()).all()
    assert len(sizes) > 50 and max(sizes) <= 4 * 2 * n < n * 2 * n / 5  # a batch of 4 rows at most


def test_vector_museCL_can_fuse_the_mobility_view_alone(synthetic_city):
    """fused_views="mobility": the same encoders and text, eq. 10 with the mobility view alone
    (beta = 1), still aligned to the POI text; chapter 10 reads what each part costs from it."""
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig

    small = dict(hidden=16, epochs=2, batch_size=32)
    cfg = RunConfig(seed=0, n_triplets=200, embedding_dim=8, fusion_epochs=3, fusion_batch_size=8, text_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = VectorMuseCL(cfg, progress=False, view_config=VectorViewConfig(**small)).fit(synthetic_city)
        alone = VectorMuseCL(cfg, progress=False, reuse=both,
                             view_config=VectorViewConfig(**small, fused_views="mobility")).fit(synthetic_city)
    np.testing.assert_array_equal(alone.stage_table("attention")["mobility"], 1.0)
    assert 0 < both.stage_table("attention")["mobility"].mean() < 1
    for stage in ("mobility", "poi", "text"):
        pd.testing.assert_frame_equal(alone.stage_table(stage), both.stage_table(stage))
    fused = alone.transform(synthetic_city)
    assert np.isfinite(fused.to_numpy()).all() and fused.shape == both.transform(synthetic_city).shape
    assert not np.allclose(fused.to_numpy(), both.transform(synthetic_city).to_numpy())
    with pytest.raises(ValueError, match="fused_views"):
        VectorViewConfig(fused_views="poi")


def test_vector_museCL_reuses_encoders_across_fusion_settings(synthetic_city, monkeypatch):
    import musecl.methods.vector as vector
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig

    trained = []
    real_training = vector.train_view_encoder

    def counting(view, *args, **kwargs):
        trained.append(view.shape[1])
        return real_training(view, *args, **kwargs)

    monkeypatch.setattr(vector, "train_view_encoder", counting)

    small = dict(hidden=16, epochs=2, batch_size=32, mobility_similarity="od")
    cfg = RunConfig(seed=0, n_triplets=200, embedding_dim=8, fusion_epochs=2, fusion_batch_size=8,
                    text_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = VectorMuseCL(cfg, progress=False, view_config=VectorViewConfig(**small)).fit(synthetic_city)
        for temperature, alignment, design in ((0.1, "none", "aligned"), (1.0, "procrustes", "paper")):
            kw = dict(progress=False, view_config=VectorViewConfig(**small, alignment=alignment))
            run_cfg = cfg.replace(temperature=temperature, fusion_design=design)
            fresh = VectorMuseCL(run_cfg, **kw).fit(synthetic_city)
            trained.clear()
            reused = VectorMuseCL(run_cfg, reuse=first, **kw).fit(synthetic_city)
            assert trained == []  # both view encoders came from `first`
            pd.testing.assert_frame_equal(reused.stage_table("mobility"), first.stage_table("mobility"))
            for stage in ("mobility", "poi", "text"):
                pd.testing.assert_frame_equal(fresh.stage_table(stage), reused.stage_table(stage))
            pd.testing.assert_frame_equal(fresh.transform(synthetic_city), reused.transform(synthetic_city))


def test_vector_museCL_is_cached_and_the_cache_gives_the_same_numbers(synthetic_city, tmp_path, monkeypatch):
    import musecl.methods.vector as vector
    from musecl.methods.vector import VectorMuseCL, VectorViewConfig

    cfg = RunConfig(seed=0, n_triplets=200, embedding_dim=8, fusion_epochs=2, fusion_batch_size=8, text_epochs=1)
    vcfg = VectorViewConfig(hidden=16, epochs=2, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without_cache = VectorMuseCL(cfg, progress=False, view_config=vcfg).fit(synthetic_city)
        first = VectorMuseCL(cfg, cache_dir=tmp_path, progress=False, view_config=vcfg).fit(synthetic_city)

        def no_training(*args, **kwargs):
            raise AssertionError("a cached fit trained an encoder")

        monkeypatch.setattr(vector, "train_view_encoder", no_training)
        cached = VectorMuseCL(cfg, cache_dir=tmp_path, progress=False, view_config=vcfg).fit(synthetic_city)
    for fitted in (first, cached):
        pd.testing.assert_frame_equal(fitted.transform(synthetic_city), without_cache.transform(synthetic_city))
        for stage in ("mobility", "poi", "text", "attention"):
            pd.testing.assert_frame_equal(fitted.stage_table(stage), without_cache.stage_table(stage))
    for name, triplets in without_cache.triplets_.items():
        again = cached.triplets_[name]
        assert np.array_equal(again.anchor, triplets.anchor) and np.array_equal(again.negative, triplets.negative)
        assert again.d_pos == pytest.approx(triplets.d_pos) and again.info == triplets.info
    losses = [c for c in without_cache.histories_["mobility"].columns if "loss" in c]
    pd.testing.assert_frame_equal(cached.histories_["mobility"][losses], without_cache.histories_["mobility"][losses])
    assert len(list((tmp_path / VectorMuseCL.STAGE).iterdir())) == 1
