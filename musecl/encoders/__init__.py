"""Encoders that turn one modality of a city into region vectors (eq. 5-7).

``musecl.encoders.image``: CNN image encoders trained with triplet losses (eq. 5-6).
``musecl.encoders.text``: skip-gram POI vectors (eq. 7).

The names below are imported lazily, so ``import musecl.encoders.text`` does not pay for torch
and ``import musecl.encoders.image`` does not pay for gensim.
"""
from __future__ import annotations

import importlib

_IMAGE = ("ImageStore", "ImageEncoder", "ImageTrainingConfig", "TinyCNN", "TripletImageDataset",
          "TripletObjective", "augment_images", "build_encoder", "cosine_triplet_loss", "embed_regions",
          "euclidean_margin_ranking_loss", "imagenet_weights_file", "load_encoder", "save_encoder",
          "train_image_encoder")

__all__ = list(_IMAGE)


def __getattr__(name: str):
    if name in _IMAGE:
        return getattr(importlib.import_module("musecl.encoders.image"), name)
    raise AttributeError(f"module 'musecl.encoders' has no attribute {name!r}")
