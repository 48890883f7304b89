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

:func:`validate_city` lists every problem with the file, the row or region and what is wrong;
:func:`load_city` raises :class:`CityFormatError` with the same messages, and warns with a
count whenever it fills or drops anything.  The full description is ``data/README.md``.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REGION_ID = "region_id"
LON, LAT, GEOMETRY = "lon", "lat", "geometry"
KIND, PATH = "kind", "path"
CATEGORY, TEXT = "category", "text"
INFLOW, OUTFLOW = "inflow", "outflow"
ORIGIN, DESTINATION, FLOW = "origin", "destination", "flow"

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
        """The indicators a headline mean averages: all but those derived from an input."""
        return [k for k, v in self.indicators.items() if not v.derived_from_input]

    def derived_indicators(self) -> dict[str, str]:
        """Indicator -> the input modality it aggregates (left out of headline means)."""
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
    regions: pd.DataFrame  # index region_id; lon, lat, geometry (WKT)
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
        """The ceiling ``source`` predicts for each region (modelled scale, region x indicator):
        "all" is the noiseless function of every latent, a modality the best prediction from what
        it shows. Scored on a split's test part it is that split's ceiling."""
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


# --------------------------------------------------------------------------------------------
# reading and checking


def _read_csv(root: Path, name: str, problems: list[Problem], required: list[str],
              optional: bool = False) -> pd.DataFrame | None:
    path = root / name
    if not path.exists():
        if not optional:
            problems.append(Problem(name, "", "file is missing"))
        return None
    try:
        df = pd.read_csv(path, dtype={REGION_ID: str, ORIGIN: str, DESTINATION: str},
                         keep_default_na=True)
    except pd.errors.EmptyDataError:
        problems.append(Problem(name, "", "file is empty (expected a header row with columns "
                                          f"{', '.join(required)})"))
        return None
    except Exception as exc:  # noqa: BLE001 - report any parse failure with the file name
        problems.append(Problem(name, "", f"cannot be read as CSV: {exc}"))
        return None
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append(Problem(name, "header", f"missing column(s) {missing}; found {list(df.columns)}"))
        return None
    return df


def _show(value) -> str:
    """A cell value as a person typed it (no numpy reprs in messages)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _row(i: int) -> str:
    return f"row {i + 2}"  # +1 for the header, +1 for 1-based counting as in a spreadsheet


def _check_ids(df: pd.DataFrame, col: str, known: set[str], file: str, problems: list[Problem],
               what: str = "region_id") -> None:
    ids = df[col]
    for i in np.flatnonzero(ids.isna().to_numpy())[:5]:
        problems.append(Problem(file, _row(i), f"{what} is empty"))
    unknown = ~ids.isin(known) & ids.notna()
    for i in np.flatnonzero(unknown.to_numpy())[:5]:
        problems.append(Problem(file, _row(i), f"{what} {ids.iloc[i]!r} is not a region in {REGIONS_CSV}"))
    if unknown.sum() > 5:
        problems.append(Problem(file, "", f"{int(unknown.sum())} rows in all name unknown regions"))


def _read_meta(root: Path, problems: list[Problem]) -> CityMeta | None:
    path = root / CITY_YAML
    if not path.exists():
        problems.append(Problem(CITY_YAML, "", "file is missing; every city folder needs one"))
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        problems.append(Problem(CITY_YAML, "", f"is not valid YAML: {exc}"))
        return None
    if not isinstance(raw, dict):
        problems.append(Problem(CITY_YAML, "", "must be a mapping of keys to values"))
        return None
    for key in ("name", "crs", "modalities", "indicators"):
        if key not in raw:
            problems.append(Problem(CITY_YAML, key, "required key is missing"))
    if any(p.file == CITY_YAML for p in problems):
        return None
    crs = str(raw["crs"])
    try:
        import pyproj

        pyproj.CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001 - pyproj raises CRSError and friends
        problems.append(Problem(CITY_YAML, "crs", f"cannot read CRS {crs!r}: {exc}. "
                                                  "Use an EPSG code such as 'EPSG:4326'."))
    modalities = tuple(raw["modalities"] or ())
    for m in modalities:
        if m not in MODALITIES:
            problems.append(Problem(CITY_YAML, "modalities", f"unknown modality {m!r}; use {list(MODALITIES)}"))
    indicators: dict[str, Indicator] = {}
    if not isinstance(raw["indicators"], dict) or not raw["indicators"]:
        problems.append(Problem(CITY_YAML, "indicators", "must map each indicator column to its metadata"))
    else:
        allowed = {f.name for f in dataclasses.fields(Indicator)} - {"name"}
        for name, spec in raw["indicators"].items():
            spec = spec or {}
            bad = set(spec) - allowed
            if bad:
                problems.append(Problem(CITY_YAML, f"indicators.{name}", f"unknown key(s) {sorted(bad)}"))
                continue
            derived = spec.get("derived_from_input")
            if derived is not None and derived not in MODALITIES:
                problems.append(Problem(CITY_YAML, f"indicators.{name}.derived_from_input",
                                        f"{derived!r} is not a modality; use one of {list(MODALITIES)} or leave it out"))
                spec = {k: v for k, v in spec.items() if k != "derived_from_input"}
            indicators[str(name)] = Indicator(name=str(name), long_name=str(spec.get("long_name", name)),
                                              **{k: v for k, v in spec.items() if k != "long_name"})
    known = {"format_version", "name", "crs", "hexagon_size_m", "modalities", "provenance",
             "max_missing_satellite", "indicators", "oracle_r2", "latents", "modality_latents",
             "modality_oracle_r2"}
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
                problems.append(Problem(CITY_YAML, f"{key}.{m}", f"must be a {'list' if wanted is list else 'mapping'}, "
                                                                 f"got {type(value).__name__}"))
                mappings[key].pop(m)
    return CityMeta(
        name=str(raw["name"]), crs=crs, modalities=modalities, indicators=indicators,
        hexagon_size_m=raw.get("hexagon_size_m"), provenance=str(raw.get("provenance", "")),
        max_missing_satellite=float(raw.get("max_missing_satellite", 0.5)),
        oracle_r2=mappings["oracle_r2"], latents=mappings["latents"],
        modality_latents={str(k): list(v or []) for k, v in mappings["modality_latents"].items()},
        modality_oracle_r2={str(m): dict(v or {}) for m, v in mappings["modality_oracle_r2"].items()},
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _check_regions(df: pd.DataFrame, problems: list[Problem]) -> None:
    f = REGIONS_CSV
    if df.empty:
        problems.append(Problem(f, "", "has no regions"))
        return
    _check_ids(df, REGION_ID, set(df[REGION_ID].dropna()), f, problems)
    dup = df[REGION_ID].duplicated(keep="first") & df[REGION_ID].notna()
    for i in np.flatnonzero(dup.to_numpy())[:5]:
        problems.append(Problem(f, _row(i), f"duplicate region_id {df[REGION_ID].iloc[i]!r}"))
    for col, lo, hi in ((LON, -180, 180), (LAT, -90, 90)):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values < lo) | (values > hi)
        for i in np.flatnonzero(bad.to_numpy())[:5]:
            problems.append(Problem(f, _row(i), f"{col} {_show(df[col].iloc[i])} is not a number in [{lo}, {hi}]"))
    from shapely import wkt
    from shapely.errors import ShapelyError

    for i, text in enumerate(df[GEOMETRY]):
        try:
            geom = wkt.loads(str(text))
            if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
                raise ValueError(f"expected a POLYGON or MULTIPOLYGON, got {geom.geom_type}")
        except (ShapelyError, ValueError, TypeError) as exc:
            problems.append(Problem(f, f"{_row(i)}, region {df[REGION_ID].iloc[i]!r}",
                                    f"geometry is not a polygon in WKT: {exc}"))
            if sum(p.file == f for p in problems) > 10:
                break


def _check_image(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        return "image file is missing"
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"is not a readable image ({type(exc).__name__}: {exc})"
    return None


def _check_images(root: Path, df: pd.DataFrame, meta: CityMeta, known: set[str],
                  problems: list[Problem]) -> None:
    f = IMAGES_CSV
    _check_ids(df, REGION_ID, known, f, problems)
    bad_kind = ~df[KIND].isin(IMAGE_KINDS)
    for i in np.flatnonzero(bad_kind.to_numpy())[:5]:
        problems.append(Problem(f, _row(i), f"kind {df[KIND].iloc[i]!r} is not one of {list(IMAGE_KINDS)}"))
    n_bad = 0
    for i, (rid, rel) in enumerate(zip(df[REGION_ID], df[PATH])):
        why = _check_image(root / str(rel))
        if why:
            n_bad += 1
            if n_bad <= 10:
                problems.append(Problem(f, f"{_row(i)}, region {rid!r}", f"{rel}: {why}"))
    if n_bad > 10:
        problems.append(Problem(f, "", f"{n_bad} image rows in all point at missing or unreadable files"))
    sat = df[df[KIND] == SATELLITE]
    dup = sat[REGION_ID].duplicated()
    for i in np.flatnonzero(dup.to_numpy())[:5]:
        problems.append(Problem(f, f"region {sat[REGION_ID].iloc[i]!r}", "more than one satellite image"))
    for kind in IMAGE_KINDS:
        present = kind in meta.modalities
        n = int((df[KIND] == kind).sum())
        if present and n == 0:
            problems.append(Problem(f, kind, f"modality {kind!r} is listed in {CITY_YAML} but has no images"))
    if SATELLITE in meta.modalities and known:
        missing = len(known - set(sat[REGION_ID]))
        if missing / len(known) > meta.max_missing_satellite:
            problems.append(Problem(f, SATELLITE, f"{missing} of {len(known)} regions have no satellite image; "
                                                  f"max_missing_satellite in {CITY_YAML} allows "
                                                  f"{meta.max_missing_satellite:.0%}"))


def _check_numbers(df: pd.DataFrame, cols: list[str], file: str, problems: list[Problem],
                   allow_nan: bool = False, allow_negative: bool = False) -> None:
    for col in cols:
        values = pd.to_numeric(df[col], errors="coerce")
        not_number = values.isna() & df[col].notna()
        for i in np.flatnonzero(not_number.to_numpy())[:3]:
            problems.append(Problem(file, f"{_row(i)}, column {col}", f"{_show(df[col].iloc[i])} is not a number"))
        if not allow_nan:
            for i in np.flatnonzero(df[col].isna().to_numpy())[:3]:
                problems.append(Problem(file, f"{_row(i)}, region {df.iloc[i, 0]!r}, column {col}",
                                        "value is missing (NaN) and this column does not allow missing values"))
        if not allow_negative:
            for i in np.flatnonzero((values < 0).to_numpy())[:3]:
                problems.append(Problem(file, f"{_row(i)}, region {df.iloc[i, 0]!r}, column {col}",
                                        f"value {values.iloc[i]} is negative and this column does not allow it"))


def _inspect(root: Path) -> tuple[list[Problem], dict]:
    """Read and check every file; return the problems and the tables read."""
    problems: list[Problem] = []
    tables: dict = {}
    if not root.is_dir():
        return [Problem(str(root), "", "is not a folder")], tables
    meta = _read_meta(root, problems)
    tables["meta"] = meta
    regions = _read_csv(root, REGIONS_CSV, problems, [REGION_ID, LON, LAT, GEOMETRY])
    if regions is not None:
        _check_regions(regions, problems)
    tables["regions"] = regions
    if meta is None or regions is None:
        return problems, tables
    known = set(regions[REGION_ID].dropna())

    needs_images = any(k in meta.modalities for k in IMAGE_KINDS)
    images = _read_csv(root, IMAGES_CSV, problems, [REGION_ID, KIND, PATH], optional=not needs_images)
    if images is not None:
        _check_images(root, images, meta, known, problems)
    tables["images"] = images

    pois = _read_csv(root, POIS_CSV, problems, [REGION_ID, CATEGORY], optional=POI not in meta.modalities)
    if pois is not None:
        _check_ids(pois, REGION_ID, known, POIS_CSV, problems)
        for i in np.flatnonzero(pois[CATEGORY].isna().to_numpy())[:5]:
            problems.append(Problem(POIS_CSV, _row(i), "category is empty"))
        if POI in meta.modalities and pois.empty:
            problems.append(Problem(POIS_CSV, "", f"modality 'poi' is listed in {CITY_YAML} but there are no POIs"))
    tables["pois"] = pois

    mobility = od = None
    if (root / MOBILITY_CSV).exists():
        mobility = _read_csv(root, MOBILITY_CSV, problems, [REGION_ID, INFLOW, OUTFLOW])
        if mobility is not None:
            _check_ids(mobility, REGION_ID, known, MOBILITY_CSV, problems)
            _check_numbers(mobility, [INFLOW, OUTFLOW], MOBILITY_CSV, problems)
            for i in np.flatnonzero(mobility[REGION_ID].duplicated().to_numpy())[:5]:
                problems.append(Problem(MOBILITY_CSV, _row(i), f"duplicate region_id {mobility[REGION_ID].iloc[i]!r}"))
    if (root / OD_CSV).exists():
        od = _read_csv(root, OD_CSV, problems, [ORIGIN, DESTINATION, FLOW])
        if od is not None:
            _check_ids(od, ORIGIN, known, OD_CSV, problems, what="origin")
            _check_ids(od, DESTINATION, known, OD_CSV, problems, what="destination")
            _check_numbers(od, [FLOW], OD_CSV, problems)
    if MOBILITY in meta.modalities:
        if mobility is None and od is None and not (root / MOBILITY_CSV).exists():
            problems.append(Problem(MOBILITY_CSV, "", f"modality 'mobility' is listed in {CITY_YAML}: "
                                                      f"give {MOBILITY_CSV} (region_id, inflow, outflow) or "
                                                      f"{OD_CSV} (origin, destination, flow)"))
        elif all(t is None or t.empty for t in (mobility, od)):
            problems.append(Problem(MOBILITY_CSV if mobility is not None else OD_CSV, "",
                                    "modality 'mobility' is listed but the table has no rows"))
    tables["mobility"], tables["od"] = mobility, od

    indicators = _read_csv(root, INDICATORS_CSV, problems, [REGION_ID])
    if indicators is not None:
        _check_ids(indicators, REGION_ID, known, INDICATORS_CSV, problems)
        for i in np.flatnonzero(indicators[REGION_ID].duplicated().to_numpy())[:5]:
            problems.append(Problem(INDICATORS_CSV, _row(i), f"duplicate region_id {indicators[REGION_ID].iloc[i]!r}"))
        columns = [c for c in indicators.columns if c != REGION_ID]
        for c in columns:
            if c not in meta.indicators:
                problems.append(Problem(INDICATORS_CSV, f"column {c}",
                                        f"has no metadata: add it under 'indicators:' in {CITY_YAML}"))
        for name, ind in meta.indicators.items():
            if name not in indicators.columns:
                problems.append(Problem(INDICATORS_CSV, f"column {name}",
                                        f"is described in {CITY_YAML} but missing from the file"))
                continue
            _check_numbers(indicators, [name], INDICATORS_CSV, problems,
                           allow_nan=ind.allow_missing, allow_negative=ind.allow_negative)
    tables["indicators"] = indicators
    tables["latents"] = _read_csv(root, LATENTS_CSV, problems, [REGION_ID], optional=True)
    ceilings = _read_csv(root, CEILINGS_CSV, problems, [REGION_ID, SOURCE], optional=True)
    if ceilings is not None:
        _check_ceilings(ceilings, meta, known, problems)
    tables["ceilings"] = ceilings
    return problems, tables


def _check_ceilings(df: pd.DataFrame, meta: CityMeta, known: set[str], problems: list[Problem]) -> None:
    f = CEILINGS_CSV
    _check_ids(df, REGION_ID, known, f, problems)
    bad = ~df[SOURCE].isin(CEILING_SOURCES)
    for i in np.flatnonzero(bad.to_numpy())[:5]:
        problems.append(Problem(f, _row(i), f"source {df[SOURCE].iloc[i]!r} is not one of {list(CEILING_SOURCES)}"))
    for i in np.flatnonzero(df.duplicated([REGION_ID, SOURCE]).to_numpy())[:5]:
        problems.append(Problem(f, _row(i), f"duplicate ({df[REGION_ID].iloc[i]!r}, {df[SOURCE].iloc[i]!r})"))
    columns = [c for c in df.columns if c not in (REGION_ID, SOURCE)]
    for c in columns:
        if c not in meta.indicators:
            problems.append(Problem(f, f"column {c}", f"is not an indicator of {CITY_YAML}"))
    _check_numbers(df, [c for c in columns if c in meta.indicators], f, problems, allow_nan=True,
                   allow_negative=True)


def validate_city(path: str | Path) -> list[Problem]:
    """Every problem with the city folder at ``path`` (empty list: the folder is valid)."""
    return _inspect(Path(path))[0]


def load_city(path: str | Path) -> City:
    """Read a city folder into a :class:`City`; raise :class:`CityFormatError` if it is invalid."""
    root = Path(path).resolve()
    problems, t = _inspect(root)
    if problems:
        raise CityFormatError(problems)
    meta: CityMeta = t["meta"]
    regions = t["regions"].set_index(REGION_ID)
    ids = regions.index

    images = t["images"]
    if images is None:
        images = pd.DataFrame(columns=[REGION_ID, KIND, PATH])
    images = images[[REGION_ID, KIND, PATH]].copy()
    images[PATH] = [root / str(p) for p in images[PATH]]
    if SATELLITE in meta.modalities:
        n_missing = len(set(ids) - set(images.loc[images[KIND] == SATELLITE, REGION_ID]))
        if n_missing:
            warnings.warn(f"{meta.name}: {n_missing} of {len(ids)} regions have no satellite image",
                          stacklevel=2)

    pois = t["pois"]
    if pois is None:
        pois = pd.DataFrame(columns=[REGION_ID, CATEGORY, TEXT])
    if TEXT not in pois.columns:
        pois[TEXT] = ""
    pois = pois[[REGION_ID, CATEGORY, TEXT]].copy()
    pois[TEXT] = ["" if pd.isna(t) else str(t) for t in pois[TEXT]]
    pois[CATEGORY] = pois[CATEGORY].astype(str)

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
            warnings.warn(f"{meta.name}: {n_missing} of {len(ids)} regions have no mobility record; "
                          "their inflow and outflow are set to 0", stacklevel=2)
    mobility = mobility.reindex(ids, fill_value=0.0)
    mobility.index.name = REGION_ID

    indicators = t["indicators"].set_index(REGION_ID)[list(meta.indicators)].astype(float)
    n_no_row = len(ids.difference(indicators.index))
    if n_no_row:
        warnings.warn(f"{meta.name}: {n_no_row} of {len(ids)} regions have no row in {INDICATORS_CSV}; "
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
    """Write tables (region tables indexed by region_id) as a city folder; images must already
    be in place under ``root`` with ``images[path]`` relative to it. Returns the folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / CITY_YAML).write_text(yaml.safe_dump(meta.to_yaml_dict(), sort_keys=False, allow_unicode=True))

    def _indexed(df: pd.DataFrame, name: str) -> None:
        df = df.copy()
        df.index.name = REGION_ID
        df.reset_index().to_csv(root / name, index=False)

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
