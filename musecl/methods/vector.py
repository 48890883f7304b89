"""Methods for cities without imagery: MuseCL's ideas over vector views, and an OD baseline.

Manhattan-180 (and any city with ``od.csv`` and ``pois.csv`` but no images) has no satellite or
street-view pictures. ``MuseCL (vector views)`` keeps MuseCL's structure and swaps only what
needs pictures:

============================  ===============================  =====================================
MuseCL (paper)                here                             unchanged
============================  ===============================  =====================================
street-view CNN (eq. 5-6)     MLP over the *mobility view*:    triplets by mobility similarity
                              ln(1 + trips) to and from every  (eq. 1-2, on (inflow, outflow)),
                              region (OD row and column)       triplet loss of eq. 6
satellite CNN (eq. 5-6)       MLP over the *POI view*: the     triplets by POI similarity
                              region's ln(1 + POI count) per   (eq. 3-4, on category counts)
                              category
POI text (eq. 7)              unchanged                        skip-gram + hierarchical softmax
fusion (eq. 8-11)             unchanged                        attention over the two views,
                                                               InfoNCE against the POI text vectors
============================  ===============================  =====================================

``OD SVD`` is the plain baseline: a truncated SVD of ln(1 + OD), the region's row (out-flow)
and column (in-flow) factors side by side.

Both are transductive and deterministic for a seed. Neither builds a dense N x N matrix (sparse
OD and mobility view, encoders fed a batch of rows at a time, ARPACK for the k leading singular
vectors), so memory grows with the number of OD pairs, not with N^2.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from scipy import sparse
from scipy.sparse.linalg import svds
from torch import nn

from musecl.cache import city_fingerprint, load_table, save_table
from musecl.city import DESTINATION, FLOW, ORIGIN, POI, REGION_ID, City
from musecl.config import RunConfig
from musecl.encoders.image import TripletObjective
from musecl.encoders.text import PoiTextEncoder
from musecl.evaluation import resolve_jobs
from musecl.fusion import OneViewWarning, fuse, info_nce, load_fusion, train_fusion
from musecl.io import atomic_save_json, check_choice, in_worker, rewarn
from musecl.methods.base import OD, TableMethod, register
from musecl.methods.multisemantic import fusion_key, fusion_settings, sampler_for, text_settings
from musecl.sampling import Triplets, mobility_triplets, poi_triplets
from musecl.tables import column_scale
from musecl.training import Trainer, one_torch_thread

DENSE_BLOCK = 1 << 20  # floats in one dense block of a view's rows or columns (~8 MB)


def od_matrix(city: City) -> sparse.csr_matrix:
    """The city's OD flows as a sparse N x N matrix in region order (origin rows, destination
    columns): 20,000 regions would need 3.2 GB dense."""
    if city.od is None or city.od.empty:
        raise ValueError(f"{city.name}: the city has no od.csv; these methods need origin-destination "
                         "flows (mobility.csv alone gives only in/out totals)")
    ids = city.region_ids
    o = ids.get_indexer(city.od[ORIGIN].astype(str))
    d = ids.get_indexer(city.od[DESTINATION].astype(str))
    flows = city.od[FLOW].to_numpy(dtype=float)
    return sparse.csr_matrix((flows, (o, d)), shape=(len(ids), len(ids)))  # repeated pairs are summed


def mobility_view(city: City) -> sparse.csr_matrix:
    """Per region: ln(1 + trips) to every region (OD row) and from every region (OD column), 2N
    values, sparse. The log keeps volume (what eq. 1 compares) and pattern (with whom a region
    is connected) in one vector, and tames the heavy tail of taxi counts."""
    m = od_matrix(city)
    return sparse.hstack([m, m.T], format="csr").log1p()


def poi_view(city: City) -> pd.DataFrame:
    """Per region: its number of POIs in each category (eq. 3's vector) as ln(1 + count)."""
    counts = city.poi_counts()
    return pd.DataFrame(np.log1p(counts.to_numpy(dtype=float)), index=counts.index.rename(REGION_ID),
                        columns=[f"log_{c}" for c in counts.columns])


class StandardisedRows:
    """A view's rows standardised per column, made dense a block of rows at a time (the mobility
    view is N x 2N); equal to ``standardise_columns(dense view)`` as float32, bit for bit."""

    def __init__(self, values: np.ndarray | sparse.spmatrix):
        self.values = sparse.csr_matrix(values, dtype=np.float64) if sparse.issparse(values) \
            else np.asarray(values, dtype=np.float64)
        n, d = self.values.shape
        if sparse.issparse(self.values):  # column blocks of N x b: numpy sums each column in the same
            # order as in the whole matrix, unless b = 1 (then pairwise): blocks of 2 columns or more
            starts = list(range(0, d, max(2, DENSE_BLOCK // max(n, 1))))
            if len(starts) > 1 and d - starts[-1] == 1:
                starts.pop()  # the lone last column joins the block before it
            edges = starts + [d]
            scales = [column_scale(self.values[:, a:b].toarray()) for a, b in zip(edges, edges[1:])]
            self.mean, self.std = (np.concatenate(part) for part in zip(*scales))
        else:
            self.mean, self.std = column_scale(self.values)
        self.block = max(1, DENSE_BLOCK // max(d, 1))  # rows per dense block

    def __len__(self) -> int:
        return self.values.shape[0]

    def __call__(self, rows) -> torch.Tensor:
        """The standardised rows ``rows`` (indices), float32."""
        x = self.values[np.asarray(rows)]
        x = x.toarray() if sparse.issparse(x) else x
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))

    def embed(self, model: nn.Module) -> torch.Tensor:
        """``model`` applied to every row, a block of rows at a time (no gradients)."""
        with torch.no_grad():
            return torch.cat([model(self(np.arange(s, min(s + self.block, len(self)))))
                              for s in range(0, len(self), self.block)])


def od_svd(city: City, dim: int) -> pd.DataFrame:
    """Truncated SVD of ln(1 + OD): [U_k sqrt(s_k), V_k sqrt(s_k)], 2 * dim columns, a region as
    origin and as destination (the root splits the singular values evenly between the two).
    ARPACK with a fixed start vector (deterministic); each pair's sign makes the largest entry of
    U's column positive (a solver may return either; a probe is blind to it)."""
    m = od_matrix(city).log1p()
    if not m.count_nonzero():
        raise ValueError("the OD table has no trips (every flow is 0): "
                         "OD SVD has nothing to factorise")
    k = int(dim)
    if not 1 <= k < min(m.shape):
        raise ValueError(f"dim must be between 1 and {min(m.shape) - 1} (the number of regions "
                         f"less one); got {dim}")
    start = np.random.default_rng(0).random(min(m.shape))
    u, s, vt = svds(m, k=k, v0=start, solver="arpack")
    order = np.argsort(-s, kind="stable")  # ARPACK returns them smallest first
    u, s, vt = u[:, order], s[order], vt[order]
    sign = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    root = np.sqrt(s)
    x = np.hstack([u * (sign * root), vt.T * (sign * root)])
    return pd.DataFrame(x, index=city.region_ids.rename(REGION_ID),
                        columns=[f"out_{j}" for j in range(k)] + [f"in_{j}" for j in range(k)])


@register("OD SVD")
class ODSVD(TableMethod):
    """:func:`od_svd` with ``dim`` (default 16). The benchmark's ridge probe overfits many columns
    on 144 training regions, so chapter 10 picks ``dim`` inside the training folds."""
    needs = (OD,)

    def __init__(self, config: RunConfig | None = None, cache_dir=None, progress: bool = True,
                 dim: int = 16):
        super().__init__(config, cache_dir, progress)
        self.dim = int(dim)

    def options(self) -> dict:
        return {"dim": self.dim}

    def _compute(self, city: City) -> pd.DataFrame:
        dim = min(self.dim, len(city.region_ids) - 1)  # svds needs k below the number of regions
        if dim < self.dim:
            warnings.warn(f"OD SVD: {len(city.region_ids)} regions allow at most {dim} factors; "
                          f"using dim {dim} instead of {self.dim}", stacklevel=2)
        return od_svd(city, dim)


MOBILITY_SIMILARITIES = ("inout", "od")
ALIGNMENTS = ("none", "procrustes", "joint")
FUSED_VIEWS = ("both", "mobility")


@dataclass(frozen=True)
class VectorViewConfig:
    """Settings of the two view encoders (the rest comes from :class:`RunConfig`).

    ``mobility_similarity``: ``"inout"`` (eq. 1-2, distance of (inflow, outflow)) or ``"od"``
    (the same on the whole mobility view: similar regions exchange trips with the same places).

    ``alignment``, how the two view embeddings are made comparable before eq. 10 adds them:
    ``"none"`` (the paper: trained apart, coordinate k of one unrelated to k of the other);
    ``"procrustes"`` (the POI view rotated and scaled onto the mobility view, no labels);
    ``"joint"`` (trained together: both triplet losses plus ``align_weight`` x a symmetric
    InfoNCE at ``align_temperature`` between a region's two views, eq. 11's idea).

    ``fused_views``: ``"both"`` (MuseCL) or ``"mobility"`` alone (beta = 1) through the same
    fusion, which separates what the alignment to the text costs from what mixing in the POI
    view costs (chapter 10).
    """

    hidden: int = 256
    epochs: int = 10
    batch_size: int = 128
    dropout: float = 0.1
    mobility_similarity: str = "inout"
    alignment: str = "none"
    align_weight: float = 1.0
    align_temperature: float = 0.1
    fused_views: str = "both"

    def __post_init__(self):
        check_choice("mobility_similarity", self.mobility_similarity, MOBILITY_SIMILARITIES)
        check_choice("alignment", self.alignment, ALIGNMENTS)
        check_choice("fused_views", self.fused_views, FUSED_VIEWS)
        if min(self.hidden, self.epochs, self.batch_size) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"hidden, epochs, batch_size must be >= 1 and dropout in [0, 1); got {self}")
        if self.align_weight < 0 or self.align_temperature <= 0:
            raise ValueError(f"align_weight must be >= 0 and align_temperature > 0; got {self}")

    def poi_stage_key(self) -> tuple:
        """What the POI encoder depends on: two configs with the same key train the same one."""
        joint = self.alignment == "joint"
        return (self.hidden, self.epochs, self.batch_size, self.dropout, joint,
                self.mobility_similarity if joint else None,
                self.align_weight if joint else None, self.align_temperature if joint else None)


def view_encoder(n_in: int, embedding_dim: int, vcfg: VectorViewConfig) -> nn.Module:
    """The MLP that replaces a CNN: view vector -> hidden -> embedding (eq. 5-6 train it)."""
    return nn.Sequential(nn.Linear(n_in, vcfg.hidden), nn.ReLU(), nn.Dropout(vcfg.dropout),
                         nn.Linear(vcfg.hidden, embedding_dim))


class _ViewTriplets:
    """Triplets of a view's regions for the :class:`Trainer`: a batch is the standardised rows of
    its anchors, positives and negatives (made dense per batch, never for all triplets)."""

    def __init__(self, rows: StandardisedRows, triplets):
        self.rows = rows
        self.idx = [np.asarray(getattr(triplets, c), dtype=np.int64) for c in ("anchor", "positive", "negative")]

    def __len__(self) -> int:
        return len(self.idx[0])

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> tuple:
        return tuple(self.rows(col[indices.numpy()]) for col in self.idx)


def train_view_encoder(view: pd.DataFrame | sparse.spmatrix, index: pd.Index, triplets, cfg: RunConfig,
                       vcfg: VectorViewConfig, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train a :func:`view_encoder` on triplets of ``view``'s rows (eq. 6), with the image
    encoders' optimiser and schedule at ``cfg.image.lr``; return every region's embedding (rows
    of ``index``, as ``view``'s) and the training history."""
    rows = StandardisedRows(view)
    with torch.random.fork_rng(devices=[]), one_torch_thread():
        torch.manual_seed(cfg.seed)
        model = view_encoder(rows.values.shape[1], cfg.embedding_dim, vcfg)
        trainer = Trainer(model, TripletObjective(cfg.image.triplet_loss, cfg.image.margin), lr=cfg.image.lr,
                          epochs=vcfg.epochs, batch_size=vcfg.batch_size, seed=cfg.seed, device="cpu",
                          progress=progress)
        history = trainer.fit(_ViewTriplets(rows, triplets))
        model.eval()
        frame = _embedding_frame(rows.embed(model), index)
    return frame, pd.DataFrame(history)


def _embedding_frame(e: torch.Tensor, index: pd.Index) -> pd.DataFrame:
    """A view encoder's output for the regions of ``index``: columns ``e_0``, ``e_1``, ..."""
    e = e.numpy().astype(np.float64)
    return pd.DataFrame(e, index=index.rename(REGION_ID), columns=[f"e_{k}" for k in range(e.shape[1])])


def procrustes_align(source: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
    """``source`` rotated and scaled onto ``target`` (same shape, rows aligned by position):
    ``(S - mean_S) s R + mean_T`` with the orthogonal R and scalar s that minimise the squared
    distance to T (orthogonal Procrustes; Schoenemann 1966). Distances within ``source`` only
    change by the factor s, so nothing a probe could use is lost; the axes now match target's."""
    s_x, t_x = source.to_numpy(dtype=np.float64), target.to_numpy(dtype=np.float64)
    if s_x.shape != t_x.shape:
        raise ValueError(f"procrustes_align needs two tables of the same shape; got {s_x.shape} and {t_x.shape}")
    s_c, t_c = s_x - s_x.mean(axis=0), t_x - t_x.mean(axis=0)
    u, sv, vt = np.linalg.svd(s_c.T @ t_c)
    rotation = u @ vt
    norm = float((s_c ** 2).sum())
    scale = float(sv.sum()) / norm if norm > 0 else 1.0
    out = s_c @ rotation * scale + t_x.mean(axis=0)
    return pd.DataFrame(out, index=source.index.copy(), columns=list(source.columns))


class _JointTriplets:
    """Mobility triplets and POI triplets served side by side for :func:`train_joint_encoders`:
    a batch is the mobility triplets at ``indices`` and as many POI triplets drawn at random
    (the batch generator), each as a stacked (3B, d) tensor, plus the batch's anchor regions."""

    def __init__(self, rows: dict, idx: dict):
        self.rows, self.idx = rows, idx

    def __len__(self) -> int:
        return len(self.idx["mobility"][0])

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        poi = torch.randint(len(self.idx["poi"][0]), (len(indices),), generator=generator)
        chosen = {"mobility": indices, "poi": poi}
        batch = {k: torch.cat([self.rows[k](col[chosen[k]].numpy()) for col in self.idx[k]]) for k in self.idx}
        batch["anchors"] = torch.unique(self.idx["mobility"][0][indices])
        return batch


def train_joint_encoders(views: dict, index: pd.Index, triplets: dict, cfg: RunConfig,
                         vcfg: VectorViewConfig, progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """Train the mobility and POI encoders together (``alignment="joint"``): each step, a batch of
    mobility triplets and as many POI triplets (eq. 6 on each) plus ``vcfg.align_weight`` x a
    symmetric InfoNCE between the two views of the batch's anchors with POIs. Returns
    ``{"mobility": frame, "poi": frame}`` and the history, as :func:`train_view_encoder`."""
    names = ("mobility", "poi")
    rows = {k: StandardisedRows(views[k]) for k in names}
    has_poi = torch.from_numpy(rows["poi"].values.sum(axis=1) > 0)  # ln(1 + counts): 0 only without POIs
    idx = {k: [torch.as_tensor(np.asarray(getattr(triplets[k], c)), dtype=torch.long)
               for c in ("anchor", "positive", "negative")] for k in names}
    triplet = TripletObjective(cfg.image.triplet_loss, cfg.image.margin)
    weight, temperature = float(vcfg.align_weight), float(vcfg.align_temperature)

    def objective(models: nn.ModuleDict, batch: dict) -> dict:
        parts = {f"{k}_loss": triplet(models[k], batch[k])["loss"] for k in names}
        regions = batch["anchors"][has_poi[batch["anchors"]]]
        align = torch.zeros(())
        if weight > 0 and len(regions) >= 2:
            a, b = (models[k](rows[k](regions.numpy())) for k in names)
            align = 0.5 * (info_nce(a, b, temperature) + info_nce(b, a, temperature))  # symmetric
        return {"loss": parts["mobility_loss"] + parts["poi_loss"] + weight * align, **parts,
                "align_loss": align}
    with torch.random.fork_rng(devices=[]), one_torch_thread():
        torch.manual_seed(cfg.seed)
        models = nn.ModuleDict({k: view_encoder(rows[k].values.shape[1], cfg.embedding_dim, vcfg)
                                for k in names})
        trainer = Trainer(models, objective, lr=cfg.image.lr, epochs=vcfg.epochs, batch_size=vcfg.batch_size,
                          seed=cfg.seed, device="cpu", progress=progress)
        history = trainer.fit(_JointTriplets(rows, idx))
        models.eval()
        out = {k: _embedding_frame(rows[k].embed(models[k]), index) for k in names}
    return out, pd.DataFrame(history)


@register("MuseCL (vector views)")
class VectorMuseCL(TableMethod):
    """MuseCL without images (the module docstring maps it to the paper): the mobility view in the
    fusion's ``sv`` slot (mobility triplets, eq. 1-2), the POI view in ``rs`` (POI triplets, eq.
    3-4); ``transform`` returns the fused embedding (eq. 10), as MuseCL does."""
    needs = (OD, POI)

    STAGE, FORMAT = "vector-musecl", 7  # 2: the joint encoders train through the Trainer; 3: fusion too;
    # 4: triplets by an exact neighbour search (musecl.sampling.SAMPLING_FORMAT 2); 5: its blocked form (3);
    # 6: the fusion model is kept (chapter 6 reads its alignment); 7: fusion views without LayerNorm

    def __init__(self, config: RunConfig | None = None, cache_dir=None, progress: bool = True,
                 view_config: VectorViewConfig | dict | None = None, reuse: "VectorMuseCL | None" = None):
        super().__init__(config, cache_dir, progress)
        if isinstance(view_config, dict):  # as options() saves it
            view_config = VectorViewConfig(**view_config)
        self.view_config = view_config or VectorViewConfig()
        self.reuse = reuse

    def fit(self, city: City) -> "VectorMuseCL":
        """Train every stage, or read them from the cache: one folder per city (its files) and
        settings (``reuse`` only saves time, so it is not part of the key). Either way the stages
        are read back from the folder, so a cached fit and a fresh one give the same numbers."""
        self.check_inputs(city)
        key = {"format": self.FORMAT, "city": city_fingerprint(city, labels=False), "config": self.config.to_dict(),
               "view": asdict(self.view_config), "fusion": fusion_key(self.config)}
        folder = self.cache.get_or_compute(self.STAGE, key, lambda f: self._save_stages(city, f))
        self._load_stages(folder)
        self.fitted_on = key["city"]
        return self

    def _save_stages(self, city: City, folder: Path) -> None:
        save_table(self._compute(city), folder / "embedding.csv")
        self.fusion_.save(folder / "fusion")
        save_table(self.attention_, folder / "attention.csv")
        save_table(self.text_, folder / "text.csv")
        for name, table in self.views_.items():
            save_table(table, folder / f"view-{name}.csv")
        for name, history in self.histories_.items():
            history.to_csv(folder / f"history-{name}.csv", index=False)
        for name, triplets in self.triplets_.items():
            ids = triplets.region_ids if triplets.region_ids is not None else city.region_ids.to_numpy()
            triplets.to_frame(ids).to_csv(folder / f"triplets-{name}.csv", index=False)
            info = {k: v.item() if isinstance(v, np.generic) else v for k, v in triplets.info.items()}
            atomic_save_json(folder / f"triplets-{name}.json", {"region_ids": [str(r) for r in ids], "info": info})

    def _load_stages(self, folder: Path) -> None:
        self.folder_ = folder
        self.table_ = load_table(folder / "embedding.csv")
        self.attention_ = load_table(folder / "attention.csv")
        self.text_ = load_table(folder / "text.csv")
        self.views_ = {p.stem.removeprefix("view-"): load_table(p) for p in sorted(folder.glob("view-*.csv"))}
        self.histories_ = {p.stem.removeprefix("history-"): pd.read_csv(p) for p in sorted(folder.glob("history-*.csv"))}
        self.triplets_ = {}
        for path in sorted(folder.glob("triplets-*.csv")):
            meta = json.loads(path.with_suffix(".json").read_text())
            triplets = Triplets.from_frame(Triplets.read_frame(path), meta["region_ids"])
            triplets.info.update(meta["info"])
            self.triplets_[path.stem.removeprefix("triplets-")] = triplets

    def options(self) -> dict:
        return {"view_config": asdict(self.view_config)}

    def save(self, directory: str | Path) -> Path:
        """The fused table and config.json (as every table method), and every stage beside them in
        ``stages/`` (views, text vectors, triplets, histories, the fusion model), so that a loaded
        fit answers ``attention``, ``history`` and ``fusion_model`` too."""
        directory = super().save(directory)
        stages = directory / "stages"
        if Path(self.folder_).resolve() != stages.resolve():  # saved again where it was loaded
            shutil.rmtree(stages, ignore_errors=True)
            shutil.copytree(self.folder_, stages)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "VectorMuseCL":
        method = super().load(directory)
        if (Path(directory) / "stages").is_dir():  # a save from before the stages were kept has the table only
            method._load_stages(Path(directory) / "stages")
        return method

    def _shared_stages(self, city: City) -> "VectorMuseCL | None":
        """``reuse`` if fitted with exactly the POI text vectors this run would train (same city,
        same settings up to the fusion's), else None."""
        other = self.reuse
        if other is None or not hasattr(other, "views_"):
            return None

        def upstream(config: RunConfig) -> RunConfig:  # the settings the text and view stages read
            return config.replace(temperature=None, fusion_design="aligned", fusion_loss="infonce",
                                  fusion_reconstruction=1.0)

        same = upstream(other.config) == upstream(self.config) and other.fitted_on == city_fingerprint(city, labels=False)
        return other if same else None

    def _compute(self, city: City) -> pd.DataFrame:
        cfg, vcfg = self.config, self.view_config
        sampler = sampler_for(cfg)
        views = {"mobility": mobility_view(city), "poi": poi_view(city)}
        self.views_, self.histories_ = {}, {}
        shared = self._shared_stages(city)  # then its triplets and encoders where trained alike
        same_poi = shared is not None and shared.view_config.poi_stage_key() == vcfg.poi_stage_key()
        same_mob = same_poi and vcfg.alignment != "joint" and \
            shared.view_config.mobility_similarity == vcfg.mobility_similarity
        if same_mob:
            mob = shared.triplets_["mobility"]
        elif vcfg.mobility_similarity == "inout":
            mob = mobility_triplets(city, sampler)  # eq. 1-2
        else:
            mob = sampler.sample(views["mobility"], region_ids=city.region_ids.to_numpy())
        poi_trip = shared.triplets_["poi"] if same_poi else poi_triplets(city, sampler)  # eq. 3-4
        self.triplets_ = {"mobility": mob, "poi": poi_trip}
        if vcfg.alignment == "joint":
            self.views_, self.histories_["joint"] = train_joint_encoders(
                views, city.region_ids, self.triplets_, cfg, vcfg, progress=self.progress)
        else:
            for view, same in (("mobility", same_mob), ("poi", same_poi)):
                if same:  # identical settings: the same encoder, not retrained (before the
                    # Procrustes rotation below, which keeps the trained POI view as poi_unaligned)
                    self.views_[view] = shared.views_.get(f"{view}_unaligned", shared.views_[view])
                    self.histories_[view] = shared.histories_[view]
                else:
                    self.views_[view], self.histories_[view] = train_view_encoder(
                        views[view], city.region_ids, self.triplets_[view], cfg, vcfg,
                        self.progress)
        if vcfg.alignment == "procrustes":  # the POI view's axes matched to the mobility view's
            self.views_["poi_unaligned"] = self.views_["poi"]
            self.views_["poi"] = procrustes_align(self.views_["poi"], self.views_["mobility"])
        self.text_ = shared.text_ if shared is not None else PoiTextEncoder(text_settings(cfg)).fit_transform(city)
        poi = self.views_["poi"]
        if vcfg.fused_views == "mobility":  # a view no region has: the fusion leaves it out
            poi = pd.DataFrame(np.nan, index=poi.index.copy(), columns=poi.columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OneViewWarning)  # meant: the POI view is left out
            self.fusion_, self.histories_["fusion"] = train_fusion(self.views_["mobility"], poi, self.text_,
                                                                   fusion_settings(cfg))
        embedding, beta = fuse(self.fusion_, self.views_["mobility"], poi)
        self.attention_ = beta.rename(columns={"sv": "mobility", "rs": "poi"})
        return embedding.rename(columns=lambda c: c.replace("image_", "fused_"))

    def stage_table(self, stage: str) -> pd.DataFrame:
        """``"mobility"``, ``"poi"`` (view encoders), ``"text"`` (eq. 7) or ``"attention"`` (beta)."""
        self._check_stages()
        if stage in ("text", "attention"):
            return getattr(self, f"{stage}_")
        return self.views_[stage]

    def attention(self) -> pd.DataFrame:
        """beta of eq. 9 per region: the weight of its mobility and POI views (as MuseCL's)."""
        return self.stage_table("attention")

    def history(self, stage: str) -> pd.DataFrame:
        """Per-epoch history of a trained stage: "mobility" and "poi" (or "joint"), "fusion"."""
        self._check_stages()
        if stage not in self.histories_:
            raise ValueError(f"{self.name} has no stage {stage!r}; it has {sorted(self.histories_)}")
        return self.histories_[stage]

    def fusion_model(self):
        """The trained fusion (eq. 8-11), read back from the cache (as MuseCL's)."""
        self._check_stages()
        return load_fusion(self.folder_ / "fusion")

    def _check_stages(self) -> None:
        """Refuse before ``fit`` (or after loading a save that kept the fused table only)."""
        if not hasattr(self, "views_"):
            raise RuntimeError(f"{self.name} has no stages: call fit(city) first (a save made before 2026-12-05 "
                               "holds the fused table only)")


VIEW_PARTS = ("mobility view only", "POI view only", "mobility view + POI view")  # names of view_parts' tables


def view_parts(model: VectorMuseCL) -> dict[str, pd.DataFrame]:
    """A fitted model's ablation (as the paper's Figure 6): each view encoder's embedding alone
    and the two side by side, no fusion, no text."""
    mobility, poi = (model.stage_table(view).add_prefix(f"{view}_") for view in ("mobility", "poi"))
    return dict(zip(VIEW_PARTS, (mobility, poi, pd.concat([mobility, poi], axis=1))))


def fit_variants(city: City, variants: dict, seed: int, cache_dir, progress: bool = False) -> dict:
    """``{label: fitted VectorMuseCL}`` for ``{label: (VectorViewConfig, RunConfig overrides)}``,
    all with ``seed``, in order. Each reuses what the first earlier variant with its mobility
    similarity (else the first) trained alike: that saves time, the numbers are a fresh fit's."""
    fitted: dict = {}
    for label, (view_config, overrides) in variants.items():
        earlier = [m for m in fitted.values() if m.view_config.mobility_similarity == view_config.mobility_similarity]
        reuse = earlier[0] if earlier else next(iter(fitted.values()), None)
        fitted[label] = VectorMuseCL(RunConfig(seed=int(seed), **overrides), cache_dir=cache_dir, progress=progress,
                                     view_config=view_config, reuse=reuse).fit(city)
    return fitted


def fit_variants_by_seed(city: City, variants: dict, seeds, cache_dir, jobs: int = 0) -> dict:
    """``{seed: fit_variants(...)}``. With more than one core (``jobs``: 0 means one per core),
    the seeds train side by side, one worker process each (every stage trains on one thread), and
    fill the cache that the fits here then read: the same numbers as fitting seed after seed,
    in about half the time on two cores (chapter 10 on the 2-core machine)."""
    seeds = [int(s) for s in seeds]
    workers = min(resolve_jobs(jobs), len(seeds))
    if workers > 1:
        for outcome in Parallel(n_jobs=workers, backend="loky")(
                delayed(in_worker)(os.getpid(), fit_variants, city, variants, seed, cache_dir) for seed in seeds):
            rewarn(outcome)
    return {seed: fit_variants(city, variants, seed, cache_dir) for seed in seeds}
