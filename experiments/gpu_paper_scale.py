"""The paper's CNN encoders at the paper's input sizes, trained far longer, on a lent GPU.

Issue 13 asks whether the book's CPU results understate MuseCL: would the paper's encoders
(ResNet-18 on 224 px satellite images, Inception-v3 on 299 px street views), trained on the
paper's 10,000 triplets, do better than the frozen-feature heads the book trains on two CPU
cores? This script runs the book's toy city with ``params/gpu.yaml`` (why each setting: its
comments) and writes, method by method, so that a run stopped by the loan's time limit keeps
every method it finished:

* ``results.csv``: the rows of chapter 8's tables (method, indicator, split, seed, r2, rmse, ...);
* ``ceilings.csv``: the toy city's ceilings on the same test parts;
* ``run.json``: the machine, the settings, the commit, each method's seconds, what was skipped.

    python experiments/gpu_paper_scale.py --out OUT --params params/gpu.yaml --budget 420

``--budget`` (seconds): no method starts after it (the one running finishes); seeds run one
after the other, every method within each. The book reads the
recorded files from ``book/measurements/`` (chapter 8); it never runs this itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from musecl.config import RunConfig
from musecl.evaluation import evaluate_ceilings
from musecl.runner import fit_and_score, resolve_city
from musecl.scaling.bench import machine_info

# MuseCL first: it trains the image stages the next three read from the cache
METHODS = ("MuseCL", "SV only", "RS only", "Concat", "Inception v3", "ResNet-18", "Pretext features",
           "Location kNN")


def commit() -> str | None:
    """The checkout's commit; a copy without .git (a lent machine's) names it in MUSECL_COMMIT."""
    if os.environ.get("MUSECL_COMMIT"):
        return os.environ["MUSECL_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--params", default="params/gpu.yaml")
    parser.add_argument("--city", default="toy", help="a city folder or named data set (default: the book's)")
    parser.add_argument("--work", default="/tmp/musecl-gpu", type=Path, help="cities and cache")
    parser.add_argument("--budget", default=420.0, type=float, help="seconds after which no method starts")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    config = RunConfig.from_yaml(args.params)
    info = {"what": "experiments/gpu_paper_scale.py on the book's toy city (issue 13, item 6)",
            "params_file": args.params, "config": config.to_dict(), "commit": commit(),
            "machine": machine_info(), "seconds": {}, "not_started": []}

    def save() -> None:
        info["wall_seconds"] = round(time.perf_counter() - start, 1)
        (args.out / "run.json").write_text(json.dumps(info, indent=1, default=str))

    city = resolve_city(args.city, cities_dir=args.work / "cities")
    info["city_seconds"] = round(time.perf_counter() - start, 1)
    ceilings = evaluate_ceilings(city, seeds=config.seeds, splits=config.evaluation.splits,
                                 block_size_m=config.evaluation.block_size_m, buffer_m=config.evaluation.buffer_m)
    ceilings.to_csv(args.out / "ceilings.csv", index=False)
    save()
    rows = []
    # seed by seed (each seed retrains every stage, as retrain: per_seed does), so that a run the
    # loan cuts short keeps whole seeds of every method rather than all seeds of a few
    for seed in config.seeds:
        seeded = config.replace(seed=seed, seeds=(seed,))
        for name in args.methods:
            if time.perf_counter() - start > args.budget:
                info["not_started"].append(f"{name}, seed {seed}")
                continue
            _, result, seconds, _ = fit_and_score(name, city, seeded, args.work / "cache", progress=False)
            rows.append(result)
            info["seconds"][f"{name}, seed {seed}"] = seconds
            pd.concat(rows, ignore_index=True).to_csv(args.out / "results.csv", index=False)
            save()
            print(f"seed {seed}, {name}: {seconds:.1f} s (wall {time.perf_counter() - start:.0f} s)", flush=True)
    info["encoders"] = encoder_histories(args.work / "cache")
    save()


def encoder_histories(cache: Path) -> list[dict]:
    """Per trained image encoder (one per kind and seed): epochs, best epoch, losses, speed."""
    found = []
    for path in sorted(cache.glob("encoder-*/*/history.csv")):
        history, key = pd.read_csv(path), json.loads((path.parent / "key.json").read_text())["key"]
        training = json.loads((path.parent / "encoder" / "config.json").read_text()).get("training", {})
        found.append({"stage": path.parent.parent.name, "seed": key.get("seed"), "epochs": len(history),
                      "best_epoch": training.get("best_epoch"),
                      "train_loss": [round(float(history["train_loss"].iloc[i]), 4) for i in (0, -1)],
                      "val_loss": [round(float(history["val_loss"].iloc[i]), 4) for i in (0, -1)]
                      if "val_loss" in history else None,
                      "images_per_s": round(float(history["images_per_s"].median()))})
    return found


if __name__ == "__main__":
    main()
