"""How much of what each image shows the frozen EfficientNet-Lite0 features hold, per
``backbone_layers`` setting, on a second toy city (never the book's).

The measurement behind ``musecl.encoders.heads.pooled_features_module``'s note: for each image
kind, the cross-validated R2 of a ridge read-out (``musecl.evaluation.latent_probe``) of every
latent that kind shows, from the features of the last conv layer ("last") and from the stem and
stage outputs ("stages"). No head is trained; the end-to-end choice is made by
``select_on_a_second_city.py backbone_layers last stages`` (params/ci.yaml cites it).

    .venv/bin/python experiments/backbone_readout.py            # city and features under build/selection

A few minutes on a 2-core machine the first time (the features are cached under --out and shared
with select_on_a_second_city.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from musecl.cache import Cache
from musecl.city import SATELLITE, STREETVIEW
from musecl.config import BACKBONE_LAYERS, RunConfig
from musecl.datasets.toy import MODALITY_LATENTS, TOY_DEFAULT_REGIONS, is_current_toy_city, make_toy_city
from musecl.evaluation import latent_probe
from musecl.methods.multisemantic import backbone_features
from musecl.runner import resolve_city


def readout(out: str | Path = "build/selection", params: str = "params/ci.yaml", city_seed: int = 1,
            n_regions: int = TOY_DEFAULT_REGIONS, image_size: int = 64) -> pd.DataFrame:
    """One row per (kind, layers): the feature columns and the read-out R2 of each shown latent."""
    out = Path(out)
    folder = out / f"toy-seed{city_seed}-{n_regions}"
    if not is_current_toy_city(folder):
        make_toy_city(folder, n_regions=n_regions, seed=city_seed, image_size=image_size, progress=False)
    city = resolve_city(folder)
    base = RunConfig.from_yaml(params)
    rows = []
    for kind in (SATELLITE, STREETVIEW):
        latents = city.latents[MODALITY_LATENTS[kind]]
        for layers in BACKBONE_LAYERS:
            cfg = base.replace(backbone_layers=layers)
            features = backbone_features(city, cfg, kind, Cache(out / "cache")).dropna()
            r2 = latent_probe(features, latents.loc[features.index])[0]
            rows.append({"kind": kind, "layers": layers, "columns": features.shape[1],
                         "mean R2": r2.mean(), **r2.to_dict()})
    return pd.DataFrame(rows).set_index(["kind", "layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/selection", help="city, cache (default: %(default)s)")
    parser.add_argument("--params", default="params/ci.yaml", help="image sizes (default: %(default)s)")
    parser.add_argument("--city-seed", type=int, default=1, help="the second city's seed (not the book's 0)")
    args = parser.parse_args()
    print(readout(args.out, args.params, args.city_seed).round(3).to_string())


if __name__ == "__main__":
    main()
