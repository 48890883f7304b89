"""Arithmetic on region tables (regions x columns) that several layers share: one standardisation
and one mean imputation, so a probe, a baseline and the fusion treat a table the same way."""
from __future__ import annotations

import numpy as np
import pandas as pd


def column_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation (1 for a constant column), so that other rows (a
    probe's validation and test rows) can be standardised as the rows they were taken from."""
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)


def standardise_columns(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance (a constant column becomes 0)."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = column_scale(x)
    return (x - mean) / std


def impute_column_means(table: pd.DataFrame, what: str = "an embedding",
                        means: np.ndarray | None = None) -> pd.DataFrame:
    """NaN cells filled with their column's mean over the regions that have a value (or with
    ``means``, kept from training): a region without an image gets the average view. A column no
    region has a value for is refused (nothing to impute from). numpy, not per-column pandas:
    tables are up to 2560 wide."""
    values = table.to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if means is None and missing.all(axis=0).any():
        raise ValueError(f"no region has {what} (column(s) {list(table.columns[missing.all(axis=0)])[:5]} are "
                         "NaN for every region): nothing to impute from (does the city have these images?)")
    if missing.any():
        fill = np.nanmean(values, axis=0) if means is None else np.asarray(means, dtype=np.float64)
        values = np.where(missing, fill[None, :], values)
    return pd.DataFrame(values, index=table.index, columns=table.columns)
