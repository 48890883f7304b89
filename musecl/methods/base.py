"""One interface for every way of embedding regions (MuseCL, baselines, ablations).

Configured in the constructor; ``fit(city)``; ``transform(city)`` returns a table indexed by
``region_id``; ``save(dir)`` / ``load(dir)`` write and read weights plus a readable config.
Methods register under their canonical names (the ``method`` column of results.csv), so a
results table is a loop over the registry. Each method declares the inputs it cannot do without
(``needs``: all of them; ``needs_any``: at least one), so a run on a city that lacks some
modalities fits what the city supports and names what it skipped and why
(:func:`unsupported_reason`, ``musecl methods CITY``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from musecl.cache import Cache
from musecl.city import MOBILITY, POI, SATELLITE, STREETVIEW, City
from musecl.config import RunConfig

METHODS: dict[str, type["RegionEmbedder"]] = {}

OD = "od"  # not a modality of city.yaml: the optional origin-destination table (od.csv) of mobility
INPUTS = {SATELLITE: "satellite images", STREETVIEW: "street-view images", POI: "POIs",
          MOBILITY: "mobility (inflow/outflow)", OD: "origin-destination flows (od.csv)"}


def register(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def make_method(name: str, config: RunConfig | None = None, cache_dir: str | Path | None = None,
                progress: bool = True) -> "RegionEmbedder":
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name](config=config, cache_dir=cache_dir, progress=progress)


class RegionEmbedder:
    """Base class: holds the run configuration and the cache every stage reads and writes."""

    name = "base"
    needs: tuple[str, ...] = ()  # inputs (INPUTS keys) the method cannot run without
    needs_any: tuple[str, ...] = ()  # of these, the city must have at least one
    cost = 0  # rough rank of fit time on the CPU (higher: longer): parallel runs start the longest first

    def __init__(self, config: RunConfig | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True):
        self.config = config or RunConfig()
        # without a cache folder, stages still go through a (temporary) cache: one code path
        self.cache = Cache(cache_dir if cache_dir is not None else tempfile.mkdtemp(prefix="musecl-"))
        self.progress = progress

    def fit(self, city: City) -> "RegionEmbedder":
        raise NotImplementedError

    def transform(self, city: City) -> pd.DataFrame:
        raise NotImplementedError

    def fit_transform(self, city: City) -> pd.DataFrame:
        return self.fit(city).transform(city)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.name!r})"


def impute_column_means(table: pd.DataFrame, what: str = "an embedding") -> pd.DataFrame:
    """NaN cells filled with their column's mean over the regions that have a value: a region
    without an image gets the average view. A column no region has a value for is refused
    (nothing to impute from). numpy, not per-column pandas: tables are up to 2560 wide."""
    values = table.to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if missing.all(axis=0).any():
        raise ValueError(f"no region has {what} (column(s) {list(table.columns[missing.all(axis=0)])[:5]} are "
                         "NaN for every region): nothing to impute from (does the city have these images?)")
    if missing.any():
        values = np.where(missing, np.nanmean(values, axis=0)[None, :], values)
    return pd.DataFrame(values, index=table.index, columns=table.columns)


def city_inputs(city: City) -> set[str]:
    """The inputs a city offers: its modalities, plus ``od`` when it has an origin-destination table."""
    have = set(city.meta.modalities)
    if city.od is not None and not city.od.empty:
        have.add(OD)
    return have


def unsupported_reason(name: str, city: City) -> str | None:
    """What the city lacks for the method ("no satellite images"), or None when it can run there."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    method, have = METHODS[name], city_inputs(city)
    missing = [INPUTS[n] for n in method.needs if n not in have]
    if missing:
        return join_words([f"no {m}" for m in missing], "and")
    if method.needs_any and not have.intersection(method.needs_any):
        return "neither " + " nor ".join(INPUTS[n] for n in method.needs_any)
    return None


def describe_needs(name: str) -> str:
    """The inputs a method needs, in words ("satellite images and POIs"; "nothing")."""
    method = METHODS[name]
    parts = [join_words([INPUTS[n] for n in method.needs], "and")] if method.needs else []
    if method.needs_any:
        parts.append(join_words([INPUTS[n] for n in method.needs_any], "or"))
    return "; ".join(parts) or "nothing (region locations only)"


def join_words(items: list[str], conjunction: str) -> str:
    """["a", "b", "c"], "and" -> "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"
