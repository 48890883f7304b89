"""Choose a run setting on a second toy city, never on the city the book reports on.

How `head_reconstruction` in params/ci.yaml and `musecl.fusion.DEFAULT_RECONSTRUCTION` were
chosen: generate the toy city with another seed (same generator, other draws), run the chosen
methods once per candidate value, and score each value by the mean headline R2 over methods,
splits and seeds. The book's own city and its test parts never enter.

    .venv/bin/python experiments/select_on_a_second_city.py head_reconstruction 0 1 3 10 \\
        --methods "SV only" "RS only" MuseCL
    .venv/bin/python experiments/select_on_a_second_city.py fusion_reconstruction 1 3 10 30 100

About a minute per value on a 2-core machine with params/ci.yaml (the frozen image features are
computed once and cached under --out).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd

from musecl.config import RunConfig
from musecl.datasets.toy import TOY_DEFAULT_REGIONS, is_current_toy_city, make_toy_city
from musecl.report import headline_means
from musecl.runner import resolve_city, run


def select(key: str, values: Sequence, methods: Sequence[str] = ("MuseCL",), params: str = "params/ci.yaml",
           out: str | Path = "build/selection", city_seed: int = 1, n_regions: int = TOY_DEFAULT_REGIONS,
           image_size: int = 64) -> pd.DataFrame:
    """One row per value of ``key``: ``score`` (the mean over seeds of the headline R2 averaged over
    ``methods`` and splits) and each seed's value, scored on the toy city drawn with ``city_seed``."""
    out = Path(out)
    folder = out / f"toy-seed{city_seed}-{n_regions}"
    if not is_current_toy_city(folder):
        make_toy_city(folder, n_regions=n_regions, seed=city_seed, image_size=image_size, progress=False)
    city = resolve_city(folder)
    base = RunConfig.from_yaml(params).to_dict()
    rows = []
    for value in values:
        config = RunConfig.from_dict({**base, key: value})  # a bad key or value fails here, named
        results = run(city, out / f"{key}={value}", config, methods=methods, cache_dir=out / "cache", progress=False)
        per_seed = headline_means(results, city.meta.headline_indicators()).groupby("seed")["r2"].mean()
        rows.append({key: value, "score": per_seed.mean(), **{f"seed {s}": r2 for s, r2 in per_seed.items()}})
    return pd.DataFrame(rows).set_index(key)


def _value(text: str) -> int | float | str:
    """A number where the text is one ("3", "1e-3"), else the text (a choice such as "log-scaled")."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("key", help="a run setting (musecl.config.RunConfig)")
    parser.add_argument("values", nargs="+", type=_value, help="the candidate values")
    parser.add_argument("--methods", nargs="+", default=["MuseCL"])
    parser.add_argument("--params", default="params/ci.yaml")
    parser.add_argument("--out", default="build/selection")
    parser.add_argument("--city-seed", type=int, default=1, help="the second city's seed (the book's is 0)")
    args = parser.parse_args(argv)
    table = select(args.key, args.values, args.methods, args.params, args.out, args.city_seed)
    print(table.round(3).to_string())
    print(f"best {args.key}: {table['score'].idxmax()}")


if __name__ == "__main__":
    main()
