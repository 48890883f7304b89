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
    repository. The first of these that is set decides (a set but absent folder gives None, never
    a silent fall-back to another one); None when it does not exist."""
    chosen = path if path is not None else os.environ.get("MUSECL_DATA_DIR") or None
    if chosen is None:
        chosen = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(chosen) if Path(chosen).is_dir() else None


def published_results(path: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """The papers' own numbers, labelled by ``source`` ("MuseCL paper Table 1", ...), or None
    when the data directory (or the file) is absent."""
    root = data_dir(path)
    if root is None or not (root / PUBLISHED_CSV).exists():
        return None
    return pd.read_csv(root / PUBLISHED_CSV)
