"""Manhattan-180 as a city folder: the MVURE / MGFN / HREP region benchmark, converted.

:func:`make_manhattan_city` turns the benchmark's 180 regions (taxi zones cut along the streets)
and their files, OpenStreetMap POIs of 2013 and three indicators joined from census tracts and
arrest points into a city folder, so the book reads Manhattan like any other city:

=====================  ===========================================================================
file                   from
=====================  ===========================================================================
``regions.csv``        ``taxidata/mh-180.json`` (GeoJSON polygons, WGS84, property ``region_id``)
``od.csv``             ``hrep/mobility_adj.npy`` (180 x 180 taxi trips, origin row -> destination)
``pois.csv``           ``osm_pois_2013/NewYork-2013-01-31.csv``: category = the first of the
                       ``amenity``, ``shop``, ``leisure``, ``tourism``, ``man_made`` tags present,
                       text = ``name``; assigned to regions by point in polygon
``indicators.csv``     crime (``hrep/crime_counts.npy``), check_in (``hrep/check_counts.npy``),
                       population_density and median_income (census tracts, area-weighted),
                       arrests (``franchi`` arrest points, point in polygon)
``landuse.csv``        ``hrep/mh_cd.json``: community district per region (land-use clusters)
=====================  ===========================================================================

Raw files are read through :func:`musecl.datasets.sources.locate` (sha256-checked) and their
sources written into ``city.yaml``; the geometry is :mod:`musecl.datasets.from_raw`'s, as for any
city. The readers take paths and arrays, so tests run them on tiny hand-made fixtures.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape

from musecl.city import (
    CATEGORY,
    DESTINATION,
    FLOW,
    LAT,
    LON,
    ORIGIN,
    REGION_ID,
    TEXT,
    WGS84,
    CityMeta,
    Indicator,
    write_city,
)
from musecl.datasets.from_raw import Regions, assign_points, count_points, indicators_by_area, polygon_regions
from musecl.datasets.sources import locate, registry
from musecl.io import read_csv_ids

TRACT_CRS = "EPSG:32118"  # NAD83 / New York Long Island (metres): the tracts' coordinates
LANDUSE_CSV = "landuse.csv"
LANDUSE_COLUMN = "community_district"
POI_TAG_COLUMNS = ("amenity", "shop", "leisure", "tourism", "man_made")
INCOME_MIN_COVERAGE = 0.01  # least share of a region under tracts with an income (convert_manhattan)
MANHATTAN_COUNTY = "36061"  # state 36 (New York), county 061 (New York County = Manhattan)

FILES = {
    "regions": "manhattan/taxidata/mh-180.json",
    "od": "manhattan/hrep/mobility_adj.npy",
    "crime": "manhattan/hrep/crime_counts.npy",
    "check_in": "manhattan/hrep/check_counts.npy",
    "landuse": "manhattan/hrep/mh_cd.json",
    "pois": "manhattan/osm_pois_2013/NewYork-2013-01-31.csv",
    "tracts": "manhattan/regiondcl/nyc_tracts_2020.geojson",
    "income": "manhattan/franchi/median_income_nyc_2020.csv",
    "arrests": "manhattan/franchi/NYPD_Arrests_Data__Historic_.csv",
}

INDICATORS = {
    # the benchmark's two tasks: raw counts, as its published protocol (log: false)
    "crime": Indicator("crime", "Crime complaints (NYPD, about one year)", "count", log=False),
    "check_in": Indicator("check_in", "Foursquare check-ins", "count", log=False),
    # joined here from other sources (not part of the published benchmark)
    "population_density": Indicator("population_density", "Population density (WorldPop 2020, "
                                    "area-weighted from census tracts)", "persons per km2", log=True),
    "median_income": Indicator("median_income", "Median household income (ACS 2020 B19013, "
                               "area-weighted from census tracts)", "USD", log=True, allow_missing=True),
    "arrests": Indicator("arrests", "NYPD arrests, 5 Oct - 15 Nov 2020", "count", log=True),
}


# --- regions ---
def read_regions(path: str | os.PathLike) -> Regions:
    """Regions of a GeoJSON FeatureCollection with a ``region_id`` property (WGS84), sorted
    numerically where ids are numbers; centres are centroids, as the benchmark's own code uses,
    and polygons are kept exactly as read."""
    features = json.loads(Path(path).read_text())["features"]
    rows = []
    for k, feature in enumerate(features):
        props = feature.get("properties") or {}
        if "region_id" not in props:
            raise ValueError(f"{path}: feature {k} has no 'region_id' property")
        rows.append((str(props["region_id"]), shape(feature["geometry"])))
    rows.sort(key=lambda r: (int(r[0]) if r[0].isdigit() else float("inf"), r[0]))
    ids, geoms = [r for r, _ in rows], [g for _, g in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: region ids are not unique")
    table = gpd.GeoDataFrame({LON: [g.centroid.x for g in geoms], LAT: [g.centroid.y for g in geoms]},
                             geometry=geoms, crs=WGS84, index=pd.Index(ids, name=REGION_ID))
    return Regions(table)


# --- readers of the raw files (each takes a path and returns plain tables / arrays) ---
def od_table(matrix, region_ids: Sequence[str]) -> pd.DataFrame:
    """An N x N origin -> destination matrix (a leading axis of size 1 is dropped) as
    ``origin, destination, flow`` rows; zero cells are left out (they carry no trips)."""
    m = np.asarray(matrix, dtype=float)
    n = len(region_ids)
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 and m.size == n * n else m
    if m.shape != (n, n):
        raise ValueError(f"OD matrix has shape {np.shape(matrix)}; expected ({n}, {n}) for {n} regions")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("OD matrix has negative or non-finite flows")
    o, d = np.nonzero(m)
    ids = np.asarray(region_ids, dtype=object)
    return pd.DataFrame({ORIGIN: ids[o], DESTINATION: ids[d], FLOW: m[o, d]})


def read_osm_pois(path: str | os.PathLike) -> tuple[pd.DataFrame, int]:
    """OSM POIs with WKT point geometry: ``lon, lat, category, text``, and how many rows had no
    category tag (those are dropped: eq. 3 and 7 need a category)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    tags = [c for c in POI_TAG_COLUMNS if c in raw.columns]
    if not tags or "geometry" not in raw.columns:
        raise ValueError(f"{path}: expected a 'geometry' column and one of {list(POI_TAG_COLUMNS)}; "
                         f"found {list(raw.columns)}")
    category = pd.Series("", index=raw.index, dtype=object)
    for col in reversed(tags):  # the first tag in POI_TAG_COLUMNS order wins
        value = raw[col].str.strip()
        category = category.where(value == "", value)
    category = category.str.replace(r"\s+", "_", regex=True)
    has = (category != "").to_numpy()
    points = shapely.from_wkt(raw["geometry"].to_numpy()[has], on_invalid="ignore")
    name = raw["name"] if "name" in raw.columns else pd.Series("", index=raw.index)
    table = pd.DataFrame({"lon": shapely.get_x(points), "lat": shapely.get_y(points),
                          CATEGORY: category[has].to_numpy(), TEXT: name[has].str.strip().to_numpy()})
    table = table[np.isfinite(table["lon"]) & np.isfinite(table["lat"])].reset_index(drop=True)
    return table, int((~has).sum())


def read_tracts(path: str | os.PathLike, crs: str = TRACT_CRS) -> tuple[pd.DataFrame, Regions]:
    """Census tracts (GeoJSON whose coordinates are in ``crs``, whatever the file claims): their
    properties and the tracts as WGS84 Regions, ids ``"0", "1", ...`` as the table's rows."""
    features = json.loads(Path(path).read_text())["features"]
    props = pd.DataFrame([f.get("properties") or {} for f in features])
    tracts = polygon_regions({"type": "FeatureCollection", "features": features}, id=None, crs=crs)
    return props, tracts


def tract_geoid(boro_ct: str) -> str:
    """Census GEOID of a Manhattan tract from NYC's ``BoroCT2020`` (borough digit + 6-digit tract)."""
    boro_ct = str(boro_ct)
    if len(boro_ct) != 7 or boro_ct[0] != "1":
        raise ValueError(f"BoroCT2020 {boro_ct!r} is not a Manhattan tract (borough code 1 + 6 digits)")
    return MANHATTAN_COUNTY + boro_ct[1:]


def parse_income(value) -> float:
    """An ACS estimate cell as a number: '250,000+' -> 250000, '2,500-' -> 2500, '-' -> NaN."""
    text = str(value).strip().replace(",", "").rstrip("+-")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_income(path: str | os.PathLike) -> pd.Series:
    """ACS B19013 median household income per tract, indexed by the 11-digit GEOID."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw = raw[raw["GEO_ID"].str.startswith("1400000US")]  # drops the second, descriptive header row
    values = raw["B19013_001E"].map(parse_income).astype(float)
    return pd.Series(values.to_numpy(), index=raw["GEO_ID"].str[-11:].to_numpy(), name="median_income")


def read_arrest_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of the arrests that have coordinates."""
    raw = pd.read_csv(path, usecols=["Latitude", "Longitude"]).dropna()
    return raw["Longitude"].to_numpy(float), raw["Latitude"].to_numpy(float)


# --- the converter ---
def convert_manhattan(paths: dict[str, Path], out: str | os.PathLike,
                      sources: dict[str, dict] | None = None, tract_crs: str = TRACT_CRS) -> Path:
    """Write the city folder from raw files given by role (the keys of :data:`FILES`);
    ``sources`` (role -> repository/commit/path/sha256) is recorded in ``city.yaml``."""
    paths = {k: Path(v) for k, v in paths.items()}
    missing = sorted(set(FILES) - set(paths))
    if missing:
        raise ValueError(f"convert_manhattan: no path given for {missing}")
    regions = read_regions(paths["regions"])
    ids = list(regions.ids)
    n = len(ids)

    od = od_table(np.load(paths["od"], allow_pickle=False), ids)

    pois_raw, n_untagged = read_osm_pois(paths["pois"])
    where = assign_points(pois_raw["lon"], pois_raw["lat"], regions)
    inside = where.notna().to_numpy()
    pois = pois_raw[inside].assign(**{REGION_ID: where[inside]})

    def per_region(path: Path, what: str) -> np.ndarray:
        v = np.asarray(np.load(path, allow_pickle=False), dtype=float).reshape(-1)
        if len(v) != n:
            raise ValueError(f"{path}: {what} has {len(v)} values for {n} regions")
        return v

    props, tracts = read_tracts(paths["tracts"], tract_crs)
    income_by_geoid = read_income(paths["income"])
    geoid = [tract_geoid(b) if str(b).startswith("1") and len(str(b)) == 7 else None
             for b in props["BoroCT2020"]]  # None: a tract of another borough
    tract_values = pd.DataFrame({
        "population_density": props["population_density"].astype(float).to_numpy(),
        "median_income": [income_by_geoid.get(g, np.nan) for g in geoid],
    }, index=tracts.ids, dtype=float)
    # The tracts cover every region, so the density takes any overlap (min_coverage=0). Some
    # regions lie mostly in tracts without an income (Central Park's): they keep the income of the
    # part under tracts with one, down to INCOME_MIN_COVERAGE of their surface; below that it would
    # be a border sliver's, and the income is missing (allow_missing).
    by_area = indicators_by_area(tracts, tract_values, regions, how="density",
                                 min_coverage={"population_density": 0, "median_income": INCOME_MIN_COVERAGE})
    a_lon, a_lat = read_arrest_points(paths["arrests"])
    # the file covers all five boroughs: most arrests lie outside the regions
    arrests = count_points(a_lon, a_lat, regions, outside="ignore").to_numpy()

    indicators = pd.DataFrame({
        "crime": per_region(paths["crime"], "crime counts"),
        "check_in": per_region(paths["check_in"], "check-in counts"),
        **by_area,  # population_density, median_income
        "arrests": arrests.astype(float),
    }, index=regions.ids)
    no_tract = indicators["population_density"].isna().to_numpy()
    if no_tract.any():
        bad = list(regions.ids[no_tract][:5])
        raise ValueError(f"population density: regions {bad} overlap no census tract; is tract_crs "
                         f"({tract_crs}) the tracts' real CRS?")

    cd = json.loads(paths["landuse"].read_text())
    unknown = sorted(set(map(str, cd)) - set(ids))
    if unknown or len(cd) != n:
        raise ValueError(f"{paths['landuse']}: labels for {len(cd)} regions, unknown ids {unknown[:5]}")
    landuse = pd.DataFrame({REGION_ID: ids, LANDUSE_COLUMN: [int(cd[r]) for r in ids]})

    sources = sources or {role: {"path": str(p)} for role, p in paths.items()}
    meta = CityMeta(
        name="Manhattan-180", crs=WGS84, modalities=("poi", "mobility"), indicators=dict(INDICATORS),
        hexagon_size_m=None,
        provenance=(
            "The Manhattan-180 region benchmark (MVURE, MGFN, HREP) converted by "
            "musecl.datasets.manhattan.make_manhattan_city. Regions, taxi OD flows, crime and "
            "check-in counts and land-use labels are the benchmark's own files; POIs are "
            f"OpenStreetMap (ODbL) nodes of 2013-01-31 with an {'/'.join(POI_TAG_COLUMNS)} tag "
            f"({n_untagged} untagged rows dropped, {int((~inside).sum())} tagged POIs outside the "
            "regions dropped); population density and median income are census-tract values "
            "weighted by overlap area (tract coordinates read as EPSG:32118); arrests are "
            "points counted per polygon. landuse.csv (region_id, community_district) holds the "
            "benchmark's land-use clustering labels (hrep/mh_cd.json). Source of every file: "
            "the 'sources' key."),
        extra={"sources": sources,
               "extra_files": {LANDUSE_CSV: {"columns": [REGION_ID, LANDUSE_COLUMN],
                                             "from": "landuse",
                                             "description": "community district of each region, the "
                                                            "label of the land-use clustering task"}}},
    )
    root = write_city(out, meta, regions=regions.table, indicators=indicators, pois=pois, od=od)
    landuse.to_csv(root / LANDUSE_CSV, index=False)
    return root


def make_manhattan_city(out: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Convert the verified raw Manhattan-180 files into a city folder at ``out``; return it."""
    paths, sources = {}, {}
    table = registry()
    for role, file in FILES.items():
        paths[role] = locate(file, data_dir=data_dir)
        row = table.loc[file]
        sources[role] = {"file": file, "repository": row["source_repo"], "commit": row["commit"],
                         "path": row["source_path"], "sha256": row["sha256"],
                         "license": row["license"] or "none stated"}
        if row["note"]:
            sources[role]["note"] = row["note"]
    return convert_manhattan(paths, out, sources=sources)


def read_landuse(city_root: str | os.PathLike) -> pd.Series:
    """The land-use label (community district) per region, indexed by ``region_id``."""
    table = read_csv_ids(Path(city_root) / LANDUSE_CSV)
    return table.set_index(REGION_ID)[LANDUSE_COLUMN]
