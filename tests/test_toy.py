"""The toy city (generator version 3): valid, deterministic, and built so that no modality sees
every latent -- the promises the book's argument rests on, pinned on two seeds."""
from __future__ import annotations

import hashlib
import warnings

import h3
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml
from PIL import Image
from scipy.spatial import cKDTree

from musecl.city import CEILING_SOURCES, inflow_outflow, load_city, validate_city
from musecl.datasets import from_raw, toy
from musecl.datasets.toy import (
    LATENT_NAMES, MODALITY_LATENTS, POI_CATEGORIES, TOY_SMOKE_REGIONS, is_current_toy_city, make_toy_city,
)
from musecl.evaluation import ridge_cv_r2
from musecl.sampling import TripletSampler, poi_triplets, pretext_features

N, SIZE, SEEDS = 150, 16, (0, 1)
MODALITIES = ("satellite", "streetview", "poi", "mobility")
INDICATORS = {"PD", "HD", "MC", "NP", "NC", "CR"}
HEADLINE = ["PD", "HD", "NC", "CR"]


def _make(out, **kwargs):
    return make_toy_city(out, progress=False, **kwargs)


def _load(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        city = load_city(path)
    return city, [str(w.message) for w in caught]


def _hashes(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _r2(y, pred) -> float:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.fixture(scope="module")
def city_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {seed: _make(root / f"city{seed}", n_regions=N, seed=seed, image_size=SIZE) for seed in SEEDS}


@pytest.fixture(scope="module")
def cities(city_dirs):
    return {seed: _load(path)[0] for seed, path in city_dirs.items()}


@pytest.fixture(params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def city(request, cities):
    return cities[request.param]


# -- format and metadata ------------------------------------------------------------------------

def test_constants():
    assert TOY_SMOKE_REGIONS == 150 and toy.TOY_DEFAULT_REGIONS == 600 and toy.GENERATOR_VERSION == 3
    assert len(POI_CATEGORIES) == 37 == len(set(POI_CATEGORIES)) and all(" " not in c for c in POI_CATEGORIES)
    assert LATENT_NAMES == ("footprint", "height", "landuse", "affluence", "activity", "green", "water", "farm")
    assert set(MODALITY_LATENTS) == set(MODALITIES)
    assert all(set(v) <= set(LATENT_NAMES) for v in MODALITY_LATENTS.values())
    # no modality sees every latent
    assert all(set(v) != set(LATENT_NAMES) for v in MODALITY_LATENTS.values())
    assert MODALITY_LATENTS["satellite"] == ["footprint", "landuse", "green", "water", "farm"]
    assert MODALITY_LATENTS["streetview"] == ["height", "affluence", "activity", "green"]
    assert MODALITY_LATENTS["poi"] == ["landuse", "affluence", "activity", "green", "water", "farm"]
    assert toy.INDICATORS["MC"].derived_from_input == "mobility"
    assert toy.INDICATORS["NP"].derived_from_input == "poi"


@pytest.mark.parametrize("seed", SEEDS)
def test_valid_and_only_the_missing_satellite_warning(city_dirs, seed):
    assert validate_city(city_dirs[seed]) == []
    city, messages = _load(city_dirs[seed])
    n_missing = round(0.02 * N)
    assert messages == [f"Toy City: {n_missing} of {N} regions have no satellite image"]
    assert len(city.satellite_paths()) == N - n_missing


def test_metadata(city):
    meta = city.meta
    assert meta.crs == "EPSG:4326" and set(meta.modalities) == set(MODALITIES)
    # measured on the cells (near 0 N 0 E they are smaller than H3's global average edge of 531 m)
    assert meta.hexagon_size_m == pytest.approx(from_raw.hexagon_size_m(city.region_ids), rel=1e-6)
    assert 455 < meta.hexagon_size_m < 470
    seed = meta.extra["generator"]["seed"]
    assert f"seed={seed}" in meta.provenance and "fictional" in meta.provenance
    gen = meta.extra["generator"]
    assert (gen["name"], gen["version"]) == (toy.GENERATOR_NAME, 3)
    assert (gen["n_regions"], gen["image_size"]) == (N, SIZE) and gen["ceiling_estimator"]
    assert tuple(meta.latents) == LATENT_NAMES == tuple(city.latents.columns)
    assert meta.modality_latents == MODALITY_LATENTS
    assert set(meta.indicators) == INDICATORS == set(meta.oracle_r2) == set(city.indicators.columns)
    for ind in meta.indicators.values():
        assert ind.log and ind.long_name and ind.unit
    assert meta.derived_indicators() == {"MC": "mobility", "NP": "poi"}
    assert meta.headline_indicators() == HEADLINE
    assert all(0.55 < r2 < 0.97 for r2 in meta.oracle_r2.values()), meta.oracle_r2
    assert set(meta.modality_oracle_r2) == set(MODALITIES)
    for modality, by_indicator in meta.modality_oracle_r2.items():
        assert set(by_indicator) == INDICATORS, modality
        assert all(-1 < r2 < 1 for r2 in by_indicator.values()), (modality, by_indicator)


def test_regions_are_the_nearest_h3_cells(city):
    ids = list(city.region_ids)
    assert len(ids) == N == len(set(ids))
    assert all(h3.is_valid_cell(c) and h3.get_resolution(c) == 8 for c in ids)
    assert (city.regions.geom_type == "Polygon").all() and city.regions.crs == "EPSG:4326"
    assert shapely.contains_xy(city.regions.geometry.to_numpy(), city.regions.lon, city.regions.lat).all()
    # a disk: every chosen centre is nearer (0, 0) than every neighbour left out
    dist = np.hypot(city.regions.lon, city.regions.lat)
    ring = {n for c in ids for n in h3.grid_disk(c, 1)} - set(ids)
    outside = min(np.hypot(*h3.cell_to_latlng(c)) for c in ring)
    assert dist.max() < outside


def test_images(city):
    sv = city.streetview_paths()
    assert set(sv) == set(city.region_ids)
    assert all(1 <= len(paths) <= 6 for paths in sv.values())
    counts = pd.Series({k: len(v) for k, v in sv.items()}).reindex(city.region_ids)
    assert counts.nunique() >= 3 and np.corrcoef(counts, city.latents.activity)[0, 1] > 0.5  # busy streets
    for path in list(city.satellite_paths()) + [p for paths in sv.values() for p in paths]:
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)
    # noisy, not one template: no two satellite images are equal
    arrays = [np.asarray(Image.open(p)) for p in city.satellite_paths()]
    assert len({a.tobytes() for a in arrays}) == len(arrays)


def test_mobility_matches_od(city):
    """od.csv keeps the KEEP_FLOWS largest forward flows per origin plus return trips, so a row
    without its reverse row is a forward flow: at most KEEP_FLOWS of those per origin."""
    od = city.od
    assert (od.flow >= 1).all() and (od.flow == od.flow.round()).all() and (od.origin != od.destination).all()
    assert not od.duplicated(["origin", "destination"]).any()
    pairs = set(zip(od.origin, od.destination))
    one_way = od[[(d, o) not in pairs for o, d in zip(od.origin, od.destination)]]
    assert one_way.groupby("origin").size().max() <= toy.KEEP_FLOWS
    assert len(od) <= 2 * toy.KEEP_FLOWS * N
    expected = inflow_outflow(od).reindex(city.region_ids, fill_value=0.0)
    mob = pd.read_csv(city.root / "mobility.csv", dtype={"region_id": str}).set_index("region_id")
    pd.testing.assert_frame_equal(mob.astype(float), expected, check_names=False)


def test_pois(city):
    pois = city.pois
    assert set(pois.category) <= set(POI_CATEGORIES)
    words = pois.text.str.split().str.len()
    assert ((pois.text == "") | words.between(5, 15)).all()
    assert 0 < (pois.text == "").mean() < 0.4
    counts = city.poi_counts().sum(axis=1)
    assert counts.max() >= 20
    # drawn around _poi_rate: counts follow the expected rate
    assert np.corrcoef(np.log1p(counts), np.log1p(toy._poi_rate(city.latents)))[0, 1] > 0.8
    # NP is the city's register, a noisy function of the latents, not the rows of pois.csv
    assert not np.array_equal(city.indicators.NP.to_numpy(), counts.to_numpy())


def test_indicators(city):
    ind = city.indicators
    assert np.isfinite(ind.to_numpy()).all() and (ind.to_numpy() >= 0).all()
    flows = np.log1p(city.mobility.inflow + city.mobility.outflow)
    r = np.corrcoef(np.log1p(ind.MC), flows)[0, 1]
    assert 0.4 < r < 0.99  # related to the trips in od.csv, not the same number


# -- the promised properties ----------------------------------------------------------------------

def test_latents_are_nearly_uncorrelated(city):
    """No single "urbanity" factor: every pair of latents has |Pearson r| <= 0.5 across regions."""
    corr = city.latents.corr().to_numpy().copy()
    np.fill_diagonal(corr, 0.0)
    assert np.abs(corr).max() <= 0.5, city.latents.corr().round(2)


def test_fusion_has_room_above_every_single_modality(city):
    """All latents predict the headline indicators >= 0.15 R2 better than any one modality's view."""
    meta = city.meta
    everything = np.mean([meta.oracle_r2[i] for i in HEADLINE])
    best_single = max(np.mean([r2[i] for i in HEADLINE]) for r2 in meta.modality_oracle_r2.values())
    assert everything >= best_single + 0.15, (everything, meta.modality_oracle_r2)


def test_raw_pretext_inputs_stay_below_the_oracle(city):
    """A ridge on ln(1 + trips, POI counts) does not already reach the all-latent ceiling."""
    raw = ridge_cv_r2(pretext_features(city), city, indicators=HEADLINE)
    assert list(raw.index) == HEADLINE and np.isfinite(raw).all()
    everything = np.mean([city.meta.oracle_r2[i] for i in HEADLINE])
    assert raw.mean() <= everything - 0.15, (raw.to_dict(), everything)


def test_ceilings_reproduce_the_recorded_r2(city):
    """ceilings.csv is what oracle_r2 and modality_oracle_r2 were computed from."""
    assert set(city.ceilings["source"]) == set(CEILING_SOURCES)
    assert len(city.ceilings) == len(CEILING_SOURCES) * N
    targets = city.targets()
    every = city.ceiling_predictions("all")
    assert list(every.index) == list(city.region_ids) and set(every.columns) == INDICATORS
    for indicator in INDICATORS:
        assert _r2(targets[indicator], every[indicator]) == pytest.approx(city.meta.oracle_r2[indicator], abs=1e-3)
    for modality in MODALITIES:
        pred = city.ceiling_predictions(modality)
        for indicator in INDICATORS:
            assert _r2(targets[indicator], pred[indicator]) == pytest.approx(
                city.meta.modality_oracle_r2[modality][indicator], abs=1e-3), (modality, indicator)


def test_every_land_region_has_trips_both_ways(city):
    land = (city.latents.water < 0.5) & (city.latents.farm < 0.5)
    assert land.sum() > N / 2
    mob = city.mobility[land]
    assert (mob.inflow > 0).all() and (mob.outflow > 0).all(), mob[(mob.inflow == 0) | (mob.outflow == 0)]


def test_poi_similar_positives_lie_far(city):
    """Against Tobler's law: the POI-nearest partner is typically several hexagons away."""
    triplets = poi_triplets(city, TripletSampler(n_triplets=500, seed=0)).to_frame()
    xy = city.centres()
    d_pos = np.hypot(*(xy.loc[triplets.anchor].to_numpy() - xy.loc[triplets.positive].to_numpy()).T)
    nearest = cKDTree(xy.to_numpy()).query(xy.to_numpy(), k=2)[0][:, 1]
    assert np.median(d_pos) >= 3 * np.median(nearest), (np.median(d_pos), np.median(nearest))


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
    xy = city.centres()
    assert np.hypot(*(xy.loc[east] - xy.loc[west])) > 3000
    for col in ("footprint", "height", "landuse", "affluence", "activity"):
        assert abs(lat.loc[east, col] - lat.loc[west, col]) < 0.25, col
    for col in ("landuse", "activity"):
        assert lat.loc[east, col] > 0.5 and lat.loc[west, col] > 0.5, col


# -- determinism and versions -------------------------------------------------------------------

def test_deterministic(tmp_path):
    small = dict(n_regions=40, image_size=16)
    first = _make(tmp_path / "first", seed=0, **small)
    again = _make(tmp_path / "again", seed=0, **small)
    assert _hashes(again) == _hashes(first)
    other = _make(tmp_path / "other", seed=1, **small)
    a, b = _hashes(first), _hashes(other)
    for name in ("latents.csv", "pois.csv", "od.csv", "indicators.csv", "ceilings.csv"):
        assert a[name] != b[name], name
    assert a["regions.csv"] == b["regions.csv"]  # same hexagons, a different city on them


def test_is_current_toy_city(tmp_path, city_dirs):
    assert is_current_toy_city(city_dirs[0])
    old = _make(tmp_path / "old", n_regions=20, image_size=16)
    assert is_current_toy_city(old)
    raw = yaml.safe_load((old / "city.yaml").read_text())
    raw["generator"]["version"] = 1
    (old / "city.yaml").write_text(yaml.safe_dump(raw))
    assert not is_current_toy_city(old)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    assert not is_current_toy_city(foreign)  # empty
    (foreign / "city.yaml").write_text(yaml.safe_dump({"name": "mine", "generator": {"name": "else", "version": 2}}))
    assert not is_current_toy_city(foreign)  # another generator
    assert not is_current_toy_city(tmp_path / "nowhere")


# -- the design table: what each modality reads ---------------------------------------------------

BASE = dict(footprint=0.6, height=0.5, landuse=0.5, affluence=0.2, activity=0.1, green=0.3, water=0.0, farm=0.0)
LAYOUT = toy._Layout.draw(np.random.default_rng(0), 5000.0, 531.0)


def _sat(**change):
    return np.asarray(toy._satellite(np.random.default_rng(3), 32, dict(BASE, **change), 0.0, 0.0, LAYOUT, 1062.0))


def _street(**change):
    return np.asarray(toy._streetview(np.random.default_rng(3), 32, dict(BASE, **change)))


def test_satellite_is_blind_to_height_affluence_and_activity():
    base = _sat()
    assert np.array_equal(base, _sat(height=0.95, affluence=0.9, activity=0.9))
    for name in ("height", "affluence", "activity"):
        assert np.array_equal(base, _sat(**{name: 0.95})), name
    # not a frozen picture: what it does show changes it
    assert not np.array_equal(base, _sat(footprint=0.2))
    assert not np.array_equal(base, _sat(landuse=0.95))


def test_streetview_is_blind_to_landuse_and_footprint_level():
    base = _street()
    assert np.array_equal(base, _street(landuse=0.95))
    assert np.array_equal(base, _street(landuse=0.0, water=0.3, farm=0.3))
    assert np.array_equal(base, _street(footprint=0.3)) and np.array_equal(base, _street(footprint=0.9))
    # what it does show changes it
    assert not np.array_equal(base, _street(height=0.95))
    assert not np.array_equal(base, _street(affluence=0.9))
    assert not np.array_equal(base, _street(footprint=0.0))  # an empty road, documented: > 0.04


def test_pois_are_blind_to_footprint_and_height():
    rng = np.random.default_rng(0)
    lat = pd.DataFrame(rng.uniform(0, 1, (30, len(LATENT_NAMES))), columns=list(LATENT_NAMES))
    lat["water"] *= 0.2
    other = lat.assign(footprint=rng.uniform(0, 1, 30), height=rng.uniform(0, 1, 30))
    np.testing.assert_array_equal(toy._poi_probs(lat), toy._poi_probs(other))
    np.testing.assert_array_equal(toy._poi_rate(lat), toy._poi_rate(other))
    richer = lat.assign(affluence=1 - lat.affluence)
    assert not np.allclose(toy._poi_probs(lat), toy._poi_probs(richer))


def test_trips_read_affluence(city):
    """Documented: a ride service, used more by richer residents, so trips do read affluence."""
    lat = city.latents
    area = h3.average_hexagon_area(8, unit="km^2")
    produced, attracted = toy._trip_ends(lat, area)
    produced2, _ = toy._trip_ends(lat.assign(affluence=1 - lat.affluence), area)
    assert np.isfinite(produced).all() and np.isfinite(attracted).all()
    assert not np.allclose(produced, produced2, rtol=0.05)


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
        _make(foreign, n_regions=20, image_size=16)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # a toy city is replaced in place, with no stale files left behind
    out = _make(tmp_path / "re", n_regions=30, image_size=16)
    out = _make(out, n_regions=20, image_size=16)
    assert len(list((out / "images" / "streetview").iterdir())) == len(load_city(out).images) - 20
    assert not any(p.name.startswith(".re.tmp") for p in tmp_path.iterdir())
