"""Similarity (paper eq. 1-4) and triplet sampling for the contrastive image encoders.

Street views are paired by *mobility* similarity, satellite images by *POI* similarity: eq. 1 / 3
are Euclidean distances between per-region vectors ((inflow, outflow); K POI category counts),
eq. 2 / 4 turn them into lambda = 1 / distance. An anchor region gets a similar region
(positive) and a dissimilar one (negative). Ranking by 1/d is ranking by d, so the sampler
works on distances. It never builds an N x N matrix: positives come from a nearest-neighbour
search, negatives from uniform candidates rejected when too similar. Sparse features (e.g. OD
rows, 2N columns), densified a block at a time, give the dense array's triplets bit for bit
without ever holding N x d numbers.
"""
from __future__ import annotations

import hashlib
import math
import resource
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from musecl.city import INFLOW, MOBILITY, OUTFLOW, POI, City
from musecl.config import SAMPLING_RULES
from musecl.io import check_choice, read_csv_ids

ANCHOR, POSITIVE, NEGATIVE = "anchor", "positive", "negative"
D_POS, D_NEG = "d_pos", "d_neg"

NEGATIVES = ("dissimilar", "far")
TRANSFORMS = ("raw", "log1p", "share")

# bump when the same settings draw other triplets: the stages that train on them are retrained
SAMPLING_FORMAT = 3
MAX_EXCLUDE = 200  # cap on the default top-M; query cost grows with M (n_exclude overrides)
_BLOCK = 1 << 20  # floats per temporary block: keeps every intermediate around 8 MB


# --------------------------------------------------------------------------------------------
# eq. 1-4


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # float arrays: callers convert
    diff = a - b
    return np.sqrt(np.einsum("...k,...k->...", diff, diff))


def mobility_distance(a, b) -> np.ndarray:
    """Eq. 1: Euclidean distance between (inflow, outflow) vectors, row by row.

    ``a`` and ``b`` have shape (2,) or (n, 2) (broadcast like numpy); returns shape () or (n,).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    for name, v in (("a", a), ("b", b)):
        if v.ndim == 0 or v.shape[-1] != 2:
            raise ValueError(f"mobility_distance: {name} must hold (inflow, outflow) pairs, "
                             f"i.e. have shape (2,) or (n, 2); got shape {v.shape}")
    return _euclidean(a, b)


def poi_distance(a, b) -> np.ndarray:
    """Eq. 3: Euclidean distance between K-category POI count vectors, row by row.

    ``a`` and ``b`` have shape (K,) or (n, K) with the same K (and category order).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"poi_distance: a and b must be POI count vectors over the same K "
                         f"categories; got shapes {a.shape} and {b.shape}")
    return _euclidean(a, b)


def similarity(distance, eps: float = 1e-9):
    """Eq. 2 / eq. 4: lambda = 1 / distance, computed as 1 / max(distance, eps).

    The paper's 1/d is infinite for identical vectors (common: many regions have no POI at all).
    Clamping at ``eps`` gives identical vectors the largest *finite* similarity, 1/eps, so
    sorting and averaging never meet inf or NaN.  Any two vectors closer than ``eps`` tie with
    identical ones; with counts (distances 0 or >= 1) that never happens.
    """
    if not eps > 0:
        raise ValueError(f"similarity: eps must be > 0; got {eps!r}")
    d = np.asarray(distance, dtype=float)
    if np.isnan(d).any():
        raise ValueError("similarity: distance contains NaN; check the feature vectors "
                         "for missing values")
    if (d < 0).any():
        raise ValueError(f"similarity: distances must be >= 0; got minimum {d.min()}")
    out = 1.0 / np.maximum(d, eps)
    return float(out) if out.ndim == 0 else out


def transform_features(features, transform: str = "raw") -> np.ndarray | sp.csr_matrix:
    """Rescale per-region vectors before eq. 1 / eq. 3 (scipy.sparse gives CSR, same values).

    ``"raw"`` (the paper): as they are, so big regions dominate the distance. ``"log1p"``:
    ln(1 + x), which tames heavy-tailed counts and flows (needs x >= 0). ``"share"``: each row
    over its sum (category mix, in/out balance); all-zero rows stay 0, so empty regions stay
    identical.
    """
    check_choice("transform", transform, TRANSFORMS)
    sparse = sp.issparse(features)
    X = _as_csr(features) if sparse else np.asarray(features, dtype=float)
    if transform == "raw":
        return X
    values = X.data if sparse else X.reshape(-1)  # sparse: the stored values (zeros stay 0)
    if (values < 0).any():
        first = int(np.flatnonzero(values < 0)[0])
        if sparse:
            row = np.searchsorted(X.indptr, first, side="right") - 1
        else:
            row = first // X.shape[1] if X.ndim == 2 else 0
        raise ValueError(f"transform {transform!r} needs non-negative counts; row {row} has a negative "
                         "value. Use transform='raw' for signed features.")
    if not sparse:
        if transform == "log1p":
            return np.log1p(X)
        total = X.sum(axis=-1, keepdims=True)
        return np.divide(X, total, out=np.zeros_like(X), where=total > 0)
    if transform == "log1p":
        X.data = np.log1p(X.data)
        return X
    # row sums over densified blocks: numpy rounds a row's sum there as in the whole dense matrix
    total = np.concatenate([_rows(X, b).sum(axis=-1) for b in _blocks(*X.shape)])
    total = np.repeat(total, np.diff(X.indptr))
    X.data = np.divide(X.data, total, out=np.zeros_like(X.data), where=total > 0)
    X.eliminate_zeros()  # rows summing to 0, and shares below the smallest float
    return X


# --------------------------------------------------------------------------------------------
# triplets


@dataclass(frozen=True, eq=False)
class Triplets:
    """Sampled (anchor, positive, negative) row indices and their distances (eq. 1 / 3);
    ``region_ids`` (if known) maps rows to ids, ``info`` holds the effective settings and
    ``n_relaxed``."""

    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    d_pos: np.ndarray
    d_neg: np.ndarray
    region_ids: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.anchor)

    @staticmethod
    def read_frame(path) -> pd.DataFrame:
        """A :meth:`to_frame` table written to CSV, its ids as text ("NA" is a region id, not missing)."""
        return read_csv_ids(path, ids=(ANCHOR, POSITIVE, NEGATIVE))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, region_ids: Sequence[str]) -> "Triplets":
        """The triplets of a :meth:`to_frame` table again, as indices into ``region_ids``."""
        ids = np.asarray([str(r) for r in region_ids])
        position = pd.Series(np.arange(len(ids)), index=ids)
        names = frame[[ANCHOR, POSITIVE, NEGATIVE]].astype(str)
        unknown = sorted(set(names.to_numpy().ravel()) - set(ids))
        if unknown:
            raise ValueError(f"triplet table names {len(unknown)} region(s) not in region_ids, "
                             f"e.g. {unknown[:5]}")
        anchor, positive, negative = (position[names[c]].to_numpy() for c in names)
        return cls(anchor, positive, negative, frame[D_POS].to_numpy(float),
                   frame[D_NEG].to_numpy(float), region_ids=ids)

    def to_frame(self, region_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per triplet: anchor / positive / negative region ids, d_pos, d_neg."""
        ids = self.region_ids if region_ids is None else np.asarray(region_ids)
        top = int(max(self.anchor.max(), self.positive.max(), self.negative.max())) if len(self) else -1
        if ids is None:  # no ids known: the row numbers stand in for them
            ids = np.arange(max(self.info.get("n_regions", 0), top + 1))
        elif len(ids) <= top:
            raise ValueError(f"to_frame: {len(ids)} region ids given, but the triplets index up to row "
                             f"{top}; pass the ids of the feature rows the triplets were sampled from")
        return pd.DataFrame({ANCHOR: ids[self.anchor], POSITIVE: ids[self.positive],
                             NEGATIVE: ids[self.negative], D_POS: self.d_pos, D_NEG: self.d_neg})


@dataclass(frozen=True)
class TripletSampler:
    """Draws contrastive triplets from per-region feature vectors (paper section 3.2).

    rule: ``"paper"`` -- positive uniform among the ``n_positive_candidates`` most similar other
        regions; negative drawn by ``negative``, never more similar than the positive.
        ``"official"`` (the official code) -- positive = the most similar other region, negative
        = any other region, possibly similar (``negative``, ``n_positive_candidates`` ignored).
    negative: ``"dissimilar"`` -- uniform among regions strictly farther than the anchor's M-th
        most similar (M = ``n_exclude``, default max(50, N/10) capped at 200 and at (N-1)/2).
        ``"far"`` -- uniform beyond the ``far_quantile`` of the anchor's distances to
        ``n_quantile_sample`` random regions.
    transform: ``"raw"`` (the paper), ``"log1p"`` or ``"share"`` (:func:`transform_features`);
        reported distances are in the transformed space.
    positive_radius: if set, positives are drawn only among the top-k within this distance (the
        nearest when none is); meant for geographic triplets.

    Anchors are uniform, with replacement only when ``n_triplets > N``. Identical feature vectors
    are fine: positives spread over all identical others (:func:`_spread_over_identical`), and a
    "paper" negative is identical to its anchor only when nothing else exists.
    """

    n_triplets: int = 10_000
    rule: str = "paper"
    n_positive_candidates: int = 5
    negative: str = "dissimilar"
    n_exclude: int | None = None
    far_quantile: float = 0.75
    n_quantile_sample: int = 256
    transform: str = "raw"
    positive_radius: float | None = None
    seed: int = 0

    def __post_init__(self):
        for name, choices in (("rule", SAMPLING_RULES), ("negative", NEGATIVES),
                              ("transform", TRANSFORMS)):
            check_choice(f"TripletSampler: {name}", getattr(self, name), choices)
        checks = [
            (int(self.n_triplets) >= 1, f"n_triplets must be >= 1; got {self.n_triplets}"),
            (int(self.n_positive_candidates) >= 1,
             f"n_positive_candidates must be >= 1; got {self.n_positive_candidates}"),
            (self.n_exclude is None or int(self.n_exclude) >= int(self.n_positive_candidates),
             f"n_exclude (M={self.n_exclude}) must be >= n_positive_candidates "
             f"(k={self.n_positive_candidates}): negatives must lie outside the positive candidates"),
            (0 < self.far_quantile < 1, f"far_quantile must be in (0, 1); got {self.far_quantile}"),
            (int(self.n_quantile_sample) >= 10,
             f"n_quantile_sample must be >= 10; got {self.n_quantile_sample}"),
            (self.positive_radius is None or self.positive_radius > 0,
             f"positive_radius must be > 0 or None; got {self.positive_radius}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TripletSampler: {message}")

    def effective_sizes(self, n_regions: int) -> tuple[int, int]:
        """(k, M) actually used for ``n_regions`` regions: k positive candidates, top-M excluded."""
        if self.rule == "official":
            return 1, 1
        k = max(1, min(int(self.n_positive_candidates), n_regions - 2))
        if self.negative != "dissimilar":
            return k, k
        m = self.n_exclude if self.n_exclude is not None else \
            min(max(50, math.ceil(n_regions / 10)), MAX_EXCLUDE, (n_regions - 1) // 2)
        return k, max(k, min(int(m), n_regions - 2))

    def sample(self, features, region_ids: Sequence[str] | None = None) -> Triplets:
        """Draw ``n_triplets`` triplets from ``features`` (N regions x d: an array, a DataFrame or a
        scipy.sparse matrix, which draws the dense array's triplets); see the class doc."""
        X, ids = _prepare(features, region_ids, self.transform)
        n = X.shape[0]
        k, m = self.effective_sizes(n)
        rng = np.random.default_rng(self.seed)
        T = int(self.n_triplets)
        anchors = rng.choice(n, size=T, replace=T > n).astype(np.int64)
        uniq, inv = np.unique(anchors, return_inverse=True)

        nn = _exact_search(X)
        top_idx, top_d, mth = _neighbours(nn, X, uniq, m, k)

        # positive: uniform among the k most similar (within positive_radius when given)
        if self.positive_radius is not None:
            n_valid = np.maximum((top_d[inv] <= self.positive_radius).sum(axis=1), 1)
        else:
            n_valid = np.full(T, k)
        j = np.minimum((rng.random(T) * n_valid).astype(np.int64), n_valid - 1)
        pos = _spread_over_identical(X, anchors, top_idx[inv, j], k, rng)
        d_pos = _pair_distances(X, anchors, pos)

        n_relaxed = 0
        paper = self.rule == "paper"
        if not paper:
            neg = rng.integers(0, n - 1, size=T)
            neg += neg >= anchors
            d_neg = _pair_distances(X, anchors, neg)
        else:
            if self.negative == "dissimilar":
                thr = _pair_distances(X, uniq, mth)
            else:
                q = _sample_quantiles(X, uniq, self.far_quantile, int(self.n_quantile_sample), rng)
                thr = np.maximum(q, _pair_distances(X, uniq, top_idx[:, -1]))
            thr = np.maximum(thr[inv], d_pos)
            pos, d_pos, neg, d_neg, n_relaxed = _draw_negatives(X, anchors, pos, d_pos, thr, rng)
            if n_relaxed:
                warnings.warn(f"{n_relaxed} of {T} negatives could not be drawn "
                              f"{self.negative!r} enough (too many identical feature vectors for "
                              "this M or quantile); they were drawn among regions no more similar "
                              "than the positive instead", stacklevel=2)
        info = dict(rule=self.rule, negative=self.negative if paper else "uniform",
                    transform=self.transform, n_regions=n, n_positive_candidates=k,
                    n_exclude=m if paper and self.negative == "dissimilar" else None,
                    far_quantile=self.far_quantile if paper and self.negative == "far" else None,
                    positive_radius=self.positive_radius, seed=self.seed, n_relaxed=n_relaxed)
        return Triplets(anchor=anchors, positive=pos.astype(np.int64),
                        negative=neg.astype(np.int64), d_pos=d_pos, d_neg=d_neg, region_ids=ids,
                        info=info)


# --------------------------------------------------------------------------------------------
# helpers (all O(N * small) memory)


def _prepare(features, region_ids, transform: str) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None]:
    if isinstance(features, pd.DataFrame):
        region_ids = features.index if region_ids is None else region_ids
        features = features.to_numpy()
    if not sp.issparse(features):
        try:
            features = np.asarray(features, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"features must be a numeric array (regions x dims): {exc}") from None
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (one row per region, one column per dimension); "
                         f"got shape {features.shape}")
    X = _as_csr(features) if sp.issparse(features) else features
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 regions to draw an anchor, a positive and a negative; got {n}")
    if X.shape[1] == 0:
        raise ValueError("features have no columns (0 dimensions)")
    ids = None if region_ids is None else np.asarray(region_ids)
    if ids is not None and len(ids) != n:
        raise ValueError(f"region_ids has {len(ids)} entries but features has {n} rows; "
                         "give one id per feature row, in the same order")
    if ids is not None and len(pd.unique(ids)) != n:
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[:5].tolist()
        raise ValueError(f"region_ids must be unique; duplicated: {dup}")
    if sp.issparse(X):
        bad = np.unique(np.repeat(np.arange(n), np.diff(X.indptr))[~np.isfinite(X.data)])
    else:
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        where = [str(ids[r]) if ids is not None else f"row {r}" for r in bad[:5]]
        raise ValueError(f"features contain NaN or infinite values in {len(bad)} region(s), e.g. "
                         f"{where}; fill them (e.g. 0 for no POI / no flow) or drop those regions")
    return transform_features(X, transform), ids


def _as_csr(features) -> sp.csr_matrix:
    """A float64 CSR copy in canonical form (duplicates summed, indices sorted, no stored zeros,
    hence no -0.0): ``.data`` then holds every nonzero once, and equal rows store equal bytes."""
    X = sp.csr_matrix(features, dtype=np.float64, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


def _blocks(n: int, width: int):
    """Slices cutting 0..n-1 into blocks of rows ``width`` wide that hold about _BLOCK floats."""
    step = max(1, _BLOCK // width)
    return (slice(s, s + step) for s in range(0, n, step))


def _rows(X, idx) -> np.ndarray:
    """Dense rows ``X[idx]``: every sum runs on these, so sparse input gives the dense floats."""
    return X[idx].toarray() if sp.issparse(X) else X[idx]


def _sq_sums(a: np.ndarray, lone: bool = False) -> np.ndarray:
    """Row-wise sums of squares, rounded as for a matrix of 2+ rows: numpy chunks a lone long row
    differently, so it is summed beside a copy (unless the dense code summed it alone: ``lone``)."""
    b = np.repeat(a, 2, axis=0) if len(a) == 1 and not lone else a
    return np.einsum("ij,ij->i", b, b)[:len(a)]


def _pair_distances(X, i, j) -> np.ndarray:
    """Eq. 1/3 between rows X[i] and X[j] (same shape index arrays), in bounded-memory blocks."""
    i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
    shape = i.shape
    i, j = i.ravel(), j.ravel()
    out = np.empty(i.size, dtype=float)
    for b in _blocks(i.size, X.shape[1]):
        out[b] = _euclidean(_rows(X, i[b]), _rows(X, j[b]))
    return out.reshape(shape)


def _exact_search(X) -> "NearestNeighbors | _BlockedSearch":
    """An exact neighbour search whose ties (POI counts tie often) fall the same way on every
    machine and thread count: a k-d tree for up to 15 columns, else :class:`_BlockedSearch`
    (k-d trees degrade in many dimensions; brute force breaks ties by thread count)."""
    if X.shape[1] <= 15:
        return NearestNeighbors(algorithm="kd_tree").fit(X.toarray() if sp.issparse(X) else X)
    return _BlockedSearch(X)


class _BlockedSearch:
    """Exact Euclidean neighbours, ties broken by row index, a bounded block of queries at a time.
    Candidates come from |x|^2 - 2 q.x with a margin above its rounding, then exact per-coordinate
    sums, so threading cannot change the result. A sparse X finds what the dense array finds."""

    def __init__(self, X):
        self.X = _as_csr(X) if sp.issparse(X) else np.ascontiguousarray(X, dtype=np.float64)
        self.sq = np.concatenate([_sq_sums(_rows(self.X, b)) for b in _blocks(*X.shape)])
        self.scale = float(self.sq.max(initial=0.0))
        self.group = _identical_groups(self.X)[0] if sp.issparse(X) else None

    def kneighbors(self, Q: np.ndarray, n_neighbors: int, needed=None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), both (len(Q), n_neighbors), nearest first, like scikit-learn's.
        ``needed`` (sparse X only): the positions that will be read; exact sums over 2N columns are
        too slow for every neighbour, so the others hold the right rows (order exact up to
        near-ties) with distance NaN."""
        Q, n = np.ascontiguousarray(Q, dtype=np.float64), int(n_neighbors)
        N = self.X.shape[0]
        if not 1 <= n <= N:
            raise ValueError(f"n_neighbors must be between 1 and {N}; got {n}")
        dist, idx = np.empty((len(Q), n)), np.empty((len(Q), n), dtype=np.int64)
        for b in _blocks(len(Q), max(N, self.X.shape[1])):
            q = Q[b]
            prod = (self.X @ q.T).T if sp.issparse(self.X) else q @ self.X.T
            approx = self.sq[None, :] - 2.0 * prod  # the distance^2 less |q|^2, rounded
            margin = 1e-9 * (self.scale + np.einsum("ij,ij->i", q, q))
            bound = np.partition(approx, n - 1, axis=1)[:, n - 1] + margin
            for r in range(len(q)):
                cand = np.flatnonzero(approx[r] <= bound[r])
                if needed is not None and self.group is not None:
                    found = self._nearest_at(cand, approx[r, cand], margin[r], q[r], n, needed)
                else:
                    d2 = self._sq_distances(cand, q[r], lone=len(cand) == 1)
                    order = np.lexsort((cand, d2))[:n]  # by distance, then by row index
                    found = cand[order], np.sqrt(d2[order])
                idx[b.start + r], dist[b.start + r] = found
        return dist, idx

    def _sq_distances(self, rows: np.ndarray, q: np.ndarray, lone: bool = False) -> np.ndarray:
        """|X[rows] - q|^2 as numpy sums all of X[rows] - q at once (a lone row: ``lone``), but a
        bounded block of rows at a time, and for a sparse X once per group of identical rows."""
        inv = None
        if self.group is not None:
            _, first, inv = np.unique(self.group[rows], return_index=True, return_inverse=True)
            rows = rows[first]
        d2 = np.empty(len(rows))
        for b in _blocks(len(rows), self.X.shape[1]):
            d2[b] = _sq_sums(_rows(self.X, rows[b]) - q, lone)
        return d2 if inv is None else d2[inv.ravel()]

    def _nearest_at(self, cand, approx, margin, q, n, needed) -> tuple[np.ndarray, np.ndarray]:
        """The n nearest of ``cand``, exact at the ``needed`` positions: only the runs of near-ties
        (gaps <= ``margin``) covering those are summed, as runs are already in exact order."""
        order = np.argsort(approx, kind="stable")  # cand ascends: equal values stay by row index
        cand, approx = cand[order], approx[order]
        start = np.flatnonzero(np.r_[True, np.diff(approx) > margin])
        end = np.r_[start[1:], len(cand)]
        d2 = np.full(len(cand), np.nan)
        for run in np.unique(np.searchsorted(start, needed, side="right") - 1):
            rows = cand[start[run]:end[run]]
            d = self._sq_distances(rows, q, lone=len(cand) == 1)
            o = np.lexsort((rows, d))
            cand[start[run]:end[run]], d2[start[run]:end[run]] = rows[o], d[o]
        return cand[:n], np.sqrt(d2[:n])


def _neighbours(nn: "NearestNeighbors | _BlockedSearch", X, rows: np.ndarray, m: int, k: int):
    """For each query row: its k most similar *other* rows (indices, distances) and its m-th,
    a bounded block of queries at a time (in a big tie the query itself may be absent from its
    m + 1 nearest: then the last is dropped)."""
    top_idx = np.empty((len(rows), k), dtype=np.int64)
    top_d = np.empty((len(rows), k))
    mth = np.empty(len(rows), dtype=np.int64)
    kw = {}
    # only these are read: the query itself may be any of the m + 1, so the first k others are
    # among positions 0..k, and the m-th other is at position m - 1 or m
    needed = np.unique(np.r_[np.arange(min(k, m) + 1), m - 1, m])
    if isinstance(nn, _BlockedSearch) and len(needed) < m + 1:  # else exact everywhere anyway
        kw["needed"] = needed
    for b in _blocks(len(rows), max(m + 1, X.shape[1])):
        d, idx = nn.kneighbors(_rows(X, rows[b]), n_neighbors=m + 1, **kw)
        other = idx != rows[b, None]
        other[other.all(axis=1), -1] = False
        idx, d = idx[other].reshape(-1, m), d[other].reshape(-1, m)
        top_idx[b], top_d[b], mth[b] = idx[:, :k], d[:, :k], idx[:, m - 1]
    return top_idx, top_d, mth


def _identical_groups(X) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, size of each group): equal rows share a group. Dense rows compare as
    bytes; rows of a canonical CSR matrix (see _as_csr) by a 16-byte digest of their stored
    indices and values, with no N x d array. The numbers differ between the two, the groups not."""
    if sp.issparse(X):
        ptr, ind, val = X.indptr, X.indices, X.data
        keys = np.frombuffer(b"".join(
            hashlib.blake2b(ind[a:b].tobytes() + val[a:b].tobytes(), digest_size=16).digest()
            for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist())), dtype="V16")
    else:
        rows = np.ascontiguousarray(X + 0.0)  # + 0.0 turns -0.0 into 0.0: equal rows, equal bytes
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, group, size = np.unique(keys, return_inverse=True, return_counts=True)
    return group.ravel(), size


def _spread_over_identical(X, anchors, pos, k, rng) -> np.ndarray:
    """Anchors with >= k identical others: draw the positive among *all* identical others.

    The neighbour search returns the same k of a big tie for every member of it (e.g. every
    POI-less region would get the same 5 positives); all identical regions are equally similar.
    Only the groups and the row order within them matter, not how the groups are numbered.
    """
    group, size = _identical_groups(X)
    g = group[anchors]
    big = size[g] - 1 >= k
    if not big.any():
        return pos
    order = np.argsort(group, kind="stable")
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    gb, ab = g[big], anchors[big]
    r = rng.integers(0, size[gb] - 1)
    cand = order[start[gb] + r]
    cand = np.where(cand == ab, order[start[gb] + size[gb] - 1], cand)  # skip the anchor itself
    pos = pos.copy()
    pos[big] = cand
    return pos


def _sample_quantiles(X, rows, quantile, n_sample, rng) -> np.ndarray:
    """Per query row, the ``quantile`` of its distances to a shared random sample of regions."""
    sample = rng.choice(X.shape[0], size=min(n_sample, X.shape[0]), replace=False)
    out = np.empty(len(rows))
    for b in _blocks(len(rows), len(sample)):
        out[b] = np.quantile(_pair_distances(X, rows[b, None], sample[None, :]), quantile, axis=1)
    return out


def _draw_negatives(X, anchors, pos, d_pos, thr, rng):
    """Rejection sampling: the first uniform draw strictly farther than ``thr`` is uniform over
    those.  Leftovers get an exact O(N) pass, relaxed to "no more similar than the positive"
    only when nothing is farther than ``thr``."""
    n, T = X.shape[0], len(anchors)
    pos, d_pos = pos.copy(), d_pos.copy()
    neg = np.full(T, -1, dtype=np.int64)
    d_neg = np.full(T, np.nan)
    todo = np.arange(T)
    for r in range(13):
        if todo.size == 0:
            break
        per = min(2 ** r, max(1, _BLOCK // todo.size))
        cand = rng.integers(0, n - 1, size=(todo.size, per))
        cand += cand >= anchors[todo, None]
        d = _pair_distances(X, anchors[todo, None], cand)
        ok = d > thr[todo, None]
        hit = ok.any(axis=1)
        first = ok.argmax(axis=1)[hit]
        neg[todo[hit]] = cand[hit, first]
        d_neg[todo[hit]] = d[hit, first]
        todo = todo[~hit]
    n_relaxed = 0
    for a in np.unique(anchors[todo]):
        d_all = _pair_distances(X, np.full(n, a), np.arange(n))
        other = np.arange(n) != a
        for t in todo[anchors[todo] == a]:
            p = pos[t]
            for valid in (other & (d_all > thr[t]), other & (d_all > d_pos[t]),
                          other & (np.arange(n) != p) & (d_all >= d_pos[t])):
                if valid.any():
                    c = rng.choice(np.flatnonzero(valid))
                    break
            else:  # only float ties left: take the farthest other and keep d_pos <= d_neg
                valid = other & (np.arange(n) != p)
                c = np.flatnonzero(valid)[np.argmax(d_all[valid])]
                if d_all[c] < d_pos[t]:
                    c, pos[t], d_pos[t] = p, c, d_all[c]
            n_relaxed += not d_all[c] > thr[t]
            neg[t], d_neg[t] = c, d_all[c]
    return pos, d_pos, neg, d_neg, n_relaxed


# --------------------------------------------------------------------------------------------
# convenience


def most_similar(features, k: int, transform: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """The k most similar *other* regions of every region: (indices (N, k), distances (N, k)).

    Sorted by distance (eq. 1/3), i.e. by decreasing similarity (eq. 2/4); a region is never its
    own neighbour, even among duplicates.  Used to contrast "similar" with "near" regions.
    ``features`` may be scipy.sparse, with the dense array's answer.
    """
    X, _ = _prepare(features, None, transform)
    n = X.shape[0]
    if not 1 <= int(k) <= n - 1:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}; got {k}")
    idx, dist, _ = _neighbours(_exact_search(X), X, np.arange(n), m=int(k), k=int(k))
    return idx, dist


def region_subset(city: City, regions: Sequence[str] | None) -> pd.Index:
    """``regions`` as ids of ``city`` (text; all of them when None); an unknown one raises."""
    if regions is None:
        return city.region_ids
    regions = pd.Index([str(r) for r in regions])
    unknown = regions.difference(city.region_ids)
    if len(unknown):
        raise ValueError(f"{city.name}: {len(unknown)} requested region(s) are not in the city, e.g. "
                         f"{list(unknown[:5])}")
    return regions


def mobility_triplets(city: City, sampler: TripletSampler | None = None,
                      regions: Sequence[str] | None = None) -> Triplets:
    """Street-view triplets on (inflow, outflow) per region (eq. 1-2); ``regions``
    restricts sampling to a subset (e.g. regions with street-view images)."""
    ids = region_subset(city, regions)
    feats = city.mobility.reindex(ids)[[INFLOW, OUTFLOW]]
    return (sampler or TripletSampler()).sample(feats.to_numpy(dtype=float), region_ids=ids.to_numpy())


def poi_triplets(city: City, sampler: TripletSampler | None = None,
                 regions: Sequence[str] | None = None, categories: list[str] | None = None) -> Triplets:
    """Satellite triplets on K-category POI counts per region (eq. 3-4); ``regions``
    restricts sampling to a subset (e.g. regions with a satellite image)."""
    ids = region_subset(city, regions)
    feats = city.poi_counts(categories).reindex(ids)
    if feats.shape[1] == 0:
        raise ValueError(f"{city.name}: the city has no POIs (pois.csv is empty or absent), so there is no "
                         "POI similarity to sample satellite triplets from; use a method without POI triplets "
                         "(e.g. Tile2vec, SV only)")
    return (sampler or TripletSampler()).sample(feats.to_numpy(dtype=float), region_ids=ids.to_numpy())


def pretext_features(city: City) -> pd.DataFrame:
    """What the contrastive stages learn from, one row per region: ln(1 + inflow) and
    ln(1 + outflow) (eq. 1, the street-view pairing) and ln(1 + count) per POI category (eq. 3,
    the satellite pairing), for the modalities the city has. Read by a probe it is the baseline
    a learned representation has to beat: the pretext signal itself, without images."""
    parts = []
    if city.has(MOBILITY):
        parts.append(np.log1p(city.mobility[[INFLOW, OUTFLOW]].astype(float)).add_prefix("ln1p_"))
    counts = city.poi_counts()
    if city.has(POI) and counts.shape[1]:
        parts.append(np.log1p(counts.astype(float)).add_prefix("ln1p_poi_"))
    if not parts:
        raise ValueError(f"{city.name} has neither trips nor POIs: there are no pretext features")
    return pd.concat(parts, axis=1).reindex(city.region_ids)


def geographic_triplets(xy, n_triplets: int = 10_000, n_neighbors: int = 5,
                        radius: float | None = None, negative: str = "far",
                        far_quantile: float = 0.75, seed: int = 0,
                        region_ids: Sequence[str] | None = None) -> Triplets:
    """Tobler-style triplets for baselines (Tile2vec): near positive, far negative.

    ``xy`` are region centres in metres (``City.xy_m()``).  The positive is drawn among the
    ``n_neighbors`` nearest regions (only those within ``radius`` metres when given; the nearest
    if none is); the negative among regions farther than the ``far_quantile`` of distances.
    """
    sampler = TripletSampler(n_triplets=n_triplets, rule="paper", n_positive_candidates=n_neighbors,
                             negative=negative, far_quantile=far_quantile, positive_radius=radius,
                             seed=seed)
    return sampler.sample(xy, region_ids=region_ids)


# --------------------------------------------------------------------------------------------
# benchmark


def _benchmark_features(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if d == 2:  # flows: heavy-tailed reals
        return rng.lognormal(5.0, 1.5, size=(n, d))
    # POI counts: over-dispersed, many zeros and many identical rows
    return rng.poisson(rng.gamma(0.3, 3.0, size=(n, d))).astype(float)


def sampling_benchmark(n_regions: Sequence[int] = (1_000, 10_000, 100_000), dims: Sequence[int] = (2, 30),
                       n_triplets: int = 10_000, seed: int = 0, rule: str = "paper",
                       negative: str = "dissimilar") -> list[dict]:
    """Wall time and peak memory of sampling ``n_triplets`` triplets for each (N, d): d = 2
    stands for mobility, larger d for POI counts (many duplicates). ``peak_traced_mb``: tracemalloc's
    peak during the call; ``max_rss_mb``: the process' peak so far."""
    rows = []
    for n in n_regions:
        for d in dims:
            X = _benchmark_features(int(n), int(d), np.random.default_rng(seed))
            sampler = TripletSampler(n_triplets=n_triplets, rule=rule, negative=negative, seed=seed)
            tracemalloc.start()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trip = sampler.sample(X)
            seconds = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append(dict(n_regions=int(n), dim=int(d), n_triplets=n_triplets, rule=rule,
                             negative=negative, n_exclude=trip.info["n_exclude"], seconds=round(seconds, 3),
                             peak_traced_mb=round(peak / 2**20, 1),
                             max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                             n_relaxed=trip.info["n_relaxed"]))
    return rows
