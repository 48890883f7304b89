"""The toy city: valid, deterministic, and built so that no modality sees every latent."""
from __future__ import annotations

import hashlib
import warnings

import h3
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from musecl.city import inflow_outflow, load_city, validate_city
from musecl.datasets import toy
from musecl.datasets.toy import POI_CATEGORIES, TOY_SMOKE_REGIONS, make_toy_city

N, SIZE = 120, 32


def _load(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        city = load_city(path)
    return city, [str(w.message) for w in caught]


def _hashes(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def city_dir(tmp_path_factory):
    return make_toy_city(tmp_path_factory.mktemp("toy") / "city", n_regions=N, seed=0,
                         image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def city(city_dir):
    return _load(city_dir)[0]


def test_constants():
    assert TOY_SMOKE_REGIONS == 150 and toy.TOY_DEFAULT_REGIONS == 600
    assert 28 <= len(POI_CATEGORIES) <= 35 and all(" " not in c for c in POI_CATEGORIES)


def test_valid_and_only_the_missing_satellite_warning(city_dir):
    assert validate_city(city_dir) == []
    city, messages = _load(city_dir)
    n_missing = round(0.02 * N)
    assert messages == [f"Toy City: {n_missing} of {N} regions have no satellite image"]
    assert len(city.satellite_paths()) == N - n_missing


def test_metadata(city):
    meta = city.meta
    assert meta.crs == "EPSG:4326" and set(meta.modalities) == {"satellite", "streetview", "poi", "mobility"}
    assert meta.hexagon_size_m == pytest.approx(h3.average_hexagon_edge_length(8, unit="m"), rel=1e-4)
    assert "seed=0" in meta.provenance and "fictional" in meta.provenance
    gen = meta.extra["generator"]
    assert (gen["n_regions"], gen["seed"], gen["image_size"]) == (N, 0, SIZE)
    assert {"built", "mix", "affluence", "activity", "water", "green"} <= set(meta.latents)
    assert set(meta.latents) == set(city.latents.columns)
    for name, ind in meta.indicators.items():
        assert ind.log and ind.long_name and ind.unit
        assert 0 < meta.oracle_r2[name] < 1
    assert set(meta.oracle_r2) == {"PD", "HD", "MC", "NP", "NC", "CR"} == set(meta.indicators)
    assert 0.55 < min(meta.oracle_r2.values()) and max(meta.oracle_r2.values()) < 0.97


def test_regions_are_the_nearest_h3_cells(city):
    ids = list(city.region_ids)
    assert len(ids) == N == len(set(ids))
    assert all(h3.is_valid_cell(c) and h3.get_resolution(c) == 8 for c in ids)
    assert city.regions.geometry.iloc[0].startswith("POLYGON ((")
    # a disk: every chosen centre is nearer (0, 0) than every neighbour left out
    dist = np.hypot(city.regions.lon, city.regions.lat)
    ring = {n for c in ids for n in h3.grid_disk(c, 1)} - set(ids)
    outside = min(np.hypot(*h3.cell_to_latlng(c)) for c in ring)
    assert dist.max() < outside


def test_images(city):
    sv = city.streetview_paths()
    assert set(sv) == set(city.region_ids)
    assert all(1 <= len(paths) <= 6 for paths in sv.values())
    assert len({len(paths) for paths in sv.values()}) >= 3  # counts vary with built and activity
    for path in list(city.satellite_paths()) + [p for paths in sv.values() for p in paths]:
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)
    # noisy, not one template: no two satellite images are equal
    arrays = [np.asarray(Image.open(p)) for p in city.satellite_paths()]
    assert len({a.tobytes() for a in arrays}) == len(arrays)


def test_mobility_matches_od(city, city_dir):
    od = city.od
    assert (od.flow >= 1).all() and (od.flow == od.flow.round()).all() and (od.origin != od.destination).all()
    assert od.groupby("origin").size().max() <= 30
    expected = inflow_outflow(od).reindex(city.region_ids, fill_value=0.0)
    mob = pd.read_csv(city_dir / "mobility.csv", dtype={"region_id": str}).set_index("region_id")
    pd.testing.assert_frame_equal(mob.astype(float), expected, check_names=False)


def test_pois(city):
    pois = city.pois
    assert set(pois.category) <= set(POI_CATEGORIES)
    words = pois.text.str.split().str.len()
    assert ((pois.text == "") | words.between(5, 15)).all()
    assert 0 < (pois.text == "").mean() < 0.4
    counts = city.poi_counts().sum(axis=1)
    assert (counts == 0).any() and counts.max() >= 20
    # NP is the city's register, a noisy function of the latents, not the rows of pois.csv
    assert not np.array_equal(city.indicators.NP.to_numpy(), counts.to_numpy())


def test_indicators(city):
    ind = city.indicators
    assert np.isfinite(ind.to_numpy()).all() and (ind.to_numpy() >= 0).all()
    flows = np.log1p(city.mobility.inflow + city.mobility.outflow)
    r = np.corrcoef(np.log1p(ind.MC), flows)[0, 1]
    assert 0.4 < r < 0.99  # related to the trips in od.csv, not the same number


def test_deterministic(city_dir, tmp_path):
    again = make_toy_city(tmp_path / "again", n_regions=N, seed=0, image_size=SIZE, progress=False)
    assert _hashes(again) == _hashes(city_dir)
    other = make_toy_city(tmp_path / "other", n_regions=N, seed=1, image_size=SIZE, progress=False)
    a, b = _hashes(city_dir), _hashes(other)
    for name in ("latents.csv", "pois.csv", "od.csv", "indicators.csv"):
        assert a[name] != b[name]
    assert a["regions.csv"] == b["regions.csv"]  # same hexagons, a different city on them


def test_far_regions_can_be_more_poi_alike_than_neighbours(city):
    """The paper's point against Tobler's law: POI similarity is not distance similarity."""
    counts = city.poi_counts()
    keep = (counts.sum(axis=1) >= 5).to_numpy()
    shares = (counts[keep].to_numpy() / counts[keep].sum(axis=1).to_numpy()[:, None])
    xy = city.xy_m()[keep]
    i, j = np.triu_indices(len(xy), 1)
    dist = np.hypot(*(xy[i] - xy[j]).T)
    l1 = np.abs(shares[i] - shares[j]).sum(1)
    adjacent = dist < 1.2 * h3.average_hexagon_edge_length(8, unit="m") * np.sqrt(3)
    far = dist > 3000
    assert adjacent.sum() > 10 and far.sum() > 10
    assert (l1[far] < np.median(l1[adjacent])).sum() >= 10


def test_twin_centres_are_alike_and_far_apart(city):
    marks = city.meta.extra["generator"]["landmarks"]
    lat = city.latents

    def nearest(name):
        d = np.hypot(city.regions.lon - marks[name]["lon"], city.regions.lat - marks[name]["lat"])
        return d.idxmin()

    east, west = nearest("twin_east"), nearest("twin_west")
    xy = pd.DataFrame(city.xy_m(), index=city.region_ids)
    assert np.hypot(*(xy.loc[east] - xy.loc[west])) > 3000
    for col in ("built", "mix", "activity"):
        assert abs(lat.loc[east, col] - lat.loc[west, col]) < 0.25
        assert lat.loc[east, col] > 0.5


def test_satellite_and_mobility_are_blind_to_affluence_and_activity(city):
    """The design table: satellite never reads affluence or activity; trips never read affluence."""
    layout = toy._Layout.draw(np.random.default_rng(0), 5000.0, 531.0)
    base = dict(built=0.6, mix=0.5, affluence=0.2, activity=0.1, water=0.0, green=0.3, farm=0.0)
    changed = dict(base, affluence=0.9, activity=0.9)
    draw = [np.asarray(toy._satellite(np.random.default_rng(3), SIZE, lat, 0.0, 0.0, layout, 1062.0))
            for lat in (base, changed)]
    assert np.array_equal(*draw)
    street = [np.asarray(toy._streetview(np.random.default_rng(3), SIZE, lat)) for lat in (base, changed)]
    assert not np.array_equal(*street)
    lat = city.latents.copy()
    homes, jobs = toy._homes_jobs(lat, 0.7)
    lat["affluence"] = 1 - lat["affluence"]
    homes2, jobs2 = toy._homes_jobs(lat, 0.7)
    assert np.array_equal(homes, homes2) and np.array_equal(jobs, jobs2)


def test_bad_arguments_and_foreign_folders(tmp_path):
    with pytest.raises(ValueError, match="n_regions"):
        make_toy_city(tmp_path / "x", n_regions=3)
    with pytest.raises(ValueError, match="image_size"):
        make_toy_city(tmp_path / "x", n_regions=20, image_size=8)
    with pytest.raises(ValueError, match="seed"):
        make_toy_city(tmp_path / "x", n_regions=20, seed=-1)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a toy city"):
        make_toy_city(foreign, n_regions=20, image_size=16, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # a toy city is replaced in place, with no stale files left behind
    out = make_toy_city(tmp_path / "re", n_regions=30, image_size=16, progress=False)
    out = make_toy_city(out, n_regions=20, image_size=16, progress=False)
    assert len(list((out / "images" / "streetview").iterdir())) == len(load_city(out).images) - 20
    assert not any(p.name.startswith(".re.tmp") for p in tmp_path.iterdir())
