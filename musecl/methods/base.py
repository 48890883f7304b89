"""One interface for every way of embedding regions: configure, ``fit(city)``, ``transform(city)``
(a table indexed by ``region_id``), ``save``/``load``. Methods register under results.csv's names
and declare the inputs they need, so a run fits what a city supports and says what it skipped."""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from musecl.cache import Cache, city_fingerprint, load_table, save_table
from musecl.city import MOBILITY, POI, REGION_ID, SATELLITE, STREETVIEW, City, require_city
from musecl.config import RunConfig
from musecl.io import CONFIG_JSON, atomic_save_json, read_saved_config

EMBEDDINGS_CSV = "embeddings.csv"  # with config.json, what every method's save writes
HISTORY_CSV = "history.csv"  # a trained stage's per-epoch losses

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


def method_class(name: str) -> type["RegionEmbedder"]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def make_method(name: str, config: RunConfig | None = None, cache_dir: str | Path | None = None,
                progress: bool = True) -> "RegionEmbedder":
    """The registered method ``name`` (``musecl methods`` lists them), unfitted. ``cache_dir``:
    where its trained stages are kept and found again (None: a temporary folder)."""
    return method_class(name)(config=config, cache_dir=cache_dir, progress=progress)


class RegionEmbedder:
    """Base class: holds the run configuration and the cache every stage reads and writes."""

    name = "base"
    needs: tuple[str, ...] = ()  # inputs (INPUTS keys) the method cannot run without
    needs_any: tuple[tuple[str, ...], ...] = ()  # the city must have all of one of these groups
    cost = 0  # rough rank of CPU fit time: parallel runs start the longest first
    _fitted_attribute: str  # what fit and load set, so _check_fitted can tell a fitted method

    def __init__(self, config: RunConfig | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True):
        if config is not None and not isinstance(config, RunConfig):
            raise TypeError("config must be a RunConfig (RunConfig.from_yaml(path) reads a params "
                            f"file); got {type(config).__name__}")
        self.config = config or RunConfig()
        if cache_dir is None:  # a temporary folder (it can hold images), removed with the method
            cache_dir = tempfile.mkdtemp(prefix="musecl-")
            weakref.finalize(self, shutil.rmtree, cache_dir, ignore_errors=True)
        self.cache = Cache(cache_dir)
        self.progress = progress

    def fit(self, city: City) -> "RegionEmbedder":
        """Train (or find in the cache) whatever the method learns from ``city``; returns itself."""
        raise NotImplementedError

    def transform(self, city: City) -> pd.DataFrame:
        """The embedding of the city the method was fitted on: a DataFrame indexed by region id."""
        raise NotImplementedError

    def fit_transform(self, city: City) -> pd.DataFrame:
        return self.fit(city).transform(city)

    def check_inputs(self, city: City) -> None:
        """Refuse a city that lacks an input this method needs: a city without trips still has a
        (zero) mobility table, and triplets sampled on it would train on nothing, silently."""
        reason = _lacking(self, require_city(city, self.name))
        if reason:
            raise ValueError(f"{self.name} cannot run on {city.name}: it has {reason}")

    @classmethod
    def settings_reason(cls, config: RunConfig) -> str | None:
        """What these run settings lack for the method (as a city may lack inputs), or None."""
        return None

    def _check_fitted(self, city: City | None = None) -> None:
        """Refuse to serve a method that is not fitted, or (``city``) a city it was not fitted on."""
        if not hasattr(self, self._fitted_attribute):
            raise RuntimeError(f"{self.name} is not fitted: call fit(city) or "
                               f"{type(self).__name__}.load(folder)")
        # older saves recorded the fingerprint with labels; computed only if needed (it stats every image)
        if (city is not None and self.fitted_on != city_fingerprint(city, labels=False)
                and self.fitted_on != city_fingerprint(city)):
            raise ValueError(f"{self.name} was fitted on other data than {city.name!r}; its embeddings are "
                             "transductive (one per training region): fit it on this city")

    @classmethod
    def _read_save(cls, directory: Path, files: tuple[str, ...]) -> tuple[type, dict]:
        """The registered class (``cls`` or a subclass) and config.json of a folder it saved."""
        raw = read_saved_config(directory, files, f"{cls.__name__}.save")
        target = METHODS.get(raw.get("method"))
        if target is None or not issubclass(target, cls):
            raise ValueError(f"{directory} holds method {raw.get('method')!r}, not {cls.name!r}")
        return target, raw

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.name!r})"


class TableMethod(RegionEmbedder):
    """The base of every method whose whole result is one table of region vectors: ``fit`` builds
    it (subclasses: ``_compute``), ``transform`` returns it for the city it was fitted on
    (transductive, as MuseCL). ``probe``: a probe ("knn") the runner uses instead of the run's."""

    probe: str | None = None
    _fitted_attribute = "table_"

    def _compute(self, city: City) -> pd.DataFrame:
        raise NotImplementedError

    def options(self) -> dict:
        """The constructor's own arguments beyond the run settings (JSON-able), saved and reloaded."""
        return {}

    def fit(self, city: City) -> "TableMethod":
        self.check_inputs(city)
        table = self._compute(city).reindex(city.region_ids)
        finite = np.isfinite(table.to_numpy(dtype=np.float64)).all(axis=1)
        if not finite.all():
            bad = table.index[~finite]
            raise ValueError(f"{self.name}: non-finite embedding for {len(bad)} regions of "
                             f"{city.name}, e.g. {bad[:5].tolist()}")
        table.index.name = REGION_ID
        self.table_ = table
        self.fitted_on = city_fingerprint(city, labels=False)
        return self

    def transform(self, city: City) -> pd.DataFrame:
        self._check_fitted(city)
        return self.table_.reindex(city.region_ids).copy()

    def save(self, directory: str | Path) -> Path:
        """Write ``embeddings.csv``, then ``config.json`` (an earlier save's goes first: a save cut
        off half way leaves a folder that ``load`` refuses, not a table with other settings)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_JSON).unlink(missing_ok=True)
        save_table(self.table_, directory / EMBEDDINGS_CSV)
        atomic_save_json(directory / CONFIG_JSON, {
            "method": self.name, "fitted_on": self.fitted_on, "options": self.options(),
            "config": self.config.to_dict()})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TableMethod":
        """The method as :meth:`save` wrote it: fitted, with its settings and options."""
        directory = Path(directory)
        target, raw = cls._read_save(directory, (CONFIG_JSON, EMBEDDINGS_CSV))
        method = target(config=RunConfig.from_dict(raw["config"]), **raw.get("options", {}))
        method.table_ = load_table(directory / EMBEDDINGS_CSV)
        method.fitted_on = raw["fitted_on"]
        return method


class StagedMethod(RegionEmbedder):
    """The base of every method built from cached stages (MuseCL, the image and text baselines):
    ``fit`` records their folders (``fit_stages``), ``save`` copies them, ``load`` reads the copies."""

    STAGES: tuple[str, ...] = ()
    RESTORED: tuple[str, ...] = ()  # keys of _extra_config that load sets back (the rest: readers')
    _fitted_attribute = "stage_dirs"

    def fit_stages(self, city: City) -> dict[str, Path]:
        raise NotImplementedError

    def fit(self, city: City) -> "StagedMethod":
        self.check_inputs(city)
        self.stage_dirs = self.fit_stages(city)
        self.fitted_on = city_fingerprint(city, labels=False)
        return self

    def stage_table(self, stage: str, table: str = EMBEDDINGS_CSV) -> pd.DataFrame:
        """A stage's table as stored (NaN rows for regions without such images)."""
        self._check_fitted()
        return load_table(self.stage_dirs[stage] / table)

    def history(self, stage: str) -> pd.DataFrame:
        """Per-epoch training history of a trained stage (``train_loss``, ``val_loss``, ...)."""
        self._check_fitted()
        if stage not in self.stage_dirs:
            raise ValueError(f"{self.name} has no stage {stage!r}; it has {sorted(self.stage_dirs)}")
        path = self.stage_dirs[stage] / HISTORY_CSV
        if not path.exists():
            raise ValueError(f"stage {stage!r} of {self.name} keeps no per-epoch history (the POI "
                             "text's word2vec, a frozen backbone's features)")
        return pd.read_csv(path)

    def _extra_config(self) -> dict:
        """Saved beside the run settings in config.json; ``load`` sets those in ``RESTORED`` back."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Copy every stage, then a config.json. An earlier save's stage folders are replaced or
        removed, else ``load`` would serve them as this fit's; its config.json goes first, so a save
        cut off half way leaves a folder that ``load`` refuses."""
        self._check_fitted()
        directory = Path(directory)
        (directory / CONFIG_JSON).unlink(missing_ok=True)
        for stage in self.STAGES:
            src, dest = self.stage_dirs.get(stage), directory / stage
            if src is not None and Path(src).resolve() == dest.resolve():  # saved where loaded
                continue
            if dest.is_dir():
                shutil.rmtree(dest)
            if src is not None:
                shutil.copytree(src, dest)
        atomic_save_json(directory / CONFIG_JSON, {
            "method": self.name, "fitted_on": self.fitted_on, "config": self.config.to_dict(),
            **self._extra_config()})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "StagedMethod":
        """The method as :meth:`save` wrote it, its stages read from the copies in ``directory``."""
        directory = Path(directory)
        target, raw = cls._read_save(directory, (CONFIG_JSON,))
        method = target(config=RunConfig.from_dict(raw["config"]), progress=False)
        for name in target.RESTORED:
            if name in raw:  # a save from before the option existed keeps the class default
                setattr(method, name, raw[name])
        # a stage the city gave no input for (MuseCL with one image kind) was never written
        method.stage_dirs = {stage: directory / stage for stage in target.STAGES
                             if (directory / stage).is_dir()}
        method.fitted_on = raw["fitted_on"]
        return method


def city_inputs(city: City) -> set[str]:
    """The inputs a city offers: its modalities, plus ``od`` when it has an origin-destination table."""
    has_od = city.od is not None and not city.od.empty
    return set(city.meta.modalities) | ({OD} if has_od else set())


def unsupported_reason(name: str, city: City) -> str | None:
    """What the city lacks for the method ("no satellite images"), or None when it can run there."""
    return _lacking(method_class(name), city)


def _lacking(method, city: City) -> str | None:
    """What ``city`` lacks of a method's ``needs`` and ``needs_any``."""
    have = city_inputs(city)
    missing = [f"no {INPUTS[n]}" for n in method.needs if n not in have]
    if missing:
        return join_words(missing, "and")
    if method.needs_any and not groups_met(method, city):
        return "neither " + " nor ".join(_group_words(g) for g in method.needs_any)
    return None


def groups_met(method, city: City) -> list[tuple[str, ...]]:
    """The groups of a method's ``needs_any`` that ``city`` has in full."""
    have = city_inputs(city)
    return [group for group in method.needs_any if set(group) <= have]


def _group_words(group: tuple[str, ...]) -> str:
    return join_words([INPUTS[n] for n in group], "with")


def describe_needs(name: str) -> str:
    """The inputs a method needs, in words ("satellite images and POIs"; "nothing")."""
    method = METHODS[name]
    parts = [join_words([INPUTS[n] for n in method.needs], "and")] if method.needs else []
    if method.needs_any:
        parts.append(join_words([_group_words(g) for g in method.needs_any], "or"))
    return "; ".join(parts) or "nothing (region locations only)"


def join_words(items: list[str], conjunction: str) -> str:
    """["a", "b", "c"], "and" -> "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"
