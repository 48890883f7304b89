"""The raw-file converters of musecl.datasets.from_raw, on tiny hand-made fixtures."""
from __future__ import annotations

import json
import warnings

import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

from musecl.city import CityFormatError, Indicator, load_city, validate_city
from musecl.datasets.from_raw import (
    RawDataError, assign_points, build_city, count_points, hexagon_regions, images_from_folder,
    indicators_by_area, od_from_csv, pois_from_csv, polygon_regions,
)

RES = 8
CENTRE = h3.latlng_to_cell(0.0, 0.0, RES)
RING = sorted(h3.grid_disk(CENTRE, 1))  # 7 cells


def cell_centre(cell: str) -> tuple[float, float]:
    lat, lon = h3.cell_to_latlng(cell)
    return lon, lat


@pytest.fixture
def hexes():
    lon, lat = zip(*(cell_centre(c) for c in RING))
    return hexagon_regions(lon, lat, resolution=RES)


@pytest.fixture
def squares():
    """Two unit-ish squares side by side: west [0, 0.01] and east [0.01, 0.02] in lon, lat [0, 0.01]."""
    return polygon_regions(pd.DataFrame({"name": ["west", "east"],
                                         "geometry": ["POLYGON ((0 0, 0.01 0, 0.01 0.01, 0 0.01, 0 0))",
                                                      "POLYGON ((0.01 0, 0.02 0, 0.02 0.01, 0.01 0.01, 0.01 0))"]}),
                           id="name")


# ------------------------------------------------------------------------------------------
# regions


def test_hexagon_regions_from_points_bbox_and_area(hexes):
    assert list(hexes.ids) == RING
    assert hexes.h3_resolution == RES
    assert hexes.hexagon_size_m == pytest.approx(h3.average_hexagon_edge_length(RES, unit="m"), abs=1e-3)
    lon, lat = cell_centre(CENTRE)
    assert hexes.table.loc[CENTRE, "lon"] == pytest.approx(lon, abs=1e-6)
    assert shapely.from_wkt(hexes.table.loc[CENTRE, "geometry"]).contains(shapely.Point(lon, lat))
    # the union of the 7 cells as an area gives back exactly those cells (centre containment)
    union = shapely.union_all(hexes.geometries())
    assert list(hexagon_regions(area=union.wkt, resolution=RES).ids) == RING
    assert list(hexagon_regions(area=shapely.geometry.mapping(union), resolution=RES).ids) == RING
    box = hexagon_regions(bbox=(-0.01, -0.01, 0.01, 0.01), resolution=RES)
    assert CENTRE in box.ids and len(box) > 1
    assert len(hexagon_regions(lon=[lon], lat=[lat], resolution=RES, rings=1)) == 7


def test_hexagon_regions_bad_input():
    with pytest.raises(RawDataError, match="exactly one of"):
        hexagon_regions(resolution=RES)
    with pytest.raises(RawDataError, match="resolution"):
        hexagon_regions([0.0], [0.0], resolution=16)
    with pytest.raises(RawDataError, match=r"min < max"):
        hexagon_regions(bbox=(1, 0, 0, 1))
    with pytest.raises(RawDataError, match=r"column 'lat' is not a number in \[-90, 90\] in 1 row\(s\), row 3"):
        hexagon_regions([0.0, 0.0], [0.0, 95.0])


def test_polygon_regions_from_geojson_and_crs(tmp_path, squares):
    assert list(squares.ids) == ["west", "east"] and squares.h3_resolution is None
    # the centre is a point inside the polygon
    assert 0 < squares.table.loc["west", "lon"] < 0.01
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"tract": 7},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1000, 0], [1000, 1000], [0, 1000], [0, 0]]]}}]}
    path = tmp_path / "tracts.geojson"
    path.write_text(json.dumps(fc))
    tracts = polygon_regions(path, id="tract", crs="EPSG:3857")  # web-mercator metres near (0, 0)
    assert list(tracts.ids) == ["7"]
    minx, miny, maxx, maxy = tracts.geometries()[0].bounds
    assert maxx == pytest.approx(1000 / 6378137 * 180 / np.pi, rel=1e-5) and minx == pytest.approx(0, abs=1e-7)
    with pytest.raises(RawDataError, match="has no property 'name'"):
        polygon_regions(fc, id="name")
    with pytest.raises(RawDataError, match="duplicate id"):
        polygon_regions(pd.DataFrame({"id": ["a", "a"], "geometry": [squares.table["geometry"].iloc[0]] * 2}))
    with pytest.raises(RawDataError, match="not polygons"):
        polygon_regions(pd.DataFrame({"id": ["p"], "geometry": ["POINT (0 0)"]}))


def test_assign_points_hexagons_and_polygons(hexes, squares):
    lon, lat = cell_centre(RING[3])
    got = assign_points([lon, 5.0], [lat, 5.0], hexes)
    assert got.iloc[0] == RING[3] and pd.isna(got.iloc[1])
    got = assign_points([0.005, 0.015, 0.01, 0.5], [0.005, 0.005, 0.005, 0.5], squares)
    # the shared border goes to the first region in order (west)
    assert got.tolist()[:3] == ["west", "east", "west"] and pd.isna(got.iloc[3])


def test_count_points_per_region(squares):
    got = count_points([0.005, 0.006, 0.01, 0.5], [0.005, 0.005, 0.005, 0.5], squares)
    # the border point counts for west only; the far point counts nowhere; every region is listed
    assert got.to_dict() == {"west": 3, "east": 0} and got.dtype == np.int64
    assert count_points([], [], squares).tolist() == [0, 0]


# ------------------------------------------------------------------------------------------
# sources


def test_pois_from_csv_renames_reports_outside_and_joins_text(tmp_path, squares):
    raw = pd.DataFrame({"x": [0.005, 0.015, 0.9], "y": [0.005, 0.005, 0.9],
                        "kind": ["fast food", "bar", "cafe"], "name": ["Bob's", None, "far"],
                        "review": ["cheap", "loud", ""]})
    path = tmp_path / "pois.csv"
    raw.to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"POIs: 1 of 3 POI\(s\) outside every region \(row 4\) are left out"):
        pois = pois_from_csv(path, squares, lon="x", lat="y", category="kind", text=["name", "review"])
    assert pois.to_dict("list") == {"region_id": ["west", "east"], "category": ["fast_food", "bar"],
                                    "text": ["Bob's cheap", "loud"]}
    with pytest.raises(RawDataError, match=r"1 of 3 POI\(s\) outside every region \(row 4\) cannot be placed"):
        pois_from_csv(raw, squares, lon="x", lat="y", category="kind", outside="raise")
    with pytest.raises(RawDataError, match=r"POIs: missing column\(s\) \['lon', 'lat'\]"):
        pois_from_csv(raw, squares, category="kind")
    with pytest.raises(RawDataError, match=r"'kind' is empty in 1 row\(s\), row 2"):
        pois_from_csv(raw.assign(kind=[None, "bar", "cafe"]), squares, lon="x", lat="y", category="kind")


def test_od_from_csv_by_coordinates_and_by_region(hexes):
    a, b = cell_centre(RING[0]), cell_centre(RING[1])
    trips = pd.DataFrame({"o_lon": [a[0], a[0], b[0], 9.0], "o_lat": [a[1], a[1], b[1], 9.0],
                          "d_lon": [b[0], b[0], b[0], a[0]], "d_lat": [b[1], b[1], b[1], a[1]]})
    with pytest.warns(UserWarning, match=r"trips: 1 of 4 trip row\(s\) with an end outside every region \(row 5\)"):
        od = od_from_csv(trips, hexes, origin=("o_lon", "o_lat"), destination=("d_lon", "d_lat"))
    assert od.to_dict("list") == {"origin": [RING[0], RING[1]], "destination": [RING[1], RING[1]], "flow": [2, 1]}
    by_id = pd.DataFrame({"from": [RING[0], RING[0], "nowhere"], "to": [RING[2]] * 3, "n": [1.5, 2.0, 4.0]})
    with pytest.warns(UserWarning, match=r"1 of 3"):
        od = od_from_csv(by_id, hexes, origin="from", destination="to", flow="n")
    assert od.to_dict("list") == {"origin": [RING[0]], "destination": [RING[2]], "flow": [3.5]}
    with pytest.raises(RawDataError, match=r"'n' is not a non-negative number in 1 row\(s\), row 2"):
        od_from_csv(by_id.assign(n=[-1, 1, 1]), hexes, origin="from", destination="to", flow="n")
    with pytest.raises(RawDataError, match=r"missing column\(s\) \['origin_lon', 'origin_lat'"):
        od_from_csv(trips, hexes)


def _png(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_images_from_folder_keeps_nearest_satellite(tmp_path, squares):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        _png(tmp_path / "img" / name)
    listing = pd.DataFrame({"path": ["img/a.png", "img/b.png", "img/c.png", "img/d.png"],
                            "lon": [0.005, 0.008, 0.015, 0.3], "lat": [0.005, 0.005, 0.005, 0.3],
                            "kind": ["satellite", "satellite", "Streetview", "streetview"]})
    listing.to_csv(tmp_path / "images.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = images_from_folder(tmp_path / "images.csv", squares)
    messages = [str(w.message) for w in caught]
    assert any("1 of 4 image(s) outside every region (row 5)" in m for m in messages)
    assert any("1 satellite image(s) left out" in m for m in messages)
    assert images[["region_id", "kind"]].values.tolist() == [["west", "satellite"], ["east", "streetview"]]
    assert images["path"].iloc[0] == (tmp_path / "img" / "a.png").resolve()  # a is nearer the centre
    # one kind for every row, and missing files
    sv = images_from_folder(listing.drop(columns="kind").iloc[2:3], squares, root=tmp_path, kind="streetview")
    assert sv["kind"].tolist() == ["streetview"]
    with pytest.raises(RawDataError, match=r"1 file\(s\) do not exist, row 2"):
        images_from_folder(listing.assign(path=["img/nope.png", "img/b.png", "img/c.png", "img/d.png"]),
                           squares, root=tmp_path)
    with pytest.raises(RawDataError, match=r"must be one of \['satellite', 'streetview'\]"):
        images_from_folder(listing.assign(kind="aerial"), squares, root=tmp_path)


def test_indicators_by_area_density_and_count(squares):
    # one area covering both squares, another covering the west square and as much outside
    areas = polygon_regions(pd.DataFrame({
        "id": ["all", "west_and_out"],
        "geometry": ["POLYGON ((0 0, 0.02 0, 0.02 0.01, 0 0.01, 0 0))",
                     "POLYGON ((-0.01 0, 0.01 0, 0.01 0.01, -0.01 0.01, -0.01 0))"]}))
    values = pd.DataFrame({"id": ["all", "west_and_out"], "people": [100.0, 40.0], "rent": [10.0, 20.0]})
    got = indicators_by_area(areas, values, squares, how={"people": "count", "rent": "density"})
    # people: 'all' splits 50/50, 'west_and_out' gives half of 40 to west; rent: equal overlaps in west
    assert got.loc["west", "people"] == pytest.approx(70.0, rel=1e-3)
    assert got.loc["east", "people"] == pytest.approx(50.0, rel=1e-3)
    assert got.loc["west", "rent"] == pytest.approx(15.0, rel=1e-3)
    assert got.loc["east", "rent"] == pytest.approx(10.0, rel=1e-3)
    # only the west square is covered: east is missing, and that is reported
    with pytest.warns(UserWarning, match=r"indicator 'rent': 1 of 2 regions are covered less than 50%"):
        got = indicators_by_area(areas, values.iloc[1:][["id", "rent"]], squares, how="density")
    assert got.loc["west", "rent"] == pytest.approx(20.0) and np.isnan(got.loc["east", "rent"])
    with pytest.raises(RawDataError, match=r"must be 'count' or 'density'"):
        indicators_by_area(areas, values, squares, how="sum")
    with pytest.raises(RawDataError, match=r"area id\(s\) are not among the areas"):
        indicators_by_area(areas, values.assign(id=["all", "mars"]), squares)


def test_indicators_by_area_skips_missing_values_and_min_coverage_zero():
    def strip(x0, x1):
        return f"POLYGON (({x0} 0, {x1} 0, {x1} 0.01, {x0} 0.01, {x0} 0))"

    areas = polygon_regions(pd.DataFrame({"id": ["a", "b", "c"],
                                          "geometry": [strip(0, 0.01), strip(0.01, 0.015), strip(0.015, 0.03)]}))
    regions = polygon_regions(pd.DataFrame({"id": ["wide", "sliver", "far"],
                                            "geometry": [strip(0, 0.02), strip(0.0105, 0.016), strip(1, 1.01)]}))
    values = pd.DataFrame({"v": [10.0, np.nan, 40.0]}, index=["a", "b", "c"])
    with pytest.warns(UserWarning, match=r"2 of 3 regions are covered less than 50%"):
        got = indicators_by_area(areas, values, regions)
    # 'b' has no value: wide is 0.01 of a (10) and 0.005 of c (40), the weights renormalised
    assert got.loc["wide", "v"] == pytest.approx((10 * 2 + 40) / 3, rel=1e-4)
    assert got[["v"]].loc[["sliver", "far"]].isna().all().all()  # sliver: 1/5.5 covered by c
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = indicators_by_area(areas, values, regions, min_coverage=0)
    assert got.loc["sliver", "v"] == pytest.approx(40.0) and np.isnan(got.loc["far", "v"])
    with pytest.raises(RawDataError, match=r"min_coverage must be in \[0, 1\]"):
        indicators_by_area(areas, values, regions, min_coverage=-0.1)


# ------------------------------------------------------------------------------------------
# the city folder


def test_build_city_writes_a_valid_folder(tmp_path, hexes):
    lon, lat = zip(*(cell_centre(c) for c in RING))
    for i in range(3):
        _png(tmp_path / "raw" / f"s{i}.png")
    images = images_from_folder(pd.DataFrame({"path": ["s0.png", "s1.png", "s2.png"], "lon": lon[:3],
                                              "lat": lat[:3], "kind": ["satellite"] * 2 + ["streetview"]}),
                                hexes, root=tmp_path / "raw")
    pois = pois_from_csv(pd.DataFrame({"lon": lon, "lat": lat, "category": ["cafe"] * 7}), hexes)
    od = od_from_csv(pd.DataFrame({"o": RING[:2], "d": RING[1:3]}), hexes, origin="o", destination="d")
    indicators = pd.DataFrame({"PD": np.arange(7.0), "CR": [1.0] * 6 + [np.nan]}, index=RING)
    with pytest.warns(UserWarning, match=r"indicator 'CR' is missing for 1 of 7 regions; marked allow_missing"):
        out = build_city(tmp_path / "city", hexes, indicators, pois=pois, od=od, images=images, name="Tiny",
                         max_missing_satellite=0.8, indicator_meta={"PD": Indicator("PD", "population density", "1/km2")})
    assert validate_city(out) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # regions without images or trips: reported by load_city
        city = load_city(out)
    assert city.meta.modalities == ("satellite", "streetview", "poi", "mobility")
    assert city.meta.hexagon_size_m == hexes.hexagon_size_m
    assert city.meta.indicators["CR"].allow_missing and not city.meta.indicators["PD"].allow_missing
    assert len(city.satellite_paths()) == 2 and (out / "images" / "satellite" / f"{RING[0]}.png").is_file()
    assert city.mobility.loc[RING[1], "inflow"] == 1
    # only what is given is a modality
    bare = build_city(tmp_path / "bare", hexes, indicators[["PD"]], pois=pois)
    assert load_city(bare).meta.modalities == ("poi",)
    # never over a folder that is not a city; a city only with overwrite
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never replaced"):
        build_city(tmp_path / "other", hexes, indicators[["PD"]], overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_city(bare, hexes, indicators[["PD"]])
    build_city(bare, hexes, indicators[["PD"]], overwrite=True)
    assert load_city(bare).meta.modalities == ()


def test_build_city_refuses_an_invalid_city_and_leaves_nothing(tmp_path, hexes):
    bad = pd.DataFrame({"PD": [-1.0] * 7}, index=RING)  # negative without allow_negative
    with pytest.raises(CityFormatError, match="negative"):
        build_city(tmp_path / "city", hexes, bad)
    assert not any(tmp_path.iterdir())
    with pytest.raises(RawDataError, match="not regions"):
        build_city(tmp_path / "city", hexes, pd.DataFrame({"PD": [1.0]}, index=["nowhere"]))
    with pytest.raises(RawDataError, match=r"indicator_meta names \['XX'\]"):
        build_city(tmp_path / "city", hexes, bad.abs(), indicator_meta={"XX": "x"})
