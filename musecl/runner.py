"""``musecl run``: sampling, training, embedding and evaluation of a city in one call. Writes
``results.csv``, ``ceilings.csv`` (a generated city's, scored on the same test parts),
``embeddings/<method>.csv``, ``attention.csv``, ``predictions.csv`` (seed 0, random split: Figure 4),
``figures/``, ``config.yaml`` and ``run.json``."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torchvision
from joblib import Parallel, delayed

from musecl.cache import city_fingerprint, save_table
from musecl.city import IMAGE_KINDS, City, TooFewRegionsWarning, load_city, require_enough_regions
from musecl.config import RunConfig
from musecl.datasets.beijing import make_beijing_city
from musecl.datasets.manhattan import make_manhattan_city
from musecl.datasets.toy import is_current_toy_city, make_toy_city
from musecl.evaluation import (
    ProbeConfig, check_splits, evaluate_ceilings, evaluate_embedding, predict_indicator, resolve_jobs,
)
from musecl.io import atomic_save_json, atomic_write, in_worker, owned_folder, publish, rewarn
from musecl.methods import METHODS, make_method
from musecl.methods.base import describe_needs, unsupported_reason
from musecl.methods.combinations import ALL_METHODS, IMAGE_FREE
from musecl.plotting import plot_map, plot_predicted_vs_true
from musecl.training import progress_bar, resolve_device

# written only for some methods or cities: a rerun removes the previous run's stale copies
SOMETIMES_WRITTEN = ("attention.csv", "ceilings.csv", "predictions.csv")
NAMED_CITIES = {"toy": 600, "toy-small": 150}  # generated, no download
# converted from the verified raw files (musecl fetch NAME)
REAL_CITIES = {"beijing": make_beijing_city, "manhattan": make_manhattan_city}


class UnsupportedMethodsError(ValueError):
    """None of the requested methods can run on the city (each lacks an input the city does not have)."""


class EveryMethodFailedError(RuntimeError):
    """No method of a run could be fitted; the message names each method and its error."""


def make_named_city(name: str, folder: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Write the named data set's city folder (generated toy city, or a converted real one)."""
    if name in NAMED_CITIES:
        return make_toy_city(folder, n_regions=NAMED_CITIES[name], seed=0)
    if name in REAL_CITIES:
        return REAL_CITIES[name](folder, data_dir=data_dir)
    raise ValueError(f"unknown data set {name!r}; named ones: {sorted(NAMED_CITIES) + list(REAL_CITIES)}")


def resolve_city(city: str | os.PathLike | City, cities_dir: str | os.PathLike = "build/cities",
                 data_dir: str | os.PathLike | None = None) -> City:
    """A City from a folder, a City, or a data set name (written on first use into ``cities_dir``)."""
    if isinstance(city, City):
        return city
    name = str(city)
    if name in (*NAMED_CITIES, *REAL_CITIES) and not Path(name).exists():
        folder = Path(cities_dir) / name
        if not (folder / "city.yaml").exists() or (name in NAMED_CITIES and not is_current_toy_city(folder)):
            make_named_city(name, folder, data_dir=data_dir)
        return load_city(folder)
    if not Path(name).exists():
        raise FileNotFoundError(f"city {name!r} is neither a folder nor a named data set "
                                f"({sorted(NAMED_CITIES) + list(REAL_CITIES)})")
    return load_city(name)


def run(city: str | os.PathLike | City, out_dir: str | os.PathLike, config: RunConfig | None = None,
        methods: Sequence[str] = ("MuseCL",), cache_dir: str | os.PathLike | None = None,
        progress: bool = True) -> pd.DataFrame:
    """Fit every method on the city, evaluate its embedding, write ``out_dir``; return the results table.

    ``city``: a City, a folder or a data set name (:func:`resolve_city`). ``config`` None: the
    paper's settings (for a GPU); the book runs ``params/ci.yaml``. ``methods``: names or "all";
    those the city cannot run are skipped with a warning (none left: UnsupportedMethodsError).
    ``cache_dir``: trained stages and scores (default ``out_dir/cache``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        raise RuntimeError("musecl run works in one process. Under torchrun, train the image encoders with "
                           "`musecl train-encoders` (same params); then `musecl run` (no torchrun) reuses them")
    config = config or RunConfig()
    final = Path(out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TooFewRegionsWarning)  # an error just below, said once
        city = resolve_city(city)
    require_enough_regions(city)  # before the output folder is made or anything is trained
    ev = config.evaluation
    check_splits(city, config.seeds, ev.splits, block_size_m=ev.block_size_m, buffer_m=ev.buffer_m,
                 warn_few=False)  # fit_and_score warns (once: one place)
    resolve_device(config.machine.device)  # a GPU the settings name but this machine lacks: said now, not per method
    methods, skipped = supported_methods(methods, city)
    if not methods:
        raise UnsupportedMethodsError(f"{city.name} supports none of the requested methods: "
                         + "; ".join(f"{n} ({r})" for n, r in skipped.items()) + ". `musecl methods CITY` lists "
                         "what can run")
    for name, reason in skipped.items():
        warnings.warn(f"skipped {name}: {city.name} has {reason}", stacklevel=2)
    cache_dir = Path(cache_dir) if cache_dir is not None else final / "cache"
    settings = hashlib.sha256(json.dumps({"config": config.to_dict(), "methods": methods, "city": str(city.root.resolve())},
                                         sort_keys=True, default=str).encode()).hexdigest()
    with owned_folder(final, settings):  # one run per output folder; config and results arrive together
        out = final / f".staging-{os.getpid()}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            table = _write_run(out, city, config, methods, skipped, cache_dir, progress)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # a failed run leaves the previous outputs as they were
            raise
        # the results table last; a previous run's files that this run did not write go
        publish(out, final, last=("results.csv", "run.json"), stale=SOMETIMES_WRITTEN)
    return table


def _write_run(out: Path, city: City, config: RunConfig, methods: list[str], skipped: dict[str, str],
               cache_dir: Path, progress: bool) -> pd.DataFrame:
    """The body of :func:`run`, writing into the staging folder ``out``."""
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as handle:
        handle.write(config.to_yaml())
    start = time.perf_counter()
    fitted = fit_methods(methods, city, config, cache_dir, progress)
    failed = {name: outcome for name, outcome in fitted.items() if isinstance(outcome, str)}
    if len(failed) == len(methods):
        raise EveryMethodFailedError("every method failed: " + "; ".join(f"{n}: {e}" for n, e in failed.items()))
    for name, error in failed.items():
        warnings.warn(f"{name} failed and has no rows: {error}", stacklevel=2)
    methods = [name for name in methods if name not in failed]
    with_attention = [name for name in methods if fitted[name][3] is not None]
    attention_of = "MuseCL" if "MuseCL" in with_attention else next(iter(with_attention), None)
    results, timings = {}, {}
    for name in methods:
        embedding, results[name], timings[name], attention = fitted[name]
        save_table(embedding, out / "embeddings" / f"{name}.csv")
        if name == attention_of:
            save_table(attention, out / "attention.csv")
            first = attention.columns[0]  # "sv" (MuseCL) or "mobility" (its version without images)
            if attention[first].max() > attention[first].min():  # one view fused: beta is 0 or 1, no map
                ax = plot_map(city, attention[first], cmap="coolwarm", vmin=0, vmax=1,
                              title=f"{name}: weight of the {first} view, beta_{first} (eq. 9)", label=f"beta_{first}")
                ax.figure.savefig(out / "figures" / "attention_map.png", dpi=110, bbox_inches="tight")
                plt.close(ax.figure)
        if name == ("MuseCL" if "MuseCL" in methods else methods[-1]):  # Figure 4 for one method
            probe = method_probe(name, config)
            preds = pd.concat([predict_indicator(embedding, city, ind, split="random", seed=config.seeds[0],
                                                 probe=probe, probe_config=probe_settings(config))
                               for ind in city.meta.indicators])
            with atomic_write(out / "predictions.csv") as handle:
                preds.assign(method=name).to_csv(handle, index=False)
            fig = plot_predicted_vs_true(preds, log={n: ind.log for n, ind in city.meta.indicators.items()})
            fig.savefig(out / "figures" / "predicted_vs_true.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
    table = pd.concat(results.values(), ignore_index=True)
    with atomic_write(out / "results.csv") as handle:
        table.to_csv(handle, index=False)
    ev = config.evaluation
    ceilings = evaluate_ceilings(city, seeds=config.seeds, splits=ev.splits, block_size_m=ev.block_size_m,
                                 buffer_m=ev.buffer_m)
    if len(ceilings):  # a generated city's ceilings, on the very test parts the probes used
        with atomic_write(out / "ceilings.csv") as handle:
            ceilings.to_csv(handle, index=False)
    # failed: name -> "ErrorType: message" (no rows); skipped: name -> what the city lacks for it
    atomic_save_json(out / "run.json", {
        **run_info(city, config, timings), "method_workers": method_workers(config, methods),
        "failed_methods": failed, "skipped_methods": skipped,
        "wall_seconds": round(time.perf_counter() - start, 1)})
    return table


def method_probe(name: str, config: RunConfig) -> str:
    """The probe that scores a method: its own where it brings one (Location kNN), else the run's."""
    return getattr(METHODS.get(name), "probe", None) or config.evaluation.probe


def method_workers(config: RunConfig, methods: Sequence[str]) -> int:
    """Processes fitting methods side by side: ``config.machine.jobs`` (0: one per core) on the CPU,
    at most one per method with ``cost`` > 0 (a worker's start costs seconds); one on a GPU. A
    small CNN barely trains faster on a second thread, so methods side by side finish sooner."""
    if resolve_device(config.machine.device).type != "cpu":
        return 1
    heavy = sum(METHODS[name].cost > 0 for name in methods)
    return max(1, min(resolve_jobs(config.machine.jobs), heavy))


def fit_methods(methods: Sequence[str], city: City, config: RunConfig, cache_dir: Path,
                progress: bool = True) -> dict[str, tuple]:
    """``{name: (embedding, results rows, seconds, attention or None)}`` for every method, or
    ``{name: "ErrorType: message"}`` for a method that failed.

    With one worker, methods run here in turn (probes then use ``config.machine.jobs`` processes).
    With more, each worker process gets ``cores // workers`` threads and fits whole methods,
    their probes included, in order of :attr:`RegionEmbedder.cost` (longest first). Stages
    two methods share are computed once: the cache makes the second wait for the first.
    Trained weights depend on the thread count in their last bits (float sums in another
    order), so a run is repeatable bit for bit with the same ``jobs`` on the same machine."""
    workers = method_workers(config, methods)
    if workers == 1:
        return {name: fit_or_error(name, city, config, cache_dir, progress) for name in methods}

    threads = max(1, resolve_jobs(0) // workers)
    # the costliest first; sorted is stable: registry order among equals
    order = sorted(methods, key=lambda name: -METHODS[name].cost)
    jobs = (delayed(in_worker)(os.getpid(), fit_or_error, name, city, config, cache_dir, False,
                               probe_jobs=1, threads=threads)
            for name in order)
    done = Parallel(n_jobs=workers, backend="loky", return_as="generator")(jobs)
    bar = progress_bar()(done, total=len(order), disable=not progress,
                         desc=f"methods ({workers} processes)")
    return dict(zip(order, (rewarn(outcome) for outcome in bar)))


def fit_or_error(name: str, *args, **kwargs) -> tuple | str:
    """:func:`fit_and_score`, or the error as "ErrorType: message": one failing method must not
    cost the others' rows. Interrupts still stop."""
    try:
        return fit_and_score(name, *args, **kwargs)
    except Exception as error:  # noqa: BLE001 - recorded in run.json and warned about by run()
        return f"{type(error).__name__}: {error}"


def fit_and_score(name: str, city: City, config: RunConfig, cache_dir: Path, progress: bool = True,
                  probe_jobs: int | None = None, threads: int | None = None) -> tuple:
    """Fit one method, embed the city, score the embedding (cached): the unit of work that
    :func:`fit_methods` runs here or in a worker process."""
    if threads is not None:
        torch.set_num_threads(threads)
    ev = config.evaluation
    check_splits(city, config.seeds, ev.splits, block_size_m=ev.block_size_m,
                 buffer_m=ev.buffer_m)  # milliseconds: fail before training, not after
    start = time.perf_counter()
    rows, first = [], None
    for seeded in seed_configs(config):
        method = make_method(name, seeded, cache_dir=cache_dir, progress=progress)
        embedding = method.fit_transform(city)
        rows.append(score_embedding(embedding, city, name, seeded, method.cache, n_jobs=probe_jobs))
        if first is None:  # the first seed's embedding and attention are the ones written out
            first = embedding, (method.attention() if hasattr(method, "attention") else None)
    seconds = round(time.perf_counter() - start, 1)
    return first[0], pd.concat(rows, ignore_index=True), seconds, first[1]


def seed_configs(config: RunConfig) -> list[RunConfig]:
    """The configurations one method is fitted under: with ``retrain="per_seed"`` one per
    evaluation seed (every stage seeded by it, scored on that seed's split and probe only),
    with ``"once"`` the run's own (stages seeded by ``seed``, scored on every seed)."""
    if config.retrain == "once":
        return [config]
    return [config.replace(seed=seed, seeds=(seed,)) for seed in config.seeds]


EVALUATION_VERSION = 3  # bump when the probes or splits change: old cached scores are then ignored


def probe_settings(config: RunConfig):
    """The run's MLP probe settings (:class:`musecl.evaluation.ProbeConfig`)."""
    return ProbeConfig(max_epochs=config.evaluation.probe_max_epochs, patience=config.evaluation.probe_patience)


def score_embedding(embedding: pd.DataFrame, city: City, name: str, config: RunConfig, cache,
                    n_jobs: int | None = None) -> pd.DataFrame:
    """The results rows of an embedding, cached by its values and the city's data, so a cached
    rerun refits no probes."""
    probe, probe_config = method_probe(name, config), probe_settings(config)
    ev = config.evaluation
    settings = {"seeds": config.seeds, "splits": ev.splits, "probe": probe, "block_size_m": ev.block_size_m,
                "buffer_m": ev.buffer_m, "probe_config": probe_config}
    key = {"version": EVALUATION_VERSION, "method": name, "city": city_fingerprint(city),
           "embedding": hashlib.sha256(pd.util.hash_pandas_object(embedding, index=True).to_numpy().tobytes()
                                       + str(list(embedding.columns)).encode()).hexdigest(),
           **{k: str(v) for k, v in settings.items()}}

    def evaluate(folder: Path) -> None:
        evaluate_embedding(embedding, city, name, **settings, n_jobs=config.machine.jobs if n_jobs is None else n_jobs
                           ).to_csv(folder / "results.csv", index=False)

    return pd.read_csv(cache.get_or_compute("evaluation", key, evaluate) / "results.csv")


def expand_methods(methods: Sequence[str], city: City | None = None) -> list[str]:
    """Method names with ``"all"`` replaced by ``ALL_METHODS`` (plus ``IMAGE_FREE`` for a city
    without images), duplicates dropped. Raises ValueError for an unknown name."""
    if isinstance(methods, str):
        methods = [methods]
    image_free = city is not None and not any(city.has(kind) for kind in IMAGE_KINDS)
    everything = ALL_METHODS + IMAGE_FREE if image_free else ALL_METHODS
    names = list(dict.fromkeys(n for name in methods for n in (everything if name == "all" else [name])))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {sorted(METHODS)} (or 'all'); "
                         "`musecl methods` lists them with what each needs")
    return names


def supported_methods(methods: Sequence[str], city: City) -> tuple[list[str], dict[str, str]]:
    """The methods the city can run, and ``{name: reason}`` for the others (skipped, not failed)."""
    names = expand_methods(methods, city)
    skipped = {n: reason for n in names if (reason := unsupported_reason(n, city))}
    return [n for n in names if n not in skipped], skipped


def methods_table(city: City | None = None, config: RunConfig | None = None) -> pd.DataFrame:
    """``musecl methods``' table: each method, its inputs and, for a city, whether it runs there
    (with ``config``, also whether its settings allow it)."""
    rows = []
    for name in METHODS:
        row = {"method": name, "needs": describe_needs(name)}
        if city is not None:
            lacks = unsupported_reason(name, city)
            settings = METHODS[name].settings_reason(config) if config is not None else None
            row["runs here"] = (f"no: {lacks}" if lacks else
                                f"no: with these settings, {settings}" if settings else "yes")
        rows.append(row)
    return pd.DataFrame(rows)


def run_info(city: City, config: RunConfig, timings: dict) -> dict:
    """What a reader needs to trust a number: data, settings, software, machine, time."""
    return {"city": city.name, "city_root": str(city.root), "n_regions": len(city),
            "weights": config.image.weights, "device": config.machine.device, "seconds": timings,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            # trained weights differ in their last bits between instruction sets (AVX2, AVX512)
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "oracle_r2": city.meta.oracle_r2,
            "modality_oracle_r2": city.meta.modality_oracle_r2}


def summary_json(results: pd.DataFrame, indicators: Sequence[str] | None = None) -> str:
    """Mean R2 per method and split over ``indicators`` (None: every row), as JSON for the console."""
    if indicators is not None:
        results = results[results["indicator"].isin(list(indicators))]
    mean = results.groupby(["method", "split"])["r2"].mean().round(3)
    return json.dumps({f"{m}/{s}": v for (m, s), v in mean.items()})
