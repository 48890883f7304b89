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
ID_COLUMNS = (REGION_ID, ORIGIN, DESTINATION)  # read as text: "NA" or "null" is a region id, not a missing value
TEXT_COLUMNS = (*ID_COLUMNS, CATEGORY, TEXT, KIND, PATH)  # so are these: "None" is a shop's name, "NA" a category

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
        lines = [f"city folder is invalid ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
        super().__init__("\n".join(lines))


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
    modality_latents: dict[str, list[str]] = field(default_factory=dict)  # modality -> latents it shows
    modality_oracle_r2: dict[str, dict[str, float]] = field(default_factory=dict)  # modality -> indicator -> R2
    extra: dict = field(default_factory=dict)

    def headline_indicators(self) -> list[str]:
        """All indicators but those derived from an input (all when every one is: a headline must
        average something)."""
        return [k for k, v in self.indicators.items() if not v.derived_from_input] or list(self.indicators)

    def derived_indicators(self) -> dict[str, str]:
        """Indicator -> the input modality it aggregates."""
        return {k: v.derived_from_input for k, v in self.indicators.items() if v.derived_from_input}

    def to_yaml_dict(self) -> dict:
        out = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "crs": self.crs,
            "hexagon_size_m": self.hexagon_size_m,
            "modalities": list(self.modalities),
            "provenance": self.provenance,
            "max_missing_satellite": self.max_missing_satellite,
            "indicators": {
                k: {f.name: getattr(v, f.name) for f in dataclasses.fields(v)
                    if f.name != "name" and not (f.name == "derived_from_input" and v.derived_from_input is None)}
                for k, v in self.indicators.items()
            },
        }
        if self.oracle_r2:
            out["oracle_r2"] = {k: float(v) for k, v in self.oracle_r2.items()}
        if self.latents:
            out["latents"] = dict(self.latents)
        if self.modality_latents:
            out["modality_latents"] = {k: list(v) for k, v in self.modality_latents.items()}
        if self.modality_oracle_r2:
            out["modality_oracle_r2"] = {m: {k: float(v) for k, v in r2.items()}
                                         for m, r2 in self.modality_oracle_r2.items()}
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
    ceilings: pd.DataFrame | None = None  # region_id, source, one column per indicator (modelled scale)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def region_ids(self) -> pd.Index:
        return self.regions.index

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        return (f"City({self.meta.name!r}, regions={len(self)}, modalities={list(self.meta.modalities)}, "
                f"indicators={list(self.meta.indicators)})")

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
            if log if log is not None else ind.log:
                out[name] = np.log1p(out[name])
        return out

    def ceiling_predictions(self, source: str = CEILING_ALL) -> pd.DataFrame:
        """Ceiling ``source``'s prediction per region (modelled scale, region x indicator): "all"
        is the noiseless function of every latent, a modality the best from what it shows. Scored
        on a split's test part, it is that split's ceiling."""
        if self.ceilings is None:
            raise ValueError(f"{self.name} records no ceilings ({CEILINGS_CSV}); only generated cities know them")
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
"""The fewest regions a city may have: ``validate_city`` (so ``musecl validate`` and
``from_raw.build_city``) reports fewer as a problem; :func:`load_city` warns, and ``musecl run``
refuses it (:func:`require_enough_regions`) before any work. What sets it, smallest
need first: a contrastive triplet draws three distinct regions (anchor, positive, negative;
``musecl.sampling``); the 5-fold ridge read of the pretext features (``evaluation.ridge_cv_r2``)
needs 5; the probes' random split (``evaluation.random_split``) must leave at least 2 test
regions for R2 and 2 training regions, which it does from 5 on (:data:`MIN_INDICATOR_VALUES`). It is also
the toy generator's minimum (one ring of hexagons). The spatial split needs enough blocks on top
of that, which depends on the geometry and is checked where the split is made."""
MIN_INDICATOR_VALUES = 5  # an indicator's fewest values: 2 training regions, 1 validation, 2 test (R2 needs 2)

HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes that RGB conversion clips
MAX_IMAGE_PIXELS = 89_478_485
"""The most pixels (width x height) an image may have: Pillow's own default limit, above which
it warns (and at twice it refuses) as a possible decompression bomb; the encoders resize images
to a few hundred pixels anyway. Larger images are a problem naming the file."""

_MISSING = "missing"
_DECODED: set[tuple] = set()  # (device, inode, size, mtime, ctime, limit) of images that decoded fully


def _stat_file(path: Path) -> tuple[os.stat_result | None, str | None]:
    """The file's stat, or why ``path`` is not a regular file; never opens it (a pipe would block)."""
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
    path = root / name
    _, why = _stat_file(path)
    if why:
        if not (optional and why == _MISSING):
            problems.append(Problem(name, "", "file is missing" if why == _MISSING else why))
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = read_csv_ids(path, ids=TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        problems.append(Problem(name, "", "file is empty (expected a header row with columns "
                                          f"{', '.join(required)})"))
        return None
    except UnicodeDecodeError as exc:
        problems.append(Problem(name, "", f"is not UTF-8 text ({exc.reason}); save it as "
                                          "CSV UTF-8 (a spreadsheet's \"CSV UTF-8\" format)"))
        return None
    except Exception as exc:  # noqa: BLE001 - report any parse failure with the file name
        problems.append(Problem(name, "", f"cannot be read as CSV: {exc}"))
        return None
    df = _without_blank_edges(df)
    misnamed = {c: k for c in df.columns for k in (*required, *also)
                if c != k and k not in df.columns and str(c).strip().casefold() == k.casefold()}
    if misnamed:
        problems.append(Problem(name, "header", "; ".join(f"column {c!r} should be named {k!r}"
                                                          for c, k in misnamed.items())
                                + " (names are exact: case and spaces count)"))
        return None
    missing = [c for c in required if c not in df.columns]
    if missing:
        first = str(df.columns[0]) if len(df.columns) else ""
        hint = ("; the first line 'sep=...' is a spreadsheet's note: delete it" if first.startswith("sep=") else
                "; the values are separated by ';' or tabs (a spreadsheet's regional setting): save it as "
                "comma-separated CSV with '.' as the decimal mark" if len(df.columns) == 1 and
                any(mark in first for mark in (";", "\t")) else "")
        problems.append(Problem(name, "header", f"missing column(s) {missing}; found {list(df.columns)}{hint}"))
        return None
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        problems.append(Problem(name, "", "some rows have more values than the first line has column names: "
                                          "name every column"))
        return None
    return df


def _without_blank_edges(df: pd.DataFrame) -> pd.DataFrame:
    """The table without what spreadsheets leave at its edges: columns with neither a header nor a
    value, and rows of empty cells after the last filled one (each would be a problem per cell)."""
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed: ") and df[c].isna().all()])
    filled = np.flatnonzero(df.notna().any(axis=1).to_numpy())
    return df.iloc[: filled[-1] + 1 if len(filled) else 0]


def _show(value) -> str:
    """A cell value as a person typed it (no numpy reprs in messages)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _row(i: int) -> str:
    return f"row {i + 2}"  # +1 for the header, +1 for 1-based counting as in a spreadsheet


def _at_rows(problems: list[Problem], file: str, mask, message) -> None:
    """A problem at each of the first five rows where ``mask`` holds; ``message(i)`` says what."""
    problems.extend(Problem(file, _row(i), message(i)) for i in np.flatnonzero(np.asarray(mask))[:5])


_KINDS = ((type(None), "empty (null)"), (bool, "a boolean"), ((int, float), "a number"), (str, "text"),
          (list, "a list"), (dict, "a mapping"))  # bool before int: a boolean is an int too


def _kind_of(value) -> str:
    """What YAML read a value as, in a person's words."""
    return next((words for types, words in _KINDS if isinstance(value, types)), type(value).__name__)


def _is_number(value) -> bool:
    """A finite YAML number; a boolean is not one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ids(df: pd.DataFrame, col: str, known: set[str], file: str, problems: list[Problem],
               what: str = "region_id", unique: bool = False) -> None:
    """Empty and unknown ids (and, with ``unique``, repeated ones), five of each at most."""
    ids = df[col]
    _at_rows(problems, file, ids.isna(), lambda i: f"{what} is empty")
    if unique:
        _at_rows(problems, file, ids.duplicated() & ids.notna(), lambda i: f"duplicate {what} {ids.iloc[i]!r}")
    unknown = ~ids.isin(known) & ids.notna()
    if unknown.any():
        near = _near_ids(known)
        _at_rows(problems, file, unknown, lambda i: f"{what} {ids.iloc[i]!r} is not a region in {REGIONS_CSV}"
                 + (f" (did you mean {near[_id_key(ids.iloc[i])]!r}? a spreadsheet may have changed the id: keep "
                    "the column as text)" if _id_key(ids.iloc[i]) in near else ""))
    if unknown.sum() > 5:
        problems.append(Problem(file, "", f"{int(unknown.sum())} rows in all name unknown regions"))


def category_key(category) -> str:
    """A POI category however it was typed: spaces collapsed and stripped, lower case. Spellings
    with one key are one category, in the POI counts (eq. 3) and in the text vocabulary (eq. 7)."""
    return " ".join(str(category).split()).lower()


def _one_spelling(categories: pd.Series, city: str) -> pd.Series:
    """Each category under one spelling, its most common ("Cafe", "cafe " and "cafe" are one): the POI
    counts would count them apart while the text vocabulary merged them. Said once, with examples."""
    keys = categories.map(category_key)
    if keys.nunique() == categories.nunique():
        return categories
    counts = categories.groupby([keys, categories]).size().rename("n").reset_index(level=1)
    counts.columns = ["spelling", "n"]
    spellings = (counts.sort_values(["n", "spelling"], ascending=[False, True], kind="stable")
                 .groupby(level=0)["spelling"].agg(list))
    merged = spellings[spellings.map(len) > 1]
    warnings.warn(f"{city}: pois.csv writes {len(merged)} POI categor{'y' if len(merged) == 1 else 'ies'} in more "
                  "than one way (case or spaces); each is counted as one, under its most common spelling: "
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


def _near_ids(known: set[str]) -> dict[str, str]:
    """The known ids by :func:`_id_key`, where the key names one id only."""
    by_key: dict[str, list[str]] = {}
    for region_id in known:
        by_key.setdefault(_id_key(region_id), []).append(region_id)
    return {key: ids[0] for key, ids in by_key.items() if len(ids) == 1}


def _check_format_version(raw: dict, problems: list[Problem]) -> None:
    key = "format_version"
    if key not in raw:
        problems.append(Problem(CITY_YAML, key, f"required key is missing: add the line `{key}: {FORMAT_VERSION}` "
                                                "(the version of the city folder format; musecl's writers add it)"))
        return
    version = raw[key]
    if isinstance(version, bool) or not isinstance(version, int):
        problems.append(Problem(CITY_YAML, key, f"must be the whole number {FORMAT_VERSION}, "
                                                f"got {version!r} ({_kind_of(version)})"))
    elif version != FORMAT_VERSION:
        newer = "; it may come from a newer musecl" if version > FORMAT_VERSION else ""
        problems.append(Problem(CITY_YAML, key, f"{key} {version} is not supported: this musecl reads "
                                                f"{key} {FORMAT_VERSION}{newer}"))


def _read_indicator(name: str, spec, problems: list[Problem]) -> Indicator:
    """One entry of ``indicators:``; a key of the wrong type is a problem and keeps its default."""
    where = f"indicators.{name}"
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        problems.append(Problem(CITY_YAML, where, "must be a mapping of the indicator's metadata (long_name, unit, "
                                                  "log, allow_missing, allow_negative), "
                                                  f"got {spec!r} ({_kind_of(spec)})"))
        return Indicator(name=name, long_name=name)
    allowed = {f.name for f in dataclasses.fields(Indicator)} - {"name"}
    bad = sorted(str(k) for k in spec if k not in allowed)
    if bad:
        problems.append(Problem(CITY_YAML, where, f"unknown key(s) {bad}; known: {sorted(allowed)}"))
    kwargs: dict = {}
    for key in ("long_name", "unit"):
        value = spec.get(key)
        if isinstance(value, str) or _is_number(value):
            kwargs[key] = str(value)
        elif value is not None:
            problems.append(Problem(CITY_YAML, f"{where}.{key}", f"must be text, got {value!r} ({_kind_of(value)})"))
    for key in ("log", "allow_missing", "allow_negative"):
        value = spec.get(key)
        if isinstance(value, bool):
            kwargs[key] = value
        elif key in spec:
            problems.append(Problem(CITY_YAML, f"{where}.{key}", "must be true or false (a YAML boolean, unquoted), "
                                                                  f"got {value!r} ({_kind_of(value)})"))
    derived = spec.get("derived_from_input")
    if derived in MODALITIES:  # only text equals a modality
        kwargs["derived_from_input"] = derived
    elif derived is not None:
        problems.append(Problem(CITY_YAML, f"{where}.derived_from_input",
                                f"{derived!r} is not a modality; use one of {list(MODALITIES)} or leave it out"))
    return Indicator(name=name, long_name=kwargs.pop("long_name", name), **kwargs)


def _read_meta(root: Path, problems: list[Problem]) -> CityMeta | None:
    path = root / CITY_YAML
    _, why = _stat_file(path)
    if why:
        problems.append(Problem(CITY_YAML, "", "file is missing; every city folder needs one" if why == _MISSING
                                else why))
        return None
    try:
        raw = load_yaml(path)
    except YamlFileError as err:
        problems.append(Problem(CITY_YAML, f"line {err.line}" if err.line else "", err.problem))
        return None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        problems.append(Problem(CITY_YAML, "", "must be a mapping of keys to values"))
        return None
    missing = [key for key in ("name", "crs", "modalities", "indicators") if key not in raw]
    problems.extend(Problem(CITY_YAML, key, "required key is missing") for key in missing)
    _check_format_version(raw, problems)
    if missing:
        return None

    name = raw["name"]
    if not (isinstance(name, str) or _is_number(name)) or not str(name).strip():
        problems.append(Problem(CITY_YAML, "name", f"must be the city's name as text, got {name!r} ({_kind_of(name)})"))
    crs = str(raw["crs"])
    try:
        pyproj.CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001 - pyproj raises CRSError and friends
        problems.append(Problem(CITY_YAML, "crs", f"cannot read CRS {crs!r}: {exc}. "
                                                  "Use an EPSG code such as 'EPSG:4326'."))
    listed = [] if raw["modalities"] is None else raw["modalities"]
    if not isinstance(listed, list):
        problems.append(Problem(CITY_YAML, "modalities", f"must be a list such as [satellite, poi], "
                                                         f"got {listed!r} ({_kind_of(listed)})"))
        listed = []
    modalities: list[str] = []
    for m in listed:
        if m not in MODALITIES:
            problems.append(Problem(CITY_YAML, "modalities", f"unknown modality {m!r}; use {list(MODALITIES)}"))
        elif m in modalities:
            problems.append(Problem(CITY_YAML, "modalities", f"{m!r} is listed twice"))
        else:
            modalities.append(m)
    specs = raw["indicators"] if isinstance(raw["indicators"], dict) else {}
    if not specs:
        problems.append(Problem(CITY_YAML, "indicators", "must map each indicator column to its metadata"))
    indicators = {str(key): _read_indicator(str(key), spec, problems) for key, spec in specs.items()}

    hexagon = raw.get("hexagon_size_m")
    if hexagon is not None and not (_is_number(hexagon) and hexagon > 0):
        problems.append(Problem(CITY_YAML, "hexagon_size_m", "must be a positive number of metres (the hexagons' "
                                                             "centre-to-vertex size) or null for free polygons, "
                                                             f"got {hexagon!r} ({_kind_of(hexagon)})"))
        hexagon = None
    provenance = raw.get("provenance")
    if provenance is not None and not (isinstance(provenance, str) or _is_number(provenance)):
        problems.append(Problem(CITY_YAML, "provenance", f"must be text, got {_kind_of(provenance)}"))
        provenance = None
    max_missing = raw.get("max_missing_satellite", 0.5)
    if not (_is_number(max_missing) and 0 <= max_missing <= 1):
        problems.append(Problem(CITY_YAML, "max_missing_satellite", "must be a number from 0 to 1 (the fraction of "
                                                                    "regions allowed without a satellite image), "
                                                                    f"got {max_missing!r} ({_kind_of(max_missing)})"))
        max_missing = 0.5

    known = {"format_version", *(f.name for f in dataclasses.fields(CityMeta))} - {"extra"}  # the rest: extra
    mappings = {}
    for key in ("oracle_r2", "latents", "modality_latents", "modality_oracle_r2"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            problems.append(Problem(CITY_YAML, key, f"must be a mapping (key: value), got {type(value).__name__}"))
            value = {}
        mappings[key] = dict(value)
    for key, wanted in (("modality_latents", list), ("modality_oracle_r2", dict)):
        for m, value in list(mappings[key].items()):
            if m not in MODALITIES:
                problems.append(Problem(CITY_YAML, key, f"unknown modality {m!r}; use {list(MODALITIES)}"))
            if not isinstance(value or wanted(), wanted):
                problems.append(Problem(CITY_YAML, f"{key}.{m}",
                                        f"must be a {'list' if wanted is list else 'mapping'}, "
                                        f"got {type(value).__name__}"))
                mappings[key].pop(m)
    r2_tables = [("oracle_r2", mappings["oracle_r2"])]
    r2_tables += [(f"modality_oracle_r2.{m}", v) for m, v in mappings["modality_oracle_r2"].items() if v]
    for where, table in r2_tables:
        for k, v in list(table.items()):
            if not _is_number(v):
                problems.append(Problem(CITY_YAML, f"{where}.{k}",
                                        f"must be a number (an R2), got {v!r} ({_kind_of(v)})"))
                table.pop(k)
    return CityMeta(
        name=str(name), crs=crs, modalities=tuple(modalities), indicators=indicators,
        hexagon_size_m=hexagon, provenance="" if provenance is None else str(provenance),
        max_missing_satellite=float(max_missing),
        oracle_r2=mappings["oracle_r2"], latents=mappings["latents"],
        modality_latents={str(k): list(v or []) for k, v in mappings["modality_latents"].items()},
        modality_oracle_r2={str(m): dict(v or {}) for m, v in mappings["modality_oracle_r2"].items()},
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _check_id_spaces(df: pd.DataFrame, col: str, file: str, problems: list[Problem]) -> None:
    """Region ids are matched exactly across files: reject blank ones and surrounding spaces at their row."""
    blank, padded = [], []
    for i, value in enumerate(df[col].to_numpy(dtype=object)):
        if isinstance(value, str) and value != value.strip():
            (padded if value.strip() else blank).append(i)
    for i in blank[:5]:
        problems.append(Problem(file, _row(i), f"region_id {df[col].iloc[i]!r} is blank (only spaces)"))
    for i in padded[:5]:
        problems.append(Problem(file, _row(i), f"region_id {df[col].iloc[i]!r} has leading or trailing spaces; "
                                               "remove them (ids are matched exactly across files)"))
    if len(blank) + len(padded) > 10:
        problems.append(Problem(file, "", f"{len(blank) + len(padded)} region ids in all are blank or padded"))


def _check_geometries(df: pd.DataFrame, problems: list[Problem]) -> None:
    """Every geometry is a valid POLYGON or MULTIPOLYGON in WKT (closed rings that do not cross)."""
    f = REGIONS_CSV
    texts = [t if isinstance(t, str) else None for t in df[GEOMETRY]]
    geoms = shapely.from_wkt(np.array(texts, dtype=object), on_invalid="ignore")
    reasons = shapely.is_valid_reason(geoms)
    kinds = shapely.get_type_id(geoms)
    n_bad = 0
    for i, (text, geom) in enumerate(zip(texts, geoms)):
        if text is None:
            why = "geometry is empty; give a WKT POLYGON or MULTIPOLYGON"
        elif geom is None:
            try:
                shapely.from_wkt(text)
                why = "geometry is not a polygon in WKT: it cannot be parsed"
            except (ShapelyError, ValueError, TypeError) as exc:
                why = f"geometry is not a polygon in WKT: {exc}"
        elif kinds[i] not in (3, 6):  # 3: Polygon, 6: MultiPolygon
            why = f"geometry is not a polygon in WKT: expected a POLYGON or MULTIPOLYGON, got {geom.geom_type}"
        elif geom.is_empty:
            why = f"geometry is empty ({text.strip()[:40]}); give the region's outline"
        elif reasons[i] != "Valid Geometry":
            why = (f"geometry is not a valid polygon: {reasons[i]}; fix the outline (rings must be closed and "
                   "must not cross themselves or each other), e.g. with QGIS 'Fix geometries' or shapely.make_valid")
        else:
            continue
        n_bad += 1
        if n_bad <= 10:
            problems.append(Problem(f, f"{_row(i)}, region {df[REGION_ID].iloc[i]!r}", why))
    if n_bad > 10:
        problems.append(Problem(f, GEOMETRY, f"{n_bad} geometries in all are missing, not polygons or invalid"))


def _check_centres(df: pd.DataFrame, crs: str, problems: list[Problem]) -> None:
    """Each centre (WGS84) lies within its outline's own width of the outline, read in city.yaml's
    CRS: outlines in another CRS (metres under EPSG:4326, say) would load and map nothing."""
    try:
        geoms = gpd.GeoSeries.from_wkt(df[GEOMETRY], crs=crs).to_crs(WGS84).to_numpy()
    except pyproj.exceptions.CRSError:
        return  # reported with city.yaml
    xmin, ymin, xmax, ymax = shapely.bounds(geoms).T
    lon, lat = (pd.to_numeric(df[c]).to_numpy(dtype=float) for c in (LON, LAT))
    far = ~(shapely.distance(shapely.points(lon, lat), geoms) <= np.maximum(xmax - xmin, ymax - ymin))
    for i in np.flatnonzero(far)[:5]:
        problems.append(Problem(REGIONS_CSV, f"{_row(i)}, region {df[REGION_ID].iloc[i]!r}",
                                f"the centre ({lon[i]:g}, {lat[i]:g}) is far from the outline, which, read in "
                                f"{crs} (city.yaml: crs), spans lon {xmin[i]:g} to {xmax[i]:g} and lat "
                                f"{ymin[i]:g} to {ymax[i]:g}; give lon/lat in WGS84 degrees and the geometry in "
                                "the crs city.yaml names"))
    if far.sum() > 5:
        problems.append(Problem(REGIONS_CSV, GEOMETRY, f"{int(far.sum())} regions in all have their centre "
                                                       "far from their outline"))


def _check_regions(df: pd.DataFrame, problems: list[Problem]) -> None:
    f = REGIONS_CSV
    if df.empty:
        problems.append(Problem(f, "", "has no regions"))
        return
    _check_ids(df, REGION_ID, set(df[REGION_ID].dropna()), f, problems, unique=True)
    _check_id_spaces(df, REGION_ID, f, problems)
    for col, lo, hi in ((LON, -180, 180), (LAT, -90, 90)):
        values = pd.to_numeric(df[col], errors="coerce")
        _at_rows(problems, f, values.isna() | (values < lo) | (values > hi),  # inf and -inf are outside too
                 lambda i: f"{col} {_show(df[col].iloc[i])} is not a number in [{lo}, {hi}]")
    _check_geometries(df, problems)


def _too_few_regions(n: int) -> Problem | None:
    """The problem of a city with ``n`` regions, below :data:`MIN_REGIONS` (0 is another problem)."""
    if 0 < n < MIN_REGIONS:
        return Problem(REGIONS_CSV, "", f"has {n} region(s); musecl needs at least {MIN_REGIONS} (MIN_REGIONS): "
                                        "triplets draw 3 distinct regions and the probes' 60/20/20 split needs "
                                        f"{MIN_REGIONS} to leave 2 test regions for R2")
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
                return (f"is {width} x {height} = {width * height:,} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                        "an image may have (MAX_IMAGE_PIXELS); downscale it")
            im.load()
            if im.mode in HIGH_DEPTH_MODES:
                return (f"has {im.mode} pixels (16-bit or floating point); the run reads 8-bit images, and "
                        "converting would clip every value above 255 to white: save it as 8-bit RGB with the "
                        "contrast stretch that suits its sensor")
    except Image.DecompressionBombError as exc:
        return (f"is too large to decode ({exc}); an image may have at most {MAX_IMAGE_PIXELS:,} pixels "
                "(MAX_IMAGE_PIXELS): downscale it")
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the run could not read it either
        return (f"is not a readable image ({type(exc).__name__}: {exc})"
                + ("; HEIC and AVIF photos (phones) need converting to JPEG or PNG"
                   if Path(path).suffix.lower() in (".heic", ".heif", ".avif") else ""))
    if len(_DECODED) > 1_000_000:
        _DECODED.clear()
    _DECODED.add(key)
    return None


def _locate_image(root: str, rel) -> tuple[str | None, str | None, os.stat_result | None]:
    """(None, the file, its stat) if the ``path`` cell ``rel`` names a regular file inside ``root``,
    else (why not, None, None). The path as written must stay inside (relative, no ``..``); a
    symlink inside may point elsewhere (``from_raw.build_city(copy_images=False)`` makes them)."""
    if rel is None or (isinstance(rel, float) and math.isnan(rel)) or not str(rel).strip():
        return "path is empty", None, None
    rel = str(rel)
    if os.path.isabs(rel) or (("\\" in rel or ":" in rel) and PureWindowsPath(rel).is_absolute()):
        return "is an absolute path; give the path relative to the city folder", None, None
    norm = os.path.normpath(rel)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return ("points outside the city folder ('..'); keep images inside it and give their path relative to it",
                None, None)
    full = os.path.join(root, rel)
    st, why = _stat_file(full)
    if why == _MISSING and "\\" in rel and os.path.exists(os.path.join(root, rel.replace("\\", "/"))):
        return "image file is missing: the path uses '\\' (Windows); write it with '/'", None, None
    if why:
        return "image file is missing" if why == _MISSING else why, None, None
    return None, full, st


def _check_images(root: Path, df: pd.DataFrame, meta: CityMeta, known: set[str],
                  problems: list[Problem]) -> None:
    f = IMAGES_CSV
    _check_ids(df, REGION_ID, known, f, problems)
    _at_rows(problems, f, ~df[KIND].isin(IMAGE_KINDS),
             lambda i: f"kind {df[KIND].iloc[i]!r} is not one of {list(IMAGE_KINDS)}")
    located = [_locate_image(os.fspath(root), rel) for rel in df[PATH]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS reports it, with the file
        whys = [why or image_problem(full, st) for why, full, st in located]
    bad = [(i, rid, rel, why) for i, (rid, rel, why) in enumerate(zip(df[REGION_ID], df[PATH], whys)) if why]
    for i, rid, rel, why in bad[:10]:
        shown = "" if pd.isna(rel) else str(rel)
        problems.append(Problem(f, f"{_row(i)}, region {rid!r}", f"'{shown}': {why}" if shown else why))
    if len(bad) > 10:
        problems.append(Problem(f, "", f"{len(bad)} image rows in all point at missing or unreadable files"))
    sat = df.loc[df[KIND] == SATELLITE, REGION_ID]
    for rid in sat[sat.duplicated()].iloc[:5]:
        problems.append(Problem(f, f"region {rid!r}", "more than one satellite image"))
    for kind in IMAGE_KINDS:
        if kind in meta.modalities and not (df[KIND] == kind).any():
            problems.append(Problem(f, kind, f"modality {kind!r} is listed in {CITY_YAML} but has no images"))
    if SATELLITE in meta.modalities and known:
        missing = len(known - set(sat))
        if missing / len(known) > meta.max_missing_satellite:
            problems.append(Problem(f, SATELLITE, f"{n_of_regions(missing, len(known))} no satellite image; "
                                                  f"max_missing_satellite in {CITY_YAML} allows "
                                                  f"{meta.max_missing_satellite:.0%}"))


def _check_numbers(df: pd.DataFrame, cols: list[str], file: str, problems: list[Problem],
                   allow_nan: bool = False, allow_negative: bool = False, log: bool = False) -> None:
    """Every value of ``cols`` is a finite number (missing with ``allow_nan``), not negative
    unless ``allow_negative``, and above -1 with ``log`` (ln(1 + x) is modelled)."""
    def report(mask, what: str, message, limit: int = 3) -> None:
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        for i in rows[:limit]:
            region = df[REGION_ID].iloc[i] if REGION_ID in df.columns else df.iloc[i, 0]
            problems.append(Problem(file, f"{_row(i)}, region {region!r}, column {col}", message(i)))
        if len(rows) > limit:
            problems.append(Problem(file, f"column {col}", f"{len(rows)} rows in all {what}"))

    for col in cols:
        values = pd.to_numeric(df[col], errors="coerce")
        number = values.to_numpy(dtype=float)
        not_number = (values.isna() & df[col].notna()).to_numpy()
        report(not_number, "are not numbers", lambda i: f"{_show(df[col].iloc[i])} is not a number")
        report(np.isinf(number), "are infinite",
               lambda i: f"value {_show(df[col].iloc[i])} is not a finite number; every value must be finite"
                         f"{' (or left empty)' if allow_nan else ''}")
        if not allow_nan:
            report(df[col].isna().to_numpy(), "are missing",
                   lambda i: "value is missing (NaN) and this column does not allow missing values")
        finite = np.isfinite(number)
        if not allow_negative:
            report(finite & (number < 0), "are negative",
                   lambda i: f"value {number[i]} is negative and this column does not allow it")
        elif log:
            report(finite & (number <= -1), "are -1 or less",
                   lambda i: f"value {number[i]} is -1 or less, where ln(1 + x) (log: true) is undefined; set log: "
                             f"false for this indicator in {CITY_YAML}")


def _check_predictable(column: pd.Series, problems: list[Problem]) -> None:
    """Enough values to split and not one value for all: else the probes fail or score NaN later."""
    if len(column) < MIN_REGIONS:
        return  # a city too small to run: said once, by _too_few_regions
    values = pd.to_numeric(column, errors="coerce")
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    if len(values) < MIN_INDICATOR_VALUES:
        problems.append(Problem(INDICATORS_CSV, f"column {column.name}",
                                f"has a value for {len(values)} of {len(column)} regions; an indicator needs at "
                                f"least {MIN_INDICATOR_VALUES} (2 to train on, 1 to validate, 2 to test); "
                                "leave it out"))
    elif values.nunique() == 1:
        problems.append(Problem(INDICATORS_CSV, f"column {column.name}",
                                f"is {_show(values.iloc[0])} for every region that has a value: there is nothing "
                                "to predict; leave it out"))


def _inspect(root: Path) -> tuple[list[Problem], dict]:
    """Read and check every file: the problems, and the tables read (``too_few_regions``: the
    problem :func:`load_city` only warns about)."""
    problems: list[Problem] = []
    tables: dict = {"too_few_regions": None}
    if not root.is_dir():
        return [Problem(str(root), "", "is not a folder")], tables
    meta = _read_meta(root, problems)
    tables["meta"] = meta
    regions = _read_csv(root, REGIONS_CSV, problems, [REGION_ID, LON, LAT, GEOMETRY])
    if regions is not None:
        _check_regions(regions, problems)
        too_few = _too_few_regions(int(regions[REGION_ID].dropna().nunique()))
        if too_few is not None:
            problems.append(too_few)
            tables["too_few_regions"] = too_few
    tables["regions"] = regions
    if meta is None or regions is None:
        return problems, tables
    if not any(p.file == REGIONS_CSV and p is not tables["too_few_regions"] for p in problems):
        # outlines and centres are each valid: do they agree?
        _check_centres(regions, meta.crs, problems)
    known = set(regions[REGION_ID].dropna())

    needs_images = any(k in meta.modalities for k in IMAGE_KINDS)
    images = _read_csv(root, IMAGES_CSV, problems, [REGION_ID, KIND, PATH], optional=not needs_images)
    if images is not None:
        _check_images(root, images, meta, known, problems)

    pois = _read_csv(root, POIS_CSV, problems, [REGION_ID, CATEGORY], optional=POI not in meta.modalities,
                     also=[TEXT])
    if pois is not None:
        _check_ids(pois, REGION_ID, known, POIS_CSV, problems)
        _at_rows(problems, POIS_CSV, pois[CATEGORY].isna(), lambda i: "category is empty")
        if POI in meta.modalities and pois.empty:
            problems.append(Problem(POIS_CSV, "", f"modality 'poi' is listed in {CITY_YAML} but there are no POIs"))

    mobility = od = None
    given = {f: os.path.lexists(root / f) for f in (MOBILITY_CSV, OD_CSV)}
    if given[MOBILITY_CSV]:
        mobility = _read_csv(root, MOBILITY_CSV, problems, [REGION_ID, INFLOW, OUTFLOW])
        if mobility is not None:
            _check_ids(mobility, REGION_ID, known, MOBILITY_CSV, problems, unique=True)
            _check_numbers(mobility, [INFLOW, OUTFLOW], MOBILITY_CSV, problems)
    if given[OD_CSV]:
        od = _read_csv(root, OD_CSV, problems, [ORIGIN, DESTINATION, FLOW])
        if od is not None:
            _check_ids(od, ORIGIN, known, OD_CSV, problems, what="origin")
            _check_ids(od, DESTINATION, known, OD_CSV, problems, what="destination")
            _check_numbers(od, [FLOW], OD_CSV, problems)
    if MOBILITY in meta.modalities:
        if not any(given.values()):
            problems.append(Problem(MOBILITY_CSV, "", f"modality 'mobility' is listed in {CITY_YAML}: "
                                                      f"give {MOBILITY_CSV} (region_id, inflow, outflow) or "
                                                      f"{OD_CSV} (origin, destination, flow)"))
        elif not any(p.file in (MOBILITY_CSV, OD_CSV) for p in problems):
            if all(t is None or t.empty for t in (mobility, od)):
                problems.append(Problem(MOBILITY_CSV if mobility is not None else OD_CSV, "",
                                        "modality 'mobility' is listed but the table has no rows"))
            for file, table, cols in ((MOBILITY_CSV, mobility, [INFLOW, OUTFLOW]), (OD_CSV, od, [FLOW])):
                if table is not None and not table.empty and not pd.to_numeric(table[cols].stack()).any():
                    problems.append(Problem(file, ", ".join(cols), "every value is 0: the trips give nothing to "
                                            "tell regions apart by (eq. 1-2); give the trip counts, or drop "
                                            "'mobility' from the modalities"))

    indicators = _read_csv(root, INDICATORS_CSV, problems, [REGION_ID])
    if indicators is not None:
        _check_ids(indicators, REGION_ID, known, INDICATORS_CSV, problems, unique=True)
        for c in indicators.columns:
            if c != REGION_ID and c not in meta.indicators:
                problems.append(Problem(INDICATORS_CSV, f"column {c}", (
                    "has no header (a saved row index, or a stray value beside the table): delete it"
                    if str(c).startswith("Unnamed: ") else f"has no metadata: add it under 'indicators:' in {CITY_YAML}")))
        for name, ind in meta.indicators.items():
            if name not in indicators.columns:
                problems.append(Problem(INDICATORS_CSV, f"column {name}",
                                        f"is described in {CITY_YAML} but missing from the file"))
                continue
            _check_numbers(indicators, [name], INDICATORS_CSV, problems,
                           allow_nan=ind.allow_missing, allow_negative=ind.allow_negative, log=ind.log)
            _check_predictable(indicators[name], problems)
    latents = _read_csv(root, LATENTS_CSV, problems, [REGION_ID], optional=True)
    if latents is not None:
        _check_ids(latents, REGION_ID, known, LATENTS_CSV, problems, unique=True)
        _check_numbers(latents, [c for c in latents.columns if c != REGION_ID], LATENTS_CSV, problems,
                       allow_nan=True, allow_negative=True)
    ceilings = _read_csv(root, CEILINGS_CSV, problems, [REGION_ID, SOURCE], optional=True)
    if ceilings is not None:
        _check_ceilings(ceilings, meta, known, problems)
    tables.update(images=images, pois=pois, mobility=mobility, od=od, indicators=indicators, latents=latents,
                  ceilings=ceilings)
    return problems, tables


def _check_ceilings(df: pd.DataFrame, meta: CityMeta, known: set[str], problems: list[Problem]) -> None:
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
        raise TypeError(f"{who + ': ' if who else ''}city must be a City (musecl.city.load_city(folder); "
                        f"musecl.runner.resolve_city also takes a named data set); got {type(city).__name__}")
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
    regions = gpd.GeoDataFrame(regions[[LON, LAT]], geometry=gpd.GeoSeries.from_wkt(regions[GEOMETRY]),
                               crs=meta.crs)
    ids = regions.index

    images = t["images"]
    if images is None:
        images = pd.DataFrame(columns=[REGION_ID, KIND, PATH])
    images = images[[REGION_ID, KIND, PATH]].copy()
    images[PATH] = [root / str(p) for p in images[PATH]]
    if SATELLITE in meta.modalities:
        n_missing = len(set(ids) - set(images.loc[images[KIND] == SATELLITE, REGION_ID]))
        if n_missing:
            warnings.warn(f"{meta.name}: {n_of_regions(n_missing, len(ids))} no satellite image",
                          stacklevel=2)

    pois = t["pois"]
    if pois is None:
        pois = pd.DataFrame(columns=[REGION_ID, CATEGORY, TEXT])
    pois = pois.reindex(columns=[REGION_ID, CATEGORY, TEXT])  # no text column: empty text (below)
    pois[TEXT] = ["" if pd.isna(t) else str(t) for t in pois[TEXT]]
    pois[CATEGORY] = _one_spelling(pois[CATEGORY].astype(str), meta.name)

    od = t["od"]
    if t["mobility"] is not None:
        mobility = t["mobility"].set_index(REGION_ID)[[INFLOW, OUTFLOW]].astype(float)
    elif od is not None:
        mobility = inflow_outflow(od)
    else:
        mobility = pd.DataFrame(columns=[INFLOW, OUTFLOW], dtype=float)
    if MOBILITY in meta.modalities:
        n_missing = len(ids.difference(mobility.index))
        if n_missing:
            warnings.warn(f"{meta.name}: {n_of_regions(n_missing, len(ids))} no mobility record; "
                          "their inflow and outflow are set to 0", stacklevel=2)
    mobility = mobility.reindex(ids, fill_value=0.0)  # named region_id, as ids are

    indicators = t["indicators"].set_index(REGION_ID)[list(meta.indicators)].astype(float)
    n_no_row = len(ids.difference(indicators.index))
    if n_no_row:
        warnings.warn(f"{meta.name}: {n_of_regions(n_no_row, len(ids))} no row in {INDICATORS_CSV}; "
                      "their indicators are missing (NaN) and they are left out of evaluation",
                      stacklevel=2)
    indicators = indicators.reindex(ids)
    latents = t["latents"].set_index(REGION_ID).reindex(ids) if t["latents"] is not None else None
    return City(root=root, meta=meta, regions=regions, images=images, pois=pois, mobility=mobility,
                indicators=indicators, od=od, latents=latents, ceilings=t["ceilings"])


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
    """Write tables (region tables indexed by region_id) as a city folder and return it; images
    must already be in place under ``root``, ``images[path]`` relative to it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / CITY_YAML).write_text(yaml.safe_dump(meta.to_yaml_dict(), sort_keys=False, allow_unicode=True))

    def _indexed(df: pd.DataFrame, name: str) -> None:
        df = df.copy()
        df.index.name = REGION_ID
        df.reset_index().to_csv(root / name, index=False)

    if isinstance(regions, gpd.GeoDataFrame):  # in the city's CRS, each coordinate in the fewest digits that read back
        outlines = regions.geometry.to_crs(meta.crs) if regions.crs is not None else regions.geometry
        regions = pd.DataFrame(regions[[LON, LAT]]).assign(
            **{GEOMETRY: shapely.to_wkt(outlines.to_numpy(), rounding_precision=-1)})
    _indexed(regions[[LON, LAT, GEOMETRY]], REGIONS_CSV)
    _indexed(indicators, INDICATORS_CSV)
    if images is not None:
        images[[REGION_ID, KIND, PATH]].to_csv(root / IMAGES_CSV, index=False)
    if pois is not None:
        pois[[REGION_ID, CATEGORY, TEXT]].to_csv(root / POIS_CSV, index=False)
    if mobility is not None:
        _indexed(mobility[[INFLOW, OUTFLOW]], MOBILITY_CSV)
    if od is not None:
        od[[ORIGIN, DESTINATION, FLOW]].to_csv(root / OD_CSV, index=False)
    if latents is not None:
        _indexed(latents, LATENTS_CSV)
    if ceilings is not None:  # long: one row per region and source
        _indexed(ceilings, CEILINGS_CSV)
    return root


def restrict_city(src: str | Path, out: str | Path, modalities: Sequence[str], poi_text: bool = True,
                  latents: bool = True) -> Path:
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
        meta = dataclasses.replace(meta, oracle_r2={}, latents={}, modality_latents={}, modality_oracle_r2={})
    out = Path(out)
    images = city.images[city.images[KIND].isin([k for k in IMAGE_KINDS if k in keep])].copy()
    relative = [Path(p).relative_to(city.root) for p in images[PATH]]
    for path in relative:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(city.root / path, out / path)
    images[PATH] = [p.as_posix() for p in relative]
    pois = city.pois.assign(**{TEXT: city.pois[TEXT] if poi_text else ""}) if POI in keep else None
    ceilings = city.ceilings if latents else None
    if ceilings is not None:
        ceilings = ceilings[ceilings[SOURCE].isin([CEILING_ALL, *keep])].set_index(REGION_ID)
    write_city(out, meta, city.regions, city.indicators, images=images if len(images) else None, pois=pois,
               mobility=city.mobility if MOBILITY in keep else None,
               od=city.od if MOBILITY in keep else None, latents=city.latents if latents else None,
               ceilings=ceilings)
    problems = validate_city(out)
    if problems:
        raise CityFormatError(problems)
    return out
