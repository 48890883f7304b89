"""The city folder format: a valid hand-made city loads; each bad input is named precisely."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from musecl.city import (
    CityFormatError, CityMeta, Indicator, inflow_outflow, load_city, validate_city, write_city,
)


def hexagon_wkt(lon: float, lat: float, r: float = 0.004) -> str:
    angles = np.deg2rad(np.arange(0, 360, 60))
    pts = [(lon + r * np.cos(a), lat + r * np.sin(a)) for a in angles]
    pts.append(pts[0])
    return "POLYGON ((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in pts) + "))"


EXTRA = ["e", "f", "g"]  # with a-d, MIN_REGIONS regions: the tests' city is a valid one


def make_tiny_city(root, extra: tuple[str, ...] | list[str] = ()) -> None:
    """Four regions a-d, every modality, written the way a person would with a spreadsheet;
    ``extra`` regions (in a row to the east) have a satellite image and indicators only."""
    ids = ["a", "b", "c", "d", *extra]
    lons = [0.0, 0.007, 0.0035, 0.0105, *(0.014 + 0.007 * k for k in range(len(extra)))]
    lats = [0.0, 0.0, 0.006, 0.006, *(0.0 for _ in extra)]
    regions = pd.DataFrame({"lon": lons, "lat": lats,
                            "geometry": [hexagon_wkt(x, y) for x, y in zip(lons, lats)]}, index=ids)
    rng = np.random.default_rng(0)
    rows = []
    for rid in ids:
        for kind, n in (("satellite", 1), ("streetview", 0 if rid in extra else 2)):
            for k in range(n):
                rel = f"img/{kind}/{rid}_{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / rel)
                rows.append((rid, kind, rel))
    images = pd.DataFrame(rows, columns=["region_id", "kind", "path"])
    pois = pd.DataFrame({"region_id": ["a", "a", "b", "c", "d"],
                         "category": ["cafe", "bank", "cafe", "park", "bar"],
                         "text": ["nice coffee", "", "cheap", "quiet green", "noisy late"]})
    od = pd.DataFrame({"origin": ["a", "a", "b", "c", *extra],
                       "destination": ["b", "c", "a", "d", *extra[1:], *extra[:1]],  # the extra regions: a ring
                       "flow": [10, 5, 3, 2, *(1 for _ in extra)]})
    indicators = pd.DataFrame({"PD": [100.0, 50.0, 10.0, 0.0, *(5.0 for _ in extra)],
                               "HD": [np.nan, 20.0, 4.0, 1.0, *(2.0 for _ in extra)]}, index=ids)
    meta = CityMeta(
        name="tiny", crs="EPSG:4326", modalities=("satellite", "streetview", "poi", "mobility"),
        indicators={"PD": Indicator("PD", "Population density", "persons/km2"),
                    "HD": Indicator("HD", "Housing density", "dwellings/km2", allow_missing=True)},
        hexagon_size_m=450, provenance="hand-made test fixture")
    write_city(root, meta, regions, indicators, images=images, pois=pois, od=od)


@pytest.fixture()
def city_dir(tmp_path):
    root = tmp_path / "tiny"
    make_tiny_city(root, extra=EXTRA)
    return root


def edit_csv(path, fn):
    df = pd.read_csv(path, dtype={"region_id": str})
    fn(df).to_csv(path, index=False)


def edit_yaml(path, fn):
    raw = yaml.safe_load(path.read_text())
    fn(raw)
    path.write_text(yaml.safe_dump(raw))


def only_problem(root):
    problems = validate_city(root)
    assert problems, "expected the validator to reject this folder"
    return "\n".join(str(p) for p in problems)


def test_valid_city_loads_with_od_derived_mobility(city_dir):
    assert validate_city(city_dir) == []
    city = load_city(city_dir)
    assert list(city.region_ids) == ["a", "b", "c", "d", *EXTRA]
    assert city.mobility.loc["a"].tolist() == [3.0, 15.0]  # inflow from b; outflow to b and c
    assert city.mobility.loc["d"].tolist() == [2.0, 0.0]
    assert city.poi_counts().loc["a"].sum() == 2 and city.poi_counts().loc["d", "bar"] == 1
    assert len(city.streetview_paths()["b"]) == 2 and city.satellite_paths()["c"].exists()
    assert np.isclose(city.targets().loc["a", "PD"], np.log(101.0))
    assert np.isnan(city.targets().loc["a", "HD"])


def test_inflow_outflow_sums_rows_and_columns():
    od = pd.DataFrame({"origin": ["x", "x", "y"], "destination": ["y", "z", "x"], "flow": [1.0, 2.0, 4.0]})
    m = inflow_outflow(od)
    assert m.loc["x"].tolist() == [4.0, 3.0] and m.loc["z"].tolist() == [2.0, 0.0]


def test_duplicate_region_id(city_dir):
    edit_csv(city_dir / "regions.csv", lambda df: pd.concat([df, df.iloc[[1]]]))
    msg = only_problem(city_dir)
    assert "regions.csv (row 9): duplicate region_id 'b'" in msg


def test_unknown_region_in_pois_and_od(city_dir):
    edit_csv(city_dir / "pois.csv", lambda df: df.assign(region_id=df.region_id.replace("c", "zz")))
    edit_csv(city_dir / "od.csv", lambda df: df.assign(destination=df.destination.replace("d", "qq")))
    msg = only_problem(city_dir)
    assert "pois.csv (row 5): region_id 'zz' is not a region in regions.csv" in msg
    assert "od.csv (row 5): destination 'qq' is not a region in regions.csv" in msg


def test_unknown_region_in_mobility_table(city_dir):
    (city_dir / "od.csv").unlink()
    pd.DataFrame({"region_id": ["a", "b", "nowhere"], "inflow": [1, 2, 3], "outflow": [1, 2, 3]}).to_csv(
        city_dir / "mobility.csv", index=False)
    assert "mobility.csv (row 4): region_id 'nowhere' is not a region" in only_problem(city_dir)


def test_missing_image_and_not_an_image(city_dir):
    (city_dir / "img/satellite/b_0.png").unlink()
    (city_dir / "img/streetview/c_1.png").write_text("this is not a png")
    msg = only_problem(city_dir)
    assert "region 'b'): 'img/satellite/b_0.png': image file is missing" in msg
    assert "region 'c'): 'img/streetview/c_1.png': is not a readable image" in msg


def test_nan_and_negative_indicator(city_dir):
    def spoil(df):
        df.loc[1, "PD"] = np.nan
        df.loc[2, "PD"] = -3.0
        return df

    edit_csv(city_dir / "indicators.csv", spoil)
    msg = only_problem(city_dir)
    assert "indicators.csv (row 3, region 'b', column PD): value is missing (NaN)" in msg
    assert "indicators.csv (row 4, region 'c', column PD): value -3.0 is negative" in msg


def test_missing_values_allowed_where_metadata_says_so(city_dir):
    # HD of region a is NaN in the fixture and HD has allow_missing: true
    assert validate_city(city_dir) == []


def test_empty_modality(city_dir):
    edit_csv(city_dir / "pois.csv", lambda df: df.iloc[:0])
    edit_csv(city_dir / "images.csv", lambda df: df[df.kind == "satellite"])
    msg = only_problem(city_dir)
    assert "modality 'poi' is listed in city.yaml but there are no POIs" in msg
    assert "modality 'streetview' is listed in city.yaml but has no images" in msg


def test_unreadable_crs(city_dir):
    edit_yaml(city_dir / "city.yaml", lambda raw: raw.update(crs="EPSG:999999"))
    assert "city.yaml (crs): cannot read CRS 'EPSG:999999'" in only_problem(city_dir)


def test_bad_geometry_and_coordinates(city_dir):
    def spoil(df):
        df.loc[0, "geometry"] = "POINT (0 0)"
        df.loc[3, "lat"] = 123.0
        return df

    edit_csv(city_dir / "regions.csv", spoil)
    msg = only_problem(city_dir)
    assert "row 2, region 'a'): geometry is not a polygon in WKT" in msg
    assert "regions.csv (row 5): lat 123.0 is not a number in [-90, 90]" in msg


def test_indicator_without_metadata(city_dir):
    edit_csv(city_dir / "indicators.csv", lambda df: df.assign(CR=1.0))
    assert "indicators.csv (column CR): has no metadata" in only_problem(city_dir)


def test_missing_files(city_dir):
    (city_dir / "city.yaml").unlink()
    assert "city.yaml: file is missing" in only_problem(city_dir)
    shutil.rmtree(city_dir)
    assert "is not a folder" in only_problem(city_dir)


def test_load_raises_same_message(city_dir):
    edit_csv(city_dir / "regions.csv", lambda df: pd.concat([df, df.iloc[[0]]]))
    with pytest.raises(CityFormatError, match="duplicate region_id 'a'"):
        load_city(city_dir)


def test_load_warns_with_counts_when_filling(city_dir):
    edit_csv(city_dir / "indicators.csv", lambda df: df[df.region_id != "d"])
    edit_csv(city_dir / "images.csv", lambda df: df[~((df.kind == "satellite") & (df.region_id == "a"))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        city = load_city(city_dir)
    text = " | ".join(str(w.message) for w in caught)
    assert "1 of 7 regions has no satellite image" in text
    assert "1 of 7 regions has no row in indicators.csv" in text
    assert city.indicators.loc["d"].isna().all()


def test_too_many_missing_satellite_images(city_dir):
    edit_csv(city_dir / "images.csv",
             lambda df: df[~((df.kind == "satellite") & df.region_id.isin(["a", "b", "c", "d"]))])
    assert "4 of 7 regions have no satellite image; max_missing_satellite" in only_problem(city_dir)


def test_cli_validate_exit_codes(city_dir):
    ok = subprocess.run([sys.executable, "-m", "musecl.cli", "validate", str(city_dir)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout and "region co-occurrence" not in ok.stdout
    edit_csv(city_dir / "pois.csv", lambda df: df.drop(columns="text"))
    no_text = subprocess.run([sys.executable, "-m", "musecl.cli", "validate", str(city_dir)],
                             capture_output=True, text=True)
    assert no_text.returncode == 0, no_text.stderr
    assert "note: no POI has text" in no_text.stdout and "region co-occurrence" in no_text.stdout
    edit_csv(city_dir / "regions.csv", lambda df: pd.concat([df, df.iloc[[2]]]))
    bad = subprocess.run([sys.executable, "-m", "musecl.cli", "validate", str(city_dir)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "duplicate region_id 'c'" in bad.stderr


# -- derived indicators and ceilings ------------------------------------------------------------

def ceilings_for(ids, sources=("all", "poi")) -> pd.DataFrame:
    """A long ceilings table as write_city takes it: indexed by region_id, one row per source."""
    frames = [pd.DataFrame({"source": s, "PD": np.arange(len(ids)) + k, "HD": -0.5 * k}, index=pd.Index(ids))
              for k, s in enumerate(sources)]
    return pd.concat(frames)


def test_derived_from_input_is_validated(city_dir):
    edit_yaml(city_dir / "city.yaml", lambda raw: raw["indicators"]["PD"].update(derived_from_input="trips"))
    assert "city.yaml (indicators.PD.derived_from_input): 'trips' is not a modality" in only_problem(city_dir)
    edit_yaml(city_dir / "city.yaml", lambda raw: raw["indicators"]["PD"].update(derived_from_input="poi"))
    assert validate_city(city_dir) == []
    meta = load_city(city_dir).meta
    assert meta.indicators["PD"].derived_from_input == "poi"
    assert meta.derived_indicators() == {"PD": "poi"} and meta.headline_indicators() == ["HD"]
    assert meta.spelled_out(["HD", "PD"]) == (f"HD: {meta.indicators['HD'].long_name}; "
                                              f"PD: {meta.indicators['PD'].long_name}")
    # every indicator derived: the headline averages them all (an empty one crashed the spatial split)
    edit_yaml(city_dir / "city.yaml", lambda raw: raw["indicators"]["HD"].update(derived_from_input="mobility"))
    assert sorted(load_city(city_dir).meta.headline_indicators()) == ["HD", "PD"]


def test_derived_from_input_is_left_out_of_city_yaml_when_unset(city_dir):
    """Hand-made cities keep a city.yaml without the new key."""
    raw = yaml.safe_load((city_dir / "city.yaml").read_text())
    assert all("derived_from_input" not in spec for spec in raw["indicators"].values())
    meta = load_city(city_dir).meta
    assert meta.headline_indicators() == ["PD", "HD"] and meta.derived_indicators() == {}


def test_ceilings_round_trip_and_predictions(city_dir):
    city = load_city(city_dir)
    assert city.ceilings is None
    with pytest.raises(ValueError, match="records no ceilings"):
        city.ceiling_predictions()
    meta = dataclasses.replace(city.meta, modality_latents={"poi": ["landuse"]},
                               modality_oracle_r2={"poi": {"PD": 0.4, "HD": 0.3}}, oracle_r2={"PD": 0.9, "HD": 0.8})
    ids = ["g", "f", "e", "d", "c", "b", "a"]  # not the regions' order: predictions follow the regions
    images = city.images.assign(path=[p.relative_to(city.root).as_posix() for p in city.images.path])  # as written
    write_city(city_dir, meta, city.regions, city.indicators, images=images, pois=city.pois, od=city.od,
               ceilings=ceilings_for(ids))
    assert validate_city(city_dir) == []
    again = load_city(city_dir)
    assert again.meta.modality_latents == {"poi": ["landuse"]}
    assert again.meta.modality_oracle_r2 == {"poi": {"PD": 0.4, "HD": 0.3}}
    assert list(again.ceilings.columns) == ["region_id", "source", "PD", "HD"] and len(again.ceilings) == 14
    every = again.ceiling_predictions()
    assert list(every.index) == ["a", "b", "c", "d", *EXTRA] and list(every.columns) == ["PD", "HD"]
    assert every["PD"].tolist() == [6, 5, 4, 3, 2, 1, 0] and (every["HD"] == 0).all()
    assert (again.ceiling_predictions("poi")["PD"] == every["PD"] + 1).all()
    with pytest.raises(ValueError, match=r"no ceiling 'satellite'.*\['all', 'poi'\]"):
        again.ceiling_predictions("satellite")


def test_ceilings_problems(city_dir):
    city = load_city(city_dir)
    table = ceilings_for(["a", "b", "c", "d"]).reset_index(names="region_id")
    table.loc[1, "source"] = "everything"
    table.loc[2, "region_id"] = "zz"
    table = pd.concat([table, table.iloc[[4]]], ignore_index=True)  # ("a", "poi") twice
    table["XX"] = 1.0
    table.to_csv(city_dir / "ceilings.csv", index=False)
    msg = only_problem(city_dir)
    assert "ceilings.csv (row 3): source 'everything' is not one of ['all', 'satellite'" in msg
    assert "ceilings.csv (row 4): region_id 'zz' is not a region in regions.csv" in msg
    assert "ceilings.csv (row 10): duplicate ('a', 'poi')" in msg
    assert "ceilings.csv (column XX): is not an indicator of city.yaml" in msg
    assert city.ceilings is None  # the city loaded before is untouched


def test_unknown_modality_in_modality_oracle_r2(city_dir):
    edit_yaml(city_dir / "city.yaml", lambda raw: raw.update(modality_oracle_r2={"radar": {"PD": 0.1}}))
    assert "city.yaml (modality_oracle_r2): unknown modality 'radar'" in only_problem(city_dir)


@pytest.mark.parametrize("change, message", [
    ({"oracle_r2": [1]}, "city.yaml (oracle_r2): must be a mapping (key: value), got list"),
    ({"modality_oracle_r2": {"poi": 0.5}}, "city.yaml (modality_oracle_r2.poi): must be a mapping, got float"),
    ({"modality_latents": "poi"}, "city.yaml (modality_latents): must be a mapping (key: value), got str"),
    ({"modality_latents": {"poi": "landuse"}}, "city.yaml (modality_latents.poi): must be a list, got str"),
])
def test_malformed_ceiling_keys_are_problems_not_crashes(city_dir, change, message):
    """A hand-edited city.yaml with the wrong shape is reported, never a traceback."""
    edit_yaml(city_dir / "city.yaml", lambda raw: raw.update(change))
    assert only_problem(city_dir) == message


def test_outlines_in_another_crs_than_city_yaml_names_are_a_problem(tmp_path):
    """Outlines in metres under crs EPSG:4326 (or in degrees under a projected crs) would load and
    draw empty maps: the centres must lie in or near their outlines once read in the named crs."""
    import pyproj
    import shapely
    import yaml

    root = tmp_path / "city"
    make_tiny_city(root)
    assert validate_city(root) == [] or all("MIN_REGIONS" in p.message for p in validate_city(root))
    regions = pd.read_csv(root / "regions.csv", dtype={"region_id": str})
    to_m = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    in_metres = shapely.to_wkt(shapely.transform(shapely.from_wkt(regions["geometry"].to_numpy()), lambda xy:
                               np.column_stack(to_m.transform(xy[:, 0], xy[:, 1]))), rounding_precision=3)
    regions.assign(geometry=in_metres).to_csv(root / "regions.csv", index=False)
    problems = [p for p in validate_city(root) if "MIN_REGIONS" not in p.message]
    # near (0, 0) a metre or two is also a degree or two: region a's outline still holds its centre
    assert [p.where for p in problems] == ["row 5, region 'd'"]
    assert "is far from the outline" in problems[0].message and "EPSG:4326" in problems[0].message
    meta = yaml.safe_load((root / "city.yaml").read_text())
    (root / "city.yaml").write_text(yaml.safe_dump({**meta, "crs": "EPSG:3857"}, sort_keys=False))
    assert [p for p in validate_city(root) if "MIN_REGIONS" not in p.message] == []
