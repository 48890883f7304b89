"""Methods built from MuseCL's own pieces: the paper's combination baselines, its ablation
(Figure 6), and the simple baselines the paper leaves out (location, the raw pretext inputs).

Every method here reuses the cached stages of :mod:`musecl.methods.multisemantic` (image
encoders, eq. 1-6; POI text vectors, eq. 7), so running them all trains each encoder once; each
class docstring says how its method is built. NaN image embeddings (regions without images) are
filled with the column mean, as the fusion does, so no probe sees NaN.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from musecl.cache import entry_key, load_table
from musecl.city import MOBILITY, POI, SATELLITE, STREETVIEW, City
from musecl.config import RunConfig
from musecl.methods.base import RegionEmbedder, TableMethod, register
from musecl.methods.multisemantic import (
    ATTENTION_CSV,
    EMBEDDINGS_CSV,
    MuseCL,
    fusion_key,
    image_stage,
    text_stage,
    train_fusion_into,
)
from musecl.sampling import pretext_features
from musecl.tables import impute_column_means, standardise_columns

# The paper's Table 1 (row order), its Figure 6, and what this project adds.
PAPER_BASELINES = ("Inception v3", "ResNet-18", "Tile2vec-style", "Urban2vec-style", "PG-SimCL-style", "Add-svrv",
                   "Fusion-svrv", "Concat", "MuseCL")
ABLATION = ("POI only", "SV only", "RS only", "SV+RS", "MuseCL")
ADDED = ("EfficientNet-Lite0 (ImageNet)", "Location kNN", "Pretext features", "Location + MuseCL",
         "Pretext + Lite0 features")
ALL_METHODS = tuple(dict.fromkeys(PAPER_BASELINES + ABLATION + ADDED))
# MuseCL's structure without pictures (musecl.methods.vector): in "all" only for a city without images
IMAGE_FREE = ("MuseCL (vector views)", "OD SVD")

SVRV_TARGET = "own-images"  # the text-free fusion target, named in the cache key


def _renamed(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return table.set_axis([f"{prefix}_{k}" for k in range(table.shape[1])], axis=1)


def _stage(method: RegionEmbedder, city: City, kind: str) -> pd.DataFrame:
    """MuseCL's cached "sv", "rs" or "poi" table (eq. 5-7) for ``method``'s settings and cache,
    NaN imputed, columns ``<kind>_k``."""
    if kind == "poi":
        folder = text_stage(city, method.config, method.cache)
    else:
        folder = image_stage(city, method.config, {"sv": STREETVIEW, "rs": SATELLITE}[kind],
                             method.cache, method.progress)
    table = load_table(folder / EMBEDDINGS_CSV).reindex(city.region_ids)
    return _renamed(impute_column_means(table, f"{kind} embeddings of {city.name}"), kind)


def fusion_svrv_stage(city: City, cfg: RunConfig, cache, sv_dir: Path, rs_dir: Path) -> Path:
    """Attentive fusion of e^SV and e^RS (eq. 8-10) trained without POI text (Fusion-svrv).

    The paper does not say what the attention aligns to without a POI vector. Our reading: eq. 11
    (or the official MSE) with the POI vector replaced by the region's own [e^SV, e^RS] (NaN rows
    imputed), through the fusion's linear head R^d -> R^2d: the fused vector must single out its
    own region in the batch, so the attention learns which view is more distinctive per region.
    Not the mean (e^SV + e^RS) / 2: under MSE beta = 1/2 reaches it exactly, so nothing is learned.
    """
    upstream = [entry_key(d) for d in (sv_dir, rs_dir)]
    key = {"upstream": upstream, "target": SVRV_TARGET, **fusion_key(cfg)}

    def compute(folder: Path) -> None:
        sv, rs = (load_table(d / EMBEDDINGS_CSV).reindex(city.region_ids) for d in (sv_dir, rs_dir))
        target = pd.concat([_renamed(impute_column_means(sv, "street-view embeddings"), "sv"),
                            _renamed(impute_column_means(rs, "satellite embeddings"), "rs")], axis=1)
        train_fusion_into(folder, sv, rs, target, cfg)

    return cache.get_or_compute("fusion-svrv", key, compute)


class StageTables(TableMethod):
    """MuseCL's stage tables ``PARTS`` ("sv", "rs", "poi") side by side."""
    PARTS: tuple[str, ...] = ()

    def _compute(self, city: City) -> pd.DataFrame:
        return pd.concat([_stage(self, city, kind) for kind in self.PARTS], axis=1)


@register("Add-svrv")
class AddSVRV(TableMethod):
    """e^SV + e^RS: the paper's summation of the two MuseCL image embeddings (no POI text)."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)

    def _compute(self, city: City) -> pd.DataFrame:
        sv, rs = _stage(self, city, "sv"), _stage(self, city, "rs")
        return _renamed(pd.DataFrame(sv.to_numpy() + rs.to_numpy(), index=sv.index), "svrv")


@register("Fusion-svrv")
class FusionSVRV(TableMethod):
    """Attentive fusion (eq. 8-10) of e^SV and e^RS without POI text; target: :func:`fusion_svrv_stage`."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)

    def _compute(self, city: City) -> pd.DataFrame:
        cfg = self.config
        sv = image_stage(city, cfg, STREETVIEW, self.cache, self.progress)
        rs = image_stage(city, cfg, SATELLITE, self.cache, self.progress)
        self.stage_dir = fusion_svrv_stage(city, cfg, self.cache, sv, rs)
        return load_table(self.stage_dir / EMBEDDINGS_CSV)

    def fusion_attention(self) -> pd.DataFrame:
        """beta of eq. 9 per region (columns sv, rs). Not named ``attention`` so that the runner's
        attention map stays MuseCL's."""
        self._check_fitted()
        return load_table(self.stage_dir / ATTENTION_CSV)

    def save(self, directory: str | Path) -> Path:
        """The table and config, plus the fusion stage (weights, history, attention) in ``fusion-svrv/``."""
        directory = super().save(directory)
        shutil.copytree(self.stage_dir, directory / "fusion-svrv", dirs_exist_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "FusionSVRV":
        method = super().load(directory)
        method.stage_dir = Path(directory) / "fusion-svrv"
        return method


@register("Concat")
class Concat(StageTables):
    """[e^SV, e^RS, e^POI]: the paper's concatenation of the three MuseCL representations."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)
    PARTS = ("sv", "rs", "poi")


@register("POI only")
class PoiOnly(StageTables):
    """Ablation: the POI text vectors of eq. 7 alone."""
    needs = (POI,)
    PARTS = ("poi",)


@register("SV only")
class StreetViewOnly(StageTables):
    """Ablation: the street-view encoder (mobility triplets, eq. 1-2, 5-6) alone."""
    needs = (STREETVIEW, MOBILITY)
    PARTS = ("sv",)


@register("RS only")
class SatelliteOnly(StageTables):
    """Ablation: the satellite encoder (POI-similarity triplets, eq. 3-6) alone."""
    needs = (SATELLITE, POI)
    PARTS = ("rs",)


@register("SV+RS")
class StreetViewSatellite(StageTables):
    """Ablation "street view and remote sensing without POI": [e^SV, e^RS], ``Concat`` without POI.
    A concatenation, not Fusion-svrv, so it depends on no training target of our choosing."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)
    PARTS = ("sv", "rs")


@register("Location kNN")
class LocationKNN(TableMethod):
    """The region centre in metres, read by a distance-weighted 5-nearest-neighbour probe: what
    location alone explains (not in the paper; book/appendix_deviations.md). Under a random split a
    test region's neighbours are in the training part, which is why the spatial split matters."""
    probe = "knn"

    def _compute(self, city: City) -> pd.DataFrame:
        return city.centres()


@register("Pretext features")
class PretextFeatures(TableMethod):
    """ln(1 + inflow, outflow) and ln(1 + POI count per category) read by the run's probe: the
    inputs MuseCL's contrastive stages learn from (eq. 1 and 3), without any learning. A learned
    representation that does not beat this row has not added anything to its own inputs."""
    needs_any = ((MOBILITY,), (POI,))  # either pretext: trips (eq. 1), POI counts (eq. 3)

    def _compute(self, city: City) -> pd.DataFrame:
        return pretext_features(city)


@register("Location + MuseCL")
class LocationMuseCL(TableMethod):
    """[standardised x, y, MuseCL embedding] read by the run's probe: does MuseCL add anything
    to knowing where a region is? Coordinates are z-scored so their scale matches the embedding's."""
    needs, needs_any = MuseCL.needs, MuseCL.needs_any

    def _compute(self, city: City) -> pd.DataFrame:
        location = pd.DataFrame(standardise_columns(city.xy_m()), index=city.region_ids.copy(), columns=["x", "y"])
        musecl = MuseCL(self.config, cache_dir=self.cache.root, progress=self.progress).fit(city)
        return pd.concat([location, musecl.transform(city)], axis=1)
