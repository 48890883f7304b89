"""One interface for every way of embedding regions (MuseCL, baselines, ablations).

Configured in the constructor; ``fit(city)``; ``transform(city)`` returns a table indexed by
``region_id``; ``save(dir)`` / ``load(dir)`` write and read weights plus a readable config.
Methods register under their canonical names (the ``method`` column of results.csv), so a
results table is a loop over the registry.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from musecl.cache import Cache
from musecl.city import City
from musecl.config import RunConfig

METHODS: dict[str, type["RegionEmbedder"]] = {}


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
