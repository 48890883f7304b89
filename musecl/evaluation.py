"""Probes, splits and metrics: how well a region embedding predicts each socioeconomic indicator.

The paper's protocol (and the official code's): an MLP [512, 256, 128, 64] with ReLU regresses the
indicator on ln(1 + x) from the embedding, MSE loss, Adam lr 5e-4, batch 32, early stopping on
a validation part (patience 50), one random 60/20/20 split; R2 and RMSE on the test part.

Added, each a named option: several seeds; a buffered spatial block split (a random split lets
location alone look like skill); ridge and k-nearest-neighbour probes (kNN on region centres:
what location alone explains). Evaluations return rows of ``RESULT_COLUMNS``.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans
from sklearn.linear_model import RidgeCV
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor
from threadpoolctl import ThreadpoolController
from torch import nn
from torch.nn import functional as F

from musecl.city import CEILING_ALL, MOBILITY, POI, REGION_ID, SATELLITE, SOURCE, STREETVIEW, City, require_city
from musecl.config import PROBES, SPLITS
from musecl.io import check_choice, check_region_table, in_worker, n_of_regions, rewarn
from musecl.tables import column_scale, standardise_columns
from musecl.training import Trainer, one_torch_thread

RESULT_COLUMNS = ["city", "indicator", "method", "split", "seed", "r2", "rmse", "n_test"]
PREDICTION_COLUMNS = [REGION_ID, "indicator", "split_part", "y_true", "y_pred"]
PARTS = ("train", "val", "test")
BUFFER = "buffer"  # split_part of regions a spatial split leaves out: too close to a test region
BUFFER_CORRELATION = 0.1  # "auto" buffer: out to where neighbours' values correlate below this
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
BLOCK_HEXAGONS = 10  # default spatial block side, in hexagon sizes (1 km hexagons -> 10 km blocks)
MIN_BLOCKS_ACROSS = 5  # ... but at least this many blocks across the city's extent
SPATIAL_SPLITS = ("spatial", "spatial-cv")  # the splits that need blocks (spatial_setting)
CV_FOLDS = 5  # "spatial-cv": every block tested once per seed, in one of this many folds
INPUT_CLIP = 10.0  # standardised probe inputs are clipped to +-10 training standard deviations


# ------------------------------------------------------------------------------------------
# splits


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6) or f[0] == 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1 "
                         f"with train > 0; got {tuple(fractions)}")
    return f


def random_split(n: int, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with ``seed`` and cut it into train, val and test (rounded sizes; test gets
    the rest, and at least the 2 regions R2 needs: taken from validation, then training, which keep
    1 and 2; rounding alone left 1 test region of 5, 6 or 8)."""
    f = _check_fractions(fractions)
    if n < 3:
        raise ValueError(f"need at least 3 items to split into train, val and test; got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(f[0] * n))
    n_val = min(int(round(f[1] * n)), n - n_train)
    if f[2] > 0 and n - n_train - n_val < 2:
        short = 2 - (n - n_train - n_val)
        from_val = min(short, max(n_val - 1, 0))
        n_val -= from_val
        n_train -= min(short - from_val, max(n_train - 2, 0))
    return (np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val]),
            np.sort(order[n_train + n_val:]))


def block_ids(xy_m: np.ndarray, block_size_m: float) -> np.ndarray:
    """The square block (of side ``block_size_m``, grid anchored at the minimum x and y) of each point."""
    xy = np.asarray(xy_m, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise ValueError(f"xy_m must be a finite (n, 2) array of coordinates in metres; got shape {xy.shape}")
    if not block_size_m > 0:
        raise ValueError(f"block_size_m must be > 0; got {block_size_m}")
    cells = np.floor((xy - xy.min(axis=0)) / block_size_m).astype(np.int64)
    _, ids = np.unique(cells, axis=0, return_inverse=True)
    return ids.reshape(-1)


def _deal_blocks(ids: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """Each region's part: the blocks, shuffled with ``seed``, each go in turn to the part furthest
    below its target size (a target of 0: never), so sizes are right to within about one block."""
    sizes = np.bincount(ids)
    count = np.zeros(len(targets))
    part_of_block = np.empty(len(sizes), dtype=np.int64)
    for block in np.random.default_rng(seed).permutation(len(sizes)):
        k = int(np.argmax(np.where(targets > 0, targets - count, -np.inf)))
        part_of_block[block] = k
        count[k] += sizes[block]
    return part_of_block[ids]


def _beyond_buffer(xy_m: np.ndarray, test: np.ndarray, buffer_m: float) -> np.ndarray:
    """Which regions lie at least ``buffer_m`` from every ``test`` region (a mask); all, without a
    buffer."""
    xy = np.asarray(xy_m, dtype=float)
    if not buffer_m or buffer_m <= 0:
        return np.ones(len(xy), dtype=bool)
    near_test, _ = cKDTree(xy[test]).query(xy, k=1)
    return near_test >= buffer_m


def spatial_block_split(xy_m: np.ndarray, block_size_m: float, seed: int,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, buffer_m: float = 0.0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign whole square blocks to train, val or test so neighbours do not leak across parts.

    Blocks are shuffled with ``seed``; each block in turn goes to the part furthest below its
    target size (fraction x n). Part sizes are therefore right to within about one block; use
    blocks much smaller than the city for fractions close to the asked ones.

    ``buffer_m`` > 0 then drops every training and validation point closer than that to a test
    point: a region just across a block edge would otherwise give its test neighbour's value
    away (Roberts et al. 2017, "buffered" cross-validation). Dropped points are in no part.
    """
    f = _check_fractions(fractions)
    ids = block_ids(xy_m, block_size_m)
    n = len(ids)
    n_blocks = int(ids.max()) + 1
    wanted = int((f > 0).sum())
    if n_blocks < wanted:
        raise ValueError(f"only {n_blocks} block(s) of {block_size_m:g} m cover the {n} regions; "
                         f"need at least {wanted} to fill train, val and test. Use a smaller "
                         "block_size_m.")
    part = _deal_blocks(ids, f * n, seed)
    if (part == 2).any():
        part = np.where((part != 2) & ~_beyond_buffer(xy_m, part == 2, buffer_m), -1, part)
        if not (part == 0).any():
            raise ValueError(f"a buffer of {buffer_m:g} m around the test blocks leaves no "
                             "training region; use a smaller buffer_m or smaller blocks")
    return tuple(np.flatnonzero(part == k) for k in range(3))  # type: ignore[return-value]


def spatial_folds(xy_m: np.ndarray, block_size_m: float, seed: int, folds: int = CV_FOLDS,
                  buffer_m: float = 0.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Spatial cross-fitting: whole blocks dealt (shuffled with ``seed``) to ``folds`` folds of
    about equal size; fold k is the test part once, fold k + 1 its validation part, the rest its
    training part, less what lies within ``buffer_m`` of the test part (as in
    :func:`spatial_block_split`). Every region is tested exactly once, so a seed's score rests on
    the whole city instead of the few blocks one test part holds. Its R2 is over every region's
    out-of-fold prediction, measured against the whole city's variance: a steadier quantity than
    one part's R2 (whose variance changes with the blocks drawn), and not on the same level."""
    ids = block_ids(xy_m, block_size_m)
    n_blocks = int(ids.max()) + 1
    if folds < 3 or n_blocks < folds:
        raise ValueError(f"{n_blocks} block(s) of {block_size_m:g} m cannot fill {folds} folds "
                         "(at least 3: train, val, test); use a smaller block_size_m")
    fold = _deal_blocks(ids, np.full(folds, len(ids) / folds), seed)
    parts = []
    for k in range(folds):
        test, val = np.flatnonzero(fold == k), np.flatnonzero(fold == (k + 1) % folds)
        train = np.flatnonzero((fold != k) & (fold != (k + 1) % folds))
        far = _beyond_buffer(xy_m, fold == k, buffer_m)
        train, val = train[far[train]], val[far[val]]
        if not len(train) or not len(val):
            raise ValueError(f"a buffer of {buffer_m:g} m around fold {k} leaves it no "
                             f"{'training' if not len(train) else 'validation'} region; use a "
                             "smaller buffer_m or smaller blocks")
        parts.append((train, val, test))
    return parts


def correlation_by_distance(city: City, indicators: Sequence[str] | None = None, n_anchors: int = 2000,
                            max_distance_m: float | None = None, seed: int = 0) -> pd.DataFrame:
    """How far a region's neighbours give its value away: the correlogram mean(z_i z_j) of values
    standardised over the city, per indicator and distance bin (one region spacing wide, centred
    on multiples of it, up to a third of the city's extent or 30 spacings; indexed by the bin's
    upper edge); column ``pairs`` counts the pairs, found by a k-d tree around at most
    ``n_anchors`` seeded anchor regions (never an N x N matrix)."""
    indicators = list(city.meta.indicators) if indicators is None else list(indicators)
    xy = city.xy_m()
    targets = city.targets()[indicators]
    z = ((targets - targets.mean()) / targets.std(ddof=0).replace(0, np.nan)).to_numpy()
    tree = cKDTree(xy)
    spacing = float(np.median(tree.query(xy, k=2)[0][:, 1])) if len(xy) > 1 else 1.0
    extent = float(np.max(xy.max(axis=0) - xy.min(axis=0))) if len(xy) else 0.0
    reach = float(max_distance_m) if max_distance_m else max(min(extent / 3, 30 * spacing), 2 * spacing)
    rng = np.random.default_rng(seed)
    anchors = rng.choice(len(xy), size=min(int(n_anchors), len(xy)), replace=False)
    neighbours = tree.query_ball_point(xy[anchors], reach)
    i = np.repeat(anchors, [len(b) for b in neighbours])
    j = np.concatenate(neighbours).astype(np.int64)
    i, j = i[i != j], j[i != j]  # an anchor is no pair with itself
    distance = np.hypot(*(xy[i] - xy[j]).T)
    edges = (np.arange(1, int(np.ceil(reach / spacing)) + 1) + 0.5) * spacing  # k-th ring of neighbours in bin k
    which = np.searchsorted(edges, distance, side="left")
    means = [np.nanmean(z[i[which == k]] * z[j[which == k]], axis=0) if (which == k).any()
             else np.full(len(indicators), np.nan) for k in range(len(edges))]
    table = pd.DataFrame(means, index=pd.Index(edges, name="distance_m"), columns=indicators)
    return table.assign(pairs=np.bincount(which, minlength=len(edges))[:len(edges)])


def correlation_range(city: City, indicators: Sequence[str] | None = None,
                      threshold: float = BUFFER_CORRELATION, **kwargs) -> float:
    """The shortest distance (metres) beyond which two regions' values correlate, averaged over
    ``indicators`` (default: the headline ones), below ``threshold``: the buffer a spatial split
    needs so that no training region gives a test region's value away. From
    :func:`correlation_by_distance`."""
    indicators = city.meta.headline_indicators() if indicators is None else list(indicators)
    table = correlation_by_distance(city, indicators, **kwargs)
    mean = table[indicators].mean(axis=1).dropna()
    if mean.empty:
        raise ValueError(f"{city.name}: no correlation by distance to read a range from (indicators "
                         f"{list(indicators)}; each needs values in regions at several distances)")
    below = np.flatnonzero((mean < threshold).to_numpy())
    if not len(below):
        return float(mean.index[-1])
    k = int(below[0])
    if k == 0:
        return float(mean.index[0])
    # linear interpolation between the last bin above the threshold and the first below it
    d0, d1, c0, c1 = mean.index[k - 1], mean.index[k], mean.iloc[k - 1], mean.iloc[k]
    return float(d0 + (c0 - threshold) / (c0 - c1) * (d1 - d0))


# ------------------------------------------------------------------------------------------
# probes


@dataclass(frozen=True)
class ProbeConfig:
    """The paper's MLP probe; ``patience`` epochs without a better validation loss stop training."""

    hidden: tuple[int, ...] = (512, 256, 128, 64)
    lr: float = 5e-4
    batch_size: int = 32
    max_epochs: int = 500
    patience: int = 50
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or self.lr <= 0:
            raise ValueError(f"batch_size, max_epochs, patience must be >= 1 and lr > 0; got {self}")


def _mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    return {"loss": F.mse_loss(model(x).squeeze(-1), y)}


def _training_rows(x_train, y_train, least: int) -> tuple[np.ndarray, np.ndarray]:
    """A probe's training data as float64 (rows x columns, and one target per row), checked."""
    x_train = np.asarray(x_train, np.float64)
    y_train = np.asarray(y_train, np.float64).reshape(-1)
    if len(x_train) != len(y_train) or len(x_train) < least:
        raise ValueError(f"need >= {least} training row(s) and as many targets; "
                         f"got {len(x_train)} and {len(y_train)}")
    return x_train, y_train


class MLPProbe:
    """The paper's evaluation head: an MLP regressor, deterministic for a seed.

    Inputs and target are standardised with the training part's mean and deviation only (the
    target's scaling leaves the MSE objective unchanged up to a constant and speeds Adam up).
    With a validation part, the weights of the epoch with the lowest validation loss are kept.
    """

    def __init__(self, config: ProbeConfig | None = None, seed: int = 0):
        self.config, self.seed = config or ProbeConfig(), int(seed)
        self.model: nn.Sequential | None = None
        self.history_: pd.DataFrame | None = None

    def _build(self, n_in: int) -> nn.Sequential:
        widths = (n_in, *self.config.hidden)
        layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> "MLPProbe":
        x_train, y_train = _training_rows(x_train, y_train, 2)
        self.x_mean_, self.x_std_ = column_scale(x_train)
        self.y_mean_, self.y_std_ = float(y_train.mean()), float(y_train.std() or 1.0)
        xt, yt = self._x(x_train), self._y(y_train)
        val = None
        if x_val is not None and y_val is not None and len(x_val) > 0:
            val = (self._x(np.asarray(x_val, np.float64)),
                   self._y(np.asarray(y_val, np.float64).reshape(-1)))
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = self._build(xt.shape[1])
        # fused: one kernel per step for all parameters; the step was ~40% of this tiny MLP's time
        trainer = Trainer(self.model, _mse_loss, epochs=cfg.max_epochs, batch_size=cfg.batch_size,
                          optimizer_factory=lambda params: torch.optim.Adam(
                              params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True),
                          lr_gamma=1.0, patience=cfg.patience if val else None, seed=self.seed,
                          val_batch_size=len(val[0]) if val else None, progress=False)
        with torch.random.fork_rng(devices=[]), one_torch_thread():
            rows = trainer.fit((xt, yt), val)
        self.model.eval()
        self.history_ = pd.DataFrame(rows)
        return self

    def _x(self, x: np.ndarray) -> torch.Tensor:
        # clipped: a feature nearly constant on the training part (untrained backbones have many)
        # would otherwise blow up on test rows and give R2 in the hundreds below zero
        z = np.clip((x - self.x_mean_) / self.x_std_, -INPUT_CLIP, INPUT_CLIP)
        return torch.as_tensor(z, dtype=torch.float32)

    def _y(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((y - self.y_mean_) / self.y_std_, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("MLPProbe is not fitted: call fit first")
        out = self.model(self._x(np.asarray(x, np.float64))).squeeze(-1).numpy().astype(np.float64)
        return out * self.y_std_ + self.y_mean_


class RidgeProbe:
    """Standardised ridge regression; alpha picked on the validation part from a log grid.

    A linear probe asks a narrower question than the MLP (is the indicator a linear read-out of
    the embedding?) and has no random initialisation. One SVD of the training inputs gives the
    solution for every alpha: coef(alpha) = V diag(s / (s^2 + alpha)) U^T y. Validation and test
    inputs are first clipped to each column's training range: in a column almost constant in the
    training rows (sparse CNN features) an unseen value is thousands of standard deviations, and
    the read-out exploded (EfficientNet-Lite0 features of the toy city: headline R2 0.04 +- 0.90).
    """

    ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
    coef_: np.ndarray | None = None

    def fit(self, x_train, y_train, x_val=None, y_val=None) -> "RidgeProbe":
        x_train, y_train = _training_rows(x_train, y_train, 2)
        self.x_mean_, self.x_std_ = column_scale(x_train)
        self.x_range_ = x_train.min(axis=0), x_train.max(axis=0)
        self.y_mean_ = float(y_train.mean())
        with _one_blas_thread():  # on a busy 2-core machine BLAS threads made this SVD ~80x slower
            u, sv, vt = np.linalg.svd((x_train - self.x_mean_) / self.x_std_, full_matrices=False)
        uty = u.T @ (y_train - self.y_mean_)

        def coef(alpha: float) -> np.ndarray:
            return vt.T @ (sv / (sv ** 2 + alpha) * uty)

        if x_val is None or y_val is None or len(x_val) == 0:
            self.alpha_ = 1.0
        else:
            xv = self._x(x_val)
            yv = np.asarray(y_val, np.float64).reshape(-1) - self.y_mean_
            errors = [np.mean((xv @ coef(a) - yv) ** 2) for a in self.ALPHAS]
            self.alpha_ = self.ALPHAS[int(np.argmin(errors))]
        self.coef_ = coef(self.alpha_)
        return self

    def predict(self, x) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("RidgeProbe is not fitted: call fit first")
        return self._x(x) @ self.coef_ + self.y_mean_

    def _x(self, x) -> np.ndarray:
        return (np.clip(np.asarray(x, np.float64), *self.x_range_) - self.x_mean_) / self.x_std_


class KNNProbe:
    """k-nearest-neighbour regression (weights 1/distance): the location-only baseline.

    Fed region centres in metres it measures what position alone explains (on the paper's Beijing
    labels, random split, PD R2 0.82: book/appendix_deviations.md, "What the split hides").
    Inputs are centred and divided by *one* common scale: per-column scaling would stretch the
    short axis of an elongated city and change who is whose neighbour. The validation part is
    unused (nothing is tuned). A query at distance 0 from training rows gets their mean.
    """

    model_ = None

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        self.k = int(k)

    def fit(self, x_train, y_train, x_val=None, y_val=None) -> "KNNProbe":
        x_train, y_train = _training_rows(x_train, y_train, 1)
        self.x_mean_ = x_train.mean(axis=0)
        scale = float(np.sqrt(x_train.var(axis=0).mean()))
        self.x_scale_ = scale if scale > 0 else 1.0
        self.model_ = KNeighborsRegressor(n_neighbors=min(self.k, len(x_train)), weights="distance")
        self.model_.fit(self._x(x_train), y_train)
        return self

    def _x(self, x) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.x_mean_) / self.x_scale_

    def predict(self, x) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("KNNProbe is not fitted: call fit first")
        return np.asarray(self.model_.predict(self._x(x)), dtype=np.float64)


class MLPOrRidgeProbe:
    """The paper's MLP or the ridge, whichever predicts the validation part better (lower squared
    error), chosen anew for every fit and never on the test part. A probe is part of the
    measurement: an MLP fitted on a few hundred regions reads a table of raw counts worse than a
    linear map does, and this read-out scores each embedding with the probe its own validation
    part prefers. Both probes already tune on that part (the MLP's epoch, the ridge's alpha), so
    its error is a little optimistic for either; the test part stays untouched. Without a
    validation part: the MLP."""

    def __init__(self, config: ProbeConfig | None = None, seed: int = 0):
        self.probes = {"mlp": MLPProbe(config, seed=seed), "ridge": RidgeProbe()}
        self.chosen_: str | None = None

    def fit(self, x_train, y_train, x_val=None, y_val=None) -> "MLPOrRidgeProbe":
        for probe in self.probes.values():
            probe.fit(x_train, y_train, x_val, y_val)
        if x_val is None or y_val is None or len(x_val) == 0:
            self.chosen_ = "mlp"
        else:
            y_val = np.asarray(y_val, np.float64).reshape(-1)
            errors = {name: float(np.mean((probe.predict(x_val) - y_val) ** 2))
                      for name, probe in self.probes.items()}
            self.chosen_ = min(errors, key=errors.get)  # a tie: the MLP, listed first
        return self

    def predict(self, x) -> np.ndarray:
        if self.chosen_ is None:
            raise RuntimeError("MLPOrRidgeProbe is not fitted: call fit first")
        return self.probes[self.chosen_].predict(x)


def make_probe(probe: str, seed: int, config: ProbeConfig | None = None):
    """A fresh probe by name: "mlp" (the paper's), "ridge", "mlp-or-ridge" (whichever of the two
    predicts the validation part better) or "knn" (k = 5, distance weights)."""
    check_choice("probe", probe, PROBES)
    if probe == "mlp":
        return MLPProbe(config, seed=seed)
    if probe == "mlp-or-ridge":
        return MLPOrRidgeProbe(config, seed=seed)
    return RidgeProbe() if probe == "ridge" else KNNProbe()


# ------------------------------------------------------------------------------------------
# one indicator of one city


@dataclass
class _Task:
    """The rows that can be evaluated for one indicator: features and target aligned by region_id."""

    indicator: str
    ids: pd.Index
    x: np.ndarray
    y: np.ndarray
    xy: np.ndarray


def as_names(value) -> list | None:
    """One name or several as a list ("random" is ["random"], not its letters); None stays None."""
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _as_seeds(seeds) -> list[int]:
    """One seed or several as distinct whole numbers >= 0 (numpy's generators refuse the others,
    and a seed given twice would count one result twice)."""
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if (not seeds or len(set(seeds)) < len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds)):
        raise ValueError(f"seeds must be one or more distinct whole numbers >= 0; got {seeds}")
    return [int(s) for s in seeds]


def _prepare(embedding: pd.DataFrame, city: City, indicator: str) -> _Task:
    check_region_table(embedding, "embedding")
    targets = city.targets()
    if indicator not in targets.columns:
        raise KeyError(f"{city.name} has no indicator {indicator!r}; it has {list(targets.columns)}")
    y = targets[indicator]
    n_nan = int(y.isna().sum())
    if n_nan:
        warnings.warn(f"{city.name}, {indicator}: {n_of_regions(n_nan, len(y))} no value; "
                      "left out of its evaluation", stacklevel=3)
    y = y.dropna()
    missing = y.index.difference(embedding.index)
    if len(missing):
        hint = ""
        if not pd.api.types.is_string_dtype(embedding.index) and not pd.api.types.is_object_dtype(embedding.index):
            hint = f" (the embedding's index has dtype {embedding.index.dtype}; region ids are strings)"
        raise ValueError(f"embedding has no row for {len(missing)} of {len(y)} regions of {city.name} "
                         f"with a {indicator} value, e.g. {missing[:5].tolist()}{hint}")
    x = embedding.loc[y.index]
    bad = x.isna().any(axis=1) | ~np.isfinite(x.to_numpy(dtype=np.float64)).all(axis=1)
    if bad.any():
        raise ValueError(f"embedding has NaN or infinite values for {int(bad.sum())} regions, e.g. "
                         f"{x.index[bad][:5].tolist()}; impute or drop them before evaluating")
    xy = city.centres().loc[y.index].to_numpy()
    return _Task(indicator, y.index, x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64), xy)


@dataclass(frozen=True)
class SpatialBlocks:
    """The spatial split's geometry: block side and buffer, in metres (see :func:`spatial_setting`)."""

    size_m: float
    buffer_m: float = 0.0


def spatial_setting(city: City, block_size_m: float | None = None,
                    buffer_m: float | str | None = "auto") -> SpatialBlocks:
    """The spatial split of ``city``: blocks of ``block_size_m``, by default ``BLOCK_HEXAGONS``
    hexagons (10 km for the paper's 1 km ones) but small enough that the city spans at least
    ``MIN_BLOCKS_ACROSS`` (a small city would otherwise fit in one); a buffer of ``buffer_m``
    metres, None or 0 for none, "auto" for the city's :func:`correlation_range` over its headline
    indicators at most half a block (values correlating over longer distances than a block, such
    as one big urban gradient, would otherwise leave almost no training regions)."""
    size = block_size_m
    if size is None:
        xy = city.xy_m()
        size = (float(np.max(xy.max(axis=0) - xy.min(axis=0))) or 1.0) / MIN_BLOCKS_ACROSS
        if city.meta.hexagon_size_m:
            size = min(BLOCK_HEXAGONS * float(city.meta.hexagon_size_m), size)
    size = float(size)
    if buffer_m == "auto":
        return SpatialBlocks(size, min(correlation_range(city), size / 2))
    try:
        buffer = 0.0 if buffer_m is None else float(buffer_m)
    except (TypeError, ValueError):
        raise ValueError(f"buffer_m must be a distance in metres, 0 or 'auto'; "
                         f"got {buffer_m!r}") from None
    if buffer < 0:
        raise ValueError(f"buffer_m must be >= 0; got {buffer_m!r}")
    return SpatialBlocks(size, buffer)


def spatial_split(splits: Sequence[str]) -> str | None:
    """The spatial split a page reports for a run with ``splits``: the one held-out part, else
    spatial cross-fitting; None when the run has neither."""
    return next((split for split in SPATIAL_SPLITS if split in splits), None)


def _blocks(city: City, splits: Sequence[str], block_size_m, buffer_m) -> SpatialBlocks | None:
    """The city's :func:`spatial_setting` where ``splits`` need blocks, else None (not computed)."""
    return spatial_setting(city, block_size_m, buffer_m) if set(splits) & set(SPATIAL_SPLITS) else None


def _splits(task: _Task, split: str, seed: int, fractions, blocks: SpatialBlocks | None) -> list:
    """The (train, val, test) parts of one seed's split: one, or a fold's each ("spatial-cv")."""
    check_choice("split", split, SPLITS)
    if split == "random":
        return [random_split(len(task.y), seed, fractions)]
    if split == "spatial-cv":
        return spatial_folds(task.xy, blocks.size_m, seed, buffer_m=blocks.buffer_m)
    return [spatial_block_split(task.xy, blocks.size_m, seed, fractions, buffer_m=blocks.buffer_m)]


def _predict_task(task: _Task, split: str, seed: int, probe: str, fractions, blocks: SpatialBlocks | None,
                  probe_config: ProbeConfig | None) -> pd.DataFrame:
    splits = _splits(task, split, seed, fractions, blocks)
    y_pred, part = np.full(len(task.y), np.nan), np.full(len(task.y), BUFFER, dtype=object)
    for parts in splits:
        train, val, test = parts
        if len(test) < 2:
            raise ValueError(f"{task.indicator}, {split} split: only {len(test)} test region(s); "
                             "R2 needs at least 2 (more regions, other fractions or smaller blocks)")
        model = make_probe(probe, seed, probe_config)
        model.fit(task.x[train], task.y[train], task.x[val], task.y[val])
        if len(splits) == 1:  # one held-out part: every region's prediction, with its part
            y_pred = model.predict(task.x)
            for name, idx in zip(PARTS, parts):
                part[idx] = name
        else:  # cross-fitting: each region predicted by the fold that held it out
            y_pred[test], part[test] = model.predict(task.x[test]), "test"
    return pd.DataFrame({REGION_ID: task.ids.to_numpy(), "indicator": task.indicator,
                         "split_part": part, "y_true": task.y, "y_pred": y_pred})[PREDICTION_COLUMNS]


def predict_indicator(embedding: pd.DataFrame, city: City, indicator: str, split: str = "random",
                      seed: int = 0, probe: str = "mlp", fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      block_size_m: float | None = None, probe_config: ProbeConfig | None = None,
                      buffer_m: float | str | None = "auto") -> pd.DataFrame:
    """Fit one probe; every region's prediction (Figure 4), columns ``PREDICTION_COLUMNS``,
    on the modelled scale (ln(1 + x) where the indicator says so); ``split_part`` is each region's
    part ("buffer": left out by the spatial split's buffer; "spatial-cv": every region "test",
    predicted by the fold that held it out, and ``fractions`` unused: 5 folds are 60/20/20).
    Regions without a value are left out.
    """
    check_choice("split", split, SPLITS)
    seed, = _as_seeds(seed)
    task = _prepare(embedding, require_city(city), indicator)
    blocks = _blocks(city, [split], block_size_m, buffer_m)
    return _predict_task(task, split, seed, probe, fractions, blocks, probe_config)


def scores(predictions: pd.DataFrame) -> dict:
    """R2 and RMSE on the test part of a :func:`predict_indicator` table, and its size."""
    test = predictions[predictions["split_part"] == "test"]
    metrics = _regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    return {"r2": metrics["r2"], "rmse": metrics["rmse"], "n_test": int(len(test))}


# Fewer test regions than this: R2 is still computed, but one region more or less moves it by
# more than most gaps between methods, so check_splits says so.
FEW_TEST_REGIONS = 10


def check_splits(city: City, seeds: Sequence[int], splits: Sequence[str],
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, block_size_m: float | None = None,
                 buffer_m: float | str | None = "auto", warn_few: bool = True) -> None:
    """Raise before anything is trained when a split would leave an indicator fewer than 2 test
    regions, or test regions that all hold one value (R2 needs 2 and a spread: an almost constant
    indicator would score NaN for every method): drawing the splits costs milliseconds, a failure
    after training hours. ``warn_few``: warn where a split leaves fewer than FEW_TEST_REGIONS."""
    blocks = _blocks(city, splits, block_size_m, buffer_m)
    values, centres = city.targets(), city.centres()
    short, flat, few = [], [], {}
    for indicator in city.meta.indicators:
        ids = values[indicator].dropna().index
        y = values.loc[ids, indicator].to_numpy()
        task = _Task(indicator, ids, np.empty((len(ids), 0)), y, centres.loc[ids].to_numpy())
        for split, seed in itertools.product(splits, seeds):
            try:
                tests = [parts[2] for parts in _splits(task, split, seed, fractions, blocks)]
            except ValueError as error:  # e.g. fewer blocks than parts: the same message, named
                raise ValueError(f"{city.name}, {indicator}, {split} split, seed {seed}: {error}") from None
            if min(map(len, tests)) < 2:  # every part a probe is tested on needs 2 regions
                test = min(tests, key=len)
            else:  # ... and the score is over all of them (cross-fitting: the whole city)
                test = np.concatenate(tests)
            if len(test) < 2:
                short.append(f"{indicator} ({split} split, seed {seed}: {len(test)} of {len(ids)} regions)")
            elif np.ptp(y[test]) == 0:
                flat.append(f"{indicator} ({split} split, seed {seed}: all {len(test)} hold {y[test][0]:g})")
            elif len(test) < FEW_TEST_REGIONS:
                few[indicator] = min(len(test), few.get(indicator, len(test)))
    def first_five(cases: list[str]) -> str:
        return "; ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")

    if short:
        raise ValueError(f"{city.name}: R2 needs at least 2 test regions, but the splits leave fewer for "
                         f"{first_five(short)}. Use fewer splits (e.g. random alone), smaller blocks "
                         "(block_size_m) or a smaller buffer_m, or leave such indicators out of city.yaml")
    if flat:
        raise ValueError(f"{city.name}: R2 is undefined on test regions that all hold one value, as in "
                         f"{first_five(flat)}. The indicator is (nearly) constant over the city: leave it "
                         "out of city.yaml")
    if few and warn_few:
        counts = "; ".join(f"{n} for {', '.join(i for i in few if few[i] == n)}" for n in sorted(set(few.values())))
        warnings.warn(f"{city.name}: R2 is scored on as few test regions as {counts} (fewer than "
                      f"{FEW_TEST_REGIONS}): one region more or less moves it a lot, so read its mean over "
                      "seeds with its spread", stacklevel=2)


def evaluate_embedding(embedding: pd.DataFrame, city: City, method: str,
                       indicators: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
                       splits: Sequence[str] = ("random",), probe: str = "mlp",
                       block_size_m: float | None = None,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS,
                       probe_config: ProbeConfig | None = None, n_jobs: int = 1,
                       buffer_m: float | str | None = "auto") -> pd.DataFrame:
    """Rows of the results table (``RESULT_COLUMNS``) for one embedding of one city.

    One row per indicator x split x seed; the seed draws the split and the probe's initialisation;
    ``block_size_m`` and ``buffer_m`` as in :func:`spatial_setting`. ``n_jobs`` worker processes
    (0: one per CPU core) fit the probes, each seeded on its own and on one thread, so the rows
    are the same for any ``n_jobs``.
    """
    splits, seeds = as_names(splits), _as_seeds(seeds)
    for s in splits:
        check_choice("split", s, SPLITS)
    check_choice("probe", probe, PROBES)
    city = require_city(city)
    indicators = list(city.meta.indicators) if indicators is None else as_names(indicators)
    bs = _blocks(city, splits, block_size_m, buffer_m)
    tasks = [_prepare(embedding, city, indicator) for indicator in indicators]
    jobs = [(task, split, seeds) for task in tasks for split in splits]
    n_jobs = min(resolve_jobs(n_jobs), len(jobs))
    args = (probe, fractions, bs, probe_config)
    if n_jobs <= 1 or probe in ("ridge", "knn"):  # these fit in milliseconds: workers would only cost
        scored = [_score_seeds(*job, *args) for job in jobs]
    else:
        scored = [rewarn(outcome) for outcome in Parallel(n_jobs=n_jobs, backend="loky")(
            delayed(in_worker)(os.getpid(), _score_seeds, *job, *args) for job in jobs)]
    rows = [{"city": city.name, "indicator": task.indicator, "method": method, "split": split,
             "seed": seed, **score}
            for (task, split, seed_list), job_scores in zip(jobs, scored)
            for seed, score in zip(seed_list, job_scores)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


CEILING_METHODS = {CEILING_ALL: "Ceiling: all latents", SATELLITE: "Ceiling: what satellite shows",
                   STREETVIEW: "Ceiling: what street view shows", POI: "Ceiling: what POIs show",
                   MOBILITY: "Ceiling: what trip counts show"}


def evaluate_ceilings(city: City, indicators: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
                      splits: Sequence[str] = ("random",), block_size_m: float | None = None,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      buffer_m: float | str | None = "auto") -> pd.DataFrame:
    """Rows of the results table for the city's ceilings (``ceilings.csv``; generated cities only),
    scored on exactly the test parts the probes use for the same seed and split: a ceiling shown
    beside a split is that split's ceiling, not the whole city's. Methods are named by
    ``CEILING_METHODS``; an empty table when the city records no ceilings."""
    if city.ceilings is None:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    for s in splits:
        check_choice("split", s, SPLITS)
    indicators = list(city.meta.indicators) if indicators is None else list(indicators)
    bs = _blocks(city, splits, block_size_m, buffer_m)
    present = [s for s in CEILING_METHODS if s in set(city.ceilings[SOURCE])]
    rows = []
    for source in present:
        predictions = city.ceiling_predictions(source)
        for indicator in indicators:
            if indicator not in predictions.columns:
                continue
            task = _prepare(predictions[[indicator]], city, indicator)
            for split, seed in itertools.product(splits, seeds):
                test = np.concatenate([parts[2] for parts in _splits(task, split, int(seed), fractions, bs)])
                metrics = _regression_metrics(task.y[test], task.x[test, 0])
                rows.append({"city": city.name, "indicator": indicator, "method": CEILING_METHODS[source],
                             "split": split, "seed": int(seed), "r2": metrics["r2"], "rmse": metrics["rmse"],
                             "n_test": int(len(test))})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def ridge_cv_r2(features: pd.DataFrame, city: City, indicators: Sequence[str] | None = None,
                folds: int = 5, seed: int = 0) -> pd.Series:
    """Out-of-fold R2 per indicator of a standardised ridge regression (alpha by generalised
    cross-validation) from ``features`` over ``folds`` shuffled folds: a quick, probe-free measure
    of what a feature table says about the indicators. Columns are standardised over all the
    indicator's regions, as in :func:`latent_probe`: scaled on each training part, a rare POI
    category's count, non-zero in one training region, blew up the test rows."""
    indicators = list(city.meta.indicators) if indicators is None else list(indicators)
    out = {}
    with _one_blas_thread():
        for indicator in indicators:
            task = _prepare(features, city, indicator)
            pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 4, 15)), standardise_columns(task.x), task.y,
                                     cv=KFold(int(folds), shuffle=True, random_state=int(seed)))
            out[indicator] = _regression_metrics(task.y, pred)["r2"]
    return pd.Series(out, name="r2", dtype=float)


def triplet_agreement(embedding: pd.DataFrame, triplets: pd.DataFrame) -> float:
    """Share of ``triplets`` (region ids in columns anchor, positive, negative) whose anchor's row
    of ``embedding`` is more cosine-similar to the positive's than to the negative's: an image
    encoder's own objective, scored on triplets it did not train on (chance: 0.5)."""
    unit = embedding.div(np.linalg.norm(embedding.to_numpy(), axis=1), axis=0)
    a, p, n = (unit.loc[triplets[c]].to_numpy() for c in ("anchor", "positive", "negative"))
    return float(np.mean((a * p).sum(axis=1) > (a * n).sum(axis=1)))


def latent_probe(features: pd.DataFrame, latents: pd.DataFrame, folds: int = 5,
                 seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """How much of each latent (generated cities record them) a linear read-out recovers from
    ``features``: R2 per latent and out-of-fold predictions (regions x latents) of a ridge
    regression, alpha per latent by generalised cross-validation, over ``folds`` shuffled folds.
    Regions lacking a feature or a latent are left out. Columns are standardised over all kept
    regions, so one almost constant in a fold's training rows cannot blow up its test rows (as
    the 2,560 sparse Lite0 feature columns did)."""
    rows = features.dropna().index.intersection(latents.dropna().index)
    if len(rows) < folds:
        raise ValueError(f"{len(rows)} regions have both features and latents; "
                         f"{folds} folds need more")
    x = standardise_columns(features.loc[rows].to_numpy(dtype=np.float64))
    y = latents.loc[rows].to_numpy(dtype=np.float64)
    ridge = RidgeCV(alphas=np.logspace(-2, 5, 15), alpha_per_target=True)
    cv = KFold(int(folds), shuffle=True, random_state=int(seed))
    with _one_blas_thread():
        pred = cross_val_predict(ridge, x, y, cv=cv)
    r2 = pd.Series({name: _regression_metrics(y[:, j], pred[:, j])["r2"]
                    for j, name in enumerate(latents.columns)}, name="r2", dtype=float)
    return r2, pd.DataFrame(pred, index=rows, columns=latents.columns)


def resolve_jobs(n_jobs: int) -> int:
    """``n_jobs`` worker processes, 0 meaning one per CPU core this process may use."""
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0 (0: one per core); got {n_jobs}")
    if n_jobs == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(n_jobs)


def _score_seeds(task: _Task, split: str, seeds: list[int], probe, fractions, bs, probe_config) -> list[dict]:
    return [scores(_predict_task(task, split, seed, probe, fractions, bs, probe_config)) for seed in seeds]


# ------------------------------------------------------------------------------------------
# the Manhattan-180 benchmark's published protocol (MVURE / MGFN / HREP)

BENCHMARK_ALPHA = 1.0
BENCHMARK_FOLDS = 5


def _aligned(embedding, target) -> tuple[np.ndarray, np.ndarray]:
    """Embedding rows and targets matched by region_id when both are pandas, else by position."""
    if isinstance(embedding, pd.DataFrame) and isinstance(target, pd.Series):
        missing = target.index.difference(embedding.index)
        if len(missing):
            raise ValueError(f"the embedding lacks {len(missing)} region(s) of the target, e.g. "
                             f"{list(missing[:5])}")
        embedding = embedding.loc[target.index]
    x, y = np.asarray(embedding, dtype=np.float64), np.asarray(target, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"embedding must be a finite 2-D array (regions x dims); got shape {x.shape}"
                         + ("" if x.ndim != 2 else " with NaN or inf values"))
    if len(x) != len(y):
        raise ValueError(f"{len(x)} embedding rows but {len(y)} target values")
    if not np.isfinite(y).all():
        raise ValueError("the target has NaN values; drop those regions first")
    return x, y


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    err = pred - y
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")}


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The process's BLAS and OpenMP pools, found once (numpy, scipy, scikit-learn and torch are
    loaded by then): ``threadpool_limits(1)`` looks for them on every call (~6-9 ms), half of
    chapter 10's scoring time; a kept controller sets a limit in ~0.05 ms."""
    return ThreadpoolController()


def _one_blas_thread():
    """BLAS on one thread: the matrices here are a few hundred wide, and a second thread on a
    busy 2-core machine made each ridge fit ~50x slower (measured)."""
    return _thread_pools().limit(limits=1)


def ridge_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      alpha: float = BENCHMARK_ALPHA) -> np.ndarray:
    """What ``sklearn.linear_model.Ridge(alpha).fit(x_train, y_train).predict(x_test)`` computes
    (intercept unpenalised: columns and target centred on the training rows), in closed form:
    the primal system (d x d) when rows >= columns, the dual one (n x n) otherwise. The test
    suite checks it against scikit-learn; it is ~6x faster on these small matrices."""
    x_mean, y_mean = x_train.mean(axis=0), y_train.mean()
    xc = x_train - x_mean
    dual = xc.shape[0] < xc.shape[1]
    gram = xc @ xc.T if dual else xc.T @ xc
    gram[np.diag_indices_from(gram)] += float(alpha)
    if dual:  # fewer training rows than columns: solve in the rows' space
        w = xc.T @ np.linalg.solve(gram, y_train - y_mean)
    else:
        w = np.linalg.solve(gram, xc.T @ (y_train - y_mean))
    return (x_test - x_mean) @ w + y_mean


def kfold_predictions(x: np.ndarray, y: np.ndarray, fit_predict,
                      folds: int = BENCHMARK_FOLDS) -> np.ndarray:
    """Out-of-fold predictions of the benchmark protocol, in row order: ``KFold(folds)`` *without*
    shuffling (fold k is the k-th contiguous block of rows), ``fit_predict(x_train, y_train,
    x_test)`` predicting each fold from the others, negative predictions set to 0 (counts)."""
    pred = np.empty_like(y)
    with _one_blas_thread():
        for train, test in KFold(n_splits=int(folds)).split(x):
            pred[test] = fit_predict(x[train], y[train], x[test])
    return np.clip(pred, 0.0, None)


def ridge_kfold_predictions(embedding, target, alpha: float = BENCHMARK_ALPHA,
                            folds: int = BENCHMARK_FOLDS) -> np.ndarray:
    """:func:`kfold_predictions` with the published probe: ``Ridge(alpha)`` on
    the embedding as it is (no standardisation; :func:`ridge_fit_predict`)."""
    x, y = _aligned(embedding, target)
    return kfold_predictions(x, y, functools.partial(ridge_fit_predict, alpha=alpha), folds)


def ridge_kfold_scores(embedding, target, alpha: float = BENCHMARK_ALPHA,
                       folds: int = BENCHMARK_FOLDS) -> dict:
    """The published Manhattan-180 protocol: MAE, RMSE and R2 on raw counts. As in the MVURE /
    HREP evaluation code, the out-of-fold predictions of all folds are pooled and scored once
    (not averaged per fold); see :func:`ridge_kfold_predictions`."""
    x, y = _aligned(embedding, target)
    return _regression_metrics(y, ridge_kfold_predictions(x, y, alpha=alpha, folds=folds))


def location_kfold_scores(xy, target, folds: int = BENCHMARK_FOLDS) -> dict:
    """What location alone reaches under the benchmark's protocol: the same contiguous folds and
    pooled, clipped out-of-fold scores as :func:`ridge_kfold_scores`, with :class:`KNNProbe`
    (5 nearest region centres in metres, 1/distance weights) in place of the ridge, which on two
    coordinates could only fit a plane."""
    x, y = _aligned(xy, target)
    return _regression_metrics(y, kfold_predictions(x, y, lambda a, b, c: KNNProbe().fit(a, b).predict(c), folds))


def ridge_kfold_select(candidates: dict, target, alpha: float = BENCHMARK_ALPHA,
                       folds: int = BENCHMARK_FOLDS, inner_folds: int = BENCHMARK_FOLDS) -> dict:
    """The benchmark protocol with a choice among ``candidates`` (name -> embedding, aligned to
    ``target`` as :func:`ridge_kfold_predictions` aligns) made *inside* each outer training part.

    For each outer fold of the published ``KFold(folds)``, an unshuffled ``KFold(inner_folds)``
    over the outer *training* regions alone scores every candidate with the published probe; the
    one with the lowest inner mean squared error (the first listed on a tie) is refitted on the
    whole outer training part and predicts the outer test fold, whose targets are never read
    before. The outer predictions are pooled and scored once, as the published protocol does.

    Returns ``mae``, ``rmse``, ``r2`` (pooled), ``chosen`` (one name per outer fold),
    ``inner_mse`` (a folds x candidates table) and ``predictions`` (row order).
    """
    if not candidates:
        raise ValueError("ridge_kfold_select needs at least one candidate")
    mats = {name: _aligned(x, target)[0] for name, x in candidates.items()}
    y = np.asarray(target, dtype=np.float64).reshape(-1)  # as _aligned checked it
    pred, chosen, inner_rows = np.full_like(y, np.nan), [], []
    with _one_blas_thread():
        for train, test in KFold(n_splits=int(folds)).split(y):
            y_train = y[train]  # the only targets the choice may read
            errors = {}
            for name, x in mats.items():
                inner = ridge_kfold_predictions(x[train], y_train, alpha, inner_folds)
                errors[name] = float(((inner - y_train) ** 2).mean())
            best = min(mats, key=errors.get)  # the first of equal errors
            chosen.append(best)
            inner_rows.append(errors)
            pred[test] = ridge_fit_predict(mats[best][train], y_train, mats[best][test], alpha)
    pred = np.clip(pred, 0.0, None)
    inner_mse = pd.DataFrame(inner_rows, columns=list(mats)).rename_axis("outer_fold")
    return {**_regression_metrics(y, pred), "chosen": chosen, "inner_mse": inner_mse,
            "predictions": pred}


def landuse_scores(embedding, labels, n_clusters: int = 12, random_state: int = 3,
                   n_init: int = 10) -> dict:
    """The benchmark's land-use task: KMeans(n_clusters, random_state) on the embedding as it is,
    scored against the community-district labels by NMI and ARI. ``n_init=10`` was
    scikit-learn's default when the benchmark code was written (it is "auto", i.e. 1, since 1.4).
    Labels may be numbers or names (a district's "MN01").
    """
    codes = pd.factorize(np.asarray(labels).reshape(-1))[0]  # names as numbers (-1: missing)
    if (codes < 0).any():
        raise ValueError("the labels have missing values; drop those regions first")
    if isinstance(labels, pd.Series):  # matched to the embedding by region_id, as _aligned does
        codes = pd.Series(codes, index=labels.index)
    x, y = _aligned(embedding, codes)
    with _one_blas_thread():
        clusters = KMeans(n_clusters=int(n_clusters), random_state=int(random_state),
                          n_init=int(n_init)).fit_predict(x)
    return {"nmi": float(normalized_mutual_info_score(y, clusters)),
            "ari": float(adjusted_rand_score(y, clusters))}
