"""The raw-file converters of musecl.datasets.from_raw, on tiny hand-made fixtures."""
from __future__ import annotations

import json
import warnings

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from PIL import Image

from musecl.city import CityFormatError, Indicator, load_city, validate_city
from musecl.datasets.from_raw import (
    RawDataError, Regions, assign_points, build_city, count_points, hexagon_regions, images_from_folder,
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


def test_polygon_regions_reads_a_geodataframe_in_its_own_crs():
    square = shapely.box(0.0, 0.0, 0.01, 0.01)
    table = gpd.GeoDataFrame({"name": ["sq"]}, geometry=gpd.GeoSeries([square], crs="EPSG:4326").to_crs(3857))
    table = table.rename_geometry("shape")
    regions = polygon_regions(table, id="name")  # its own CRS, its own geometry column's name
    assert isinstance(regions.table, gpd.GeoDataFrame) and regions.table.crs == "EPSG:4326"
    back = regions.table.geometry["sq"]
    assert back.normalize().equals_exact(square.normalize(), tolerance=1e-7)
    assert regions.table.loc["sq", ["lon", "lat"]].tolist() == pytest.approx([0.005, 0.005], abs=1e-6)
    with pytest.raises(RawDataError, match="says its coordinates are in EPSG:3857"):
        polygon_regions(table, id="name", crs="EPSG:4326")


def test_hexagon_regions_from_points_bbox_and_area(hexes):
    assert list(hexes.ids) == RING
    assert hexes.h3_resolution == RES
    # measured on these cells: a cell's centre-to-vertex distance, which for a hexagon is also its edge
    edges = [h3.great_circle_distance(a, b, unit="m") for c in RING
             for a, b in zip(h3.cell_to_boundary(c), np.roll(np.array(h3.cell_to_boundary(c)), 1, axis=0))]
    assert hexes.hexagon_size_m == pytest.approx(np.mean(edges), rel=1e-4)
    lon, lat = cell_centre(CENTRE)
    assert hexes.table.loc[CENTRE, "lon"] == pytest.approx(lon, abs=1e-6)
    assert hexes.table.geometry[CENTRE].contains(shapely.Point(lon, lat))
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
    with pytest.raises(RawDataError, match=r"column 'lat' is outside \[-90, 90\] in 1 row\(s\), row 3"):
        hexagon_regions([0.0, 0.0], [0.0, 95.0])
    # (0, 0) stands for "no location" in many exports: it would add a cell far from the city
    with pytest.raises(RawDataError, match=r"1 row\(s\), row 3 at exactly \(0, 0\)"):
        hexagon_regions([116.4, 0.0, 116.41], [39.9, 0.0, 39.91])


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
    with pytest.warns(UserWarning, match="outside every region"):
        got = count_points([0.005, 0.006, 0.01, 0.5], [0.005, 0.005, 0.005, 0.5], squares)
    # the border point counts for west only; the far point counts nowhere; every region is listed
    assert got.to_dict() == {"west": 3, "east": 0} and got.dtype == np.int64
    assert count_points([], [], squares).tolist() == [0, 0]
    with pytest.warns(UserWarning, match=r"points: 1 of 4 point\(s\) outside every region \(row 5\) are left out"):
        count_points([0.005, 0.006, 0.01, 0.5], [0.005, 0.005, 0.005, 0.5], squares)
    with pytest.raises(RawDataError, match=r"1 of 2 point\(s\) outside every region \(row 3\) cannot be placed"):
        count_points([0.005, 0.5], [0.005, 0.5], squares, outside="raise")
    with warnings.catch_warnings():  # a caller that expects points outside says so
        warnings.simplefilter("error")
        assert count_points([0.005, 0.5], [0.005, 0.5], squares, outside="ignore").tolist() == [1, 0]


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
    # words pandas would read as missing are a category and a name here, as written in the file
    raw.iloc[:2].assign(kind=["NA", "bar"], name=["None", "null"]).to_csv(path, index=False)
    pois = pois_from_csv(path, squares, lon="x", lat="y", category="kind", text="name")
    assert pois["category"].tolist() == ["NA", "bar"] and pois["text"].tolist() == ["None", "null"]


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
    for bad in (-1, np.inf):  # an infinite count once crashed when the flows were cast to integers
        with pytest.raises(RawDataError, match=r"'n' is not a finite non-negative number in 1 row\(s\), row 2"):
            od_from_csv(by_id.assign(n=[bad, 1, 1]), hexes, origin="from", destination="to", flow="n")
    with pytest.raises(RawDataError, match=r"missing column\(s\) \['origin_lon', 'origin_lat'"):
        od_from_csv(trips, hexes)


def _png(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_images_from_folder_names_the_rows_of_files_that_are_not_images(tmp_path, squares):
    _png(tmp_path / "img" / "a.png")
    (tmp_path / "img" / "b.png").write_text("not a png")
    listing = pd.DataFrame({"path": ["img/a.png", "img/b.png"], "lon": [0.005, 0.015], "lat": [0.005, 0.005],
                            "kind": ["satellite", "streetview"]})
    with pytest.raises(RawDataError, match=r"1 file\(s\) are not images the run can read, row 3 \(e\.g\. .*b\.png is not"):
        images_from_folder(listing, squares, root=tmp_path)


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
    with pytest.warns(UserWarning, match="'all' and 'west_and_out' \\(50%\\)"):  # the overlap is the test
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
    with pytest.warns(UserWarning, match=r"indicator 'rent': 1 of 2 regions is covered less than 50%"):
        got = indicators_by_area(areas, values.iloc[1:][["id", "rent"]], squares, how="density")
    assert got.loc["west", "rent"] == pytest.approx(20.0) and np.isnan(got.loc["east", "rent"])
    with pytest.raises(RawDataError, match=r"must be 'count' or 'density'"):
        indicators_by_area(areas, values, squares, how="sum")
    with pytest.raises(RawDataError, match=r"area id\(s\) are not among the areas"):
        indicators_by_area(areas, values.assign(id=["all", "mars"]), squares)


def test_ids_in_csv_files_stay_text_and_area_ids_may_be_numbers(tmp_path, squares):
    """Region and area ids as written: "01" stays "01" in a CSV of polygons or trips (an empty
    cell does not turn the others into "1.0"), and values indexed by numeric area ids match
    areas whose ids are those numbers as text, whatever the number of indicator columns."""
    polys = pd.DataFrame({"id": ["01", "02"], "geometry": squares.table["geometry"].to_list()})
    polys.to_csv(tmp_path / "polys.csv", index=False)
    regions = polygon_regions(tmp_path / "polys.csv", id="id")
    assert list(regions.ids) == ["01", "02"]
    pd.DataFrame({"from": ["01", "02", ""], "to": ["02", "01", "01"]}).to_csv(tmp_path / "trips.csv", index=False)
    with pytest.warns(UserWarning, match=r"1 of 3 trip row\(s\) with an end outside every region or naming no region"):
        od = od_from_csv(tmp_path / "trips.csv", regions, origin="from", destination="to")
    assert od.to_dict("list") == {"origin": ["01", "02"], "destination": ["02", "01"], "flow": [1, 1]}
    areas = polygon_regions(pd.DataFrame({"id": [100, 200], "geometry": squares.table["geometry"].to_list()}))
    values = pd.DataFrame({"people": [10.0, 20.0], "rent": [1.0, 2.0]}, index=pd.Index([100, 200]))
    got = indicators_by_area(areas, values, squares, how="count")
    assert got.loc["west", "people"] == pytest.approx(10.0, rel=1e-3)
    assert got.loc["east", "rent"] == pytest.approx(2.0, rel=1e-3)
    # the same table read without dtype=str: "01" became 1, and the error says so
    zero_ids = polygon_regions(polys.assign(id=["01", "002"]), id="id")
    with pytest.raises(RawDataError, match=r"'1' looks like '01' without its leading zeros"):
        indicators_by_area(zero_ids, pd.DataFrame({"id": [1, 2], "people": [1.0, 2.0]}), squares)


def test_area_ids_that_are_numbers_are_read_from_the_first_column_never_from_row_numbers(squares):
    areas = polygon_regions(pd.DataFrame({"geometry": squares.table["geometry"].tolist()}), id=None)  # ids "0", "1"
    values = pd.DataFrame({"district": [1, 0], "pop": [10.0, 20.0]})  # as pd.read_csv gives it, rows 0 and 1
    got = indicators_by_area(areas, values, areas)
    assert got.to_dict() == {"pop": {"0": 20.0, "1": 10.0}}  # by the district column, not by row number


def test_regions_without_an_id_or_with_unreadable_wkt_are_named_with_their_rows():
    box = "POLYGON ((0 0, 0.01 0, 0.01 0.01, 0 0.01, 0 0))"
    with pytest.raises(RawDataError, match=r"feature 1 has no value for its id property 'd'"):
        polygon_regions({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"d": d}, "geometry": shapely.geometry.mapping(shapely.from_wkt(box))}
            for d in ("a", None)]}, id="d")
    with pytest.raises(RawDataError, match=r"column 'id' is empty in 1 row\(s\), row 3"):
        polygon_regions(pd.DataFrame({"id": ["a", " "], "geometry": [box, box]}))
    with pytest.raises(RawDataError, match=r"'geometry' holds text that is not WKT in 1 row\(s\), row 3"):
        polygon_regions(pd.DataFrame({"id": ["a", "b"], "geometry": [box, "POLYGON ((0 0, 1 0, 1 1))"]}))


def test_overlapping_polygons_are_named_in_a_warning():
    def box(x0):
        return f"POLYGON (({x0} 0, {x0 + 0.02} 0, {x0 + 0.02} 0.03, {x0} 0.03, {x0} 0))"

    with pytest.warns(UserWarning, match=r"1 pair\(s\) of regions overlap by more than 1% of the smaller, 'A' and 'B' \(50%\)"):
        polygon_regions(pd.DataFrame({"id": ["A", "B", "C"], "geometry": [box(0), box(0.01), box(0.03)]}))
    with warnings.catch_warnings():  # a shared border is no overlap
        warnings.simplefilter("error")
        polygon_regions(pd.DataFrame({"id": ["A", "B"], "geometry": [box(0), box(0.02)]}))


def test_a_geojson_feature_without_geometry_is_named():
    square = {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]]}
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": square, "properties": {"id": "a"}},
        {"type": "Feature", "geometry": None, "properties": {"id": "b"}}]}
    with pytest.raises(RawDataError, match=r"1 feature\(s\) are not polygons, e.g. \['b'\]"):
        polygon_regions(fc)
    with pytest.raises(RawDataError, match=r"area: 1 feature\(s\) have no geometry"):
        hexagon_regions(area=fc, resolution=RES)


def test_indicators_by_area_skips_missing_values_and_min_coverage_zero():
    def strip(x0, x1):
        return f"POLYGON (({x0} 0, {x1} 0, {x1} 0.01, {x0} 0.01, {x0} 0))"

    areas = polygon_regions(pd.DataFrame({"id": ["a", "b", "c"],
                                          "geometry": [strip(0, 0.01), strip(0.01, 0.015), strip(0.015, 0.03)]}))
    with pytest.warns(UserWarning, match="'wide' and 'sliver'"):  # a sliver inside a wide region, on purpose
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
    # per column: one overlay, each column with its own threshold (w takes the default 50%)
    values["w"] = values["v"]
    with pytest.warns(UserWarning, match=r"indicator 'w': 2 of 3 regions"):
        got = indicators_by_area(areas, values, regions, min_coverage={"v": 0})
    assert got.loc["sliver", "v"] == pytest.approx(40.0) and np.isnan(got.loc["sliver", "w"])
    with pytest.raises(RawDataError, match=r"min_coverage for 'w' must be in \[0, 1\]; got 2"):
        indicators_by_area(areas, values, regions, min_coverage={"v": 0, "w": 2})
    with pytest.raises(RawDataError, match=r"names columns that values lacks: \['x'\]"):
        indicators_by_area(areas, values, regions, min_coverage={"x": 0})


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
    indicators = pd.DataFrame({"PD": np.arange(7.0), "CR": [1.0, 2.0, 1.0, 3.0, 1.0, 2.0, np.nan]}, index=RING)
    with pytest.warns(UserWarning, match=r"indicator 'CR' is missing for 1 of 7 regions; marked allow_missing"):
        out = build_city(tmp_path / "city", hexes, indicators, pois=pois, od=od, images=images, name="Tiny",
                         max_missing_satellite=0.8, log={"CR": False},
                         indicator_meta={"PD": Indicator("PD", "population density", "1/km2")})
    assert validate_city(out) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # regions without images or trips: reported by load_city
        city = load_city(out)
    assert city.meta.modalities == ("satellite", "streetview", "poi", "mobility")
    assert city.meta.hexagon_size_m == hexes.hexagon_size_m
    assert city.meta.indicators["CR"].allow_missing and not city.meta.indicators["PD"].allow_missing
    assert city.meta.indicators["PD"].log and not city.meta.indicators["CR"].log
    assert len(city.satellite_paths()) == 2 and (out / "images" / "satellite" / f"{RING[0]}.png").is_file()
    assert city.mobility.loc[RING[1], "inflow"] == 1
    # only what is given is a modality
    bare = build_city(tmp_path / "bare", hexes, indicators[["PD"]], log=True, pois=pois)
    assert load_city(bare).meta.modalities == ("poi",)
    # never over a folder that is not a city; a city only with overwrite
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never replaced"):
        build_city(tmp_path / "other", hexes, indicators[["PD"]], log=True, overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_city(bare, hexes, indicators[["PD"]], log=True)
    build_city(bare, hexes, indicators[["PD"]], log=True, overwrite=True)
    assert load_city(bare).meta.modalities == ()


def test_build_city_refuses_an_invalid_city_and_leaves_nothing(tmp_path, hexes):
    bad = pd.DataFrame({"PD": [-1.0] * 7}, index=RING)  # negative without allow_negative
    with pytest.raises(CityFormatError, match="negative"):
        build_city(tmp_path / "city", hexes, bad, log=True)
    assert not any(tmp_path.iterdir())
    with pytest.raises(RawDataError, match="not regions"):
        build_city(tmp_path / "city", hexes, pd.DataFrame({"PD": [1.0]}, index=["nowhere"]), log=True)
    with pytest.raises(RawDataError, match=r"indicator_meta names \['XX'\]"):
        build_city(tmp_path / "city", hexes, bad.abs(), log=True, indicator_meta={"XX": "x"})


# ------------------------------------------------------------------------------------------
# traps a real city hit: precision, CRS, duplicates, bad coordinates, log, areal weighting

# A valid square with a slit from the left whose edges are 1e-9 degree apart at x = 0.005:
# rounded to 7 decimals they cross (the bow-tie GEOS's overlay refuses with a TopologyException).
NOTCHED = ("POLYGON ((0 0, 0.01 0, 0.01 0.01, 0 0.01, 0 0.0052, 0.005 0.00500014, 0.009 0.00500016, "
           "0 0.00500006, 0 0))")
UNIT = "POLYGON ((0 0, 0.01 0, 0.01 0.01, 0 0.01, 0 0))"


def test_polygon_regions_stay_valid_when_written_with_7_decimals():
    raw = shapely.from_wkt(NOTCHED)
    assert raw.is_valid and not shapely.from_wkt(shapely.to_wkt(raw, rounding_precision=7)).is_valid
    bowtie = "POLYGON ((0.02 0, 0.03 0.01, 0.03 0, 0.02 0.01, 0.02 0))"  # self-crossing: repaired, area kept
    areas = polygon_regions(pd.DataFrame({"id": ["notched", "bowtie"], "geometry": [NOTCHED, bowtie]}))
    written = shapely.from_wkt(shapely.to_wkt(areas.geometries(), rounding_precision=-1))  # as write_city does
    assert shapely.equals_exact(written, areas.geometries(), tolerance=0).all() and shapely.is_valid(written).all()
    assert written[0].area == pytest.approx(raw.area, rel=1e-4) and written[1].area == pytest.approx(5e-5)
    regions = polygon_regions(pd.DataFrame({"id": ["r"], "geometry": [UNIT]}))
    got = indicators_by_area(areas, pd.DataFrame({"v": [7.0, 1.0]}, index=["notched", "bowtie"]), regions)
    assert got.loc["r", "v"] == pytest.approx(7.0)


def unrepaired_regions(wkt_by_id: dict) -> Regions:
    """Regions as another converter might make them: WKT taken as it is, nothing repaired."""
    geoms = shapely.from_wkt(list(wkt_by_id.values()))
    inner = shapely.point_on_surface(geoms)
    return Regions(pd.DataFrame({"lon": shapely.get_x(inner), "lat": shapely.get_y(inner),
                                 "geometry": list(wkt_by_id.values())},
                                index=pd.Index(list(wkt_by_id), name="region_id")))


def test_indicators_by_area_repairs_invalid_areas_and_names_an_area_it_cannot_overlay(monkeypatch):
    # Regions made elsewhere, e.g. with full-precision WKT, may hold the rounded, invalid notch
    rounded = shapely.to_wkt(shapely.from_wkt(NOTCHED), rounding_precision=7)
    areas = unrepaired_regions({"notched": rounded})
    regions = unrepaired_regions({"r": UNIT})
    assert not areas.geometries()[0].is_valid
    values = pd.DataFrame({"v": [7.0]}, index=["notched"])
    assert indicators_by_area(areas, values, regions).loc["r", "v"] == pytest.approx(7.0)
    real = shapely.intersection

    def flaky(a, b, grid_size=None, **kw):  # GEOS fails unless it snap-rounds
        if grid_size is None:
            raise shapely.errors.GEOSException("TopologyException: side location conflict")
        return real(a, b, grid_size=grid_size, **kw)

    monkeypatch.setattr(shapely, "intersection", flaky)
    assert indicators_by_area(areas, values, regions).loc["r", "v"] == pytest.approx(7.0)

    def broken(a, b, grid_size=None, **kw):
        raise shapely.errors.GEOSException("TopologyException: side location conflict")

    monkeypatch.setattr(shapely, "intersection", broken)
    with pytest.raises(RawDataError, match=r"overlap of area 'notched' with region 'r' cannot be computed"):
        indicators_by_area(areas, values, regions)


def _mercator(lon, lat):

    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    return np.asarray(x), np.asarray(y)


def test_every_point_reader_takes_a_crs_and_refuses_projected_coordinates_without_one(tmp_path, squares, hexes):
    x, y = _mercator([0.005, 0.015], [0.005, 0.005])  # the west and east squares, in metres
    pois = pd.DataFrame({"x": x, "y": y, "kind": ["cafe", "bar"]})
    got = pois_from_csv(pois, squares, lon="x", lat="y", category="kind", crs="EPSG:3857")
    assert got["region_id"].tolist() == ["west", "east"]
    path = tmp_path / "pois.csv"
    pois.to_csv(path, index=False)
    with pytest.raises(RawDataError, match=r"POIs \(.*pois.csv\): bad coordinates in 2 of 2 row\(s\): column 'x' is "
                                           r"outside \[-180, 180\] in 2 row\(s\), rows 2, 3; .*pass crs="):
        pois_from_csv(path, squares, lon="x", lat="y", category="kind")
    assert assign_points(x, y, squares, crs="EPSG:3857").tolist() == ["west", "east"]
    assert count_points(x, y, squares, crs="EPSG:3857").tolist() == [1, 1]
    with pytest.raises(RawDataError, match="pass crs="):
        count_points(x, y, squares)
    a, b = cell_centre(RING[0]), cell_centre(RING[1])
    (ox, bx), (oy, by) = _mercator([a[0], b[0]], [a[1], b[1]])
    trips = pd.DataFrame({"ox": [ox], "oy": [oy], "dx": [bx], "dy": [by]})
    od = od_from_csv(trips, hexes, origin=("ox", "oy"), destination=("dx", "dy"), crs="EPSG:3857")
    assert od.to_dict("list") == {"origin": [RING[0]], "destination": [RING[1]], "flow": [1]}
    with pytest.raises(RawDataError, match=r"trips \(origin\): bad coordinates .*pass crs="):
        od_from_csv(trips, hexes, origin=("ox", "oy"), destination=("dx", "dy"))
    _png(tmp_path / "a.png")
    images = images_from_folder(pd.DataFrame({"path": ["a.png"], "lon": x[:1], "lat": y[:1]}), squares,
                                root=tmp_path, kind="satellite", crs="EPSG:3857")
    assert images["region_id"].tolist() == ["west"]
    # hexagons from a box or points in metres; polygons in metres read as degrees are refused
    (x0, x1), (y0, y1) = _mercator([-0.01, 0.01], [-0.01, 0.01])
    box = hexagon_regions(bbox=(x0, y0, x1, y1), resolution=RES, crs="EPSG:3857")
    assert list(box.ids) == list(hexagon_regions(bbox=(-0.01, -0.01, 0.01, 0.01), resolution=RES).ids)
    assert list(hexagon_regions(*_mercator([a[0]], [a[1]]), resolution=RES, crs="EPSG:3857").ids) == [RING[0]]
    metres = "POLYGON ((0 0, 1000 0, 1000 1000, 0 1000, 0 0))"
    with pytest.raises(RawDataError, match=r"polygons: 1 polygon\(s\) .*e\.g\. \['m'\]; .*pass crs="):
        polygon_regions(pd.DataFrame({"id": ["m"], "geometry": [metres]}))
    with pytest.raises(RawDataError, match=r"crs='EPSG:nope' is not a CRS"):
        pois_from_csv(pois, squares, lon="x", lat="y", category="kind", crs="EPSG:nope")


def test_bad_coordinates_of_both_columns_are_reported_at_once(tmp_path, squares):
    raw = pd.DataFrame({"lon": ["here", 0.005, 200.0, 0.005, 0.005, 0.005],
                        "lat": [0.005, None, 0.005, -95.0, 0.005, "n/a"], "category": ["cafe"] * 6})
    path = tmp_path / "shops.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(RawDataError) as err:
        pois_from_csv(path, squares)
    msg = str(err.value)
    assert msg.startswith(f"POIs ({path}): bad coordinates in 5 of 6 row(s): ")
    for part in ("column 'lon' is empty or not a number in 1 row(s), row 2",
                 "column 'lat' is empty or not a number in 2 row(s), rows 3, 7",
                 "column 'lon' is outside [-180, 180] in 1 row(s), row 4",
                 "column 'lat' is outside [-90, 90] in 1 row(s), row 5"):
        assert part in msg
    with pytest.raises(RawDataError, match=r"points: bad coordinates in 1 of 2 .*row 3\. give every row both"):
        assign_points([0.005, np.nan], [0.005, 0.005], squares)


def test_duplicate_ids_are_named_with_their_rows(tmp_path, squares, hexes):
    areas = polygon_regions(pd.DataFrame({"id": ["all"],
                                          "geometry": ["POLYGON ((0 0, 0.02 0, 0.02 0.01, 0 0.01, 0 0))"]}))
    values = pd.DataFrame({"id": ["all", "all"], "rent": [10.0, 11.0]})
    with pytest.raises(RawDataError, match=r"indicator values, area id: duplicate id\(s\) \['all'\] in rows 2, 3"):
        indicators_by_area(areas, values, squares)
    twice = pd.DataFrame({"PD": [1.0] * 8}, index=RING + RING[:1])
    with pytest.raises(RawDataError, match=rf"indicators, region id: duplicate id\(s\) \['{RING[0]}'\] in rows 2, 9"):
        build_city(tmp_path / "city", hexes, twice, log=True)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"d": name},
         "geometry": shapely.geometry.mapping(shapely.from_wkt(UNIT))} for name in ("a", "b", "a")]}
    path = tmp_path / "districts.geojson"
    path.write_text(json.dumps(fc))
    with pytest.raises(RawDataError, match=r"districts.geojson\), id 'd': duplicate id\(s\) \['a'\] in features 0, 2"):
        polygon_regions(path, id="d")


def test_build_city_needs_log_chosen_for_every_indicator(tmp_path, hexes):
    ind = pd.DataFrame({"PD": np.arange(1.0, 8.0), "GREEN": np.linspace(0, 1, 7), "AGE": [30.0, 31.0, 30.0, 32.0, 30.0, 33.0, 30.0]}, index=RING)
    with pytest.raises(RawDataError, match=r"choose log for indicator\(s\) \['PD', 'GREEN', 'AGE'\]"):
        build_city(tmp_path / "city", hexes, ind)
    with pytest.raises(RawDataError, match=r"choose log for indicator\(s\) \['AGE'\]"):
        build_city(tmp_path / "city", hexes, ind, log={"PD": True, "GREEN": False})
    with pytest.raises(RawDataError, match=r"log names \['XX'\]"):
        build_city(tmp_path / "city", hexes, ind, log={"XX": True})
    with pytest.raises(RawDataError, match=r"indicator 'PD': log=False but its indicator_meta says log=True"):
        build_city(tmp_path / "city", hexes, ind, log={"PD": False}, indicator_meta={"PD": {"log": True}})
    with pytest.raises(RawDataError, match=r"indicator 'PD': log must be True or False; got 'yes'"):
        build_city(tmp_path / "city", hexes, ind, log={"PD": "yes"})
    assert not any(tmp_path.iterdir())
    out = build_city(tmp_path / "city", hexes, ind, log={"PD": True, "GREEN": False},
                     indicator_meta={"AGE": {"long_name": "median age", "log": False}})
    meta = load_city(out).meta.indicators
    assert (meta["PD"].log, meta["GREEN"].log, meta["AGE"].log) == (True, False, False)
    out = build_city(tmp_path / "all", hexes, ind, log=False)
    assert not any(i.log for i in load_city(out).meta.indicators.values())


def test_indicators_by_area_warns_when_regions_share_their_area_value(hexes, squares):
    around = shapely.union_all(hexes.geometries()).buffer(0.01)  # one district holding all 7 cells
    district = polygon_regions(pd.DataFrame({"id": ["d"], "geometry": [around.wkt]}))
    with pytest.warns(UserWarning, match=r"7 of 7 regions lie within one area together with other .*spatial split"):
        got = indicators_by_area(district, pd.DataFrame({"PD": [500.0]}, index=["d"]), hexes)
    assert got["PD"].to_numpy() == pytest.approx([500.0] * 7)
    with warnings.catch_warnings():  # one area per region: nothing shared, nothing said
        warnings.simplefilter("error")
        indicators_by_area(squares, pd.DataFrame({"PD": [1.0, 2.0]}, index=["west", "east"]), squares)
