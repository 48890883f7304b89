"""From raw files to a city folder: regions, then each source aggregated onto them.

The nouns follow srai's: *regions* are the spatial units (H3 hexagons or your own polygons),
and every raw source is *joined* to them by where its records lie::

    regions = hexagon_regions(area=boundary, resolution=8)      # or polygon_regions(features)
    pois = pois_from_csv("pois.csv", regions, category="type", text="name")
    od = od_from_csv("trips.csv", regions)                        # trips by coordinates or by region
    indicators = indicators_by_area(districts, values, regions, how="density")
    images = images_from_folder("images.csv", regions)            # path, lon, lat, kind
    build_city("my_city", regions, indicators, log={"PD": True}, pois=pois, od=od, images=images)

Nothing is dropped silently: a record outside every region is reported (a warning, or an error
with ``outside="raise"``), a bad column or coordinate raises :class:`RawDataError` naming the
source, column and spreadsheet rows, and :func:`build_city` writes only a valid folder.
Geometry is WGS84 lon/lat throughout: every function that reads coordinates takes ``crs=`` and
reprojects on the way in. Points go to hexagons by H3 itself, to polygons by a spatial index,
so neither ever compares every point with every region.
"""
from __future__ import annotations

import functools
import json
import numbers
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyproj
import shapely

from musecl.city import (
    CATEGORY,
    DESTINATION,
    FLOW,
    GEOMETRY,
    IMAGE_KINDS,
    KIND,
    LAT,
    LON,
    MOBILITY,
    ORIGIN,
    PATH,
    POI,
    REGION_ID,
    SATELLITE,
    TEXT,
    WGS84,
    CityFormatError,
    CityMeta,
    Indicator,
    image_problem,
    validate_city,
    write_city,
)
from musecl.io import folder_built_beside, read_csv_ids

Outside = Literal["warn", "raise", "ignore"]  # "ignore": the caller expects points outside, and says why
_SHOW = 5  # rows named in a message
_DECIMALS = 7  # coordinates are written with 7 decimals (1e-7 degree, about 1 cm)


class RawDataError(ValueError):
    """A raw input cannot be converted; the message names the source, the column and the rows."""


# --- regions ---
@dataclass(frozen=True)
class Regions:
    """The spatial units of a city: ``table``, a GeoDataFrame indexed by ``region_id`` with the
    centre (``lon``, ``lat``) and outline (``geometry``; WKT text is parsed), all WGS84.
    ``h3_resolution`` is set for H3 hexagons, ``hexagon_size_m`` (centre to vertex) for city.yaml."""

    table: gpd.GeoDataFrame
    h3_resolution: int | None = None
    hexagon_size_m: float | None = None

    def __post_init__(self):
        if not isinstance(self.table, gpd.GeoDataFrame):
            table = self.table.drop(columns=GEOMETRY)
            shapes = gpd.GeoSeries.from_wkt(self.table[GEOMETRY], crs=WGS84)
            object.__setattr__(self, "table", gpd.GeoDataFrame(table, geometry=shapes))

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        kind = f"H3 resolution {self.h3_resolution}" if self.h3_resolution is not None else "polygons"
        return f"Regions({len(self)} {kind})"

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + self.table.head()._repr_html_()

    @property
    def ids(self) -> pd.Index:
        return self.table.index

    def geometries(self) -> np.ndarray:
        """The outlines as shapely polygons, in the order of :attr:`ids`."""
        return self.table.geometry.to_numpy()


def ring_wkt(points: Sequence[tuple[float, float]], decimals: int = _DECIMALS) -> str:
    """A polygon's WKT from its (lon, lat) vertices, the ring closed, with fixed decimals."""
    ring = [*points, points[0]]
    return "POLYGON ((" + ", ".join(f"{x:.{decimals}f} {y:.{decimals}f}" for x, y in ring) + "))"


def hexagon_regions(lon: Sequence[float] | None = None, lat: Sequence[float] | None = None, *,
                    bbox: tuple[float, float, float, float] | None = None, area=None,
                    resolution: int = 8, contain: Literal["center", "overlap"] = "center",
                    rings: int = 0, crs: str = WGS84) -> Regions:
    """H3 hexagons at ``resolution``, covering given points, a bounding box or an area.

    Give exactly one of: ``lon`` and ``lat`` (every cell that holds at least one of the points;
    cells without points are left out, so a sparse point set leaves holes), ``bbox``
    ``(min_lon, min_lat, max_lon, max_lat)``, or ``area`` (a shapely polygon, WKT text, a GeoJSON
    geometry/feature/FeatureCollection as a dict, or a path to a ``.geojson`` file). All three
    are in ``crs`` (default WGS84 lon/lat; projected ones are reprojected). For a box or an
    area, ``contain="center"`` keeps the cells whose centre lies inside it (a partition of the
    area: no cell is shared with a neighbouring area), ``"overlap"`` every cell that touches it.
    ``rings`` adds that many rings of neighbours around the cells found.

    Resolution 8 (edge about 450-540 m, 0.74 km2 on average) is the toy city's and near the
    paper's regions; choose it so that each cell has one satellite tile and enough POIs and trips
    to say something. ``hexagon_size_m`` is measured on the cells found (:func:`hexagon_size_m`).
    """
    if not isinstance(resolution, (int, np.integer)) or not 0 <= resolution <= 15:
        raise RawDataError(f"resolution must be an integer H3 resolution in 0..15; "
                           f"got {resolution!r}")
    given = [lon is not None or lat is not None, bbox is not None, area is not None]
    if sum(given) != 1:
        raise RawDataError("give exactly one of lon and lat (points), bbox or area")
    if given[0]:
        if lon is None or lat is None:
            raise RawDataError("give both lon and lat")
        lon_a, lat_a = _coords(pd.DataFrame({LON: lon, LAT: lat}), LON, LAT, "points", crs)
        null_island = (lon_a == 0) & (lat_a == 0)
        if null_island.any():  # each such point would add a hexagon in the Gulf of Guinea
            raise RawDataError(f"points: {_count_rows(null_island)} at exactly (0, 0), a common "
                               "placeholder for a missing location; drop those rows (or give "
                               "bbox= or area= to say where the city is)")
        cells = set(_cells(lon_a, lat_a, resolution))
    else:
        if bbox is not None:
            if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
                raise RawDataError("bbox must be (min_lon, min_lat, max_lon, max_lat) with "
                                   f"min < max; got {bbox!r}")
            shape = shapely.box(*bbox)
        else:
            shape = shapely.union_all(_read_geometries(area, "area"))
            if shape.is_empty or shape.geom_type not in ("Polygon", "MultiPolygon"):
                raise RawDataError(f"area must be a polygon or multipolygon; got {shape.geom_type}")
        shape = _to_wgs84(np.array([shape], dtype=object), crs, "area")[0]
        _check_lonlat(np.array([shape], dtype=object), ["bbox" if bbox is not None else "area"],
                      "area", crs)
        h3shape = h3.geo_to_h3shape(shapely.geometry.mapping(shape))
        if contain == "center":
            cells = set(h3.h3shape_to_cells(h3shape, resolution))
        elif contain == "overlap":
            cells = set(h3.h3shape_to_cells_experimental(h3shape, resolution, contain="overlap"))
        else:
            raise RawDataError(f"contain must be 'center' or 'overlap'; got {contain!r}")
        if not cells:
            raise RawDataError(f"no H3 cell of resolution {resolution} has its centre inside the "
                               "area; choose a finer resolution or contain='overlap'")
    for _ in range(int(rings)):
        cells |= {n for c in cells for n in h3.grid_disk(c, 1)}
    ids = sorted(cells)
    return Regions(cell_table(ids), h3_resolution=int(resolution),
                   hexagon_size_m=hexagon_size_m(ids))


def cell_table(cells: Sequence[str]) -> pd.DataFrame:
    """The ``regions.csv`` rows of H3 cells: centre and outline, indexed by ``region_id``."""
    lat, lon = np.round(np.array([h3.cell_to_latlng(c) for c in cells]), _DECIMALS).T
    outlines = [ring_wkt([(x, y) for y, x in h3.cell_to_boundary(c)]) for c in cells]
    index = pd.Index(list(cells), name=REGION_ID)
    return pd.DataFrame({LON: lon, LAT: lat, GEOMETRY: outlines}, index=index)


def hexagon_size_m(cells: Sequence[str]) -> float:
    """The mean centre-to-vertex distance (m) of these H3 cells, measured: a cell's size depends on
    where it lies (resolution 8: ~450 m in Beijing, ~535 m in New York)."""
    def size(cell: str) -> float:
        centre = h3.cell_to_latlng(cell)
        return float(np.mean([h3.great_circle_distance(centre, v, unit="m") for v in h3.cell_to_boundary(cell)]))
    return round(float(np.mean([size(c) for c in cells])), 3)


def polygon_regions(features, id: str | None = "id", crs: str | None = None) -> Regions:
    """Your own polygons (districts, census tracts, blocks) as regions.

    ``features`` is a GeoJSON FeatureCollection (a dict or a ``.geojson``/``.json`` path; ``id``
    names the property, or the feature's own ``id``), a table (DataFrame or CSV path) with a WKT
    column ``geometry`` and an id column ``id``, or a GeoDataFrame; ``crs=None`` means its own CRS,
    or WGS84 for the others. ``id=None`` numbers the regions ``0, 1, ...`` in input order. Invalid
    polygons (bow-ties from GIS exports) are repaired keeping their area. The centre is a point
    inside the polygon (``point_on_surface``): a centroid can fall outside an L- or ring-shaped region.
    """
    if isinstance(features, (str, os.PathLike)) and str(features).lower().endswith(".csv"):
        features = _read_table(features, "polygons", ids=[id] if id is not None else [])
    crs = _table_crs(features, crs)
    if isinstance(features, pd.DataFrame):
        shapes = getattr(features, "active_geometry_name", None)  # a GeoDataFrame's, whatever its name
        if shapes not in (None, GEOMETRY):
            features = features.rename(columns={shapes: GEOMETRY})
        _require(features, [GEOMETRY] + ([id] if id is not None else []), "polygons")
        column = features[GEOMETRY].to_numpy()
        if all(isinstance(g, shapely.Geometry) for g in column):  # already shapes (a GeoDataFrame's)
            geoms = column.astype(object)
        else:
            geoms = shapely.from_wkt(features[GEOMETRY].astype(str).to_numpy(), on_invalid="ignore")
        unread = pd.isna(geoms)
        if unread.any():
            raise RawDataError(f"polygons: column {GEOMETRY!r} holds text that is not WKT in {_count_rows(unread)}")
        if id is not None:
            _no_blanks(features, id, "polygons", "give every region an id")
        ids = features[id].astype(str).tolist() if id is not None else [str(i) for i in range(len(features))]
        where = _rows
    else:
        items = _features(features, "polygons")
        geoms = np.array([_shape(f) for f in items], dtype=object)
        ids = []
        for i, f in enumerate(items):
            props = f.get("properties") or {}
            if id is not None and id not in props and not (id == "id" and "id" in f):
                raise RawDataError(f"polygons: feature {i} has no property {id!r} (properties: "
                                   f"{sorted(props)}); pass id= the property that names the region")
            value = i if id is None else props[id] if id in props else f["id"]  # the feature's
            if value is None or str(value).strip() == "":
                raise RawDataError(f"polygons: feature {i} has no value for its id property "
                                   f"{id!r}; give every region an id")
            ids.append(str(value))
        where = functools.partial(_rows, noun="feature", first=0)  # GeoJSON has no rows
    bad = [ids[i] for i, g in enumerate(geoms)
           if g is None or g.is_empty or g.geom_type not in ("Polygon", "MultiPolygon")]
    if bad:
        raise RawDataError(f"polygons: {len(bad)} feature(s) are not polygons, e.g. {bad[:_SHOW]}")
    _no_duplicates(pd.Index(ids), _source("polygons", features) + f", id {id!r}", where)
    geoms = _to_wgs84(geoms, crs, "polygons")
    _check_lonlat(geoms, ids, "polygons", crs)
    geoms, wkt = _as_written(geoms, ids, "polygons")
    _warn_overlaps(geoms, ids)
    inner = shapely.point_on_surface(geoms)
    table = pd.DataFrame({LON: np.round(shapely.get_x(inner), _DECIMALS),
                          LAT: np.round(shapely.get_y(inner), _DECIMALS), GEOMETRY: wkt},
                         index=pd.Index(ids, name=REGION_ID))
    return Regions(table)  # the outlines read back from their WKT: what regions.csv will hold


def _warn_overlaps(geoms: np.ndarray, ids: list[str], share: float = 0.01) -> None:
    """Warn about pairs of regions overlapping by more than ``share`` of the smaller one: a point
    there goes to whichever comes first, and areal weighting counts there twice."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    common = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    smaller = np.minimum(shapely.area(geoms[left]), shapely.area(geoms[right]))
    over = np.flatnonzero(common > share * smaller)
    if len(over):
        shown = ", ".join(f"{ids[left[k]]!r} and {ids[right[k]]!r} ({common[k] / smaller[k]:.0%})"
                          for k in over[:_SHOW])
        warnings.warn(f"polygons: {len(over)} pair(s) of regions overlap by more than {share:.0%} of the smaller, "
                      f"{shown}{' ...' if len(over) > _SHOW else ''}; a point there goes to the first in order "
                      "and an areal-weighted count is counted twice: remove the overlaps (e.g. QGIS "
                      "'Fix geometries', then 'Difference')", stacklevel=3)


# --- points to regions ---
def assign_points(lon: Sequence[float], lat: Sequence[float], regions: Regions,
                  crs: str = WGS84) -> pd.Series:
    """The ``region_id`` of each point (x, y in ``crs``), missing outside every region; a point
    on a shared border goes to the first polygon. Missing or impossible coordinates raise
    :class:`RawDataError`.
    """
    return _assign(*_coords(pd.DataFrame({LON: lon, LAT: lat}), LON, LAT, "points", crs), regions)


def _assign(lon: np.ndarray, lat: np.ndarray, regions: Regions) -> pd.Series:
    """:func:`assign_points` for coordinates already checked and in WGS84."""
    if regions.h3_resolution is not None:
        cells = pd.Series(_cells(lon, lat, regions.h3_resolution), dtype=object)
        return cells.where(cells.isin(regions.ids)).rename(REGION_ID)
    point_i, region_i = regions.table.sindex.query(shapely.points(lon, lat), predicate="intersects")
    first = pd.Series(region_i, index=point_i).groupby(level=0).min()
    out = pd.Series([None] * len(lon), dtype=object, name=REGION_ID)
    out.iloc[first.index.to_numpy()] = regions.ids.to_numpy()[first.to_numpy()]
    return out


def count_points(lon: Sequence[float], lat: Sequence[float], regions: Regions,
                 crs: str = WGS84, outside: Outside = "warn") -> pd.Series:
    """How many of the points (x, y in ``crs``) lie in each region, 0 for none: crimes, arrests or
    shops as an indicator. Points outside every region are reported (``outside="raise"``: an
    error; ``"ignore"``: not, for a source known to cover more than the regions).
    """
    rid = assign_points(lon, lat, regions, crs)
    _handle_outside(rid.isna().to_numpy(), "points", "point(s)", outside)
    return rid.value_counts().reindex(regions.ids, fill_value=0).astype(np.int64).rename("count")


def pois_from_csv(source, regions: Regions, *, lon: str = "lon", lat: str = "lat",
                  category: str = "category", text: str | Sequence[str] | None = None,
                  outside: Outside = "warn", crs: str = WGS84) -> pd.DataFrame:
    """POIs (a CSV path or a DataFrame; ``lon``, ``lat`` name the x, y columns in ``crs``) as
    ``pois.csv`` rows ``region_id, category, text``. ``category`` becomes one token (spaces and
    slashes become ``_``, as eq. 7's corpus wants); ``text`` names the free-text column(s) (names,
    reviews), joined by spaces, or None. A POI outside every region is reported and left out.
    """
    texts = [text] if isinstance(text, str) else list(text or [])
    df = _read_table(source, "POIs", ids=[category, *texts])  # as written: "NA" is a category, "None" a name
    _require(df, [lon, lat, category] + texts, "POIs")
    x, y = _coords(df, lon, lat, _source("POIs", source), crs)
    _no_blanks(df, category, "POIs", "give every POI a category")
    rid = _assign(x, y, regions)
    keep = _handle_outside(rid.isna().to_numpy(), "POIs", "POI(s)", outside)
    cat = df[category].astype(str).str.strip().str.replace(r"[\s/]+", "_", regex=True)
    body = (df[texts].fillna("").astype(str).agg(" ".join, axis=1).str.strip() if texts
            else pd.Series("", index=df.index))
    return pd.DataFrame({REGION_ID: rid.to_numpy()[keep], CATEGORY: cat.to_numpy()[keep],
                         TEXT: body.to_numpy()[keep]})


def od_from_csv(source, regions: Regions, *,
                origin: str | tuple[str, str] = ("origin_lon", "origin_lat"),
                destination: str | tuple[str, str] = ("destination_lon", "destination_lat"),
                flow: str | None = None, outside: Outside = "warn", crs: str = WGS84) -> pd.DataFrame:
    """Trips (a CSV path or DataFrame) as the ``od.csv`` table ``origin, destination, flow``.

    ``origin`` and ``destination`` each name two columns (x, y of the trip end in ``crs``) or one
    (a ``region_id``). ``flow`` names a column of trip counts; None: one trip per row. Trips
    between the same regions are summed; one with an end outside every region (or naming an
    unknown one) is reported and left out. A trip within one region counts as its in- and outflow.
    """
    df = _read_table(source, "trips", ids=[end for end in (origin, destination) if isinstance(end, str)])
    cols = [c for end in (origin, destination) for c in ([end] if isinstance(end, str) else list(end))]
    _require(df, cols + ([flow] if flow else []), "trips")
    ends = []
    for name, end in (("origin", origin), ("destination", destination)):
        if isinstance(end, str):
            text = df[end].astype("string")
            rid = text.astype(object).where(text.isin(regions.ids), None)
        else:
            rid = _assign(*_coords(df, end[0], end[1], _source(f"trips ({name})", source), crs), regions)
        ends.append(rid.to_numpy())
    if flow:
        values = pd.to_numeric(df[flow], errors="coerce")
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise RawDataError(f"trips: column {flow!r} is not a finite non-negative number in {_count_rows(bad)}")
        values = values.to_numpy(dtype=float)
    else:
        values = np.ones(len(df))
    lost = pd.isna(ends[0]) | pd.isna(ends[1])
    by_id = isinstance(origin, str) or isinstance(destination, str)
    keep = _handle_outside(lost, "trips", "trip row(s) with an end", outside,
                           "outside every region or naming no region" if by_id else "outside every region")
    od = pd.DataFrame({ORIGIN: ends[0][keep], DESTINATION: ends[1][keep], FLOW: values[keep]})
    od = od.groupby([ORIGIN, DESTINATION], as_index=False, sort=True)[FLOW].sum()
    if np.allclose(od[FLOW], np.round(od[FLOW])):
        od[FLOW] = od[FLOW].round().astype(np.int64)
    return od


def images_from_folder(source, regions: Regions, *, root: str | os.PathLike | None = None,
                       path: str = "path", lon: str = "lon", lat: str = "lat", kind: str = "kind",
                       outside: Outside = "warn", crs: str = WGS84) -> pd.DataFrame:
    """Images listed in a table (a CSV path or DataFrame) with where they were taken.

    Columns: ``path`` (relative to ``root``: default the CSV's folder, for a DataFrame the working
    directory), ``lon``, ``lat`` (a tile's centre, a street view's camera; in ``crs``) and
    ``kind`` (a column, or ``"satellite"``/``"streetview"`` for every row). Returns ``region_id,
    kind, path`` (absolute), ``distance_m`` from the region centre. A region keeps at most one
    satellite image, the nearest; the others are reported. Unreadable files raise, naming rows.
    """
    df = _read_table(source, "images")
    if root is None:
        root = Path(source).parent if isinstance(source, (str, os.PathLike)) else Path.cwd()
    fixed_kind = kind if kind in IMAGE_KINDS and kind not in df.columns else None
    _require(df, [path, lon, lat] + ([] if fixed_kind else [kind]), "images")
    kinds = pd.Series(fixed_kind, index=df.index) if fixed_kind else df[kind].astype(str).str.strip().str.lower()
    bad = ~kinds.isin(IMAGE_KINDS)
    if bad.any():
        raise RawDataError(f"images: column {kind!r} must be one of {list(IMAGE_KINDS)}; "
                           f"{int(bad.sum())} row(s) are not, {_rows(bad)}")
    paths = [Path(root, str(p)).resolve() for p in df[path]]
    missing = np.array([not p.is_file() for p in paths], dtype=bool)
    if missing.any():
        raise RawDataError(f"images: {int(missing.sum())} file(s) do not exist, {_rows(missing)} "
                           f"(e.g. {paths[missing.argmax()]}); paths are relative to {Path(root).resolve()}")
    why = [image_problem(p) for p in paths]
    unread = np.array([w is not None for w in why], dtype=bool)
    if unread.any():
        first = unread.argmax()
        raise RawDataError(f"images: {int(unread.sum())} file(s) are not images the run can read, "
                           f"{_rows(unread)} (e.g. {paths[first]} {why[first]})")
    x, y = _coords(df, lon, lat, _source("images", source), crs)
    rid = _assign(x, y, regions)
    keep = _handle_outside(rid.isna().to_numpy(), "images", "image(s)", outside)
    rid, x, y = rid.to_numpy()[keep], x[keep], y[keep]
    centre = regions.table.loc[rid, [LON, LAT]].to_numpy()
    out = pd.DataFrame({REGION_ID: rid, KIND: kinds.to_numpy()[keep], PATH: np.array(paths, dtype=object)[keep],
                        "distance_m": np.round(_distance_m(x, y, centre[:, 0], centre[:, 1]), 1)})
    order = out[out[KIND] == SATELLITE].sort_values(["distance_m", PATH], kind="stable")
    extra = order.index[order[REGION_ID].duplicated()]
    if len(extra):
        warnings.warn(f"images: {len(extra)} satellite image(s) left out because their region already has "
                      "a nearer one (a region keeps at most one); use a finer resolution or one tile per "
                      "region", stacklevel=2)
        out = out.drop(index=extra)
    return out.reset_index(drop=True)


# --- indicators by area ---
def indicators_by_area(areas: Regions, values: pd.DataFrame, regions: Regions,
                       how: str | Mapping[str, str] = "density",
                       min_coverage: float | Mapping[str, float] = 0.5) -> pd.DataFrame:
    """Indicators published for coarser areas (districts, tracts) moved onto the regions.

    ``values`` is indexed by the areas' ids (or has them in its first column, as read from a CSV
    file: a table whose rows are numbered 0, 1, ... always takes its ids from there), one column per
    indicator. Each region takes from every area it overlaps in proportion to the overlap's
    surface (areal weighting, computed on a local equal-area projection):

    * ``how="count"`` for totals (people, crimes, shops): a region gets
      ``sum_a v_a * |a & r| / |a|``, the area's total spread evenly over its surface, so totals
      are kept where regions cover the areas;
    * ``how="density"`` for rates and averages (persons per km2, median rent): a region gets the
      overlap-weighted mean ``sum_a v_a * |a & r| / sum_a |a & r|``.

    ``how`` may be a dict per column. Why areal weighting: it needs nothing but the two sets of
    polygons and assumes only that a value is spread evenly over its area. Smarter
    (dasymetric) weights would spread it by buildings or POIs, but if those are also inputs of
    the model, the target then carries the model's own inputs and the R2 is flattering. Know the
    cost: every region inside one area gets that area's density, so the targets are smoother than
    reality, and neighbouring regions share one value. A random split then puts a test region's
    neighbours, and so its value, in the training set: a method that knows only where a region is
    scores well (location kNN), far better than on the spatial split. So the function warns with
    how many regions share their area's value; evaluate such a city on the spatial split.

    An area whose value is missing (NaN) is skipped: a density is then the mean over the
    overlaps with a value (the weights renormalise), a count gets nothing from it. A region whose
    surface is covered less than ``min_coverage`` by areas with a value gets NaN (reported): a
    count for a half-covered region would be too low, a density a guess. ``min_coverage=0``
    keeps every region that overlaps any area with a value (where the rest is water or parks,
    say, and a value from the part covered beats none); a region overlapping none is NaN
    regardless. Mark such indicators ``allow_missing`` (``build_city`` does this for columns with
    NaN). ``min_coverage`` may be a dict per column, as ``how``.
    """
    values = values.copy()
    # a table as pd.read_csv gives it (rows numbered 0, 1, ...) has the ids in its first column;
    # its row numbers must never be read as area ids, even where some of them are
    rows = values.index
    numbered = isinstance(rows, pd.RangeIndex) and (rows.start, rows.step) == (0, 1)
    if values.shape[1] > 1 and (numbered or not values.index.astype(str).isin(areas.ids).any()):
        values = values.set_index(values.columns[0])
    values.index = values.index.astype(str)
    _no_duplicates(values.index, "indicator values, area id", _rows)
    unknown = values.index.difference(areas.ids)
    if len(unknown):
        raise RawDataError(f"indicator values: {len(unknown)} area id(s) are not among the areas' "
                           f"polygons, e.g. {list(unknown[:_SHOW])}"
                           + _lost_zeros_hint(unknown, areas.ids))
    hows = {c: how for c in values.columns} if isinstance(how, str) else dict(how)
    per_column = isinstance(min_coverage, Mapping)
    if per_column and set(min_coverage) - set(values.columns):
        raise RawDataError("min_coverage names columns that values lacks: "
                           f"{sorted(set(min_coverage) - set(values.columns))}")
    coverages = {c: min_coverage.get(c, 0.5) if per_column else min_coverage
                 for c in values.columns}
    for col, least in coverages.items():
        if isinstance(least, bool) or not isinstance(least, numbers.Real) or not 0 <= least <= 1:
            which = f" for {col!r}" if per_column else ""
            raise RawDataError(f"min_coverage{which} must be in [0, 1]; got {least!r}")
    for col in values.columns:
        if hows.get(col) not in ("count", "density"):
            raise RawDataError(f"how for indicator {col!r} must be 'count' or 'density'; "
                               f"got {hows.get(col)!r}")
    numeric = values.apply(pd.to_numeric, errors="coerce")
    not_number = numeric.isna() & values.notna()
    if not_number.any().any():
        col = not_number.any().idxmax()
        raise RawDataError(f"indicator values: column {col!r} holds text that is not a number "
                           f"for area(s) {list(values.index[not_number[col]][:_SHOW])}")
    overlap, area_m2, region_m2 = _overlay(areas, regions)
    shared = _sharing_one_area(overlap)
    if shared:
        lie, share = ("lies", "shares") if shared == 1 else ("lie", "share")
        warnings.warn(f"indicators_by_area: {shared} of {len(regions)} regions {lie} within "
                      f"one area together with other regions and {share} its value (areal "
                      "weighting); a random train/test split then flatters the R2, as a test "
                      "region's neighbours in training hold its value: evaluate this city on the "
                      "spatial split",
                      UserWarning, stacklevel=2)
    out = pd.DataFrame(index=regions.ids)
    for col in values.columns:
        v = numeric[col].reindex(areas.ids)
        o = overlap.assign(v=v.reindex(overlap["area"]).to_numpy()).dropna(subset=["v"])
        in_region = o.groupby("region")["overlap_m2"].sum()
        covered = in_region.reindex(regions.ids, fill_value=0.0)
        if hows[col] == "count":
            share = o["overlap_m2"] / area_m2.reindex(o["area"]).to_numpy()
            value = (o["v"] * share).groupby(o["region"]).sum()
        else:
            value = (o["v"] * o["overlap_m2"]).groupby(o["region"]).sum() / in_region
        value = value.reindex(regions.ids)
        low = (covered / region_m2) < coverages[col]
        if low.any():
            are = "is" if low.sum() == 1 else "are"
            warnings.warn(f"indicator {col!r}: {int(low.sum())} of {len(regions)} regions {are} "
                          f"covered less than {coverages[col]:.0%} by areas with a value; "
                          f"their {col} is missing (NaN)", stacklevel=2)
        out[col] = value.where(~low)
    out.index.name = REGION_ID
    return out


# --- the city folder ---
def build_city(out: str | os.PathLike, regions: Regions, indicators: pd.DataFrame, *,
               log: bool | Mapping[str, bool] | None = None,
               pois: pd.DataFrame | None = None, od: pd.DataFrame | None = None,
               mobility: pd.DataFrame | None = None, images: pd.DataFrame | None = None,
               name: str = "My City", provenance: str = "",
               indicator_meta: Mapping[str, Indicator | Mapping | str] | None = None,
               max_missing_satellite: float = 0.5, copy_images: bool = True,
               overwrite: bool = False) -> Path:
    """Write a valid city folder from the converters' tables; return its path.

    ``indicators`` is indexed by ``region_id``. The modalities are the tables with rows
    (``images`` by kind, ``pois``, ``od`` or ``mobility``: ``region_id, inflow, outflow``). Images
    are copied (``copy_images=False``: symlinked) under ``images/<kind>/``. ``indicator_meta``: an
    :class:`~musecl.city.Indicator`, a dict of its fields, or a long name, per indicator; a column
    with missing values is marked ``allow_missing``, with a warning.

    ``log`` must be chosen for every indicator, as no default suits both kinds: ``True`` models
    ln(1 + x) (counts, densities, incomes: positive and skewed), ``False`` the value itself
    (fractions, shares, scores). Give a dict ``{"PD": True, "GREEN": False}`` or one bool for
    all; a ``log`` in ``indicator_meta`` counts as its choice.

    A problem raises :class:`~musecl.city.CityFormatError` and leaves nothing behind. An existing
    city folder at ``out`` is replaced only with ``overwrite=True``; any other folder never.
    """
    out = Path(out)
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and (not overwrite or not (out / "city.yaml").is_file()):
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace a city folder "
                              "(a folder without city.yaml is never replaced)")
    ind = indicators.copy()
    ind.index = ind.index.astype(str)
    _no_duplicates(ind.index, "indicators, region id", _rows)
    extra = ind.index.difference(regions.ids)
    if len(extra):
        raise RawDataError(f"indicators: {len(extra)} region id(s) are not regions, e.g. "
                           f"{list(extra[:_SHOW])}{_lost_zeros_hint(extra, regions.ids)}")
    ind = ind.reindex(regions.ids)
    meta_in = dict(indicator_meta or {})
    unknown = set(meta_in) - set(ind.columns)
    if unknown:
        raise RawDataError(f"indicator_meta names {sorted(unknown)}, which are not indicator columns "
                           f"{list(ind.columns)}")
    logs = _log_choices(log, meta_in, list(ind.columns))
    metas = {}
    for col in ind.columns:
        spec = meta_in.get(col, {})
        if isinstance(spec, Indicator):
            metas[col] = spec
            continue
        spec = {"long_name": spec} if isinstance(spec, str) else dict(spec)
        spec["log"] = logs[col]
        if "allow_missing" not in spec and ind[col].isna().any():
            warnings.warn(f"indicator {col!r} is missing for {int(ind[col].isna().sum())} of {len(ind)} regions; "
                          "marked allow_missing (those regions are left out of its evaluation)", stacklevel=2)
            spec["allow_missing"] = True
        metas[col] = Indicator(name=col, long_name=str(spec.pop("long_name", col)), **spec)

    images, pois, od, mobility = (t if t is not None and len(t) else None for t in (images, pois, od, mobility))
    modalities = [k for k in IMAGE_KINDS if images is not None and (images[KIND] == k).any()]
    if pois is not None:
        modalities.append(POI)
    if od is not None or mobility is not None:
        modalities.append(MOBILITY)
    meta = CityMeta(name=name, crs="EPSG:4326", modalities=tuple(modalities), indicators=metas,
                    hexagon_size_m=regions.hexagon_size_m, provenance=provenance,
                    max_missing_satellite=max_missing_satellite)

    with folder_built_beside(out) as tmp:
        image_rows = _place_images(tmp, images, copy_images) if images is not None else None
        if mobility is not None and REGION_ID in mobility.columns:
            mobility = mobility.set_index(REGION_ID)
        write_city(tmp, meta, regions.table, ind, images=image_rows, pois=pois, od=od, mobility=mobility)
        problems = validate_city(tmp)
        if problems:
            raise CityFormatError(problems)
    return out


def _log_choices(log, meta_in: Mapping, columns: list[str]) -> dict[str, bool]:
    """Each indicator's ``log``, from its metadata or ``log``; an error lists those without one."""
    if log is not None and not isinstance(log, (bool, np.bool_, Mapping)):
        raise RawDataError(f"log must be True, False or a dict of indicator -> True/False; got {log!r}")
    given = dict(log) if isinstance(log, Mapping) else {}
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise RawDataError(f"log names {unknown}, which are not indicator columns {columns}")
    choices = {}
    for col in columns:
        spec = meta_in.get(col)
        own = spec.log if isinstance(spec, Indicator) else (spec.get("log") if isinstance(spec, Mapping) else None)
        if col in given and own is not None and bool(given[col]) != bool(own):
            raise RawDataError(f"indicator {col!r}: log={given[col]!r} but its indicator_meta says log={own!r}")
        choice = own if own is not None else given.get(col, log if isinstance(log, (bool, np.bool_)) else None)
        if choice is not None:
            if not isinstance(choice, (bool, np.bool_)):
                raise RawDataError(f"indicator {col!r}: log must be True or False; got {choice!r}")
            choices[col] = bool(choice)
    missing = [c for c in columns if c not in choices]
    if missing:
        raise RawDataError(
            f"build_city: choose log for indicator(s) {missing}: True models ln(1 + x) (counts, densities, "
            "incomes), False the value itself (fractions, shares, scores). Pass e.g. "
            f"log={{{missing[0]!r}: False}}, or log=True (or False) for every indicator.")
    return choices


# --- helpers ---
def _read_table(source, what: str, ids: Sequence[str] = ()) -> pd.DataFrame:
    """A DataFrame as given, or a CSV with the ``ids`` columns read as text as written (``"01"``)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return read_csv_ids(path, ids=tuple(ids))


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise RawDataError(f"{what}: missing column(s) {missing}; found {list(df.columns)}. "
                           "Name the columns with the function's keyword arguments (e.g. lon='x').")


def _no_blanks(df: pd.DataFrame, col: str, what: str, hint: str) -> None:
    blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
    if blank.any():
        raise RawDataError(f"{what}: column {col!r} is empty in {_count_rows(blank)}; {hint}")


def _rows(mask: pd.Series | np.ndarray, noun: str = "row", first: int = 2) -> str:
    """'rows 2, 5, 9' in spreadsheet numbering (header is row 1), the first few only."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i + first) for i in idx[:_SHOW])
    return f"{noun}{'s' if len(idx) > 1 else ''} {shown}{' ...' if len(idx) > _SHOW else ''}"


def _source(what: str, source) -> str:
    """The name of an input in messages: with its file when it came from one."""
    return f"{what} ({source})" if isinstance(source, (str, os.PathLike)) else what


def _no_duplicates(ids: pd.Index, what: str, where) -> None:
    """Refuse repeated ids (reindexing would fail later); ``where`` turns a mask into 'rows 2, 5'."""
    dup = ids.duplicated(keep=False)
    if dup.any():
        shown = list(pd.unique(ids[dup]))
        raise RawDataError(f"{what}: duplicate id(s) {shown[:_SHOW]}{' ...' if len(shown) > _SHOW else ''} "
                           f"in {where(dup)}; every id must have one row")


def _lost_zeros_hint(unknown, known) -> str:
    """A hint where unknown ids are known ones that pandas stripped of leading zeros ("7", "007")."""
    stripped = {str(k).lstrip("0"): k for k in known if str(k).lstrip("0") != str(k)}
    pairs = [(u, stripped[str(u)]) for u in unknown if str(u) in stripped]
    if not pairs:
        return ""
    return (f"; {pairs[0][0]!r} looks like {pairs[0][1]!r} without its leading zeros: read the "
            "id column as text (pd.read_csv(..., dtype={'id': str}))")


def _count_rows(mask: np.ndarray) -> str:
    return f"{int(np.sum(mask))} row(s), {_rows(mask)}"


def _coords(df: pd.DataFrame, lon: str, lat: str, what: str,
            crs: str = WGS84) -> tuple[np.ndarray, np.ndarray]:
    """The two columns as WGS84 lon, lat (from ``crs``); every bad value is reported in one error."""
    x = pd.to_numeric(df[lon], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df[lat], errors="coerce").to_numpy(dtype=float)
    given = np.isfinite(x) & np.isfinite(y)
    out_x, out_y = np.full(len(x), np.nan), np.full(len(y), np.nan)
    out_x[given], out_y[given] = _reproject(x[given], y[given], crs, what)
    problems = [f"column {col!r} is empty or not a number in {_count_rows(~np.isfinite(v))}"
                for col, v in ((lon, x), (lat, y)) if not np.isfinite(v).all()]
    wgs84 = _is_wgs84(crs, what)
    for col, v, limit in ((lon, out_x, 180), (lat, out_y, 90)):
        outside = given & ~(np.abs(v) <= limit)
        if outside.any() and wgs84:
            problems.append(f"column {col!r} is outside [-{limit}, {limit}] in {_count_rows(outside)}")
    failed = given & ~((np.abs(out_x) <= 180) & (np.abs(out_y) <= 90))
    if failed.any() and not wgs84:
        problems.append(f"columns {lon!r}, {lat!r} do not reproject from {crs} to a longitude and "
                        f"latitude in {_count_rows(failed)}")
    if problems:
        bad = ~given | failed
        if not failed.any():
            hint = "give every row both coordinates"
        elif wgs84:
            hint = ("Coordinates are read as WGS84 longitude/latitude degrees; if these are projected "
                    "(metres, say), pass crs= their CRS (e.g. crs='EPSG:32633'); if lon and lat are "
                    "swapped, swap the column names")
        else:
            hint = f"is crs={crs!r} the coordinates' CRS?"
        raise RawDataError(f"{what}: bad coordinates in {int(bad.sum())} of {len(bad)} row(s): "
                           + "; ".join(problems) + f". {hint}.")
    return out_x, out_y


def _cells(lon: np.ndarray, lat: np.ndarray, resolution: int) -> list[str]:
    return [h3.latlng_to_cell(float(b), float(a), resolution) for a, b in zip(lon, lat)]


def _handle_outside(lost: np.ndarray, what: str, noun: str, outside: Outside,
                    where: str = "outside every region") -> np.ndarray:
    """Keep-mask; the lost rows are reported as a warning or an error, or not with "ignore"."""
    if outside not in ("warn", "raise", "ignore"):
        raise RawDataError(f"outside must be 'warn', 'raise' or 'ignore'; got {outside!r}")
    n = int(lost.sum())
    if n and outside != "ignore":
        msg = (f"{what}: {n} of {len(lost)} {noun} {where} ({_rows(lost)}) "
               f"{'cannot be placed' if outside == 'raise' else 'are left out'}")
        if outside == "raise":
            raise RawDataError(msg + "; choose regions that cover them, or pass outside='warn' to leave them out")
        warnings.warn(msg, stacklevel=3)
    return ~lost


def _distance_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance (haversine, spherical Earth) in metres."""
    lon1, lat1, lon2, lat2 = (np.deg2rad(np.asarray(v, dtype=float)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _features(obj, what: str) -> list[dict]:
    """GeoJSON features from a path, a FeatureCollection, a Feature or a bare geometry."""
    if isinstance(obj, (str, os.PathLike)):
        if not Path(obj).is_file():
            raise FileNotFoundError(f"{what}: {obj} is not a file (nor WKT text)")
        obj = json.loads(Path(obj).read_text())
    if isinstance(obj, Mapping):
        if obj.get("type") == "FeatureCollection":
            return list(obj.get("features") or [])
        if obj.get("type") == "Feature":
            return [dict(obj)]
        if "coordinates" in obj:
            return [{"type": "Feature", "geometry": dict(obj), "properties": {}}]
    raise RawDataError(f"{what}: expected a GeoJSON FeatureCollection, Feature or geometry (dict or "
                       f".geojson path), got {type(obj).__name__}")


def _read_geometries(obj, what: str) -> list:
    if isinstance(obj, shapely.Geometry):
        return [obj]
    if isinstance(obj, str) and obj.lstrip().upper().startswith(("POLYGON", "MULTIPOLYGON")):
        try:
            return [shapely.from_wkt(obj)]
        except shapely.errors.GEOSException as exc:
            raise RawDataError(f"{what}: cannot read the WKT: {exc}") from None
    geoms = [_shape(f) for f in _features(obj, what)]
    if any(g is None for g in geoms):
        raise RawDataError(f"{what}: {sum(g is None for g in geoms)} feature(s) have no geometry (null)")
    return geoms


def _shape(feature: Mapping):
    """A GeoJSON feature's geometry as shapely, or None where it is null (valid GeoJSON)."""
    return shapely.geometry.shape(feature["geometry"]) if feature.get("geometry") else None


def _table_crs(features, crs):
    """``crs``, else the GeoDataFrame's own, else WGS84; a ``crs`` contradicting the table's raises."""
    own = getattr(features, "crs", None) if isinstance(features, pd.DataFrame) else None
    if crs is None:
        return WGS84 if own is None else own
    if own is not None and _crs(crs, "polygons") != _crs(own, "polygons"):
        raise RawDataError(f"polygons: crs={crs!r} but the table says its coordinates are in {own}; "
                           "leave crs out, or reproject the table first (GeoDataFrame.to_crs)")
    return crs


def _crs(crs, what: str):
    try:
        return pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise RawDataError(f"{what}: crs={crs!r} is not a CRS pyproj knows ({exc}); "
                           "give e.g. 'EPSG:32633'") from None


def _is_wgs84(crs, what: str) -> bool:
    return _crs(crs, what) == pyproj.CRS.from_epsg(4326)


def _reproject(x: np.ndarray, y: np.ndarray, crs, what: str) -> tuple[np.ndarray, np.ndarray]:
    """x, y in ``crs`` as WGS84 lon, lat (inf where it cannot be transformed): the one place
    where points and polygons change CRS."""
    if _is_wgs84(crs, what):
        return x, y
    return pyproj.Transformer.from_crs(_crs(crs, what), WGS84, always_xy=True).transform(x, y, errcheck=False)


def _to_wgs84(geoms: np.ndarray, crs, what: str = "polygons") -> np.ndarray:
    if _is_wgs84(crs, what):
        return geoms
    return shapely.transform(geoms, lambda xy: np.column_stack(_reproject(xy[:, 0], xy[:, 1], crs, what)))


def _check_lonlat(geoms: np.ndarray, ids: Sequence[str], what: str, crs) -> None:
    """Refuse polygons whose coordinates cannot be WGS84 lon/lat (projected ones read as degrees)."""
    bad = ~(np.abs(shapely.bounds(geoms)) <= [180, 90, 180, 90]).all(axis=1)
    if bad.any():
        hint = ("if they are projected (metres, say), pass crs= their CRS (e.g. crs='EPSG:32633')"
                if _is_wgs84(crs, what) else f"is crs={crs!r} their CRS?")
        shown = list(np.asarray(ids, dtype=object)[bad][:_SHOW])
        raise RawDataError(f"{what}: {int(bad.sum())} polygon(s) have coordinates outside longitude [-180, 180] "
                           f"and latitude [-90, 90] in WGS84, e.g. {shown}; {hint}")


def _as_written(geoms: np.ndarray, ids: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Repaired polygons (area kept) and their WKT with 7 decimals, valid as read back: rounding
    can make a thin notch's edges cross, and GEOS overlays then fail, so such polygons are
    snapped to the 1e-7 grid (``shapely.set_precision`` keeps them valid) and written from there."""
    geoms = shapely.make_valid(np.asarray(geoms, dtype=object), method="structure", keep_collapsed=False)
    wkt = shapely.to_wkt(geoms, rounding_precision=_DECIMALS)
    broken = ~shapely.is_valid(shapely.from_wkt(wkt))
    if broken.any():
        geoms[broken] = shapely.set_precision(geoms[broken], 10.0 ** -_DECIMALS)
        wkt[broken] = shapely.to_wkt(geoms[broken], rounding_precision=_DECIMALS)
        still = broken & ~shapely.is_valid(shapely.from_wkt(wkt))
        wkt[still] = shapely.to_wkt(geoms[still], rounding_precision=-1)  # not expected: full precision
    empty = shapely.is_empty(geoms)
    if empty.any():
        shown = list(np.asarray(ids, dtype=object)[empty][:_SHOW])
        raise RawDataError(f"{what}: {int(empty.sum())} polygon(s) have no area once repaired and written with "
                           f"{_DECIMALS} decimals (about 1 cm), e.g. {shown}")
    return geoms, wkt


def _overlay(areas: Regions, regions: Regions) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Overlap surfaces (m2) of every intersecting (area, region) pair, found with the regions'
    spatial index (no all-pairs comparison), on a local equal-area projection."""
    lon0, lat0 = regions.table[LON].mean(), regions.table[LAT].mean()
    laea = pyproj.CRS.from_proj4(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")

    def repaired(g: gpd.GeoSeries) -> gpd.GeoSeries:  # Regions made elsewhere may hold invalid polygons
        g = g.to_crs(laea)
        bad = ~g.is_valid
        g[bad] = shapely.make_valid(g[bad].to_numpy(), method="structure", keep_collapsed=False)
        return g

    a, r = repaired(areas.table.geometry), repaired(regions.table.geometry)
    ai, ri = r.sindex.query(a.to_numpy(), predicate="intersects")
    a, r = a.to_numpy(), r.to_numpy()
    try:
        surface = shapely.area(shapely.intersection(a[ai], r[ri]))
    except shapely.errors.GEOSException:  # find the pair, and try GEOS's snap-rounding overlay on it
        surface = np.array([shapely.area(_intersection(a[i], r[j], areas.ids[i], regions.ids[j]))
                            for i, j in zip(ai, ri)])
    overlap = pd.DataFrame({"area": areas.ids.to_numpy()[ai], "region": regions.ids.to_numpy()[ri],
                            "overlap_m2": surface})
    overlap = overlap[overlap["overlap_m2"] > 0]
    return (overlap, pd.Series(shapely.area(a), index=areas.ids),
            pd.Series(shapely.area(r), index=regions.ids))


def _intersection(area, region, area_id: str, region_id: str):
    """One overlap, retried on a 1 mm grid (robust to near-coincident edges); a failure names the area."""
    try:
        return shapely.intersection(area, region)
    except shapely.errors.GEOSException:
        try:
            return shapely.intersection(area, region, grid_size=1e-3)
        except shapely.errors.GEOSException as exc:
            raise RawDataError(f"indicator areas: the overlap of area {area_id!r} with region {region_id!r} "
                               f"cannot be computed ({exc}); repair that area's polygon (shapely.make_valid) "
                               "or read the areas with polygon_regions") from None


def _sharing_one_area(overlap: pd.DataFrame) -> int:
    """How many regions lie (99%) within an area holding others: areal weighting gives them one value."""
    by_region = overlap.groupby("region")["overlap_m2"]
    top = overlap.loc[by_region.idxmax()]
    per_area = top["area"][top["overlap_m2"].to_numpy() >= 0.99 * by_region.sum().to_numpy()].value_counts()
    return int(per_area[per_area > 1].sum())


def _place_images(root: Path, images: pd.DataFrame, copy: bool) -> pd.DataFrame:
    _require(images, [REGION_ID, KIND, PATH], "images")
    rows = []
    nth = images.groupby([REGION_ID, KIND], sort=False).cumcount()  # 0, 1, ... per region and kind
    for rid, kind, src, k in zip(images[REGION_ID], images[KIND], images[PATH], nth):
        src, stem = Path(src), rid if kind == SATELLITE else f"{rid}_{k}"
        rel = Path("images") / kind / f"{stem}{src.suffix.lower()}"
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(src, dest)
        else:
            dest.symlink_to(src.resolve())
        rows.append((rid, kind, rel.as_posix()))
    return pd.DataFrame(rows, columns=[REGION_ID, KIND, PATH])


__all__ = ["RawDataError", "Regions", "assign_points", "build_city", "count_points", "hexagon_regions",
           "images_from_folder", "indicators_by_area", "od_from_csv", "pois_from_csv", "polygon_regions"]
