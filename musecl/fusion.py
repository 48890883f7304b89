"""Attentive fusion of the street-view and satellite embeddings, aligned with POI vectors (eq. 8-11).

Two designs, chosen by ``FusionConfig.design``:

* ``"aligned"`` (the default, :class:`AlignedFusion`): eq. 8-11 on *learned views* of the frozen
  image embeddings. The paper's fused vector mixes two embeddings trained apart, whose
  coordinates mean nothing to each other, so InfoNCE could only choose a modality per region.
* ``"paper"`` (:class:`AttentiveFusion`): eq. 8-11 as written, on the frozen embeddings;
  ``activation="tanh"`` with ``loss="mse"`` (to the POI vector) is the official code's variant.

The paper design, for region i and modality m in {SV, RS}:

* eq. 8  alpha_i^m = c^T ReLU(M e_i^m + b)        (M, b, c shared by both modalities)
* eq. 9  beta_i^m  = softmax over m of alpha_i^m
* eq. 10 e_i^Image = sum_m beta_i^m e_i^m
* eq. 11 InfoNCE between e^Image and e^POI over a mini-batch, cosine similarity.

Two choices the paper leaves open:

* **Dimensions.** Eq. 10 sums e^SV and e^RS, so they must have the same size d. When e^POI's size
  differs, a linear head g: R^d -> R^{d_POI} maps e^Image *inside the loss only*
  (``projection="auto"``); the probes always get e^Image itself.
* **Temperature.** Eq. 11 has none, i.e. tau = 1 (the default); it is exposed because cosine
  similarities in [-1, 1] make a soft softmax and a smaller tau is the common remedy.

The image embeddings are inputs, not trained, except by the end-to-end option
(:func:`fine_tune_heads`, :func:`fine_tune_cnns`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from musecl.city import REGION_ID
from musecl.config import FUSION_DESIGNS, FUSION_LOSSES
from musecl.encoders.heads import FeatureHead, feature_matrix, triplet_features
from musecl.encoders.image import ImageEncoder, ImageStore, TripletImageDataset, TripletObjective, embed_regions
from musecl.io import CONFIG_JSON, check_choice, check_region_table, n_of_regions
from musecl.tables import impute_column_means
from musecl.training import (
    TIMING_COLUMNS, Trainer, load_weights, one_torch_thread, resolve_device, save_weights,
)

MODALITY_NAMES = ("sv", "rs")
DEFAULT_TEMPERATURE = {"aligned": 0.1, "paper": 1.0}  # aligned: where the learned temperature starts
# Weight of the aligned design's reconstruction term against InfoNCE. Chosen on a second toy city
# (seed 1), never on the book's: MuseCL's headline R2, mean of both splits over seeds 0-2, weight
# 1 -> 0.360, 3 -> 0.375, 10 -> 0.401, 30 -> 0.408, 100 -> 0.396; the own POI vector stayed the
# nearest in batches of 64 for 93%, 89%, 75%, 59%, 49% of the regions (chance 1.6%). Rerun:
# python experiments/select_on_a_second_city.py fusion_reconstruction 1 3 10 30 100
# Re-checked with the views without LayerNorm (VIEW_NORM below; seeds 0-4, 2026-12-05): 10 -> 0.550,
# 30 -> 0.554, 100 -> 0.549.
DEFAULT_RECONSTRUCTION = 30.0
# Fine-tuning: the heads' learning rate as a fraction of the fusion's, the common tenth for weights
# already trained. Not a winning choice: on a second toy city (seed 1, seeds 0-2, params/ci.yaml)
# MuseCL's headline R2 (random / spatial) was 0.521 / 0.273 with the heads held fixed, and with
# fine-tuned heads 0.466 / 0.193 at factor 1, 0.488 / 0.262 at 0.1 and 0.510 / 0.269 at 0.01.
HEAD_LR_FACTOR = 0.1
# A LayerNorm on the aligned design's two image views (AlignedFusion's view_norm). Off: it makes
# every region's view vector the same length, and the length carries how much happens there (on
# Manhattan the fused vectors' lengths varied by 2% of their mean with it, the mobility view's by
# 100%). Chosen on a second toy city (seed 1), never on the book's: MuseCL's headline R2, mean of
# both splits over seeds 0-4, LayerNorm on the image views and the POI vector 0.521, on neither
# 0.543 (a local edit), on the POI vector only (this) 0.554, higher or level in every seed
# (2026-12-05). Rerun: experiments/select_on_a_second_city.py fusion_epochs 50, once with this
# constant True (it is part of the fusion stages' cache keys: multisemantic.fusion_key).
VIEW_NORM = False
ACTIVATIONS = ("relu", "tanh")
PROJECTIONS = ("auto", "linear", "none")


def attention(alpha: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9 over the modalities a region has. A missing one (its embedding NaN, filled with the
    column mean) gets no weight, so a region with one view is that view (beta = 1) instead of a
    mix with a placeholder that all such regions share; a region with neither keeps both."""
    if present is not None:
        alpha = alpha.masked_fill(~present & present.any(dim=1, keepdim=True), float("-inf"))
    return torch.softmax(alpha, dim=1)


class _Fusion(nn.Module):
    """What both designs share: the input check, ``save`` and ``load``."""

    def check_views(self, e_sv: torch.Tensor, e_rs: torch.Tensor) -> None:
        if e_sv.shape != e_rs.shape or e_sv.shape[-1] != self.dim:
            raise ValueError(f"street-view and satellite embeddings must both be (n, {self.dim}); "
                             f"got {tuple(e_sv.shape)} and {tuple(e_rs.shape)}")

    def save(self, directory: str | Path) -> Path:
        """Write ``weights.pt`` (a state dict) and ``config.json``."""
        config = {"class": type(self).__name__, **self.config()}
        return save_weights(directory, self.state_dict(), config)

    @classmethod
    def load(cls, directory: str | Path):
        model = load_fusion(directory)
        if type(model) is not cls:
            raise ValueError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}; "
                             "use load_fusion")
        return model


class AttentiveFusion(_Fusion):
    """Eq. 8-10: attention weights over {SV, RS} from shared (M, b, c); returns (e_image, beta),
    beta (n, 2) with columns sv, rs and rows summing to 1. ``head`` maps e_image to the POI space
    for the loss: identity unless the sizes differ or ``projection`` is "linear"."""

    def __init__(self, dim: int, hidden: int = 128, poi_dim: int | None = None,
                 activation: str = "relu", projection: str = "auto"):
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS, " (relu: the paper's eq. 8; tanh: the official code)")
        check_choice("projection", projection, PROJECTIONS)
        poi_dim = dim if poi_dim is None else int(poi_dim)
        if projection == "none" and poi_dim != dim:
            raise ValueError(f"projection='none' needs the image and POI vectors to have the same size; "
                             f"got {dim} and {poi_dim}. Use projection='auto' for a linear head.")
        self.dim, self.hidden, self.poi_dim = int(dim), int(hidden), poi_dim
        self.activation, self.projection = activation, projection
        self.M = nn.Linear(dim, hidden)  # M and b of eq. 8
        self.c = nn.Linear(hidden, 1, bias=False)  # c of eq. 8
        use_head = projection == "linear" or (projection == "auto" and poi_dim != dim)
        self.head = nn.Linear(dim, poi_dim) if use_head else nn.Identity()
        # column means used to fill regions without an SV or RS embedding (set by train_fusion)
        self.register_buffer("sv_mean", torch.zeros(dim))
        self.register_buffer("rs_mean", torch.zeros(dim))

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "poi_dim": self.poi_dim,
                "activation": self.activation, "projection": self.projection}

    def forward(self, e_sv: torch.Tensor, e_rs: torch.Tensor, present: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``present``: (n, 2) booleans, whether a region has each view (:func:`attention`)."""
        self.check_views(e_sv, e_rs)
        stacked = torch.stack([e_sv, e_rs], dim=1)  # (n, 2, d)
        act = torch.relu if self.activation == "relu" else torch.tanh
        alpha = self.c(act(self.M(stacked))).squeeze(-1)  # eq. 8, (n, 2)
        beta = attention(alpha, present)  # eq. 9
        e_image = (beta.unsqueeze(-1) * stacked).sum(dim=1)  # eq. 10
        return e_image, beta

    def align_space(self, e_image: torch.Tensor, e_poi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two vectors eq. 11 compares: e^Image through the head, and the POI vector."""
        return self.head(e_image), e_poi


class AlignedFusion(_Fusion):
    """The default design: eq. 8-11 on learned views of the two image embeddings.

    * each standardised embedding gets its own linear projection h^m = W^m e^m, so that the two,
      trained apart, share coordinates; eq. 8-10 score (u^T tanh(M h + b)) and mix them. No
      LayerNorm on h^m unless ``view_norm`` (off: why and the measurements at ``VIEW_NORM``);
    * eq. 11 compares e^Image with g = LayerNorm(W^POI e^POI), at a learned temperature, both ways;
    * a linear decoder back to both standardised image embeddings (MSE, weight
      ``FusionConfig.reconstruction``) keeps what only the images show, which the text would erase.

    ``forward`` takes the raw embeddings and returns ``(e_image, beta)`` as :class:`AttentiveFusion`.
    """

    def __init__(self, dim: int, poi_dim: int | None = None, width: int | None = None, hidden: int = 32,
                 temperature: float = DEFAULT_TEMPERATURE["aligned"], view_norm: bool = False):
        super().__init__()
        poi_dim = dim if poi_dim is None else int(poi_dim)
        width = dim if width is None else int(width)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.dim, self.poi_dim, self.width, self.hidden = int(dim), poi_dim, width, int(hidden)
        self.view_norm = bool(view_norm)

        def view_projection() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, width), nn.LayerNorm(width) if view_norm else nn.Identity())
        self.project_sv, self.project_rs = view_projection(), view_projection()
        self.M = nn.Linear(width, hidden)  # M and b of eq. 8
        self.c = nn.Linear(hidden, 1, bias=False)  # u of the official attention
        self.project_poi = nn.Sequential(nn.Linear(poi_dim, width), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, 2 * dim)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(temperature))))
        for name, size in (("sv", dim), ("rs", dim), ("poi", poi_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))

    def config(self) -> dict:
        return {"dim": self.dim, "poi_dim": self.poi_dim, "width": self.width, "hidden": self.hidden,
                "view_norm": self.view_norm}

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def standardised(self, e_sv: torch.Tensor, e_rs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (e_sv - self.sv_mean) / self.sv_std, (e_rs - self.rs_mean) / self.rs_std

    def views(self, e_sv: torch.Tensor, e_rs: torch.Tensor) -> torch.Tensor:
        """(n, 2, width): the projected street-view and satellite vectors that eq. 10 mixes."""
        z_sv, z_rs = self.standardised(e_sv, e_rs)
        return torch.stack([self.project_sv(z_sv), self.project_rs(z_rs)], dim=1)

    def forward(self, e_sv: torch.Tensor, e_rs: torch.Tensor, present: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_views(e_sv, e_rs)
        stacked = self.views(e_sv, e_rs)
        beta = attention(self.c(torch.tanh(self.M(stacked))).squeeze(-1), present)  # eq. 8-9
        return (beta.unsqueeze(-1) * stacked).sum(dim=1), beta  # eq. 10

    def align_space(self, e_image: torch.Tensor, e_poi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two vectors eq. 11 compares: e^Image itself and the projected POI vector."""
        return e_image, self.project_poi((e_poi - self.poi_mean) / self.poi_std)


def load_fusion(directory: str | Path) -> "AttentiveFusion | AlignedFusion":
    """A fusion model written by ``save``, of whichever design it is."""
    raw, state = load_weights(directory, "a fusion model's save")
    classes = {c.__name__: c for c in (AttentiveFusion, AlignedFusion)}
    held = raw.pop("class", None)
    if held not in classes:
        raise ValueError(f"{Path(directory) / CONFIG_JSON}: unknown fusion class {held!r}")
    if held == "AlignedFusion":
        raw.setdefault("view_norm", True)  # saved before 2026-12-05, when every view had a LayerNorm
    model = classes[held](**raw)
    model.load_state_dict(state)
    return model.eval()


# -- losses ----------------------------------------------------------------------------------------


def info_nce(e_image: torch.Tensor, e_poi: torch.Tensor, temperature: float | torch.Tensor = 1.0,
             both_ways: bool = False) -> torch.Tensor:
    """Eq. 11 averaged over the mini-batch: -log softmax_j(sim(e_i^Image, e_j^POI) / tau) at j = i.

    ``sim`` is the cosine similarity; tau = 1 is the paper's literal form. The n x n matrix is over
    one mini-batch (the batch is the set of negatives), never over all regions. ``both_ways``
    (the aligned design) averages it with the loss of each POI vector picking its image vector.
    """
    if e_image.shape[0] != e_poi.shape[0] or e_image.shape[0] < 1:
        raise ValueError(f"need the same, non-zero number of image and POI rows; "
                         f"got {e_image.shape[0]} and {e_poi.shape[0]}")
    if not torch.is_tensor(temperature) and temperature <= 0:  # a learned one: exp(), no sync
        raise ValueError(f"temperature must be > 0; got {temperature}")
    logits = F.normalize(e_image, dim=1) @ F.normalize(e_poi, dim=1).T / temperature
    labels = torch.arange(len(logits), device=logits.device)
    loss = F.cross_entropy(logits, labels)
    return (loss + F.cross_entropy(logits.T, labels)) / 2 if both_ways else loss


def mse_alignment(e_image: torch.Tensor, e_poi: torch.Tensor) -> torch.Tensor:
    """The official code's objective: mean squared error between the fused and the POI vector."""
    if e_image.shape != e_poi.shape:
        raise ValueError(f"fused and POI vectors must have the same shape; got {tuple(e_image.shape)} "
                         f"and {tuple(e_poi.shape)}")
    return F.mse_loss(e_image, e_poi)


# -- training --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionConfig:
    """Fusion training settings.

    ``design``: "aligned" (default) or "paper". ``loss``: "infonce" (eq. 11) or "mse" (official
    code; paper design only). ``temperature``: fixed for the paper design, the learned one's start
    for the aligned design (None: ``DEFAULT_TEMPERATURE``). ``reconstruction``: weight of the
    aligned design's decoder loss. ``hidden``, ``activation``, ``projection``: the paper design's.
    ``patience=None`` trains for ``epochs`` epochs (official: 50); with a patience, a
    ``val_fraction`` of the regions is held out and the best validation weights are kept.
    ``head_lr_factor``: fine-tuning only, the encoders' learning rate as a fraction of ``lr``.
    """

    design: str = "aligned"
    loss: str = "infonce"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    hidden: int = 128
    temperature: float | None = None
    reconstruction: float = DEFAULT_RECONSTRUCTION
    activation: str = "relu"
    projection: str = "auto"
    patience: int | None = None
    val_fraction: float = 0.1
    head_lr_factor: float = HEAD_LR_FACTOR

    def __post_init__(self):
        check_choice("design", self.design, FUSION_DESIGNS,
                     " (aligned: learned views and temperature; paper: eq. 8-11 on the frozen embeddings)")
        if self.design == "aligned" and self.loss != "infonce":
            raise ValueError("the aligned design trains with InfoNCE (eq. 11); for the official code's MSE "
                             "use design='paper', loss='mse'")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if self.reconstruction < 0:
            raise ValueError(f"reconstruction must be >= 0; got {self.reconstruction}")
        if self.head_lr_factor < 0:
            raise ValueError(f"head_lr_factor must be >= 0; got {self.head_lr_factor}")
        check_choice("loss", self.loss, FUSION_LOSSES,
                     " (infonce: the paper's eq. 11; mse: the official code)")
        if self.epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ValueError(f"epochs, batch_size and hidden must be >= 1; got {self}")
        if self.loss == "infonce" and self.batch_size < 2:
            raise ValueError("InfoNCE needs batch_size >= 2: the other regions of a batch are the negatives")
        if self.patience is not None and not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1) when patience is set; got {self.val_fraction}")


def _as_config(config: FusionConfig | dict | None) -> FusionConfig:
    if config is not None and not isinstance(config, (FusionConfig, dict)):
        raise TypeError(f"config must be a FusionConfig or a dict of its fields; got {type(config).__name__}"
                        + (" (a RunConfig's fusion settings are its .fusion)" if hasattr(config, "fusion") else ""))
    return FusionConfig(**config) if isinstance(config, dict) else config or FusionConfig()


def _views(sv: pd.DataFrame, rs: pd.DataFrame) -> pd.DataFrame:
    """``rs`` aligned to ``sv``'s regions, after checking both (street view first, as eq. 9 is
    written: two tables handed over the other way round would fuse without a word)."""
    check_region_table(sv, "sv")
    if {str(c)[:3] for c in sv.columns} == {"rs_"} and {str(c)[:3] for c in rs.columns} == {"sv_"}:
        raise ValueError("the street-view table comes first, then the satellite one: these came the other way "
                         "round (columns rs_... first, sv_... second)")
    return _align(sv, rs, "rs")


def _align(reference: pd.DataFrame, other: pd.DataFrame, name: str) -> pd.DataFrame:
    """``other`` reordered to ``reference``'s region ids; an error names the ids that differ."""
    check_region_table(other, name)
    missing = reference.index.difference(other.index)
    extra = other.index.difference(reference.index)
    if len(missing) or len(extra):
        raise ValueError(f"{name} does not cover the same regions as sv: {len(missing)} missing "
                         f"(e.g. {missing[:5].tolist()}), {len(extra)} extra (e.g. {extra[:5].tolist()})")
    return other.loc[reference.index]


def _impute(df: pd.DataFrame, means: np.ndarray) -> np.ndarray:
    """Float32, NaN cells filled with ``means``; a copy, as pandas 3 may hand out read-only arrays."""
    return impute_column_means(df, means=means).to_numpy(dtype=np.float32, copy=True)


def _present(sv: pd.DataFrame, rs: pd.DataFrame) -> np.ndarray:
    """(n, 2) booleans: whether each region has each view. If no region has one view, the other
    counts as present everywhere, so every region reads it alone (beta = 1)."""
    present = np.stack([sv.notna().all(axis=1).to_numpy(), rs.notna().all(axis=1).to_numpy()], axis=1)
    nowhere = ~present.any(axis=0)
    if nowhere.any() and not nowhere.all():
        present[:, ~nowhere] = True
    return present


class OneViewWarning(UserWarning):
    """No region has one of the two views, so the fusion reads the other alone. Its own category,
    so a caller that means it (one image kind) can silence it without matching the message."""


def _column_means(df: pd.DataFrame, name: str) -> np.ndarray:
    if len(df) and df.isna().all(axis=None):  # a view no region has: zeros, never weighted (attention)
        warnings.warn(f"{name}: no region has this embedding; every fused vector is made of the other "
                      "view alone", OneViewWarning, stacklevel=3)
        return np.zeros(df.shape[1], dtype=np.float32)
    means = df.mean(axis=0, skipna=True).to_numpy(dtype=np.float32)
    if np.isnan(means).any():
        raise ValueError(f"{name}: a column is NaN for every region; nothing to impute from")
    n_nan = int(df.isna().any(axis=1).sum())
    if n_nan:
        warnings.warn(f"{name}: {n_of_regions(n_nan, len(df))} a missing (NaN) embedding; "
                      "filled with the column mean", stacklevel=3)
    return means


def _temperature(cfg: FusionConfig) -> float:
    return DEFAULT_TEMPERATURE[cfg.design] if cfg.temperature is None else float(cfg.temperature)


def _new_model(cfg: FusionConfig, sv_mean: np.ndarray, rs_mean: np.ndarray, x_sv: torch.Tensor,
               x_rs: torch.Tensor, y: torch.Tensor) -> "AttentiveFusion | AlignedFusion":
    """A fusion model of ``cfg.design`` seeded with ``cfg.seed``: the column means fill regions
    without an embedding; the aligned design standardises on the training rows ``x_sv, x_rs, y``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.design == "aligned":
            model = AlignedFusion(x_sv.shape[1], poi_dim=y.shape[1], temperature=_temperature(cfg),
                                  view_norm=VIEW_NORM)
        else:
            model = AttentiveFusion(x_sv.shape[1], hidden=cfg.hidden, poi_dim=y.shape[1],
                                    activation=cfg.activation, projection=cfg.projection)
    model.sv_mean.copy_(torch.from_numpy(np.array(sv_mean)))  # copies: pandas 3 arrays are read-only
    model.rs_mean.copy_(torch.from_numpy(np.array(rs_mean)))
    if isinstance(model, AlignedFusion):  # standardised on the training regions
        for name, values in (("sv", x_sv), ("rs", x_rs), ("poi", y)):
            getattr(model, f"{name}_std").copy_(values.std(dim=0).clamp_min(1e-6))
        model.poi_mean.copy_(y.mean(dim=0))
    return model


def _batch_loss(model, sv, rs, poi, present, cfg: FusionConfig) -> dict:
    """``loss`` (minimised) and, for the aligned design with a reconstruction term, its two parts
    ``infonce`` and ``reconstruction`` (logged, so the InfoNCE can be read against chance)."""
    e_image, _ = model(sv, rs, present)
    if isinstance(model, AlignedFusion):
        a, b = model.align_space(e_image, poi)
        nce = info_nce(a, b, model.log_temperature.exp(), both_ways=True)
        if not cfg.reconstruction:
            return {"loss": nce}
        # detached: when heads train with the fusion (fine_tune_heads) they must not shrink the target
        target = torch.cat(model.standardised(sv, rs), dim=1).detach()
        error = F.mse_loss(model.decoder(e_image), target)
        return {"loss": nce + cfg.reconstruction * error, "infonce": nce.detach(), "reconstruction": error.detach()}
    target = model.head(e_image)
    if cfg.loss == "infonce":
        return {"loss": info_nce(target, poi, _temperature(cfg))}
    return {"loss": mse_alignment(target, poi)}


def train_fusion(sv: pd.DataFrame, rs: pd.DataFrame, poi: pd.DataFrame,
                 config: FusionConfig | dict | None = None) -> tuple["AttentiveFusion | AlignedFusion", pd.DataFrame]:
    """Learn the fusion so that the fused e^Image agrees with e^POI (eq. 11, or MSE).

    ``sv``, ``rs``, ``poi``: indexed and aligned by region_id. NaN rows of ``sv`` / ``rs`` are
    filled with the column mean (kept for :func:`fuse`) and get no weight (:func:`attention`); a
    view NaN for every region is one the city lacks, and the fused vector is the other's. Regions
    with a zero or NaN POI vector have nothing to align with and are left out (warned).
    Returns the model (eval mode) and a history table ``epoch, train_loss[, val_loss]``.
    """
    with one_torch_thread():  # a few small matrices per step: one thread is faster
        return _train_fusion(sv, rs, poi, _as_config(config))


def _train_fusion(sv: pd.DataFrame, rs: pd.DataFrame, poi: pd.DataFrame, cfg: FusionConfig):
    rs = _views(sv, rs)
    poi = _align(sv, poi, "poi")
    if sv.shape[1] != rs.shape[1]:
        raise ValueError(f"eq. 10 adds the street-view and satellite embeddings, so they need the "
                         f"same size; got {sv.shape[1]} and {rs.shape[1]}")
    present = _present(sv, rs)
    if not present.any():
        raise ValueError("neither sv nor rs has an embedding for any region: nothing to fuse")
    sv_mean, rs_mean = _column_means(sv, "sv"), _column_means(rs, "rs")
    x_sv, x_rs = _impute(sv, sv_mean), _impute(rs, rs_mean)
    y = poi.to_numpy(dtype=np.float32)
    usable = np.isfinite(y).all(axis=1) & (np.abs(y).sum(axis=1) > 0)
    if not usable.all():
        n_out = int((~usable).sum())
        warnings.warn(f"poi: {n_of_regions(n_out, len(y))} a zero or missing POI vector and "
                      f"{'is' if n_out == 1 else 'are'} left out of fusion training", stacklevel=2)
    x_sv, x_rs, y, present = (torch.from_numpy(a[usable]) for a in (x_sv, x_rs, y, present))
    n = len(y)
    if n < 2:
        raise ValueError(f"fusion training needs at least 2 regions with POI vectors; got {n}")
    if float(y.std(dim=0).max()) < 1e-6:
        warnings.warn("poi: every region has the same POI vector (one POI category, or POI texts that do not "
                      "differ): eq. 11 has nothing to tell the regions apart by", stacklevel=2)

    model = _new_model(cfg, sv_mean, rs_mean, x_sv, x_rs, y)
    data, val = (x_sv, x_rs, y, present), None
    if cfg.patience is not None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
        n_val = max(2, int(round(cfg.val_fraction * n)))
        if n - n_val < 2:
            raise ValueError(f"too few regions ({n}) to hold out {n_val} for validation")
        val = tuple(t[order[:n_val]] for t in data)
        data = tuple(t[order[n_val:]] for t in data)
    return _fit(model, lambda net, batch: _batch_loss(net, *batch, cfg),
                lambda params: torch.optim.Adam(params, lr=cfg.lr), cfg, data, val,
                min_batch=2 if cfg.loss == "infonce" else 1,  # an InfoNCE batch of one: no negative
                patience=cfg.patience)


def _fit(model: nn.Module, loss, optimizer, cfg: FusionConfig, train, val=None, **trainer_settings):
    """Train ``model`` for ``cfg``'s epochs at a constant rate, the global random state left as it
    was; returns the model (eval mode) and its history."""
    trainer = Trainer(model, loss, optimizer_factory=optimizer, lr_gamma=1.0, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, seed=cfg.seed, progress=False, **trainer_settings)
    with torch.random.fork_rng(devices=[]):
        history = trainer.fit(train, val)
    # timings left out: the stage's saved history is the same in every run of a seed
    return model.eval(), pd.DataFrame(history).drop(columns=list(TIMING_COLUMNS))


@torch.no_grad()
def fuse(model: "AttentiveFusion | AlignedFusion", sv: pd.DataFrame, rs: pd.DataFrame
         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eq. 10 for every region: the fused embedding (columns ``image_0..``) and beta (``sv``,
    ``rs``); a region without one view gets the other (beta = 1), as in :func:`train_fusion`."""
    rs = _views(sv, rs)
    model.eval()
    x_sv = torch.from_numpy(_impute(sv, model.sv_mean.cpu().numpy()))
    x_rs = torch.from_numpy(_impute(rs, model.rs_mean.cpu().numpy()))
    e_image, beta = model(x_sv, x_rs, torch.from_numpy(_present(sv, rs)))
    index = sv.index.rename(REGION_ID)
    embedding = pd.DataFrame(e_image.numpy(), index=index,
                             columns=[f"image_{k}" for k in range(e_image.shape[1])])
    weights = pd.DataFrame(beta.numpy(), index=index.copy(), columns=list(MODALITY_NAMES))
    return embedding, weights


# -- the end-to-end option: the fusion loss also trains the image encoders (feature heads or CNNs)


class FineTunedEncoders(nn.Module):
    """Both image encoders (feature heads or whole CNNs) and the aligned fusion as one model, so
    that eq. 11's loss (:func:`fine_tuning_loss`) reaches the encoders."""

    def __init__(self, encoder_sv: nn.Module, encoder_rs: nn.Module, fusion: AlignedFusion):
        super().__init__()
        self.encoder_sv, self.encoder_rs, self.fusion = encoder_sv, encoder_rs, fusion


class RegionImages:
    """The regions' images for fine-tuning CNNs: one random image of each region a batch asks for
    (:meth:`ImageStore.sample_rows`, with the trainer's generator), as training draws them."""

    def __init__(self, store: ImageStore, regions: pd.Index):
        self.store, self.positions = store, store.positions(regions)

    def take(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rows = self.store.sample_rows(self.positions[indices], generator)
        return self.store.images[rows.to(self.store.images.device)]


class RegionsAndTriplets:
    """Fine-tuning batches: B regions (both kinds' inputs and the POI vector) and B triplets of
    each kind, drawn with the trainer's generator so a resumed or repeated run draws the same."""

    def __init__(self, x_sv, x_rs, y, triplets_sv, triplets_rs):
        self.x_sv, self.x_rs, self.y = x_sv, x_rs, y
        self.triplets = (triplets_sv, triplets_rs)

    def __len__(self) -> int:
        return len(self.y)

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> tuple:
        x = [v.take(indices, generator) if isinstance(v, RegionImages) else v[indices] for v in (self.x_sv, self.x_rs)]
        drawn = [t.get_batch(torch.randint(len(t), (len(indices),), generator=generator))
                 for t in self.triplets]
        return (*x, self.y[indices], *drawn)


def _fine_tuning_regions(ids_sv, ids_rs, poi: pd.DataFrame) -> tuple[pd.Index, torch.Tensor]:
    """The regions with both kinds of images and a POI vector, and their POI vectors."""
    both = pd.Index(ids_sv).intersection(pd.Index(ids_rs), sort=False)
    check_region_table(poi, "poi")
    poi = poi.set_axis(poi.index.astype(str))
    missing = both.difference(poi.index)
    if len(missing):
        raise ValueError(f"poi lacks {len(missing)} region(s) that have images, "
                         f"e.g. {missing[:5].tolist()}")
    y = poi.loc[both].to_numpy(dtype=np.float32, copy=True)
    usable = np.isfinite(y).all(axis=1) & (np.abs(y).sum(axis=1) > 0)
    if usable.sum() < 2:
        raise ValueError(f"fine-tuning needs at least 2 regions with both kinds of images and a "
                         f"POI vector; got {int(usable.sum())}")
    return both[usable], torch.from_numpy(y[usable])


def _fine_tune(encoders: dict[str, nn.Module], e: dict[str, torch.Tensor], y: torch.Tensor, data: RegionsAndTriplets,
               cfg: FusionConfig, objective: TripletObjective, **trainer_settings) -> tuple[FineTunedEncoders, pd.DataFrame]:
    """Train ``encoders`` with a new aligned fusion started on their embeddings ``e``."""
    model = FineTunedEncoders(encoders["sv"], encoders["rs"], _new_model(
        cfg, e["sv"].mean(0).numpy(), e["rs"].mean(0).numpy(), e["sv"], e["rs"], y))

    def optimizer(_):  # the encoders, already trained, move at a fraction of the fusion's rate
        trained = [*model.encoder_sv.parameters(), *model.encoder_rs.parameters()]
        return torch.optim.Adam([{"params": model.fusion.parameters()},
                                 {"params": trained, "lr": cfg.lr * cfg.head_lr_factor}], lr=cfg.lr)

    loss = partial(fine_tuning_loss, cfg=cfg, objective=objective)
    return _fit(model, loss, optimizer, cfg, data, min_batch=2, **trainer_settings)


def _fine_tuning_config(config: FusionConfig | dict | None) -> FusionConfig:
    cfg = _as_config(config)
    if cfg.design != "aligned":
        raise ValueError(f"fine-tuning the encoders trains the aligned fusion design; got design {cfg.design!r}")
    return cfg


def fine_tune_heads(heads: dict[str, FeatureHead], features: dict[str, pd.DataFrame],
                    triplets: dict[str, pd.DataFrame], poi: pd.DataFrame, objective: TripletObjective,
                    config: FusionConfig | dict | None = None) -> tuple[FineTunedEncoders, pd.DataFrame]:
    """Train the two triplet-trained heads (``heads["sv"]``, ``heads["rs"]``) on with a new aligned
    fusion (loss: :func:`fine_tuning_loss`). ``features[kind]``: the frozen backbone's features
    per region (NaN: no such image); ``triplets[kind]``: region-id tables for ``objective``.
    Uses the regions with both features and a POI vector; returns the model (eval) and history."""
    cfg = _fine_tuning_config(config)
    with one_torch_thread():
        ids, x = {}, {}
        for kind in MODALITY_NAMES:
            ids[kind], x[kind] = feature_matrix(features[kind])
        data = {kind: triplet_features(ids[kind], x[kind], triplets[kind]) for kind in MODALITY_NAMES}
        regions, y = _fine_tuning_regions(ids["sv"], ids["rs"], poi)
        rows = {kind: x[kind][pd.Index(ids[kind]).get_indexer(regions)] for kind in MODALITY_NAMES}
        with torch.no_grad():  # the fusion starts on the heads' embeddings before fine-tuning
            e = {kind: heads[kind].eval()(rows[kind]) for kind in MODALITY_NAMES}
        return _fine_tune(heads, e, y, RegionsAndTriplets(rows["sv"], rows["rs"], y, data["sv"], data["rs"]),
                          cfg, objective)


def fine_tune_cnns(encoders: dict[str, ImageEncoder], stores: dict[str, ImageStore],
                   triplets: dict[str, pd.DataFrame], poi: pd.DataFrame, objective: TripletObjective,
                   config: FusionConfig | dict | None = None, device: str = "cpu",
                   amp: str = "off") -> tuple[FineTunedEncoders, pd.DataFrame]:
    """:func:`fine_tune_heads` for whole CNNs on ``stores[kind]``'s images (meant for a GPU: each
    step runs both CNNs on B regions and 3B triplet images of each kind). Eq. 11 sees one
    unaugmented image per region; the triplets are augmented as in the encoders' own training."""
    cfg = _fine_tuning_config(config)
    regions, y = _fine_tuning_regions(stores["sv"].region_ids, stores["rs"].region_ids, poi)
    encoders = {kind: encoder.to(resolve_device(device)) for kind, encoder in encoders.items()}
    e = {kind: torch.tensor(embed_regions(encoders[kind], stores[kind], region_ids=regions, amp=amp)
                            .to_numpy(np.float32)) for kind in MODALITY_NAMES}  # where the fusion starts (a copy)
    data = {kind: TripletImageDataset(stores[kind], triplets[kind], seed=cfg.seed) for kind in MODALITY_NAMES}
    images = {kind: RegionImages(stores[kind], regions) for kind in MODALITY_NAMES}
    return _fine_tune(encoders, e, y, RegionsAndTriplets(images["sv"], images["rs"], y, data["sv"], data["rs"]),
                      cfg, objective, device=device, amp=amp)


def fine_tuning_loss(model: FineTunedEncoders, batch: tuple, cfg: FusionConfig,
                     objective: TripletObjective) -> dict:
    """The fusion's loss (eq. 11 and reconstruction) on B regions plus each encoder's triplet loss
    (eq. 5-6, with a head's reconstruction term) on B of its triplets: the gradient of eq. 11
    reaches the encoders, and the triplet terms keep what the similarity pairing taught them."""
    sv, rs, poi, triplets_sv, triplets_rs = batch
    # None: every region of these batches has both views
    fusion = _batch_loss(model.fusion, model.encoder_sv(sv), model.encoder_rs(rs), poi, None, cfg)
    triplet_sv = objective(model.encoder_sv, triplets_sv)["loss"]
    triplet_rs = objective(model.encoder_rs, triplets_rs)["loss"]
    parts = {k: v for k, v in fusion.items() if k != "loss"}  # InfoNCE and reconstruction, logged
    return {"loss": fusion["loss"] + triplet_sv + triplet_rs, "fusion": fusion["loss"].detach(),
            **parts, "triplet_sv": triplet_sv.detach(), "triplet_rs": triplet_rs.detach()}
