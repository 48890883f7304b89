"""The MuseCL paper's Beijing data as a city folder: 1,111 labelled hexagons and 15 image regions.

From the public demo repository (``chicosirius/MuseCL-demo``):

* three headerless CSVs (``lat, lon, value``), one row per region centre on the official lattice
  (:data:`BEIJING_LATTICE`, from which the hexagons are built): ``pop_density.csv`` -> **PD**
  (WorldPop), ``res_density.csv`` -> **HD** (Lianjia housing, 515 of the 1,111 regions) and
  ``poi_count.csv`` -> **NP**; written raw with ``log: true``, as the paper models ln(1 + x).
* ``images/<id>_<lon>,<lat>[_]/``: for 15 regions a satellite crop ``<id>.jpg`` and 1-7 Baidu
  street-view panoramas. The folder's lon/lat is 300-1,050 m off the lattice centre in varying
  directions but inside the region's hexagon: the id decides, and the converter checks that.

The 15 image regions stay inside the labelled city rather than a folder of their own, which
would only copy lattice, labels and provenance (nothing trains on 15 regions anyway). The cost:
98.6 % of the regions have no image, so only location baselines can be scored on the whole city.
:func:`beijing_city_from_files` works on plain paths so tests can feed it fixtures.
"""
from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from PIL import Image
from shapely.geometry import Point, Polygon

from musecl.city import (
    GEOMETRY,
    IMAGES_CSV,
    KIND,
    LAT,
    LON,
    PATH,
    REGION_ID,
    SATELLITE,
    STREETVIEW,
    CityMeta,
    Indicator,
    write_city,
)
from musecl.datasets.from_raw import ring_wkt
from musecl.datasets.sources import files_of, locate, registry

DATASET = "beijing"
DEMO = "beijing/musecl_demo"
INDICATOR_FILES = {  # indicator -> registry path of its CSV (no header: lat, lon, value)
    "PD": f"{DEMO}/pop_density.csv",
    "HD": f"{DEMO}/res_density.csv",
    "NP": f"{DEMO}/poi_count.csv",
}
INDICATORS = {
    "PD": Indicator("PD", "Population density (WorldPop)", "persons per km2", log=True),
    "HD": Indicator("HD", "Housing density (Lianjia)", "count per region", log=True, allow_missing=True),
    "NP": Indicator("NP", "Number of POIs", "count per region", log=True),
}
IMAGES_PREFIX = f"{DEMO}/images/"
# tolerance for "this centre is on the lattice", in lattice steps (1e-4 steps: ~0.35 m east-west)
ON_LATTICE_TOL = 1e-4
# an image folder's lon/lat must fall inside its region's hexagon, give or take this much
FOLDER_TOL_DEG = 0.002
# street-view panoramas (360 degrees across) are cut into this many square views; the square is
# centred at this fraction of the height, which cuts most sky and the camera car's roof
STREETVIEW_VIEWS = 4
PANORAMA_CENTRE = 0.583
DEFAULT_IMAGE_SIZE = 256
MAX_MISSING_SATELLITE = 0.99  # the 15 image regions stay in the labelled city (module docstring)


class LatticeError(ValueError):
    """A coordinate is not a centre of the lattice; the message says which file, row and how far off."""


# --- the lattice ---
@dataclass(frozen=True)
class HexLattice:
    """An offset point lattice whose cells are flat-top hexagons.

    Row ``r`` (counted towards the south) and column ``c`` have the centre
    ``lon = base_lon + (c + shift * (r % 2)) * lon_step``, ``lat = base_lat - r * lat_step``,
    and region id ``r * n_cols + c``. Each lattice row is a half-row of flat-top hexagons of
    size s = lon_step / 3 (centre to vertex, in degrees of longitude): neighbours sit at
    (+-lon_step / 2, +-lat_step) and (0, +-2 lat_step), so the hexagon's vertices are
    (+-lon_step / 3, 0) and (+-lon_step / 6, +-lat_step). The hexagons tile the plane in degrees
    exactly; in metres they are regular where lon_step / 3 * cos(lat) * sqrt(3) / 2 = lat_step
    (about 39.9 N for Beijing's lattice) and very nearly so across the city.
    """

    base_lon: float
    base_lat: float
    lon_step: float
    lat_step: float
    n_rows: int
    n_cols: int
    shift: float = 0.5  # odd rows are shifted east by this many lon steps (a multiple of 1/6)

    @property
    def n_cells(self) -> int:
        return self.n_rows * self.n_cols

    def row_col(self, region_id: int | Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(region_id, dtype=np.int64)
        bad = np.atleast_1d(ids)[np.atleast_1d((ids < 0) | (ids >= self.n_cells))]
        if len(bad):
            raise LatticeError(f"region id(s) {bad[:5].tolist()} are outside the lattice "
                               f"(0..{self.n_cells - 1})")
        return ids // self.n_cols, ids % self.n_cols

    def centre(self, region_id: int | Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) of one or more region ids."""
        row, col = self.row_col(region_id)
        lon = self.base_lon + (col + self.shift * (row % 2)) * self.lon_step
        lat = self.base_lat - row * self.lat_step
        return lon, lat

    def locate(self, lon, lat, tol: float = ON_LATTICE_TOL) -> tuple[np.ndarray, np.ndarray]:
        """Region ids of centres, and for each the distance to the nearest lattice point in steps
        (max of the row and column offsets). Ids of points off the lattice (distance > ``tol``)
        or outside it are -1; :func:`lattice_ids` turns those into an error."""
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        row_f = (self.base_lat - lat) / self.lat_step
        row = np.round(row_f).astype(np.int64)
        col_f = (lon - self.base_lon) / self.lon_step - self.shift * (row % 2)
        col = np.round(col_f).astype(np.int64)
        off = np.maximum(np.abs(row_f - row), np.abs(col_f - col))
        inside = (row >= 0) & (row < self.n_rows) & (col >= 0) & (col < self.n_cols)
        ids = np.where((off <= tol) & inside, row * self.n_cols + col, -1)
        return ids, off

    def hexagon(self, region_id: int) -> list[tuple[float, float]]:
        """The six vertices (lon, lat), counter-clockwise from the east vertex.

        Computed from integer positions (sixths of a lon step, whole rows), not as centre +
        offset, so a vertex two neighbours share has bit-identical coordinates in both."""
        row, col = (int(v) for v in self.row_col(region_id))
        u = 6 * col + round(6 * self.shift) * (row % 2)  # the centre, in sixths of a lon step

        def vertex(du: int, drow: int) -> tuple[float, float]:
            return (self.base_lon + (u + du) * self.lon_step / 6,
                    self.base_lat - (row - drow) * self.lat_step)

        return [vertex(du, dr) for du, dr in ((2, 0), (1, 1), (-1, 1), (-2, 0), (-1, -1), (1, -1))]

    def hexagon_size_m(self, lat: float | None = None) -> float:
        """Centre-to-vertex size in metres at latitude ``lat`` (default: the lattice's middle
        row)."""
        if lat is None:
            lat = self.base_lat - (self.n_rows - 1) / 2 * self.lat_step
        return self.lon_step / 3 * math.radians(1) * 6_371_000 * math.cos(math.radians(lat))


BEIJING_LATTICE = HexLattice(base_lon=115.4194, base_lat=41.0647, lon_step=0.04062224,
                             lat_step=0.008993, n_rows=182, n_cols=53, shift=0.5)


def lattice_ids(lat, lon, lattice: HexLattice = BEIJING_LATTICE, where: str = "coordinates",
                tol: float = ON_LATTICE_TOL) -> np.ndarray:
    """Region ids of (lat, lon) centres; :class:`LatticeError` naming every point off the lattice."""
    ids, off = lattice.locate(lon, lat, tol)
    bad = np.flatnonzero(ids < 0)
    if len(bad):
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        lines = [f"  row {i + 1}: lat {float(lat[i])!r}, lon {float(lon[i])!r} " + (
                 f"is {off[i]:.3g} steps from the nearest lattice centre" if off[i] > tol
                 else "is a lattice point outside the lattice's rows and columns") for i in bad[:10]]
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise LatticeError(
            f"{where}: {len(bad)} centre(s) are not on the lattice (base {lattice.base_lon} E, "
            f"{lattice.base_lat} N, steps {lattice.lon_step} x {lattice.lat_step} deg, "
            f"{lattice.n_rows} x {lattice.n_cols}; tolerance {tol} steps):\n" + "\n".join(lines) + more
            + "\nCheck the column order (lat, lon, value) and that the file belongs to this lattice.")
    return ids


# --- reading the raw files ---
def read_indicator_csv(path: str | Path, name: str = "value") -> pd.Series:
    """One headerless ``lat, lon, value`` CSV as a Series indexed by region id (str)."""
    path = Path(path)
    table = pd.read_csv(path, header=None)
    if table.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 columns without a header (lat, lon, value); got {table.shape[1]}")
    table.columns = ["lat", "lon", "value"]
    for col in table.columns:
        values = pd.to_numeric(table[col], errors="coerce")
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise ValueError(f"{path}, row {i + 1}: {col} {table[col].iloc[i]!r} is not a number")
        table[col] = values
    ids = lattice_ids(table["lat"], table["lon"], where=str(path))
    series = pd.Series(table["value"].to_numpy(), index=pd.Index(ids.astype(str), name=REGION_ID), name=name)
    dup = series.index.duplicated()
    if dup.any():
        raise ValueError(f"{path}: region(s) {series.index[dup][:5].tolist()} appear more than once")
    return series


_FOLDER = re.compile(r"^(?P<id>\d+)_(?P<lon>-?[\d.]+),(?P<lat>-?[\d.]+)_?$")


def parse_image_folder(name: str) -> tuple[str, float, float]:
    """``"7868_116.4013,39.7307"`` (a trailing ``_`` allowed) -> (region id, lon, lat)."""
    match = _FOLDER.match(name)
    if not match:
        raise ValueError(f"image folder {name!r} is not named <region id>_<lon>,<lat>")
    return match["id"], float(match["lon"]), float(match["lat"])


def group_image_files(files: Mapping[str, str | Path]) -> dict[str, dict]:
    """``{relative path under images/: local path}`` -> per region id: ``satellite`` (the
    ``<id>.jpg``), ``streetview`` (the other files, sorted), ``folder``, ``lon``, ``lat``."""
    regions: dict[str, dict] = {}
    for rel, local in sorted(files.items()):
        parts = Path(rel).parts
        if len(parts) != 2:
            raise ValueError(f"image {rel!r}: expected <folder>/<file>")
        rid, lon, lat = parse_image_folder(parts[0])
        entry = regions.setdefault(rid, {"folder": parts[0], "lon": lon, "lat": lat,
                                         "satellite": None, "streetview": []})
        if entry["folder"] != parts[0]:
            raise ValueError(f"region {rid} has two image folders: {entry['folder']!r} and {parts[0]!r}")
        if Path(parts[1]).stem == rid:
            entry["satellite"] = (rel, Path(local))
        else:
            entry["streetview"].append((rel, Path(local)))
    for rid, entry in regions.items():
        if entry["satellite"] is None:
            raise ValueError(f"image folder {entry['folder']!r} has no satellite crop {rid}.jpg")
    return regions


# --- images ---
def square_crop(image, size: int | None):
    """The central square of an image, resized to ``size`` (None: kept at its size)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = image.crop((left, top, left + side, top + side))
    return out.resize((size, size), Image.BILINEAR) if size else out


def panorama_views(image, n_views: int = STREETVIEW_VIEWS, size: int | None = DEFAULT_IMAGE_SIZE,
                   centre: float = PANORAMA_CENTRE) -> list:
    """A 360-degree panorama cut into ``n_views`` square views side by side, centred vertically
    at ``centre`` of the height, resized to ``size``: the encoders squash non-square inputs, which
    would narrow every building (equirectangular pixels, not a perspective reprojection).
    """
    w, h = image.size
    side = min(w // n_views, h)
    top = int(round(min(max(centre * h - side / 2, 0), h - side)))
    views = [image.crop((k * side, top, (k + 1) * side, top + side)) for k in range(n_views)]
    return [view.resize((size, size), Image.BILINEAR) for view in views] if size else views


def _write_images(root: Path, grouped: dict[str, dict], image_size: int | None) -> pd.DataFrame:
    """Copy (``image_size=None``) or square and resize each region's images into its folder."""
    rows = []
    for rid, entry in sorted(grouped.items(), key=lambda kv: int(kv[0])):
        folder = root / "images" / rid
        folder.mkdir(parents=True, exist_ok=True)
        items = [(SATELLITE, entry["satellite"]), *((STREETVIEW, e) for e in entry["streetview"])]
        for kind, (rel, src) in items:
            stem = "satellite" if kind == SATELLITE else f"sv_{src.stem}"
            if image_size is None:
                targets = [folder / f"{stem}{src.suffix.lower()}"]
                shutil.copyfile(src, targets[0])
            else:
                with Image.open(src) as im:
                    im = im.convert("RGB")
                    views = ([square_crop(im, image_size)] if kind == SATELLITE
                             else panorama_views(im, STREETVIEW_VIEWS, image_size))
                targets = [folder / (f"{stem}.png" if kind == SATELLITE else f"{stem}_v{k}.png")
                           for k in range(len(views))]
                for view, target in zip(views, targets):
                    view.save(target)
            rows += [(rid, kind, t.relative_to(root).as_posix(), rel) for t in targets]
    return pd.DataFrame(rows, columns=[REGION_ID, KIND, PATH, "source"])


# --- the city ---
def beijing_city_from_files(out: str | Path, indicator_files: Mapping[str, str | Path],
                            image_files: Mapping[str, str | Path] | None = None,
                            image_size: int | None = DEFAULT_IMAGE_SIZE,
                            provenance: str = "") -> Path:
    """Write the city folder from local files.

    ``indicator_files``: ``PD``, ``HD``, ``NP`` -> headerless ``lat, lon, value`` CSV;
    ``image_files``: path under the demo's ``images/`` -> local file. The regions are the union of
    the CSVs' centres, checked to lie on :data:`BEIJING_LATTICE`. ``image_size``: None copies the
    images; a number writes the satellite crop's central square and :data:`STREETVIEW_VIEWS` square
    views of each panorama at that size, as PNG. Replaces ``out`` if it holds an earlier conversion.
    """
    lattice = BEIJING_LATTICE
    unknown = sorted(set(indicator_files) - set(INDICATORS))
    if unknown:
        raise ValueError(f"unknown indicator(s) {unknown}; known: {sorted(INDICATORS)}")
    values = {k: read_indicator_csv(v, k) for k, v in indicator_files.items()}
    ids = sorted(set().union(*(s.index for s in values.values())), key=int)
    index = pd.Index(ids, name=REGION_ID)
    lon, lat = lattice.centre([int(i) for i in ids])
    outlines = [ring_wkt(lattice.hexagon(int(i)), decimals=8) for i in ids]  # as written before
    regions = pd.DataFrame({LON: lon, LAT: lat, GEOMETRY: outlines}, index=index)
    indicators = pd.DataFrame({k: values[k].reindex(index) for k in INDICATORS if k in values}, index=index)
    meta_indicators = {k: INDICATORS[k] for k in indicators.columns}
    for k, ind in meta_indicators.items():
        if indicators[k].isna().any() and not ind.allow_missing:
            raise ValueError(f"indicator {k} has no value for {int(indicators[k].isna().sum())} regions "
                             f"(e.g. {indicators.index[indicators[k].isna()][:5].tolist()}) and may not be missing")

    out = Path(out)
    if out.exists():
        if not (out / "city.yaml").exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not a city folder; refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    images = None
    modalities: tuple[str, ...] = ()
    image_notes = {}
    if image_files:
        grouped = group_image_files(image_files)
        not_regions = sorted(set(grouped) - set(ids), key=int)
        if not_regions:
            raise ValueError(f"image folder(s) {[grouped[r]['folder'] for r in not_regions]} name region(s) "
                             f"{not_regions} that have no indicator value in any CSV")
        for rid, entry in grouped.items():
            hexagon = Polygon(lattice.hexagon(int(rid)))
            d = hexagon.distance(Point(entry["lon"], entry["lat"]))
            if d > FOLDER_TOL_DEG:
                c_lon, c_lat = lattice.centre(int(rid))
                raise LatticeError(f"image folder {entry['folder']!r}: its lon/lat lies {d:.4f} degrees outside "
                                   f"the hexagon of region {rid} (centre {float(c_lon):.4f}, {float(c_lat):.4f}); "
                                   "is the id right?")
        images = _write_images(out, grouped, image_size)
        modalities = tuple(k for k in (SATELLITE, STREETVIEW) if (images[KIND] == k).any())
        image_notes = {"image_regions": sorted(grouped, key=int),
                       "image_processing": (
                           "images copied unchanged" if image_size is None else
                           f"satellite: central square of the crop, resized to {image_size} px; street view: "
                           f"each 360-degree panorama cut into {STREETVIEW_VIEWS} square views "
                           f"(centred at {PANORAMA_CENTRE:.0%} of the height), resized to {image_size} px")}
    n_missing_sat = len(ids) - (0 if images is None else int((images[KIND] == SATELLITE).sum()))
    meta = CityMeta(
        name="Beijing", crs="EPSG:4326", modalities=modalities, indicators=meta_indicators,
        hexagon_size_m=round(lattice.hexagon_size_m(float(np.mean(lat))), 1), provenance=provenance,
        max_missing_satellite=MAX_MISSING_SATELLITE if SATELLITE in modalities else 0.5,
        extra={"lattice": {"base_lon": lattice.base_lon, "base_lat": lattice.base_lat,
                           "lon_step": lattice.lon_step, "lat_step": lattice.lat_step,
                           "n_rows": lattice.n_rows, "n_cols": lattice.n_cols, "odd_row_shift": lattice.shift,
                           "region_id": "row * n_cols + col, rows counted southwards"},
               **image_notes,
               "notes": (f"{len(ids)} regions with labels; {n_missing_sat} of them have no satellite image and "
                         "none has POIs or mobility, so only location baselines can be scored on the whole "
                         "city. HD is missing where the source has no row (those regions are left out of "
                         "HD's evaluation).")})
    write_city(out, meta, regions, indicators, images=images)
    if images is not None:  # keep each image's raw file beside it (extra columns are allowed)
        images.to_csv(out / IMAGES_CSV, index=False)
    return out


def image_regions(city) -> list[str]:
    """The ids of the regions with a satellite image (the 15 of the demo), in id order."""
    return sorted(city.satellite_paths().index, key=int)


def provenance_text(files: Iterable[str]) -> str:
    """Repository, commit and path of every raw file used, in a few lines for city.yaml."""
    table = registry().loc[list(files)]
    lines = []
    for (repo, commit), group in table.groupby(["source_repo", "commit"], sort=False):
        csvs = [p for p in group["source_path"] if p.endswith(".csv")]
        n_img = len(group) - len(csvs)
        lines.append(f"{repo} @ {commit}: " + ", ".join(csvs)
                     + (f" and {n_img} image files under pic/ (satellite crops and street-view panoramas "
                        "downscaled to 1024 px wide; Baidu imagery, no licence stated, research fixtures only)"
                        if n_img else "")
                     + f"; licence: {group['license'].iloc[0] or 'none stated'}.")
    return ("The MuseCL paper's Beijing labels and demo images, converted by "
            "musecl.datasets.beijing.make_beijing_city. " + " ".join(lines)
            + " PD = WorldPop population density, HD = Lianjia housing, NP = number of POIs; raw values "
            "(the paper models ln(1 + x)). Hexagons built from the official lattice.")


def make_beijing_city(out: str | Path, data_dir: str | Path | None = None,
                      image_size: int | None = DEFAULT_IMAGE_SIZE) -> Path:
    """Convert the verified raw Beijing files into a city folder (``image_size``: as in
    :func:`beijing_city_from_files`)."""
    indicator_files = {k: locate(f, data_dir=data_dir) for k, f in INDICATOR_FILES.items()}
    image_files = {f[len(IMAGES_PREFIX):]: locate(f, data_dir=data_dir)
                   for f in files_of(DATASET) if f.startswith(IMAGES_PREFIX)}
    used = [*INDICATOR_FILES.values(), *(IMAGES_PREFIX + rel for rel in image_files)]
    return beijing_city_from_files(out, indicator_files, image_files, image_size=image_size,
                                   provenance=provenance_text(used))
