"""Run configuration: one flat set of keys shared by `musecl run`, ``params/*.yaml`` and the
chapters' papermill ``parameters`` cells, so a setting has the same name everywhere."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml


IMAGE_STORES = ("memory", "shards")
RETRAIN = ("per_seed", "once")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a MuseCL run. Defaults are the paper's / official code's where they exist."""

    seed: int = 0
    device: str = "cpu"
    # similarity sampling (eq. 1-4)
    n_triplets: int = 10_000  # per encoder, as the official code
    sampling_rule: str = "paper"  # "paper": top-k positives, dissimilar negatives; "official"
    n_positive_candidates: int = 5
    # image encoders (eq. 5-6)
    rs_arch: str = "resnet18"
    sv_arch: str = "inception_v3"
    weights: str = "random"  # "random", "imagenet" (from the local torch hub cache) or a checkpoint
    rs_image_size: int = 64
    sv_image_size: int = 75
    embedding_dim: int = 128
    triplet_loss: str = "cosine"  # "cosine" (paper, eq. 6) or "euclidean" (official, margin 5)
    margin: float | None = None  # None: 0.5 for cosine, 5.0 for euclidean
    rs_epochs: int = 201  # official code
    sv_epochs: int = 20  # official code
    rs_batch_size: int = 32
    sv_batch_size: int = 16
    lr: float = 5e-4
    encoder_patience: int | None = None
    amp: str = "off"  # image encoders' mixed precision: "off", "bf16", "fp16" (GPU), "auto" (what pays here)
    # where decoded images live: "memory" (one .pt cache, loaded whole) or "shards" (.npy shards
    # that stream from disk, for cities whose images do not fit in memory); same numbers either way
    image_store: str = "memory"
    train_processes: int = 1  # >1: image encoders trained by that many torchrun processes (musecl train-encoders)
    val_fraction: float = 0.1
    # POI text (eq. 7)
    text_epochs: int = 5
    text_window: int = 5
    # fusion (eq. 8-11)
    fusion_design: str = "aligned"  # "aligned": learned views, temperature, reconstruction; "paper": eq. 8-11 as written
    fusion_loss: str = "infonce"  # "infonce" (paper, eq. 11) or "mse" (official; with fusion_design: paper)
    fusion_epochs: int = 50
    fusion_batch_size: int = 64
    fusion_lr: float = 1e-3
    temperature: float | None = None  # None: 0.1 to start the aligned design's learned one, 1 (eq. 11) for the paper's
    fusion_reconstruction: float = 1.0  # aligned design: weight of keeping what only the images show
    # evaluation
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # "per_seed": each seed re-runs every stage (sampling, encoders, text, fusion) before its split
    # and probe, so the spread over seeds includes the method's own; "once": stages trained with
    # ``seed``, seeds vary only the split and the probe (cheaper by the number of seeds)
    retrain: str = "per_seed"
    splits: tuple[str, ...] = ("random", "spatial")
    probe: str = "mlp"
    probe_max_epochs: int = 500
    probe_patience: int = 50
    block_size_m: float | None = None  # spatial blocks; None: a multiple of the hexagon size
    # training regions closer than this to a test region are dropped from the spatial split; "auto":
    # the distance beyond which the city's indicator values no longer correlate (0: no buffer)
    buffer_m: float | str = "auto"
    # worker processes (0: one per CPU core) fitting methods side by side on the CPU, and probes;
    # probe scores do not depend on it, trained weights do in their last bits (threads per process)
    jobs: int = 0

    def __post_init__(self):
        for name in ("seeds", "splits"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if self.retrain not in RETRAIN:
            raise ValueError(f"retrain must be one of {RETRAIN}; got {self.retrain!r}")
        if self.image_store not in IMAGE_STORES:
            raise ValueError(f"image_store must be one of {IMAGE_STORES} (\"shards\" for images that do not fit "
                             f"in memory); got {self.image_store!r}")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {cls.keys()}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides) -> "RunConfig":
        values = {}
        if path is not None:
            values = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected a mapping of parameter names to values")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def subset(self, names: list[str]) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in names}

    @property
    def resolved_margin(self) -> float:
        if self.margin is not None:
            return float(self.margin)
        return 5.0 if self.triplet_loss == "euclidean" else 0.5


def config_hash(*parts) -> str:
    """A short stable hash of JSON-able parts: names a cache folder."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
