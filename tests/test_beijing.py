"""The Beijing converter: lattice -> hexagons that tile, ids, and the city folder, on tiny fixtures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from musecl.city import load_city, validate_city
from musecl.datasets import sources
from musecl.datasets.beijing import (BEIJING_LATTICE, HexLattice, LatticeError, beijing_city_from_files,
                                     lattice_ids, make_beijing_city, panorama_views, parse_image_folder)


def polygon(lattice: HexLattice, rid: int):
    from shapely.geometry import Polygon

    return Polygon(lattice.hexagon(rid))


# ------------------------------------------------------------------------------------------
# the lattice


def test_first_csv_row_is_row_45_col_18_with_odd_rows_shifted_east():
    # pop_density.csv, line 1: 40.660015, 116.17091144 (a fact of the data, checked by hand):
    # (41.0647 - 40.660015) / 0.008993 = 45 rows south; (116.17091144 - 115.4194) / 0.04062224 = 18.5
    lon, lat = BEIJING_LATTICE.centre(45 * 53 + 18)
    assert float(lon) == pytest.approx(116.17091144, abs=1e-9)
    assert float(lat) == pytest.approx(40.660015, abs=1e-9)
    assert lattice_ids([40.660015], [116.17091144]).tolist() == [45 * 53 + 18]


def test_ids_round_trip_through_centres():
    ids = np.arange(BEIJING_LATTICE.n_cells)
    lon, lat = BEIJING_LATTICE.centre(ids)
    found, off = BEIJING_LATTICE.locate(lon, lat)
    assert (found == ids).all() and off.max() < 1e-9
    row, col = BEIJING_LATTICE.row_col(ids)
    assert (row * 53 + col == ids).all()
    with pytest.raises(LatticeError, match="outside the lattice"):
        BEIJING_LATTICE.centre(182 * 53)


def test_hexagons_tile_without_gaps_or_overlaps():
    lat = BEIJING_LATTICE
    rows, cols = range(40, 46), range(10, 15)
    ids = [r * lat.n_cols + c for r in rows for c in cols]
    polys = {i: polygon(lat, i) for i in ids}
    area = polys[ids[0]].area
    assert all(p.is_valid and math.isclose(p.area, area, rel_tol=1e-9) for p in polys.values())
    for a in ids:  # no overlaps: any two hexagons meet at most along an edge
        for b in ids:
            if a < b:
                assert polys[a].intersection(polys[b]).area < 1e-9 * area
    # no gaps: an interior hexagon's boundary is shared, edge by edge, with exactly its six neighbours
    centre = 42 * lat.n_cols + 12  # even row: the neighbours one row away are shifted west by half
    expected = {centre - 2 * lat.n_cols, centre + 2 * lat.n_cols,
                centre - lat.n_cols, centre - lat.n_cols - 1, centre + lat.n_cols, centre + lat.n_cols - 1}
    touching = {b for b in ids if b != centre and polys[centre].intersection(polys[b]).length > 1e-9}
    assert touching == expected
    shared = sum(polys[centre].boundary.intersection(polys[b].boundary).length for b in expected)
    assert shared == pytest.approx(polys[centre].length, rel=1e-9)


def test_hexagons_are_nearly_regular_in_metres_and_about_1_km():
    lat = BEIJING_LATTICE
    rid = 100 * lat.n_cols + 25  # about 40.17 N
    lon0, lat0 = lat.centre(rid)
    k = math.cos(math.radians(float(lat0)))
    radii = [math.hypot((x - float(lon0)) * k, y - float(lat0)) * 111_195 for x, y in lat.hexagon(rid)]
    assert max(radii) / min(radii) < 1.01
    assert 1100 < lat.hexagon_size_m() < 1200
    assert lat.lat_step * 111_195 == pytest.approx(1000, rel=0.001)  # the row step is 1 km


def test_off_lattice_centre_names_the_file_row_and_distance(tmp_path):
    path = tmp_path / "pd.csv"
    lon, lat = BEIJING_LATTICE.centre([2403, 2509])
    path.write_text(f"{lat[0]},{lon[0]},5\n{lat[1]},{lon[1] + 0.004},7\n")
    with pytest.raises(LatticeError, match=r"pd\.csv: 1 centre\(s\).*\n  row 2: .* steps from the nearest"):
        beijing_city_from_files(tmp_path / "city", {"PD": path})


def test_parse_image_folder_with_comma_and_trailing_underscore():
    assert parse_image_folder("6859_116.3372,39.9092_") == ("6859", 116.3372, 39.9092)
    with pytest.raises(ValueError, match="not named"):
        parse_image_folder("6859-116.3372-39.9092")


def test_panorama_is_cut_into_square_views():
    pano = Image.fromarray(np.tile((np.arange(1024) // 4).astype(np.uint8)[None, :, None], (384, 1, 3)))
    views = panorama_views(pano, n_views=4, size=None)
    assert [v.size for v in views] == [(256, 256)] * 4
    assert [int(np.asarray(v)[0, 0, 0]) for v in views] == [0, 64, 128, 192]  # side by side, left to right
    assert [v.size for v in panorama_views(pano, 4, size=32)] == [(32, 32)] * 4


# ------------------------------------------------------------------------------------------
# the converter on a fixture


IDS = [2403, 2509, 4000, 4001]  # rows 45, 47, 75, 75: odd and even rows


def write_fixture(root):
    """Three headerless CSVs on the lattice (HD only for two regions) and one image folder whose
    name holds a comma, with a satellite crop and two panoramas."""
    root.mkdir(parents=True, exist_ok=True)
    lon, lat = BEIJING_LATTICE.centre(IDS)
    values = {"PD": [10.0, 20.0, 30.0, 40.0], "NP": [1, 2, 3, 4]}
    files = {}
    for name, vals in values.items():
        files[name] = root / f"{name}.csv"
        files[name].write_text("".join(f"{float(la)!r},{float(lo)!r},{v}\n" for la, lo, v in zip(lat, lon, vals)))
    files["HD"] = root / "HD.csv"
    files["HD"].write_text(f"{float(lat[3])!r},{float(lon[3])!r},5\n{float(lat[0])!r},{float(lon[0])!r},0\n")  # another order
    folder = f"4001_{float(lon[3]) + 0.006:.4f},{float(lat[3]) + 0.0015:.4f}_"  # off-centre, as upstream
    (root / folder).mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (421, 546), dtype=np.uint8), "L").save(root / folder / "4001.jpg")
    images = {f"{folder}/4001.jpg": root / folder / "4001.jpg"}
    for k in range(2):
        name = f"0900220012170620145421926{k}E.jpg"
        Image.fromarray(rng.integers(0, 255, (384, 1024, 3), dtype=np.uint8)).save(root / folder / name)
        images[f"{folder}/{name}"] = root / folder / name
    return files, images


def test_converter_writes_a_valid_city(tmp_path):
    files, images = write_fixture(tmp_path / "raw")
    out = beijing_city_from_files(tmp_path / "city", files, images, image_size=48, provenance="fixture")
    assert all("MIN_REGIONS" in p.message for p in validate_city(out))  # only: fewer regions than a run needs
    with pytest.warns(UserWarning, match="3 of 4 regions have no satellite image"):
        city = load_city(out)
    assert list(city.region_ids) == [str(i) for i in IDS]
    assert city.indicators.loc["4000", "PD"] == 30.0  # raw values ...
    assert city.targets().loc["4000", "PD"] == pytest.approx(math.log(31.0))  # ... modelled as ln(1 + x)
    assert city.indicators["HD"].isna().tolist() == [False, True, True, False]
    assert city.indicators.loc["2403", "HD"] == 0.0
    meta = yaml.safe_load((out / "city.yaml").read_text())
    assert meta["modalities"] == ["satellite", "streetview"]
    assert meta["indicators"]["HD"]["allow_missing"] and meta["indicators"]["PD"]["log"]
    assert meta["max_missing_satellite"] >= 0.75 and meta["image_regions"] == ["4001"]
    assert meta["lattice"]["n_cols"] == 53 and meta["provenance"] == "fixture"
    assert 1100 < meta["hexagon_size_m"] < 1200
    assert city.satellite_paths().index.tolist() == ["4001"]
    views = city.streetview_paths()["4001"]
    assert len(views) == 2 * 4 and all("," not in p.name for p in views)
    with Image.open(city.satellite_paths()["4001"]) as im:
        assert im.size == (48, 48)
    table = pd.read_csv(out / "images.csv")
    assert table["source"].str.contains(",").all()  # the raw file each picture came from
    # geometry: the written hexagons are the lattice's
    assert city.regions.geometry["4001"].equals_exact(polygon(BEIJING_LATTICE, 4001), 1e-7)


def test_converter_copies_images_unchanged_without_image_size(tmp_path):
    files, images = write_fixture(tmp_path / "raw")
    out = beijing_city_from_files(tmp_path / "city", files, images, image_size=None)
    assert all("MIN_REGIONS" in p.message for p in validate_city(out))  # only: fewer regions than a run needs
    table = pd.read_csv(out / "images.csv")
    assert (table["kind"] == "streetview").sum() == 2
    sat = table.loc[table["kind"] == "satellite", "path"].item()
    assert (out / sat).read_bytes() == images[next(k for k in images if k.endswith("4001.jpg"))].read_bytes()


def test_image_folder_far_from_its_region_or_without_labels_is_refused(tmp_path):
    files, images = write_fixture(tmp_path / "raw")
    (src_key, src), *_ = images.items()
    moved = {k.replace(k.split("/")[0], "4001_117.5,39.0"): v for k, v in images.items()}
    with pytest.raises(LatticeError, match="degrees outside the hexagon of region 4001"):
        beijing_city_from_files(tmp_path / "city", files, moved)
    lon, lat = BEIJING_LATTICE.centre(5000)
    unlabelled = {f"5000_{float(lon):.4f},{float(lat):.4f}/5000.jpg": src}
    with pytest.raises(ValueError, match=r"region\(s\) \['5000'\] that have no indicator value"):
        beijing_city_from_files(tmp_path / "city2", files, unlabelled)


def test_refuses_to_overwrite_a_folder_that_is_not_a_city(tmp_path):
    files, _ = write_fixture(tmp_path / "raw")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a city folder"):
        beijing_city_from_files(tmp_path / "precious", files)


# ------------------------------------------------------------------------------------------
# the real data (skipped without the data directory)


def test_real_beijing_converts_to_the_papers_1111_regions(tmp_path):
    if not sources.available("beijing"):
        pytest.skip("the beijing data set is not here (musecl fetch beijing, or set MUSECL_DATA_DIR)")
    out = make_beijing_city(tmp_path / "beijing", image_size=32)
    assert all("MIN_REGIONS" in p.message for p in validate_city(out))  # only: fewer regions than a run needs
    with pytest.warns(UserWarning, match="1096 of 1111 regions have no satellite image"):
        city = load_city(out)
    assert len(city) == 1111
    assert city.indicators.notna().sum().to_dict() == {"PD": 1111, "HD": 515, "NP": 1111}
    assert len(city.satellite_paths()) == 15
    assert city.targets().std().round(2).to_dict() == {"PD": 1.46, "HD": 1.04, "NP": 1.65}
    assert "chicosirius/MuseCL-demo" in city.meta.provenance
