"""Numbers published by the papers, read from the data directory (never copied into git).

The file ``published_results.csv`` (source, city, indicator, method, r2, rmse, mae) lives in the
data directory: ``$MUSECL_DATA_DIR`` or, by default, ``../shared/data`` beside the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

PUBLISHED_CSV = "published_results.csv"


def data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``path``, else ``$MUSECL_DATA_DIR``, else ``../shared/data`` beside the
    repository; None when none of them exists."""
    candidates = [path, os.environ.get("MUSECL_DATA_DIR"),
                  Path(__file__).resolve().parents[2].parent / "shared" / "data"]
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_dir():
            return Path(candidate)
    return None


def published_results(path: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """The papers' own numbers, labelled by ``source`` ("MuseCL paper Table 1", ...), or None
    when the data directory (or the file) is absent."""
    root = data_dir(path)
    if root is None or not (root / PUBLISHED_CSV).exists():
        return None
    return pd.read_csv(root / PUBLISHED_CSV)
