"""The city folder format: the public contract for "rerun the book on a new city".

A city is a folder a person can make with a spreadsheet and an image folder::

    city.yaml        metadata: name, CRS, hexagon size, modalities, provenance, indicators
    regions.csv      region_id, lon, lat, geometry (WKT polygon in the CRS of city.yaml)
    images.csv       region_id, kind (satellite | streetview), path (relative to the folder)
    pois.csv         region_id, category, text (text may be empty)
    mobility.csv     region_id, inflow, outflow           -- or --
    od.csv           origin, destination, flow            (in/outflows follow from it)
    indicators.csv   region_id, one column per indicator, raw values
    latents.csv      optional ground truth (generated cities only)
    ceilings.csv     optional: each ceiling's prediction per region (generated cities only)

:func:`validate_city` lists every problem (file, row or region, what is wrong); :func:`load_city`
raises them as :class:`CityFormatError` and warns with a count whenever it fills or drops anything.
The full description is ``data/README.md``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import stat
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
import yaml
from PIL import Image
from shapely.errors import ShapelyError

from musecl.io import YamlFileError, load_yaml, n_of_regions, read_csv_ids

REGION_ID = "region_id"
LON, LAT, GEOMETRY = "lon", "lat", "geometry"
KIND, PATH = "kind", "path"
CATEGORY, TEXT = "category", "text"
INFLOW, OUTFLOW = "inflow", "outflow"
ORIGIN, DESTINATION, FLOW = "origin", "destination", "flow"
# read as text: "NA" or "null" is a region id, "None" a shop's name, "NA" a category -- not missing
ID_COLUMNS = (REGION_ID, ORIGIN, DESTINATION)
TEXT_COLUMNS = (*ID_COLUMNS, CATEGORY, TEXT, KIND, PATH)

SATELLITE, STREETVIEW, POI, MOBILITY = "satellite", "streetview", "poi", "mobility"
MODALITIES = (SATELLITE, STREETVIEW, POI, MOBILITY)
IMAGE_KINDS = (SATELLITE, STREETVIEW)
FORMAT_VERSION = 1

CITY_YAML = "city.yaml"
REGIONS_CSV = "regions.csv"
IMAGES_CSV = "images.csv"
POIS_CSV = "pois.csv"
MOBILITY_CSV = "mobility.csv"
OD_CSV = "od.csv"
INDICATORS_CSV = "indicators.csv"
LATENTS_CSV = "latents.csv"
CEILINGS_CSV = "ceilings.csv"
SOURCE = "source"  # ceilings.csv: "all" (every latent) or the modality whose view it conditions on
CEILING_ALL = "all"
CEILING_SOURCES = (CEILING_ALL, *MODALITIES)
WGS84 = "EPSG:4326"  # region centres (lon, lat), maps and flows; outlines may be in another CRS


class CityFormatError(ValueError):
    """A city folder breaks the format; the message lists every problem found."""

    def __init__(self, problems: list["Problem"]):
        self.problems = problems
        more = [f"  ... and {len(problems) - 50} more"] if len(problems) > 50 else []
        super().__init__("\n".join([f"city folder is invalid ({len(problems)} problem(s)):",
                                    *(f"  - {p}" for p in problems[:50]), *more]))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a city folder: the file, where in it, and what."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"{self.file}{where}: {self.message}"


@dataclass(frozen=True)
class Indicator:
    """Metadata of one socioeconomic indicator column in ``indicators.csv``."""

    name: str
    long_name: str
    unit: str = ""
    log: bool = True  # model ln(1 + x), as the paper does
    allow_missing: bool = False
    allow_negative: bool = False
    # the modality this indicator is an aggregate of (the paper's NP counts POIs, MC trips):
    # such an indicator is shown, but left out of headline means
    derived_from_input: str | None = None


@dataclass(frozen=True)
class CityMeta:
    """The contents of ``city.yaml``."""

    name: str
    crs: str
    modalities: tuple[str, ...]
    indicators: dict[str, Indicator]
    hexagon_size_m: float | None = None  # centre-to-vertex distance; None for free polygons
    provenance: str = ""
    max_missing_satellite: float = 0.5  # fraction of regions allowed without a satellite image
    oracle_r2: dict[str, float] = field(default_factory=dict)
    latents: dict[str, str] = field(default_factory=dict)  # latent name -> description
    # modality -> the latents it shows; modality -> indicator -> the R2 of its ceiling
    modality_latents: dict[str, list[str]] = field(default_factory=dict)
    modality_oracle_r2: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def headline_indicators(self) -> list[str]:
        """All indicators but those derived from an input (all when every one is: a headline must
        average something)."""
        return ([k for k, v in self.indicators.items() if not v.derived_from_input]
                or list(self.indicators))

    def spelled_out(self, names) -> str:
        """"PD: population density; HD: ..." for the indicators ``names``: the key to prose and
        tables that use the short names."""
        return "; ".join(f"{name}: {self.indicators[name].long_name}" for name in names)

    def derived_indicators(self) -> dict[str, str]:
        """Indicator -> the input modality it aggregates."""
        return {k: v.derived_from_input for k, v in self.indicators.items() if v.derived_from_input}

    def to_yaml_dict(self) -> dict:
        out = {
            "format_version": FORMAT_VERSION, "name": self.name, "crs": self.crs,
            "hexagon_size_m": self.hexagon_size_m, "modalities": list(self.modalities),
            "provenance": self.provenance, "max_missing_satellite": self.max_missing_satellite,
            "indicators": {k: {f: x for f, x in dataclasses.asdict(v).items()
                               if f != "name" and (f != "derived_from_input" or x is not None)}
                           for k, v in self.indicators.items()},
        }
        optional = {
            "oracle_r2": {k: float(v) for k, v in self.oracle_r2.items()},
            "latents": dict(self.latents),
            "modality_latents": {k: list(v) for k, v in self.modality_latents.items()},
            "modality_oracle_r2": {m: {k: float(v) for k, v in r2.items()}
                                   for m, r2 in self.modality_oracle_r2.items()},
        }
        out.update({k: v for k, v in optional.items() if v})
        out.update(self.extra)
        return out


@dataclass
class City:
    """A validated city in memory. Every per-region table is indexed by ``region_id``."""

    root: Path
    meta: CityMeta
    regions: gpd.GeoDataFrame  # index region_id; lon, lat (WGS84), geometry (outlines in meta.crs)
    images: pd.DataFrame  # region_id, kind, path (absolute)
    pois: pd.DataFrame  # region_id, category, text
    mobility: pd.DataFrame  # index region_id; inflow, outflow (0 where absent, with a warning)
    indicators: pd.DataFrame  # index region_id; raw values, NaN where missing
    od: pd.DataFrame | None = None
    latents: pd.DataFrame | None = None
    # region_id, source, one column per indicator (modelled scale)
    ceilings: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def region_ids(self) -> pd.Index:
        return self.regions.index

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        return (f"City({self.meta.name!r}, regions={len(self)}, modalities="
                f"{list(self.meta.modalities)}, indicators={list(self.meta.indicators)})")

    def has(self, modality: str) -> bool:
        return modality in self.meta.modalities

    def satellite_paths(self) -> pd.Series:
        """Path of each region's satellite image; regions without one are absent."""
        sat = self.images[self.images[KIND] == SATELLITE]
        return sat.set_index(REGION_ID)[PATH]

    def streetview_paths(self) -> dict[str, list[Path]]:
        """Street-view image paths per region (a region may have none)."""
        sv = self.images[self.images[KIND] == STREETVIEW]
        return {rid: list(group[PATH]) for rid, group in sv.groupby(REGION_ID, sort=False)}

    def poi_counts(self, categories: list[str] | None = None) -> pd.DataFrame:
        """Region x category POI counts: the K-vector of eq. 3. All regions, zeros included."""
        counts = pd.crosstab(self.pois[REGION_ID], self.pois[CATEGORY])
        if categories is not None:
            counts = counts.reindex(columns=categories, fill_value=0)
        return counts.reindex(self.region_ids, fill_value=0).astype(np.int64)

    def targets(self, log: bool | None = None) -> pd.DataFrame:
        """Indicator values as modelled: ln(1 + x) where the metadata (or ``log``) says so."""
        out = self.indicators.copy()
        for name, ind in self.meta.indicators.items():
            if ind.log if log is None else log:
                out[name] = np.log1p(out[name])
        return out

    def ceiling_predictions(self, source: str = CEILING_ALL) -> pd.DataFrame:
        """Ceiling ``source``'s prediction per region (modelled scale, region x indicator): "all"
        is the noiseless function of every latent, a modality the best from what it shows. Scored
        on a split's test part, it is that split's ceiling."""
        if self.ceilings is None:
            raise ValueError(f"{self.name} records no ceilings ({CEILINGS_CSV}); only generated "
                             "cities know them")
        rows = self.ceilings[self.ceilings[SOURCE] == source]
        if rows.empty:
            raise ValueError(f"{self.name}: no ceiling {source!r}; {CEILINGS_CSV} has "
                             f"{sorted(self.ceilings[SOURCE].unique())}")
        return rows.drop(columns=SOURCE).set_index(REGION_ID).reindex(self.region_ids)

    def xy_m(self) -> np.ndarray:
        """Region centres in metres on a local equirectangular plane (for maps and blocks)."""
        lat0 = float(np.deg2rad(self.regions[LAT].mean()))
        x = np.deg2rad(self.regions[LON].to_numpy()) * 6_371_000 * math.cos(lat0)
        y = np.deg2rad(self.regions[LAT].to_numpy()) * 6_371_000
        return np.column_stack([x - x.mean(), y - y.mean()])

    def centres(self) -> pd.DataFrame:
        """:meth:`xy_m` indexed by region id (columns ``x_m``, ``y_m``)."""
        return pd.DataFrame(self.xy_m(), index=self.region_ids.copy(), columns=["x_m", "y_m"])


# --------------------------------------------------------------------------------------------
# reading and checking


MIN_REGIONS = 7
"""The fewest regions a city may have: :func:`validate_city` reports fewer, :func:`load_city`
warns, ``musecl run`` refuses (:func:`require_enough_regions`). A triplet draws 3 distinct regions
(``musecl.sampling``), the 5-fold ridge read of the pretext features needs 5, and the probes'
random split leaves 2 training and 2 test regions for R2 from 5 on (:data:`MIN_INDICATOR_VALUES`);
7 is also the toy generator's minimum (one ring of hexagons). The spatial split needs enough
blocks on top of that, checked where the split is made."""
# an indicator's fewest values: 2 training regions, 1 validation, 2 test (R2 needs 2)
MIN_INDICATOR_VALUES = 5

HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes RGB conversion clips
MAX_IMAGE_PIXELS = 89_478_485
"""The most pixels an image may have: Pillow's default limit, above which it warns (and at twice
it refuses) as a possible decompression bomb; the encoders resize to a few hundred pixels anyway."""

_MISSING = "missing"
_DECODED: set[tuple] = set()  # (device, inode, size, mtime, ctime, limit) of images that decoded


def _stat_file(path) -> tuple[os.stat_result | None, str | None]:
    """The file's stat, or why ``path`` is no regular file; never opens it (a pipe would block)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, _MISSING
    except OSError as exc:
        return None, f"cannot be accessed ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return None, "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        return None, "is not a regular file (a named pipe, socket or device); give a plain file"
    return st, None


def _read_csv(root: Path, name: str, problems: list[Problem], required: list[str],
              optional: bool = False, also: Sequence[str] = ()) -> pd.DataFrame | None:
    """The file's table, or None with its problem. ``also``: the optional columns, whose names are
    checked as the required ones are (a "Text" column would be read as no text at all)."""
    _, why = _stat_file(root / name)
    if why:
        if not (optional and why == _MISSING):
            problems.append(Problem(name, "", "file is missing" if why == _MISSING else why))
        return None
    where = ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = read_csv_ids(root / name, ids=TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        why = f"file is empty (expected a header row with columns {', '.join(required)})"
    except UnicodeDecodeError as exc:
        why = (f"is not UTF-8 text ({exc.reason}); save it as CSV UTF-8 (a spreadsheet's "
               '"CSV UTF-8" format)')
    except Exception as exc:  # noqa: BLE001 - report any parse failure with the file name
        why = f"cannot be read as CSV: {exc}"
    else:
        df = _without_blank_edges(df)
        columns = list(df.columns)
        misnamed = {c: k for c in columns for k in (*required, *also)
                    if c != k and k not in columns and str(c).strip().casefold() == k.casefold()}
        missing = [c for c in required if c not in columns]
        first = str(columns[0]) if columns else ""
        if misnamed:
            where, why = "header", "; ".join(f"column {c!r} should be named {k!r}"
                                             for c, k in misnamed.items())
            why += " (names are exact: case and spaces count)"
        elif missing:
            where, why = "header", f"missing column(s) {missing}; found {columns}"
            if first.startswith("sep="):
                why += "; the first line 'sep=...' is a spreadsheet's note: delete it"
            elif len(columns) == 1 and (";" in first or "\t" in first):
                why += ("; the values are separated by ';' or tabs (a spreadsheet's regional "
                        "setting): save it as comma-separated CSV with '.' as the decimal mark")
        elif any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            why = ("some rows have more values than the first line has column names: "
                   "name every column")
    if why:
        problems.append(Problem(name, where, why))
        return None
    return df


def _without_blank_edges(df: pd.DataFrame) -> pd.DataFrame:
    """The table without what spreadsheets leave at its edges: columns with neither a header nor a
    value, and rows of empty cells after the last filled one (each would be a problem per cell)."""
    df = df.drop(columns=[c for c in df.columns
                          if str(c).startswith("Unnamed: ") and df[c].isna().all()])
    filled = np.flatnonzero(df.notna().any(axis=1).to_numpy())
    return df.iloc[: filled[-1] + 1 if len(filled) else 0]


def _show(value) -> str:
    """A cell value as a person typed it (no numpy reprs in messages)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _row(i: int) -> str:
    return f"row {i + 2}"  # +1 for the header, +1 for 1-based counting as in a spreadsheet


def _in_region(df: pd.DataFrame, suffix: str = ""):
    """``where`` for :func:`_at_rows`: the row and its region (without a region_id column, the
    first column's value)."""
    ids = df[REGION_ID] if REGION_ID in df.columns else df.iloc[:, 0]
    return lambda i: f"{_row(i)}, region {ids.iloc[i]!r}{suffix}"


def _at_rows(problems: list[Problem], file: str, mask, message, where=_row, limit: int = 5,
             total: tuple[str, str] | None = None) -> None:
    """A problem at each of the first ``limit`` rows where ``mask`` holds, ``message(i)`` saying
    what; beyond them, ``total`` (where, text with ``{n}``) counts them all."""
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    problems.extend(Problem(file, where(i), message(i)) for i in rows[:limit])
    if total and len(rows) > limit:
        problems.append(Problem(file, total[0], total[1].format(n=len(rows))))


_KINDS = ((type(None), "empty (null)"), (bool, "a boolean"), ((int, float), "a number"),
          (str, "text"), (list, "a list"), (dict, "a mapping"))  # bool first: it is an int too


def _got(value, show: bool = True) -> str:
    """What YAML read, in a person's words: "got 'no' (text)", or without ``show`` "got text"."""
    kind = next((words for types, words in _KINDS if isinstance(value, types)),
                type(value).__name__)
    return f"got {value!r} ({kind})" if show else f"got {kind}"


def _is_number(value) -> bool:
    """A finite YAML number; a boolean is not one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_text(value) -> bool:
    """Text, or a number YAML read from what is meant as text (a unit of 1, a city called 1984)."""
    return isinstance(value, str) or _is_number(value)


def _check_ids(df: pd.DataFrame, col: str, known: set[str], file: str, problems: list[Problem],
               what: str = "region_id", unique: bool = False) -> None:
    """Empty and unknown ids (and, with ``unique``, repeated ones), five of each at most."""
    ids = df[col]
    _at_rows(problems, file, ids.isna(), lambda i: f"{what} is empty")
    if unique:
        _at_rows(problems, file, ids.duplicated() & ids.notna(),
                 lambda i: f"duplicate {what} {ids.iloc[i]!r}")
    unknown = ~ids.isin(known) & ids.notna()
    near: dict[str, str] = {}  # by the key a spreadsheet's retyping keeps, where it names one id
    if unknown.any():
        n_ids = Counter(map(_id_key, known))
        near = {_id_key(rid): rid for rid in known if n_ids[_id_key(rid)] == 1}

    def message(i: int) -> str:
        key = _id_key(ids.iloc[i])
        hint = (f" (did you mean {near[key]!r}? a spreadsheet may have changed the id: keep the "
                "column as text)" if key in near else "")
        return f"{what} {ids.iloc[i]!r} is not a region in {REGIONS_CSV}{hint}"

    _at_rows(problems, file, unknown, message, total=("", "{n} rows in all name unknown regions"))


def category_key(category) -> str:
    """A POI category however it was typed: spaces collapsed and stripped, lower case. Spellings
    with one key are one category, in the POI counts (eq. 3) and in the text vocabulary (eq. 7)."""
    return " ".join(str(category).split()).lower()


def _one_spelling(categories: pd.Series, city: str) -> pd.Series:
    """Each category under its most common spelling ("Cafe", "cafe " and "cafe" are one): the POI
    counts would count them apart while the text vocabulary merged them. Said once, by example."""
    keys = categories.map(category_key)
    if keys.nunique() == categories.nunique():
        return categories
    pairs = pd.DataFrame({"key": keys, "spelling": categories}).value_counts().reset_index()
    spellings = (pairs.sort_values(["count", "spelling"], ascending=[False, True])
                 .groupby("key")["spelling"].agg(list))  # most common first, ties alphabetical
    merged = spellings[spellings.map(len) > 1]
    warnings.warn(f"{city}: pois.csv writes {len(merged)} POI "
                  f"categor{'y' if len(merged) == 1 else 'ies'} in more than one way (case or "
                  "spaces); each is counted as one, under its most common spelling: "
                  + "; ".join(" = ".join(map(repr, names)) for names in merged.iloc[:3])
                  + ("; ..." if len(merged) > 3 else ""), stacklevel=3)
    return keys.map(spellings.str[0])


def _id_key(region_id: str) -> str:
    """A region id as a spreadsheet may have retyped it: Unicode form, spaces, case, leading zeros,
    a number written as "7.0" or "7E0"."""
    key = unicodedata.normalize("NFC", str(region_id)).strip().casefold()
    try:
        number = float(key)
    except ValueError:
        return key.lstrip("0") or key
    return str(int(number)) if number.is_integer() else key


def _read_meta(root: Path, problems: list[Problem]) -> CityMeta | None:
    """``city.yaml``, or None when its required keys are missing; a key of the wrong type is a
    problem and keeps its default."""
    def bad(where: str, message: str) -> None:  # None: ``return bad(...)`` reports and gives up
        problems.append(Problem(CITY_YAML, where, message))

    _, why = _stat_file(root / CITY_YAML)
    if why:
        return bad("", "file is missing; every city folder needs one" if why == _MISSING else why)
    try:
        raw = load_yaml(root / CITY_YAML)
    except YamlFileError as err:
        return bad(f"line {err.line}" if err.line else "", err.problem)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        return bad("", "must be a mapping of keys to values")
    missing = [key for key in ("name", "crs", "modalities", "indicators") if key not in raw]
    for key in missing:
        bad(key, "required key is missing")
    version, key = raw.get("format_version"), "format_version"
    if key not in raw:
        bad(key, f"required key is missing: add the line `{key}: {FORMAT_VERSION}` (the version "
                 "of the city folder format; musecl's writers add it)")
    elif isinstance(version, bool) or not isinstance(version, int):
        bad(key, f"must be the whole number {FORMAT_VERSION}, {_got(version)}")
    elif version != FORMAT_VERSION:
        bad(key, f"{key} {version} is not supported: this musecl reads {key} {FORMAT_VERSION}"
                 + ("; it may come from a newer musecl" if version > FORMAT_VERSION else ""))
    if missing:
        return None

    name = raw["name"]
    if not _is_text(name) or not str(name).strip():
        bad("name", f"must be the city's name as text, {_got(name)}")
    crs = str(raw["crs"])
    try:
        pyproj.CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001 - pyproj raises CRSError and friends
        bad("crs", f"cannot read CRS {crs!r}: {exc}. Use an EPSG code such as 'EPSG:4326'.")
    listed = [] if raw["modalities"] is None else raw["modalities"]
    if not isinstance(listed, list):
        bad("modalities", f"must be a list such as [satellite, poi], {_got(listed)}")
        listed = []
    modalities: list[str] = []
    for m in listed:
        if m not in MODALITIES:
            bad("modalities", f"unknown modality {m!r}; use {list(MODALITIES)}")
        elif m in modalities:
            bad("modalities", f"{m!r} is listed twice")
        else:
            modalities.append(m)
    specs = raw["indicators"] if isinstance(raw["indicators"], dict) else {}
    if not specs:
        bad("indicators", "must map each indicator column to its metadata")
    indicators = {str(key): _read_indicator(str(key), spec, bad) for key, spec in specs.items()}

    hexagon = raw.get("hexagon_size_m")
    if hexagon is not None and not (_is_number(hexagon) and hexagon > 0):
        bad("hexagon_size_m", "must be a positive number of metres (the hexagons' centre-to-vertex "
                              f"size) or null for free polygons, {_got(hexagon)}")
        hexagon = None
    provenance = raw.get("provenance")
    if provenance is not None and not _is_text(provenance):
        bad("provenance", f"must be text, {_got(provenance, show=False)}")
        provenance = None
    max_missing = raw.get("max_missing_satellite", 0.5)
    if not (_is_number(max_missing) and 0 <= max_missing <= 1):
        bad("max_missing_satellite", "must be a number from 0 to 1 (the fraction of regions "
                                     f"allowed without a satellite image), {_got(max_missing)}")
        max_missing = 0.5
    mappings = {}
    for key in ("oracle_r2", "latents", "modality_latents", "modality_oracle_r2"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            bad(key, f"must be a mapping (key: value), got {type(value).__name__}")
        mappings[key] = dict(value) if isinstance(value, dict) else {}
    for key, wanted in (("modality_latents", list), ("modality_oracle_r2", dict)):
        for m, value in list(mappings[key].items()):
            if m not in MODALITIES:
                bad(key, f"unknown modality {m!r}; use {list(MODALITIES)}")
            if not isinstance(value or wanted(), wanted):
                bad(f"{key}.{m}", f"must be a {'list' if wanted is list else 'mapping'}, "
                                  f"got {type(value).__name__}")
                mappings[key].pop(m)
    r2_tables = [("oracle_r2", mappings["oracle_r2"])]
    r2_tables += [(f"modality_oracle_r2.{m}", v) for m, v in mappings["modality_oracle_r2"].items()
                  if v]
    for where, table in r2_tables:
        for k, v in list(table.items()):
            if not _is_number(v):
                bad(f"{where}.{k}", f"must be a number (an R2), {_got(v)}")
                table.pop(k)
    known = {"format_version", *(f.name for f in dataclasses.fields(CityMeta))} - {"extra"}
    return CityMeta(
        name=str(name), crs=crs, modalities=tuple(modalities), indicators=indicators,
        hexagon_size_m=hexagon, provenance="" if provenance is None else str(provenance),
        max_missing_satellite=float(max_missing),
        oracle_r2=mappings["oracle_r2"], latents=mappings["latents"],
        modality_latents={str(k): list(v or []) for k, v in mappings["modality_latents"].items()},
        modality_oracle_r2={str(m): dict(v or {})
                            for m, v in mappings["modality_oracle_r2"].items()},
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _read_indicator(name: str, spec, bad) -> Indicator:
    """One entry of ``indicators:``; a key of the wrong type is a problem and keeps its default."""
    where = f"indicators.{name}"
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        bad(where, "must be a mapping of the indicator's metadata (long_name, unit, log, "
                   f"allow_missing, allow_negative), {_got(spec)}")
        return Indicator(name=name, long_name=name)
    allowed = {f.name for f in dataclasses.fields(Indicator)} - {"name"}
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        bad(where, f"unknown key(s) {unknown}; known: {sorted(allowed)}")
    kwargs: dict = {}
    for key in ("long_name", "unit"):
        value = spec.get(key)
        if _is_text(value):
            kwargs[key] = str(value)
        elif value is not None:
            bad(f"{where}.{key}", f"must be text, {_got(value)}")
    for key in ("log", "allow_missing", "allow_negative"):
        value = spec.get(key)
        if isinstance(value, bool):
            kwargs[key] = value
        elif key in spec:
            bad(f"{where}.{key}",
                f"must be true or false (a YAML boolean, unquoted), {_got(value)}")
    derived = spec.get("derived_from_input")
    if derived in MODALITIES:  # only text equals a modality
        kwargs["derived_from_input"] = derived
    elif derived is not None:
        bad(f"{where}.derived_from_input",
            f"{derived!r} is not a modality; use one of {list(MODALITIES)} or leave it out")
    return Indicator(name=name, long_name=kwargs.pop("long_name", name), **kwargs)


def _check_regions(df: pd.DataFrame, problems: list[Problem]) -> None:
    """Ids unique and without stray spaces, centres in range, outlines valid polygons."""
    f = REGIONS_CSV
    if df.empty:
        problems.append(Problem(f, "", "has no regions"))
        return
    _check_ids(df, REGION_ID, set(df[REGION_ID].dropna()), f, problems, unique=True)
    # ids are matched exactly across files: blank ones and surrounding spaces are problems
    ids = [v if isinstance(v, str) else "" for v in df[REGION_ID]]
    padded = np.array([t != t.strip() for t in ids], dtype=bool)
    blank = padded & np.array([not t.strip() for t in ids], dtype=bool)
    _at_rows(problems, f, blank, lambda i: f"region_id {ids[i]!r} is blank (only spaces)")
    _at_rows(problems, f, padded & ~blank,
             lambda i: f"region_id {ids[i]!r} has leading or trailing spaces; remove them "
                       "(ids are matched exactly across files)")
    if padded.sum() > 10:
        problems.append(Problem(f, "", f"{padded.sum()} region ids in all are blank or padded"))
    for col, lo, hi in ((LON, -180, 180), (LAT, -90, 90)):
        values = pd.to_numeric(df[col], errors="coerce")
        _at_rows(problems, f, values.isna() | (values < lo) | (values > hi),  # inf is outside too
                 lambda i: f"{col} {_show(df[col].iloc[i])} is not a number in [{lo}, {hi}]")
    cells = [t if isinstance(t, str) else None for t in df[GEOMETRY]]
    geoms = shapely.from_wkt(np.array(cells, dtype=object), on_invalid="ignore")
    whys = [_geometry_problem(*row) for row in zip(cells, geoms, shapely.is_valid_reason(geoms))]
    _at_rows(problems, f, [w is not None for w in whys], lambda i: whys[i], _in_region(df),
             limit=10,
             total=(GEOMETRY, "{n} geometries in all are missing, not polygons or invalid"))


def _geometry_problem(text: str | None, geom, reason: str | None) -> str | None:
    """Why a geometry cell is not a valid POLYGON or MULTIPOLYGON in WKT, or None."""
    if text is None:
        return "geometry is empty; give a WKT POLYGON or MULTIPOLYGON"
    if geom is None:
        try:
            shapely.from_wkt(text)
        except (ShapelyError, ValueError, TypeError) as exc:
            return f"geometry is not a polygon in WKT: {exc}"
        return "geometry is not a polygon in WKT: it cannot be parsed"
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        return ("geometry is not a polygon in WKT: expected a POLYGON or MULTIPOLYGON, "
                f"got {geom.geom_type}")
    if geom.is_empty:
        return f"geometry is empty ({text.strip()[:40]}); give the region's outline"
    if reason != "Valid Geometry":
        return (f"geometry is not a valid polygon: {reason}; fix the outline (rings must be closed "
                "and must not cross themselves or each other), e.g. with QGIS 'Fix geometries' or "
                "shapely.make_valid")
    return None


def _check_centres(df: pd.DataFrame, crs: str, problems: list[Problem]) -> None:
    """Each centre (WGS84) lies within its outline's own width of the outline, read in city.yaml's
    CRS: outlines in another CRS (metres under EPSG:4326, say) would load and map nothing."""
    try:
        geoms = gpd.GeoSeries.from_wkt(df[GEOMETRY], crs=crs).to_crs(WGS84).to_numpy()
    except pyproj.exceptions.CRSError:
        return  # reported with city.yaml
    xmin, ymin, xmax, ymax = shapely.bounds(geoms).T
    lon, lat = (pd.to_numeric(df[c]).to_numpy(dtype=float) for c in (LON, LAT))
    far = ~(shapely.distance(shapely.points(lon, lat), geoms)
            <= np.maximum(xmax - xmin, ymax - ymin))
    _at_rows(problems, REGIONS_CSV, far, lambda i: (
        f"the centre ({lon[i]:g}, {lat[i]:g}) is far from the outline, which, read in {crs} "
        f"(city.yaml: crs), spans lon {xmin[i]:g} to {xmax[i]:g} and lat {ymin[i]:g} to "
        f"{ymax[i]:g}; give lon/lat in WGS84 degrees and the geometry in the crs city.yaml names"),
        _in_region(df),
        total=(GEOMETRY, "{n} regions in all have their centre far from their outline"))


def _too_few_regions(n: int) -> Problem | None:
    """The problem of a city of ``n`` regions, below :data:`MIN_REGIONS` (0 is another problem)."""
    if 0 < n < MIN_REGIONS:
        return Problem(REGIONS_CSV, "", f"has {n} region(s); musecl needs at least {MIN_REGIONS} "
                                        "(MIN_REGIONS): triplets draw 3 distinct regions and the "
                                        f"probes' 60/20/20 split needs {MIN_REGIONS} to leave 2 "
                                        "test regions for R2")
    return None


def image_problem(path: str | os.PathLike, st: os.stat_result | None = None) -> str | None:
    """Why the regular file ``path`` is not an image the run can use, or None. Decoded in full (a
    truncated file fails only there), once per process: good files are remembered by their stat."""
    st = os.stat(path) if st is None else st
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, MAX_IMAGE_PIXELS)
    if key in _DECODED:
        return None
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                return (f"is {width} x {height} = {width * height:,} pixels, more than the "
                        f"{MAX_IMAGE_PIXELS:,} an image may have (MAX_IMAGE_PIXELS); downscale it")
            im.load()
            if im.mode in HIGH_DEPTH_MODES:
                return (f"has {im.mode} pixels (16-bit or floating point); the run reads 8-bit "
                        "images, and converting would clip every value above 255 to white: save "
                        "it as 8-bit RGB with the contrast stretch that suits its sensor")
    except Image.DecompressionBombError as exc:
        return (f"is too large to decode ({exc}); an image may have at most {MAX_IMAGE_PIXELS:,} "
                "pixels (MAX_IMAGE_PIXELS): downscale it")
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the run fails on too
        return (f"is not a readable image ({type(exc).__name__}: {exc})"
                + ("; HEIC and AVIF photos (phones) need converting to JPEG or PNG"
                   if Path(path).suffix.lower() in (".heic", ".heif", ".avif") else ""))
    if len(_DECODED) > 1_000_000:
        _DECODED.clear()
    _DECODED.add(key)
    return None


def _image_file_problem(root: str, rel) -> str | None:
    """Why the ``path`` cell ``rel`` names no usable image inside ``root``, or None. The path as
    written must stay inside (relative, no ``..``); a symlink inside may point elsewhere
    (``from_raw.build_city(copy_images=False)`` makes them)."""
    if pd.isna(rel) or not str(rel).strip():
        return "path is empty"
    rel = str(rel)
    if os.path.isabs(rel) or (("\\" in rel or ":" in rel) and PureWindowsPath(rel).is_absolute()):
        return "is an absolute path; give the path relative to the city folder"
    norm = os.path.normpath(rel)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return ("points outside the city folder ('..'); keep images inside it and give their path "
                "relative to it")
    full = os.path.join(root, rel)
    st, why = _stat_file(full)
    if (why == _MISSING and "\\" in rel
            and os.path.exists(os.path.join(root, rel.replace("\\", "/")))):
        return "image file is missing: the path uses '\\' (Windows); write it with '/'"
    if why:
        return "image file is missing" if why == _MISSING else why
    return image_problem(full, st)


def _check_images(root: Path, df: pd.DataFrame, meta: CityMeta, known: set[str],
                  problems: list[Problem]) -> None:
    f = IMAGES_CSV
    _check_ids(df, REGION_ID, known, f, problems)
    _at_rows(problems, f, ~df[KIND].isin(IMAGE_KINDS),
             lambda i: f"kind {df[KIND].iloc[i]!r} is not one of {list(IMAGE_KINDS)}")
    with warnings.catch_warnings():  # MAX_IMAGE_PIXELS reports it, naming the file
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        whys = [_image_file_problem(os.fspath(root), rel) for rel in df[PATH]]
    shown = ["" if pd.isna(rel) else str(rel) for rel in df[PATH]]
    _at_rows(problems, f, [w is not None for w in whys],
             lambda i: f"'{shown[i]}': {whys[i]}" if shown[i] else whys[i], _in_region(df),
             limit=10, total=("", "{n} image rows in all point at missing or unreadable files"))
    sat = df.loc[df[KIND] == SATELLITE, REGION_ID]
    for rid in sat[sat.duplicated()].iloc[:5]:
        problems.append(Problem(f, f"region {rid!r}", "more than one satellite image"))
    for kind in IMAGE_KINDS:
        if kind in meta.modalities and not (df[KIND] == kind).any():
            problems.append(Problem(f, kind, f"modality {kind!r} is listed in {CITY_YAML} but has "
                                             "no images"))
    missing = len(known - set(sat))
    if SATELLITE in meta.modalities and known and missing / len(known) > meta.max_missing_satellite:
        problems.append(Problem(f, SATELLITE, f"{n_of_regions(missing, len(known))} no satellite "
                                              f"image; max_missing_satellite in {CITY_YAML} allows "
                                              f"{meta.max_missing_satellite:.0%}"))


def _check_numbers(df: pd.DataFrame, cols: list[str], file: str, problems: list[Problem],
                   allow_nan: bool = False, allow_negative: bool = False,
                   log: bool = False) -> None:
    """Every value of ``cols`` is a finite number (missing with ``allow_nan``), not negative
    unless ``allow_negative``, and above -1 with ``log`` (ln(1 + x) is modelled)."""
    for col in cols:
        values = pd.to_numeric(df[col], errors="coerce")
        number = values.to_numpy(dtype=float)
        finite = np.isfinite(number)
        checks = [
            (values.isna() & df[col].notna(), "are not numbers",
             lambda i: f"{_show(df[col].iloc[i])} is not a number"),
            (np.isinf(number), "are infinite",
             lambda i: f"value {_show(df[col].iloc[i])} is not a finite number; every value must "
                       f"be finite{' (or left empty)' if allow_nan else ''}")]
        if not allow_nan:
            checks.append((df[col].isna(), "are missing", lambda i: "value is missing (NaN) and "
                           "this column does not allow missing values"))
        if not allow_negative:
            checks.append((finite & (number < 0), "are negative",
                           lambda i: f"value {number[i]} is negative and this column does not "
                                     "allow it"))
        elif log:
            checks.append((finite & (number <= -1), "are -1 or less",
                           lambda i: f"value {number[i]} is -1 or less, where ln(1 + x) (log: "
                                     f"true) is undefined; set log: false for this indicator in "
                                     f"{CITY_YAML}"))
        for mask, what, message in checks:
            _at_rows(problems, file, mask, message, _in_region(df, f", column {col}"), limit=3,
                     total=(f"column {col}", f"{{n}} rows in all {what}"))


def _inspect(root: Path) -> tuple[list[Problem], dict]:
    """Read and check every file: the problems, and the tables read (``too_few_regions``: the
    problem :func:`load_city` only warns about)."""
    problems: list[Problem] = []
    tables: dict = {"too_few_regions": None}
    if not root.is_dir():
        return [Problem(str(root), "", "is not a folder")], tables
    meta = tables["meta"] = _read_meta(root, problems)
    regions = tables["regions"] = _read_csv(root, REGIONS_CSV, problems,
                                            [REGION_ID, LON, LAT, GEOMETRY])
    if regions is not None:
        _check_regions(regions, problems)
        too_few = _too_few_regions(int(regions[REGION_ID].dropna().nunique()))
        if too_few is not None:
            problems.append(too_few)
            tables["too_few_regions"] = too_few
    if meta is None or regions is None:
        return problems, tables
    if not any(p.file == REGIONS_CSV and p is not tables["too_few_regions"] for p in problems):
        _check_centres(regions, meta.crs, problems)  # outlines and centres are each valid: agree?
    known = set(regions[REGION_ID].dropna())

    images = _read_csv(root, IMAGES_CSV, problems, [REGION_ID, KIND, PATH],
                       optional=not any(k in meta.modalities for k in IMAGE_KINDS))
    if images is not None:
        _check_images(root, images, meta, known, problems)
    pois = _read_csv(root, POIS_CSV, problems, [REGION_ID, CATEGORY],
                     optional=POI not in meta.modalities, also=[TEXT])
    if pois is not None:
        _check_ids(pois, REGION_ID, known, POIS_CSV, problems)
        _at_rows(problems, POIS_CSV, pois[CATEGORY].isna(), lambda i: "category is empty")
        if POI in meta.modalities and pois.empty:
            problems.append(Problem(POIS_CSV, "", f"modality 'poi' is listed in {CITY_YAML} but "
                                                  "there are no POIs"))
    mobility, od = _read_mobility(root, meta, known, problems)
    indicators = _read_csv(root, INDICATORS_CSV, problems, [REGION_ID])
    if indicators is not None:
        _check_indicators(indicators, meta, known, problems)
    latents = _read_csv(root, LATENTS_CSV, problems, [REGION_ID], optional=True)
    if latents is not None:
        _check_ids(latents, REGION_ID, known, LATENTS_CSV, problems, unique=True)
        _check_numbers(latents, [c for c in latents.columns if c != REGION_ID], LATENTS_CSV,
                       problems, allow_nan=True, allow_negative=True)
    ceilings = _read_csv(root, CEILINGS_CSV, problems, [REGION_ID, SOURCE], optional=True)
    if ceilings is not None:
        _check_ceilings(ceilings, meta, known, problems)
    tables.update(images=images, pois=pois, mobility=mobility, od=od, indicators=indicators,
                  latents=latents, ceilings=ceilings)
    return problems, tables


def _read_mobility(root: Path, meta: CityMeta, known: set[str], problems: list[Problem]):
    """``mobility.csv`` and ``od.csv`` (each None where absent), checked."""
    given = [f for f in (MOBILITY_CSV, OD_CSV) if os.path.lexists(root / f)]
    mobility = _read_csv(root, MOBILITY_CSV, problems, [REGION_ID, INFLOW, OUTFLOW],
                         optional=MOBILITY_CSV not in given)
    if mobility is not None:
        _check_ids(mobility, REGION_ID, known, MOBILITY_CSV, problems, unique=True)
        _check_numbers(mobility, [INFLOW, OUTFLOW], MOBILITY_CSV, problems)
    od = _read_csv(root, OD_CSV, problems, [ORIGIN, DESTINATION, FLOW],
                   optional=OD_CSV not in given)
    if od is not None:
        _check_ids(od, ORIGIN, known, OD_CSV, problems, what="origin")
        _check_ids(od, DESTINATION, known, OD_CSV, problems, what="destination")
        _check_numbers(od, [FLOW], OD_CSV, problems)
    if MOBILITY not in meta.modalities:
        return mobility, od
    if not given:
        problems.append(Problem(MOBILITY_CSV, "", (
            f"modality 'mobility' is listed in {CITY_YAML}: give {MOBILITY_CSV} (region_id, "
            f"inflow, outflow) or {OD_CSV} (origin, destination, flow)")))
    elif not any(p.file in (MOBILITY_CSV, OD_CSV) for p in problems):
        if all(t is None or t.empty for t in (mobility, od)):
            problems.append(Problem(MOBILITY_CSV if mobility is not None else OD_CSV, "",
                                    "modality 'mobility' is listed but the table has no rows"))
        for file, table, cols in ((MOBILITY_CSV, mobility, [INFLOW, OUTFLOW]),
                                  (OD_CSV, od, [FLOW])):
            if (table is not None and not table.empty
                    and not pd.to_numeric(table[cols].stack()).any()):
                problems.append(Problem(file, ", ".join(cols), "every value is 0: the trips give "
                                        "nothing to tell regions apart by (eq. 1-2); give the trip "
                                        "counts, or drop 'mobility' from the modalities"))
    return mobility, od


def _check_indicators(df: pd.DataFrame, meta: CityMeta, known: set[str],
                      problems: list[Problem]) -> None:
    f = INDICATORS_CSV
    _check_ids(df, REGION_ID, known, f, problems, unique=True)
    for c in df.columns:
        if c != REGION_ID and c not in meta.indicators:
            problems.append(Problem(f, f"column {c}", (
                "has no header (a saved row index, or a stray value beside the table): delete it"
                if str(c).startswith("Unnamed: ")
                else f"has no metadata: add it under 'indicators:' in {CITY_YAML}")))
    for name, ind in meta.indicators.items():
        if name not in df.columns:
            problems.append(Problem(f, f"column {name}", f"is described in {CITY_YAML} but missing "
                                                         "from the file"))
            continue
        _check_numbers(df, [name], f, problems, allow_nan=ind.allow_missing,
                       allow_negative=ind.allow_negative, log=ind.log)
        # enough values to split and not one for all, else the probes fail or score NaN later
        if len(df) < MIN_REGIONS:
            continue  # a city too small to run: said once, by _too_few_regions
        values = pd.to_numeric(df[name], errors="coerce")
        values = values[np.isfinite(values.to_numpy(dtype=float))]
        if len(values) < MIN_INDICATOR_VALUES:
            problems.append(Problem(f, f"column {name}", f"has a value for {len(values)} of "
                                    f"{len(df)} regions; an indicator needs at least "
                                    f"{MIN_INDICATOR_VALUES} (2 to train on, 1 to validate, 2 to "
                                    "test); leave it out"))
        elif values.nunique() == 1:
            problems.append(Problem(f, f"column {name}", f"is {_show(values.iloc[0])} for every "
                                    "region that has a value: there is nothing to predict; leave "
                                    "it out"))


def _check_ceilings(df: pd.DataFrame, meta: CityMeta, known: set[str],
                    problems: list[Problem]) -> None:
    f = CEILINGS_CSV
    _check_ids(df, REGION_ID, known, f, problems)
    _at_rows(problems, f, ~df[SOURCE].isin(CEILING_SOURCES),
             lambda i: f"source {df[SOURCE].iloc[i]!r} is not one of {list(CEILING_SOURCES)}")
    _at_rows(problems, f, df.duplicated([REGION_ID, SOURCE]),
             lambda i: f"duplicate ({df[REGION_ID].iloc[i]!r}, {df[SOURCE].iloc[i]!r})")
    columns = [c for c in df.columns if c not in (REGION_ID, SOURCE)]
    for c in columns:
        if c not in meta.indicators:
            problems.append(Problem(f, f"column {c}", f"is not an indicator of {CITY_YAML}"))
    _check_numbers(df, [c for c in columns if c in meta.indicators], f, problems, allow_nan=True,
                   allow_negative=True)


class TooFewRegionsWarning(UserWarning):
    """:func:`load_city` read a city below :data:`MIN_REGIONS` (fine for a map, not for a run)."""


class TooFewRegionsError(ValueError):
    """A run was asked of a city below :data:`MIN_REGIONS`: refused before any work."""


def require_enough_regions(city: City) -> None:
    """Raise :class:`TooFewRegionsError` when ``city`` is below :data:`MIN_REGIONS`
    (:func:`load_city` only warns, so that maps still work)."""
    too_few = _too_few_regions(len(city))
    if too_few is not None:
        raise TooFewRegionsError(f"city {city.name!r} ({city.root}): {too_few}")


def validate_city(path: str | Path) -> list[Problem]:
    """Every problem with the city folder at ``path`` (empty list: the folder is valid)."""
    return _inspect(Path(path))[0]


def require_city(city, who: str = "") -> City:
    """``city`` if it is a City; a folder path or a name is refused with what to call instead."""
    if not isinstance(city, City):
        raise TypeError(f"{who + ': ' if who else ''}city must be a City (musecl.city.load_city("
                        "folder); musecl.runner.resolve_city also takes a named data set); got "
                        f"{type(city).__name__}")
    return city


def load_city(path: str | Path) -> City:
    """Read a city folder into a :class:`City`; raise :class:`CityFormatError` if it is invalid,
    except that fewer than :data:`MIN_REGIONS` regions only warns (a map still works)."""
    root = Path(path).resolve()
    problems, t = _inspect(root)
    too_few = t.get("too_few_regions")
    if any(p is not too_few for p in problems):
        raise CityFormatError(problems)
    meta: CityMeta = t["meta"]
    if too_few is not None:
        warnings.warn(f"{meta.name}: {too_few}", TooFewRegionsWarning, stacklevel=2)
    regions = t["regions"].set_index(REGION_ID)
    regions = gpd.GeoDataFrame(regions[[LON, LAT]], crs=meta.crs,
                               geometry=gpd.GeoSeries.from_wkt(regions[GEOMETRY]))
    ids = regions.index

    def some_lack(n_missing: int, what: str) -> None:
        if n_missing:
            warnings.warn(f"{meta.name}: {n_of_regions(n_missing, len(ids))} {what}", stacklevel=3)

    images = pd.DataFrame(t["images"], columns=[REGION_ID, KIND, PATH])
    images[PATH] = [root / str(p) for p in images[PATH]]
    if SATELLITE in meta.modalities:
        some_lack(len(set(ids) - set(images.loc[images[KIND] == SATELLITE, REGION_ID])),
                  "no satellite image")
    pois = pd.DataFrame(t["pois"], columns=[REGION_ID, CATEGORY, TEXT])  # no text: empty text
    pois[TEXT] = ["" if pd.isna(x) else str(x) for x in pois[TEXT]]
    pois[CATEGORY] = _one_spelling(pois[CATEGORY].astype(str), meta.name)
    od = t["od"]
    if t["mobility"] is not None:
        mobility = t["mobility"].set_index(REGION_ID)[[INFLOW, OUTFLOW]].astype(float)
    elif od is not None:
        mobility = inflow_outflow(od)
    else:
        mobility = pd.DataFrame(columns=[INFLOW, OUTFLOW], dtype=float)
    if MOBILITY in meta.modalities:
        some_lack(len(ids.difference(mobility.index)),
                  "no mobility record; their inflow and outflow are set to 0")
    mobility = mobility.reindex(ids, fill_value=0.0)  # named region_id, as ids are
    indicators = t["indicators"].set_index(REGION_ID)[list(meta.indicators)].astype(float)
    some_lack(len(ids.difference(indicators.index)), f"no row in {INDICATORS_CSV}; their "
              "indicators are missing (NaN) and they are left out of evaluation")
    latents = t["latents"].set_index(REGION_ID).reindex(ids) if t["latents"] is not None else None
    return City(root=root, meta=meta, regions=regions, images=images, pois=pois, mobility=mobility,
                indicators=indicators.reindex(ids), od=od, latents=latents,
                ceilings=t["ceilings"])


def inflow_outflow(od: pd.DataFrame) -> pd.DataFrame:
    """Per-region inflow and outflow from an origin-destination table (the M_i of eq. 1)."""
    inflow = od.groupby(DESTINATION)[FLOW].sum()
    outflow = od.groupby(ORIGIN)[FLOW].sum()
    out = pd.concat({INFLOW: inflow, OUTFLOW: outflow}, axis=1).fillna(0.0).astype(float)
    out.index.name = REGION_ID
    return out


# --------------------------------------------------------------------------------------------
# writing


def write_city(root: str | Path, meta: CityMeta, regions: pd.DataFrame, indicators: pd.DataFrame,
               images: pd.DataFrame | None = None, pois: pd.DataFrame | None = None,
               mobility: pd.DataFrame | None = None, od: pd.DataFrame | None = None,
               latents: pd.DataFrame | None = None, ceilings: pd.DataFrame | None = None) -> Path:
    """Write tables (region tables indexed by region_id; ``ceilings`` long, one row per region and
    source) as a city folder and return it; images must already be in place under ``root``,
    ``images[path]`` relative to it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / CITY_YAML).write_text(yaml.safe_dump(meta.to_yaml_dict(), sort_keys=False,
                                                 allow_unicode=True))
    # outlines in the city's CRS, each coordinate in the fewest digits that read back
    if isinstance(regions, gpd.GeoDataFrame):
        outlines = regions.geometry if regions.crs is None else regions.geometry.to_crs(meta.crs)
        regions = pd.DataFrame(regions[[LON, LAT]]).assign(
            **{GEOMETRY: shapely.to_wkt(outlines.to_numpy(), rounding_precision=-1)})
    by_region = {REGIONS_CSV: regions[[LON, LAT, GEOMETRY]], INDICATORS_CSV: indicators,
                 MOBILITY_CSV: None if mobility is None else mobility[[INFLOW, OUTFLOW]],
                 LATENTS_CSV: latents, CEILINGS_CSV: ceilings}
    for name, df in by_region.items():
        if df is not None:
            df.rename_axis(REGION_ID).reset_index().to_csv(root / name, index=False)
    for name, df, cols in ((IMAGES_CSV, images, [REGION_ID, KIND, PATH]),
                           (POIS_CSV, pois, [REGION_ID, CATEGORY, TEXT]),
                           (OD_CSV, od, [ORIGIN, DESTINATION, FLOW])):
        if df is not None:
            df[cols].to_csv(root / name, index=False)
    return root


def restrict_city(src: str | Path, out: str | Path, modalities: Sequence[str],
                  poi_text: bool = True, latents: bool = True) -> Path:
    """A validated copy of a city folder with only ``modalities`` (``poi_text=False``: POI
    categories without text; ``latents=False``: no latents, oracle R2 or ceilings), to try the
    methods on a city that lacks some data, as real cities do."""
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; use some of {list(MODALITIES)}")
    city = load_city(src)
    keep = tuple(m for m in city.meta.modalities if m in modalities)
    meta = dataclasses.replace(
        city.meta, name=f"{city.meta.name} ({', '.join(keep) or 'no modalities'})", modalities=keep,
        modality_latents={m: v for m, v in city.meta.modality_latents.items() if m in keep},
        modality_oracle_r2={m: v for m, v in city.meta.modality_oracle_r2.items() if m in keep})
    if not latents:
        meta = dataclasses.replace(meta, oracle_r2={}, latents={}, modality_latents={},
                                   modality_oracle_r2={})
    out = Path(out)
    images = city.images[city.images[KIND].isin(keep)].copy()
    relative = [Path(p).relative_to(city.root) for p in images[PATH]]
    for path in relative:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(city.root / path, out / path)
    images[PATH] = [p.as_posix() for p in relative]
    pois = city.pois.assign(**{TEXT: city.pois[TEXT] if poi_text else ""}) if POI in keep else None
    ceilings = city.ceilings if latents else None
    if ceilings is not None:
        ceilings = ceilings[ceilings[SOURCE].isin([CEILING_ALL, *keep])].set_index(REGION_ID)
    trips = MOBILITY in keep
    write_city(out, meta, city.regions, city.indicators, images=images if len(images) else None,
               pois=pois, mobility=city.mobility if trips else None, od=city.od if trips else None,
               latents=city.latents if latents else None, ceilings=ceilings)
    problems = validate_city(out)
    if problems:
        raise CityFormatError(problems)
    return out
