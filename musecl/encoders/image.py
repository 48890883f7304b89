"""Image encoders trained with triplet losses (paper section 4.2, eq. 5-6).

A CNN F maps an anchor, a positive and a negative image of three regions to vectors x, y, z;
the triplet loss pulls x towards y and pushes it away from z. Satellite images (RS) are paired
by POI similarity, street views (SV) by mobility similarity (``musecl.sampling``). Bottom up:
the images (:class:`ImageStore`), the CNNs (:func:`build_encoder`), the losses (eq. 6 and the
official one), training (:func:`train_image_encoder`) and embedding (:func:`embed_regions`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.models import Inception_V3_Weights, ResNet18_Weights
from tqdm import tqdm

from musecl.city import REGION_ID, SATELLITE, STREETVIEW, City
from musecl.io import CONFIG_JSON, WEIGHTS_PT, atomic_save_bytes, check_choice, sha256_of
from musecl.training import (
    Trainer, amp_dtype, load_state, load_weights, resolve_device, save_weights, split_indices,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet18", "inception_v3", "tiny")
AUGMENTS = ("none", "rot90", "hflip")
DEFAULT_AUGMENT = {SATELLITE: "rot90", STREETVIEW: "hflip"}  # as the official code
COLUMN_PREFIX = {SATELLITE: "rs", STREETVIEW: "sv"}  # the names fusion uses
INCEPTION_MIN_SIZE = 75
STORE_FORMAT = 2  # bump when decoding changes: caches of another format are rebuilt


# -- images in memory ------------------------------------------------------------------------------


def images_fingerprint(pairs: Sequence[tuple[str, Path]], size: int) -> str:
    """Changes when a path, a file's size or modification time, or the image size changes."""
    digest = hashlib.sha256(f"{STORE_FORMAT}|{size}".encode())
    for rid, path in pairs:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"\n{rid}|{path}|{stamp}".encode())
    return digest.hexdigest()


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            # upright as viewers show it: phone and camera JPEGs often store the rotation as EXIF
            im = ImageOps.exif_transpose(im).convert("RGB").resize((size, size), Image.BILINEAR)
            return np.array(im, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def decoded_images(paths: Sequence[Path], size: int, kind: str | None, progress: bool) -> Iterable[np.ndarray]:
    """Each image decoded in turn (uint8 (3, S, S)), with a progress bar when asked."""
    if progress:
        paths = tqdm(paths, desc=f"decoding {kind or 'images'}", unit="img")
    for path in paths:
        yield _decode(path, size)


def city_image_pairs(city: City, kind: str) -> list[tuple[str, Path]]:
    """``(region_id, path)`` of every satellite or street-view image of the city."""
    if kind == SATELLITE:
        pairs = list(city.satellite_paths().items())
    elif kind == STREETVIEW:
        pairs = [(rid, p) for rid, paths in city.streetview_paths().items() for p in paths]
    else:
        raise ValueError(f"kind must be {SATELLITE!r} or {STREETVIEW!r}; got {kind!r}")
    if not pairs:
        raise ValueError(f"{city.name}: the city has no {kind} images")
    return pairs


def plan_store(pairs: Iterable[tuple[str, str | os.PathLike]], size: int, kind: str | None = None):
    """What a store of ``pairs`` holds, before decoding: ``(size, region_ids, counts, paths,
    fingerprint)``, regions in order of first appearance, their paths grouped."""
    if int(size) < 8:
        raise ValueError(f"image size must be at least 8 pixels; got {size}")
    order: dict[str, list[Path]] = {}
    for rid, path in pairs:
        order.setdefault(str(rid), []).append(Path(path))
    if not order:
        raise ValueError(f"no images given{f' of kind {kind!r}' if kind else ''}")
    grouped = [(rid, p) for rid, paths in order.items() for p in paths]
    return (int(size), list(order), [len(v) for v in order.values()], [p for _, p in grouped],
            images_fingerprint(grouped, int(size)))


class ImageStore:
    """All images of one kind, decoded once, resized to ``size`` x ``size`` (PIL bilinear), uint8.

    ``images`` is (N, 3, S, S); region ``region_ids[r]`` owns rows ``starts[r] .. starts[r] +
    counts[r] - 1``. uint8 (a quarter of float32's memory) and indexing by tensors keep the
    training loop free of per-image Python and PIL work. ``images`` may also be an object that indexes
    like a tensor and reads rows from disk (``musecl.scaling.shards``), with the same rows.
    """

    def __init__(self, images, region_ids: Sequence[str], counts: Sequence[int] | torch.Tensor,
                 paths: Sequence[str] | None = None, kind: str | None = None, fingerprint: str | None = None):
        if isinstance(images, (np.ndarray, list, tuple)):
            images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be a uint8 tensor (N, 3, S, S); got {images.dtype} {tuple(images.shape)}")
        counts = torch.as_tensor(counts, dtype=torch.int64)
        region_ids = [str(r) for r in region_ids]
        if len(counts) != len(region_ids) or int(counts.sum()) != len(images) or (counts < 1).any():
            raise ValueError(f"counts must give a positive number of images for each of the {len(region_ids)} "
                             f"regions and add up to {len(images)} images")
        if len(set(region_ids)) != len(region_ids):
            raise ValueError("region_ids of an ImageStore must be unique")
        self.images = images.contiguous() if isinstance(images, torch.Tensor) else images
        self.region_ids = region_ids
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.paths = [str(p) for p in paths] if paths is not None else None
        self.kind = kind
        self.fingerprint = fingerprint  # of the files it was built from (see from_pairs)
        self._position = {rid: i for i, rid in enumerate(region_ids)}

    # -- building ----------------------------------------------------------------------

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str | os.PathLike]], size: int, kind: str | None = None,
                   cache: str | os.PathLike | None = None, progress: bool = False) -> "ImageStore":
        """Decode ``(region_id, path)`` pairs; with ``cache`` (a .pt file), reuse it when
        :func:`images_fingerprint` matches, else rebuild and rewrite it."""
        size, region_ids, counts, paths, fingerprint = plan_store(pairs, size, kind)
        if cache is not None and Path(cache).exists():
            try:
                store = _load_checked_cache(cls, cache)
                if store.fingerprint == fingerprint:
                    return store
            except Exception as exc:  # noqa: BLE001 - a bad cache is rebuilt, never trusted
                warnings.warn(f"image cache {cache} is unreadable ({exc}); rebuilding it", stacklevel=2)
        images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
        for i, image in enumerate(decoded_images(paths, size, kind, progress)):
            images[i] = torch.from_numpy(image)
        store = cls(images, region_ids, counts, paths, kind, fingerprint)
        if cache is not None:
            _save_checked_cache(store, cache)
        return store

    @classmethod
    def from_city(cls, city: City, kind: str, size: int, cache: str | os.PathLike | None = None,
                  progress: bool = False) -> "ImageStore":
        """The city's satellite or street-view images (regions without any are absent)."""
        return cls.from_pairs(city_image_pairs(city, kind), size, kind=kind, cache=cache, progress=progress)

    # -- cache -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the store to a .pt file (tensors and plain lists only; loads with weights_only)."""
        self._needs_memory("writing a .pt file", "save(path)")
        atomic_save_bytes(path, self._to_bytes())
        return Path(path)

    def _to_bytes(self) -> bytes:
        payload = {"format": STORE_FORMAT, "images": self.images, "region_ids": list(self.region_ids),
                   "counts": self.counts, "paths": self.paths, "kind": self.kind,
                   "fingerprint": self.fingerprint}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImageStore":
        raw = load_state(path)
        if not isinstance(raw, dict) or raw.get("format") != STORE_FORMAT:
            raise ValueError(f"{path} is not an ImageStore file (format {STORE_FORMAT})")
        return cls(raw["images"], raw["region_ids"], raw["counts"], raw["paths"], raw["kind"],
                   raw.get("fingerprint"))

    # -- stores larger than memory ----------------------------------------------------

    @property
    def in_memory(self) -> bool:
        """False when the images stream from disk (``musecl.scaling.shards``), not held in a tensor."""
        return isinstance(self.images, torch.Tensor)

    def _needs_memory(self, what: str, call: str, otherwise: str = "") -> None:
        if not self.in_memory:
            raise ValueError(f"this ImageStore streams its images from disk ({self.images!r}, "
                             f"{self.images.numel() / 2**30:.2f} GiB); {what} needs them in memory: "
                             f"call store.load_into_memory().{call} if they fit{otherwise}")

    def load_into_memory(self) -> "ImageStore":
        """The same store with every image read into one CPU tensor (``self`` when already in memory)."""
        return self if self.in_memory else self._with_images(self.images[:])

    # -- devices -----------------------------------------------------------------------

    def _with_images(self, images: torch.Tensor) -> "ImageStore":
        return type(self)(images, self.region_ids, self.counts, self.paths, self.kind, self.fingerprint)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> "ImageStore":
        """The store with its images on ``device`` (e.g. "cuda": batches are then gathered and
        augmented there, with no copy from the host); counts and starts stay on the CPU."""
        self._needs_memory(f"moving it to {str(device)!r}", "to(device)",
                           "; otherwise keep it on disk: the trainer moves each batch to the device")
        device = torch.device(device)
        if self.images.device == device:
            return self
        return self._with_images(self.images.to(device))

    def pin_memory(self) -> "ImageStore":
        """Images in page-locked CPU memory, for asynchronous copies to a GPU (``self`` without CUDA)."""
        self._needs_memory("pinning", "pin_memory()")
        if self.images.device.type != "cpu":
            raise ValueError(f"only a CPU store can be pinned; this one is on {self.images.device}")
        if not torch.cuda.is_available() or self.images.is_pinned():
            return self
        return self._with_images(self.images.pin_memory())

    # -- looking up --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        if not self.in_memory:
            where = f", streaming from {self.images!r}"
        else:
            where = "" if self.images.device.type == "cpu" else f", on {self.images.device}"
        return (f"ImageStore(kind={self.kind!r}, regions={self.n_regions}, images={len(self)}, "
                f"size={self.size}, {self.images.numel() / 2**20:.1f} MiB{where})")

    @property
    def n_regions(self) -> int:
        return len(self.region_ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def index(self) -> dict[str, list[int]]:
        """region_id -> the rows of ``images`` that belong to it."""
        return {rid: list(range(int(s), int(s + c))) for rid, s, c in zip(self.region_ids, self.starts, self.counts)}

    def positions(self, region_ids: Iterable[str]) -> torch.Tensor:
        """Positions (into ``region_ids``) of the given ids; unknown ids raise with examples."""
        ids = [str(r) for r in region_ids]
        missing = [r for r in ids if r not in self._position]
        if missing:
            raise KeyError(f"{len(missing)} region id(s) have no {self.kind or ''} image in this store, e.g. "
                           f"{sorted(set(missing))[:5]}. Sample triplets only over regions with images "
                           "(the samplers take regions=store.region_ids).")
        return torch.tensor([self._position[r] for r in ids], dtype=torch.int64)

    def sample_rows(self, positions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One uniformly random image row per region position (the official code's choice), drawn on
        the CPU so the rows are the same for stores in memory, on a GPU or in shards."""
        positions = torch.as_tensor(positions, dtype=torch.int64).cpu()
        counts = self.counts[positions]
        u = torch.rand(len(positions), generator=generator, dtype=torch.float64)
        return self.starts[positions] + (u * counts).long().clamp_max(counts - 1)


def augment_images(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch-wise augmentation of uint8 (B, C, S, S); returns a new tensor. ``rot90`` (official
    for satellite views, which have no "up"): 0-3 quarter turns; ``hflip`` (official for street
    views, which keep the sky on top): mirrored with probability 1/2; ``none``: unchanged."""
    check_choice("augment", mode, AUGMENTS)
    if mode == "none" or len(x) == 0:
        return x
    if mode == "rot90":
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rot90 needs square images; got {tuple(x.shape[-2:])}")
        k = torch.randint(0, 4, (len(x),), generator=generator).to(x.device)  # drawn on the CPU generator
        out = x.clone()
        for turns in (1, 2, 3):
            mask = k == turns
            if mask.any():
                out[mask] = torch.rot90(x[mask], turns, dims=(2, 3))
        return out
    mask = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)  # hflip
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


# -- encoders --------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks and global average pooling: fast enough for tests and teaching."""

    def __init__(self, embedding_dim: int = 128, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ImageEncoder(nn.Module):
    """A CNN ``net`` whose last layer maps to the embedding (F_SV / F_RS of section 4.2): uint8
    or [0, 1] images (see :meth:`prepare`) -> (B, embedding_dim). ``config`` records how it was
    built; ``training_config`` is set by :func:`train_image_encoder`."""

    def __init__(self, net: nn.Module, config: dict):
        super().__init__()
        self.net = net
        self.config = dict(config)
        self.training_config: dict | None = None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.config.get("channels_last"):
            self.net.to(memory_format=torch.channels_last)

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images -> ImageNet-normalised float (resized up if too small)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W); got {tuple(x.shape)}")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std
        min_size = self.config.get("min_size") or 0
        if min(x.shape[-2:]) < min_size:
            x = F.interpolate(x, size=(max(min_size, x.shape[-2]), max(min_size, x.shape[-1])),
                              mode="bilinear", align_corners=False)
        if self.config.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={self.config[k]!r}" for k in ("arch", "embedding_dim", "weights_source"))


def imagenet_weights_file(arch: str) -> Path:
    """Where :func:`build_encoder` looks for torchvision's ImageNet weights (never downloaded)."""
    urls = {"resnet18": ResNet18_Weights.IMAGENET1K_V1.url, "inception_v3": Inception_V3_Weights.IMAGENET1K_V1.url}
    if arch not in urls:
        raise ValueError(f"no ImageNet weights for arch {arch!r}; they exist for {sorted(urls)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / urls[arch].rsplit("/", 1)[-1]


def _backbone(arch: str, random_init: bool) -> nn.Module:
    if arch == "resnet18":
        return torchvision.models.resnet18(weights=None)
    if arch == "inception_v3":
        # transform_input=True: the ported Google weights expect inputs scaled to [-1, 1]; the model
        # converts our ImageNet-normalised input itself (harmless with random weights).
        return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=random_init,
                                               transform_input=True)
    raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")


def _load_weights_file(encoder: ImageEncoder, path: Path) -> None:
    """Load our own save, a trainer checkpoint, or a raw backbone state dict; a classifier ``fc``
    of another shape is skipped (the embedding head stays random), as the official code does."""
    if path.is_dir():
        path = path / WEIGHTS_PT
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = load_state(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a Trainer checkpoint
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel or DDP
    if state and all(k.startswith("net.") for k in state):
        encoder.load_state_dict(state)
        return
    own = encoder.net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    skipped = [k for k in state if k.startswith("fc.") and k in own and own[k].shape != state[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = encoder.net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (skipped and k.startswith("fc."))]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit a {encoder.config['arch']} encoder: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} ({len(missing)} / {len(unexpected)} keys)")


def build_encoder(arch: str = "resnet18", embedding_dim: int = 128,
                  weights: str | os.PathLike = "random", channels_last: bool = False,
                  seed: int | None = None) -> ImageEncoder:
    """A CNN ending in Linear(., embedding_dim): the F_RS / F_SV of section 4.2.

    ``arch``: "resnet18" (fc -> Linear(512, d), the official satellite encoder), "inception_v3"
    (aux logits off, fc -> Linear(2048, d), the official street-view encoder; inputs under 75 px
    are resized up) or "tiny" (:class:`TinyCNN`). ``weights``: "random" (``seed`` makes the
    initialisation reproducible), "imagenet" (torchvision's file, read only from the local torch
    hub cache -- nothing is downloaded) or a path to a checkpoint (our :func:`save_encoder`
    folder, a trainer checkpoint or a raw state dict).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}, or 'lite0-head' in rs_arch / "
                         "sv_arch (a triplet head on frozen EfficientNet-Lite0 features, "
                         "musecl.encoders.heads)")
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be positive; got {embedding_dim}")
    embedding_dim = int(embedding_dim)
    weights_file: Path | None = None
    if weights == "random":
        source = "random"
    elif weights == "imagenet":
        weights_file = imagenet_weights_file(arch)
        if not weights_file.exists():
            raise FileNotFoundError(
                f"ImageNet weights for {arch} are not in the local torch hub cache: expected the "
                f"file {weights_file.name!r} at {weights_file}. musecl never downloads weights; "
                f"copy that file there (from a machine with internet: "
                f"torchvision.models.{arch}(weights='IMAGENET1K_V1') saves it under "
                f"~/.cache/torch/hub/checkpoints/), set TORCH_HOME, or use weights='random'.")
        source = f"imagenet:{weights_file.name}"
    else:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"weights must be 'random', 'imagenet' or an existing "
                                    f"checkpoint path; {str(weights)!r} does not exist")
        source = f"checkpoint:{path}"

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if arch == "tiny":
            net = TinyCNN(embedding_dim)
        else:
            net = _backbone(arch, random_init=weights_file is None)
            if weights_file is not None:
                state = load_state(weights_file)
                state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
                net.load_state_dict(state)
            net.fc = nn.Linear(net.fc.in_features, embedding_dim)
    config = {"arch": arch, "embedding_dim": embedding_dim, "weights_source": source,
              "channels_last": bool(channels_last),
              "min_size": INCEPTION_MIN_SIZE if arch == "inception_v3" else 0}
    encoder = ImageEncoder(net, config)
    if source.startswith("checkpoint:"):
        _load_weights_file(encoder, Path(weights))
    return encoder


def save_encoder(encoder: ImageEncoder, directory: str | os.PathLike) -> Path:
    """Write ``weights.pt`` and ``config.json`` (build settings, training config) atomically."""
    return save_weights(directory, {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
                        {"class": "ImageEncoder", **encoder.config, "training": encoder.training_config})


def load_encoder(directory: str | os.PathLike) -> ImageEncoder:
    """Rebuild an encoder written by :func:`save_encoder` (in eval mode, on the CPU)."""
    directory = Path(directory)
    config, state = load_weights(directory, "save_encoder")
    if config.get("arch") not in ARCHS:
        raise ValueError(f"{directory / CONFIG_JSON}: unknown arch {config.get('arch')!r}")
    encoder = build_encoder(config["arch"], config["embedding_dim"], weights="random",
                            channels_last=config.get("channels_last", False), seed=0)
    encoder.load_state_dict(state)
    encoder.config["weights_source"] = config.get("weights_source", "random")  # provenance of the start
    encoder.config["loaded_from"] = str(directory)
    encoder.training_config = config.get("training")
    return encoder.eval()


# -- losses ----------------------------------------------------------------------------------------


def _check_triplet(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> None:
    if not (a.shape == p.shape == n.shape) or a.ndim != 2:
        raise ValueError(f"anchor, positive and negative must all be (B, d); got {tuple(a.shape)}, "
                         f"{tuple(p.shape)}, {tuple(n.shape)}")


def cosine_triplet_loss(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                        margin: float = 0.5) -> dict:
    """Eq. 6 as intended: mean of [margin + sim(a, n) - sim(a, p)]_+ with cosine similarity.

    Sign convention. The paper prints eq. 5 as sim(x, y) + a <= sim(x, z) and eq. 6 as
    [a + sim(x, y) - sim(x, z)]_+ (x anchor, y positive, z negative). Read with sim = cosine
    *similarity*, that asks the anchor to be *less* similar to its positive than to its negative --
    the opposite of the surrounding text (and of Schroff et al., whom it cites). The printed
    forms are the FaceNet loss with a *distance* in place of sim. We implement the intended
    meaning: sim(a, p) >= sim(a, n) + margin. The paper gives no value for the margin a; 0.5 is
    our default (cosine similarities lie in [-1, 1]).

    Returns ``loss`` (minimised), ``sim_pos``, ``sim_neg`` (means) and ``active`` (the fraction
    of triplets that still violate the margin).
    """
    _check_triplet(a, p, n)
    sim_pos = F.cosine_similarity(a, p, dim=1)
    sim_neg = F.cosine_similarity(a, n, dim=1)
    per = torch.relu(margin + sim_neg - sim_pos)
    return {"loss": per.mean(), "sim_pos": sim_pos.mean().detach(),
            "sim_neg": sim_neg.mean().detach(), "active": (per > 0).float().mean()}


def euclidean_margin_ranking_loss(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                                  margin: float = 5.0) -> dict:
    """The official code's loss: MarginRankingLoss(margin)(d(a, n), d(a, p), target 1), i.e. the
    mean of [margin + d(a, p) - d(a, n)]_+ with Euclidean distances d (``F.pairwise_distance``,
    which adds 1e-6 to the difference so the gradient at d = 0 is finite). Margin 5 as official.

    Returns ``loss``, ``d_pos``, ``d_neg`` (means) and ``active``.
    """
    _check_triplet(a, p, n)
    d_pos = F.pairwise_distance(a, p)
    d_neg = F.pairwise_distance(a, n)
    loss = F.margin_ranking_loss(d_neg, d_pos, torch.ones_like(d_pos), margin=margin)
    return {"loss": loss, "d_pos": d_pos.mean().detach(), "d_neg": d_neg.mean().detach(),
            "active": (margin + d_pos - d_neg > 0).float().mean()}


LOSSES = {"cosine": cosine_triplet_loss, "euclidean": euclidean_margin_ranking_loss}
DEFAULT_MARGIN = {"cosine": 0.5, "euclidean": 5.0}


class TripletObjective:
    """``loss_fn`` for :class:`musecl.training.Trainer` on stacked (3B, ...) triplet batches,
    anchors, positives, negatives, in ONE forward pass (one BatchNorm batch). ``loss``:
    "euclidean" (official) or "cosine" (paper eq. 6).

    ``reconstruction`` > 0 (not in the paper; feature heads, which have a ``decoder``) adds that
    weight times the MSE of decoding the embedding back to the standardised input: a triplet loss
    keeps only what its similarity asks for, so a head would forget what its features show.
    """

    def __init__(self, loss: str = "euclidean", margin: float | None = None, reconstruction: float = 0.0):
        check_choice("loss", loss, sorted(LOSSES))
        if reconstruction < 0:
            raise ValueError(f"reconstruction must be >= 0; got {reconstruction}")
        self.loss = loss
        self.margin = DEFAULT_MARGIN[loss] if margin is None else float(margin)
        self.reconstruction = float(reconstruction)

    def __call__(self, model: nn.Module, batch: torch.Tensor) -> dict:
        if isinstance(batch, (tuple, list)):
            batch = torch.cat(list(batch))
        if len(batch) % 3:
            raise ValueError(f"a triplet batch needs 3B rows (anchors, positives, negatives); got {len(batch)}")
        z = model(batch)
        out = LOSSES[self.loss](*z.chunk(3), margin=self.margin)
        if self.reconstruction:
            error = F.mse_loss(model.decoder(z), model.standardise(batch))
            out = {**out, "loss": out["loss"] + self.reconstruction * error, "triplet": out["loss"].detach(),
                   "reconstruction": error.detach()}
        return out

    def __repr__(self) -> str:
        extra = f", reconstruction={self.reconstruction}" if self.reconstruction else ""
        return f"TripletObjective(loss={self.loss!r}, margin={self.margin}{extra})"


# -- data ------------------------------------------------------------------------------------------


ROLES = ("anchor", "positive", "negative")  # a triplet's columns


def triplet_columns(triplets) -> list[np.ndarray]:
    """(anchor, positive, negative) columns; a ``sampling.Triplets``'s rows as its region ids."""
    if isinstance(triplets, pd.DataFrame):
        missing = [c for c in ROLES if c not in triplets.columns]
        if missing:
            raise ValueError(f"triplet table lacks column(s) {missing}; has {list(triplets.columns)}")
        return [triplets[c].to_numpy() for c in ROLES]
    if all(hasattr(triplets, k) for k in ROLES):
        columns = [np.asarray(getattr(triplets, k)) for k in ROLES]
        ids = getattr(triplets, "region_ids", None)
        return columns if ids is None else [np.asarray(ids)[c] for c in columns]
    if isinstance(triplets, (tuple, list)) and len(triplets) == 3:
        return [np.asarray(c) for c in triplets]
    arr = np.asarray(triplets)
    if arr.ndim == 2 and arr.shape[1] == 3:
        return [arr[:, 0], arr[:, 1], arr[:, 2]]
    raise TypeError("triplets must be a sampling.Triplets, a DataFrame with anchor/positive/negative, "
                    "three arrays, or an (T, 3) array")


class TripletImageDataset:
    """Triplets of regions served as stacked uint8 image batches (3B, 3, S, S).

    ``triplets``: a ``musecl.sampling.Triplets``, an anchor / positive / negative table, or three
    arrays / a (T, 3) array of region ids (str) or positions in ``store.region_ids`` (int). Each
    role gets one random image of its region (official), then ``augment`` (default by the store's
    kind). Randomness: :meth:`get_batch`'s generator, else one seeded with ``seed``.
    """

    def __init__(self, store: ImageStore, triplets, augment: str | None = None, seed: int = 0):
        self.store = store
        self.augment = DEFAULT_AUGMENT.get(store.kind, "none") if augment is None else augment
        check_choice("augment", self.augment, AUGMENTS)
        self.seed = int(seed)
        if isinstance(triplets, torch.Tensor) and triplets.ndim == 2 and triplets.shape[0] == 3:
            self.roles = triplets.long()  # already resolved positions (from subset)
            return
        columns = triplet_columns(triplets)
        if not (len(columns[0]) == len(columns[1]) == len(columns[2])):
            raise ValueError(f"anchor, positive and negative have different lengths: {[len(c) for c in columns]}")
        resolved = []
        for col in columns:
            if np.issubdtype(col.dtype, np.integer):
                if len(col) and (col.min() < 0 or col.max() >= store.n_regions):
                    raise IndexError(f"integer triplet entries are positions in store.region_ids "
                                     f"(0..{store.n_regions - 1}); got values from {col.min()} to {col.max()}. "
                                     "Pass region ids (strings) if these index another region list.")
                resolved.append(torch.as_tensor(col, dtype=torch.int64))
            else:
                resolved.append(store.positions(col))
        self.roles = torch.stack(resolved)

    def __len__(self) -> int:
        return int(self.roles.shape[1])

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images of triplets ``indices``: anchors, then positives, then negatives."""
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        regions = self.roles[:, torch.as_tensor(indices, dtype=torch.int64)].reshape(-1)
        rows = self.store.sample_rows(regions, generator)
        images = self.store.images  # a CPU or GPU tensor, or shards on disk
        return augment_images(images[rows.to(images.device)], self.augment, generator)

    def subset(self, indices, augment: str | None = None) -> "TripletImageDataset":
        """The triplets at ``indices`` (e.g. from ``split_indices``), sharing the store."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return TripletImageDataset(self.store, self.roles[:, idx], augment=augment or self.augment, seed=self.seed)


# -- training and embedding ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTrainingConfig:
    """Settings of :func:`train_image_encoder`; defaults follow the official code where it has one.
    ``loss``: "euclidean" (official, margin 5) or "cosine" (eq. 6, margin 0.5: the paper gives
    none). ``val_fraction`` of the triplets is held out, unaugmented, for a validation loss (early
    stopping with ``patience``). ``augment`` None: by the store's kind. ``reconstruction``: feature
    heads only (:class:`TripletObjective`)."""

    loss: str = "euclidean"
    margin: float | None = None
    reconstruction: float = 0.0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    lr_step: int = 10
    lr_gamma: float = 0.7
    val_fraction: float = 0.1
    patience: int | None = None
    augment: str | None = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    resume: bool = False
    progress: bool = True
    amp: str = "off"  # mixed precision, see musecl.training.Trainer
    store_on_device: bool | None = None  # GPU: images on the GPU (None: when they fit, see _store_for_training)


def as_training_config(config) -> ImageTrainingConfig:
    if config is None:
        return ImageTrainingConfig()
    if isinstance(config, ImageTrainingConfig):
        return config
    if isinstance(config, dict):
        known = {f.name for f in dataclasses.fields(ImageTrainingConfig)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return ImageTrainingConfig(**config)
    raise TypeError(f"config must be an ImageTrainingConfig, a dict or None; got {type(config).__name__}")


GPU_STORE_SHARE = 0.25  # at most this share of the free GPU memory goes to images (the rest: training)


def _store_for_training(store: ImageStore, cfg: ImageTrainingConfig) -> ImageStore:
    """On a GPU, the images go to the GPU when they fit (``store_on_device`` None: at most
    ``GPU_STORE_SHARE`` of the free memory), so nothing crosses PCIe per step."""
    device = resolve_device(cfg.device)
    if device.type != "cuda" or cfg.store_on_device is False or store.device == device:
        return store
    if cfg.store_on_device is None:
        if not store.in_memory:
            return store  # streams from disk: it does not fit in memory by design
        free, _ = torch.cuda.mem_get_info(device)
        if store.images.numel() > GPU_STORE_SHARE * free:
            return store
    return store.to(device)


def train_image_encoder(encoder: ImageEncoder, store: ImageStore, triplets,
                        config: ImageTrainingConfig | dict | None = None) -> tuple[ImageEncoder, pd.DataFrame]:
    """Train ``encoder`` on triplets of ``store``'s regions; returns it (in place, eval mode,
    ``training_config`` set) and the per-epoch history."""
    cfg = as_training_config(config)
    if cfg.reconstruction:
        raise ValueError("reconstruction is a term for feature heads (arch lite0-head), which decode their "
                         f"embedding back to their input; a CNN encoder has no decoder (got {cfg.reconstruction})")
    data = TripletImageDataset(_store_for_training(store, cfg), triplets, augment=cfg.augment, seed=cfg.seed)
    history = fit_triplets(encoder, data, cfg, device=cfg.device, amp=cfg.amp)
    encoder.training_config.update(augment=data.augment, image_size=store.size, kind=store.kind)
    return encoder.eval(), history


def fit_triplets(model: nn.Module, data, cfg: ImageTrainingConfig, **trainer_settings) -> pd.DataFrame:
    """Train a CNN encoder or feature head on the triplets ``data`` (``cfg.val_fraction`` held out,
    unaugmented); sets ``model.training_config`` and returns the per-epoch history."""
    if len(data) < 1:
        raise ValueError("no triplets to train on")
    val = None
    if cfg.val_fraction > 0 and len(data) >= 2:
        train_idx, val_idx = split_indices(len(data), cfg.val_fraction, cfg.seed)
        data, val = data.subset(train_idx), data.subset(val_idx, augment="none")
    objective = TripletObjective(cfg.loss, cfg.margin, cfg.reconstruction)
    trainer = Trainer(model, objective, lr=cfg.lr, lr_step=cfg.lr_step, lr_gamma=cfg.lr_gamma, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, patience=cfg.patience, seed=cfg.seed,
                      checkpoint_dir=cfg.checkpoint_dir, resume=cfg.resume, progress=cfg.progress, **trainer_settings)
    history = trainer.fit(data, val)
    model.training_config = {**dataclasses.asdict(cfg), "margin": objective.margin,
                             "n_triplets": len(data) + (len(val) if val is not None else 0),
                             "best_epoch": trainer.best_epoch, "stopped_early": trainer.stopped_early}
    return pd.DataFrame(history)


@torch.no_grad()
def embed_regions(encoder: nn.Module, store: ImageStore, batch_size: int = 64,
                  region_ids: Sequence[str] | None = None, prefix: str | None = None,
                  progress: bool = False, amp: str = "off") -> pd.DataFrame:
    """One embedding per region: its image's, or the mean over its images (street view).

    ``amp`` runs the forward pass under autocast as in training (:func:`musecl.training.amp_dtype`;
    on a CPU with bf16 units about twice as fast for ResNet-18); the means are taken in float64.

    Indexed by ``region_id``; columns ``<prefix>_0..`` (prefix "rs" for satellite, "sv" for
    street view, "img" otherwise). Only the store's regions are embedded; with ``region_ids``
    (e.g. ``city.region_ids``) the table is reindexed to them and regions without an image get
    NaN rows -- the caller decides how to impute (fusion uses column means).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")

    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    precision = amp_dtype(amp, device)
    owner = torch.repeat_interleave(torch.arange(store.n_regions), store.counts)
    sums = None
    chunks = range(0, len(store), batch_size)
    if progress:
        chunks = tqdm(chunks, desc="embedding", unit="batch")
    for start in chunks:
        with torch.autocast(device.type, dtype=precision or torch.float32,
                            enabled=precision is not None):
            emb = encoder(store.images[start:start + batch_size].to(device)).float().cpu()
        if sums is None:
            sums = torch.zeros((store.n_regions, emb.shape[1]), dtype=torch.float64)
        sums.index_add_(0, owner[start:start + batch_size], emb.double())
    encoder.train(was_training)
    means = (sums / store.counts.unsqueeze(1).double()).float().numpy()
    prefix = prefix or COLUMN_PREFIX.get(store.kind, "img")
    frame = pd.DataFrame(means, index=pd.Index(store.region_ids, name=REGION_ID),
                         columns=[f"{prefix}_{k}" for k in range(means.shape[1])])
    if region_ids is not None:
        frame = frame.reindex(pd.Index([str(r) for r in region_ids], name=REGION_ID))
    return frame


# -- the image cache of from_pairs(cache=): a .pt file and, written after it, ``<cache>.sha256`` of
# its bytes; a missing or different hash rebuilds the store. Hashed once per process (streamed, so
# memory does not double), again only when the file's inode, size or modification time change.

_CHECKED_CACHES: dict[str, tuple] = {}  # cache path -> stat signature of the .pt that matched its hash


def _digest_path(cache: str | os.PathLike) -> Path:
    return Path(f"{cache}.sha256")


def _stat_signature(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _save_checked_cache(store: "ImageStore", cache: str | os.PathLike) -> None:
    cache, data = Path(cache), store._to_bytes()
    _digest_path(cache).unlink(missing_ok=True)  # a kill from here on leaves a .pt without a hash: rebuilt
    atomic_save_bytes(cache, data)
    atomic_save_bytes(_digest_path(cache), (hashlib.sha256(data).hexdigest() + "\n").encode())
    _CHECKED_CACHES[str(cache)] = _stat_signature(cache)


def _load_checked_cache(cls, cache: str | os.PathLike) -> "ImageStore":
    """The store in ``cache``; ValueError naming the file when its bytes do not match its hash."""
    cache = Path(cache)
    if _CHECKED_CACHES.get(str(cache)) == _stat_signature(cache):
        return cls.load(cache)
    try:
        expected = _digest_path(cache).read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"{cache} has no content hash ({_digest_path(cache).name}: written by an older musecl, "
                         "or its write was interrupted)") from None
    signature = _stat_signature(cache)
    if sha256_of(cache) != expected:
        raise ValueError(f"file {cache} changed (hash mismatch with {_digest_path(cache).name})")
    store = cls.load(cache)
    _CHECKED_CACHES[str(cache)] = signature
    return store
