"""Run configuration: one typed dataclass per stage, composed into :class:`RunConfig`; one flat set
of names for them shared by `musecl run`, ``params/*.yaml`` and the chapters' papermill
``parameters`` cells, so a setting has the same name wherever a person writes it."""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import numbers
import operator
import os
import re
import warnings
from dataclasses import dataclass
from html import escape as _escape
from pathlib import Path

import pandas as pd
import yaml

from musecl.io import YamlFileError, load_yaml

# The allowed values of the string settings live here (loading a config must not import torch);
# the modules that read them import them from here. Three are copies, kept equal by
# tests/test_config_validation.py: IMAGE_STORES (the installed stores), ARCHS (image.ARCHS +
# heads.FEATURE_HEADS) and TRIPLET_LOSSES (image.LOSSES). RETRAIN: the runner reads it.
IMAGE_STORES = ("memory", "shards")
RETRAIN = ("per_seed", "once")
SAMPLING_RULES = ("paper", "official")
HEAD_ARCH = "lite0-head"  # a head on frozen features (musecl.encoders.heads); the others are CNNs
ARCHS = ("resnet18", "inception_v3", "tiny", HEAD_ARCH)
TRIPLET_LOSSES = ("cosine", "euclidean")
BACKBONE_LAYERS = ("last", "stages")
AMP_MODES = ("off", "bf16", "fp16", "auto")
FUSION_DESIGNS = ("aligned", "paper")
TEXT_POOLINGS = ("mean", "log-scaled")
FUSION_LOSSES = ("infonce", "mse")
SPLITS = ("random", "spatial", "spatial-cv")  # musecl.evaluation: "spatial-cv" tests every block
PROBES = ("mlp", "ridge", "mlp-or-ridge", "knn")  # musecl.evaluation.make_probe says what each is


class ConfigError(ValueError):
    """A run setting that is unknown or has the wrong type or value. ``key`` names the setting
    (None for a file that is not a mapping of settings)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class _Bad(Exception):
    """A check's refusal: the value is not what the key allows (the check's ``allowed`` says what
    is); the message is empty or a hint at the nearest allowed value."""


def _allows(allowed: str):
    def named(check):
        check.allowed = allowed
        return check
    return named


def _near(value, allowed) -> str:
    near = difflib.get_close_matches(str(value), allowed, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _integer(minimum: int):
    @_allows(f"an integer >= {minimum}")
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise _Bad()
        return int(value)
    return check


def _number(above: float | None = None, at_least: float | None = None, below: float | None = None):
    """A finite number (an int, a float or a string such as "1e-3", which YAML 1.1 reads as a string)."""
    bounds = [(sign, within, limit) for sign, within, limit in (
        (">", operator.gt, above), (">=", operator.ge, at_least), ("<", operator.lt, below))
        if limit is not None]

    @_allows("a number " + " and ".join(f"{sign} {limit:g}" for sign, _, limit in bounds))
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
            raise _Bad()
        try:
            number = float(value)
        except ValueError:
            raise _Bad() from None
        if not (math.isfinite(number) and all(holds(number, limit) for _, holds, limit in bounds)):
            raise _Bad()
        return value if type(value) in (int, float) else number  # keep 1 as 1: cache keys hash the values
    return check


def _choice(*allowed: str):
    @_allows(f"one of {allowed}")
    def check(value):
        if value not in allowed or not isinstance(value, str):
            raise _Bad(_near(value, allowed))
        return value
    return check


def _optional(check, meaning: str):
    @_allows(f"{check.allowed} or None (null in YAML: {meaning})")
    def optional(value):
        return None if value is None else check(value)
    return optional


def _items(check):
    """A non-empty list or tuple (or one value) of items that each pass ``check``; returns a tuple."""
    @_allows(f"a non-empty list without repeats, each item {check.allowed}")
    def items(value):
        checked = tuple(map(check, value if isinstance(value, (list, tuple)) else (value,)))
        if not checked or len(set(checked)) < len(checked):  # a repeated seed: one result twice
            raise _Bad()
        return checked
    return items


def _off_is_false(check):
    """YAML 1.1 reads a bare ``off`` as false: take that as the choice "off"."""
    @_allows(check.allowed)
    def off(value):
        return "off" if value is False else check(value)
    return off


@_allows("'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available)")
def _device(value):
    if not isinstance(value, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
        raise _Bad()
    return value


@_allows("'random', 'imagenet' or the path of an existing checkpoint")
def _weights(value):
    if value in ("random", "imagenet"):
        return value
    if isinstance(value, (str, os.PathLike)) and str(value) and Path(value).exists():
        return str(value)
    raise _Bad(_near(value, ("random", "imagenet")))


@_allows("'auto' or a number >= 0 (metres; 0: no buffer)")
def _buffer(value):
    return value if value == "auto" else _number(at_least=0)(value)


# What each RunConfig setting accepts, checked when one is made (and so when params/*.yaml loads);
# a wrong value raises ConfigError naming the key, the value and what is allowed.
CHECKS = {
    **dict.fromkeys(("seed", "jobs"), _integer(0)),
    **dict.fromkeys(("n_triplets", "n_positive_candidates", "rs_image_size", "sv_image_size",
                     "embedding_dim", "rs_epochs", "sv_epochs", "rs_batch_size", "sv_batch_size",
                     "train_processes", "text_epochs", "text_window", "fusion_epochs",
                     "probe_max_epochs", "probe_patience"), _integer(1)),
    "fusion_batch_size": _integer(2),  # InfoNCE: the other regions of a batch are the negatives
    **dict.fromkeys(("encoder_lr", "fusion_lr"), _number(above=0)),
    **dict.fromkeys(("head_reconstruction", "fusion_reconstruction"), _number(at_least=0)),
    "val_fraction": _number(at_least=0, below=1),
    "margin": _optional(_number(at_least=0), "0.5 for cosine, 5 for euclidean"),
    "temperature": _optional(_number(above=0), "the design's default"),
    "block_size_m": _optional(_number(above=0), "a multiple of the hexagon size"),
    "encoder_patience": _optional(_integer(1), "no early stopping"),
    "device": _device,
    "weights": _weights,
    "buffer_m": _buffer,
    "sampling_rule": _choice(*SAMPLING_RULES),
    **dict.fromkeys(("rs_arch", "sv_arch"), _choice(*ARCHS)),
    "triplet_loss": _choice(*TRIPLET_LOSSES),
    "backbone_layers": _choice(*BACKBONE_LAYERS),
    "amp": _off_is_false(_choice(*AMP_MODES)),
    "image_store": _choice(*IMAGE_STORES),
    "text_pooling": _choice(*TEXT_POOLINGS),
    "fusion_design": _choice(*FUSION_DESIGNS),
    "fusion_loss": _choice(*FUSION_LOSSES),
    "retrain": _choice(*RETRAIN),
    "probe": _choice(*PROBES),
    "seeds": _items(_integer(0)),
    "splits": _items(_choice(*SPLITS)),
}


def _check(key: str, value):
    """``value`` as ``CHECKS[key]`` normalises it, or a ConfigError naming the key."""
    try:
        return CHECKS[key](value)
    except _Bad as bad:
        message = f"{key} must be {CHECKS[key].allowed}; got {value!r}{bad}"
        raise ConfigError(message, key=key) from None


class _StageSettings:
    """A stage's settings: each field checked (and normalised) when made, by its flat name."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            key = FLAT_NAME[type(self), f.name]
            object.__setattr__(self, f.name, _check(key, getattr(self, f.name)))


@dataclass(frozen=True)
class SamplingSettings(_StageSettings):
    """Similarity sampling (eq. 1-4): :class:`musecl.sampling.TripletSampler` with the run's seed."""

    n_triplets: int = 10_000  # per encoder, as the official code
    rule: str = "paper"  # "paper": top-k positives, dissimilar negatives; "official"
    n_positive_candidates: int = 5


@dataclass(frozen=True)
class ImageEncoderSettings(_StageSettings):
    """The two image encoders (eq. 5-6): ``rs_*`` the satellite one, ``sv_*`` the street-view one;
    the rest is shared."""

    rs_arch: str = "resnet18"
    sv_arch: str = "inception_v3"
    weights: str = "random"  # "random", "imagenet" (from the local torch hub cache) or a checkpoint
    rs_image_size: int = 64
    sv_image_size: int = 75
    triplet_loss: str = "cosine"  # "cosine" (paper, eq. 6) or "euclidean" (official, margin 5)
    margin: float | None = None  # None: 0.5 for cosine, 5.0 for euclidean
    rs_epochs: int = 201  # official code
    sv_epochs: int = 20  # official code
    rs_batch_size: int = 32
    sv_batch_size: int = 16
    lr: float = 5e-4  # the triplet encoders' (images, and the vector views' of chapter 10)
    patience: int | None = None
    # lite0-head encoders only: weight of decoding the embedding back to its frozen features, a term
    # beside eq. 6 so the head keeps what its triplets do not ask for (0: the paper's loss alone)
    head_reconstruction: float = 0.0
    # lite0-head encoders only: the frozen backbone's pooled "last" conv layer (1280-d, the usual read of
    # photographs) or its "stages" (816-d: colour and texture too; musecl.encoders.heads.pooled_features_module)
    backbone_layers: str = "last"
    val_fraction: float = 0.1

    @property
    def resolved_margin(self) -> float:
        if self.margin is not None:
            return float(self.margin)
        return 5.0 if self.triplet_loss == "euclidean" else 0.5


@dataclass(frozen=True)
class TextSettings(_StageSettings):
    """POI text (eq. 7): :class:`musecl.encoders.text.TextEncoderConfig` with the run's seed and
    ``embedding_dim``."""

    epochs: int = 5
    window: int = 5
    # how a region's POI category vectors become one: "mean" (eq. 7) forgets how many POIs there
    # were; "log-scaled" keeps the mean's direction, times ln(1 + POIs)
    pooling: str = "mean"


@dataclass(frozen=True)
class FusionSettings(_StageSettings):
    """Fusion (eq. 8-11): :class:`musecl.fusion.FusionConfig` with the run's seed."""

    design: str = "aligned"  # "aligned": learned views, temperature, reconstruction; "paper": eq. 8-11 as written
    loss: str = "infonce"  # "infonce" (paper, eq. 11) or "mse" (official; with design: paper)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float | None = None  # None: 0.1 to start the aligned design's learned one, 1 (eq. 11) for the paper's
    # aligned design: weight of keeping what only the images show (against InfoNCE; chosen on a
    # second toy city: musecl.fusion.DEFAULT_RECONSTRUCTION)
    reconstruction: float = 30.0


@dataclass(frozen=True)
class EvaluationSettings(_StageSettings):
    """How embeddings are scored: splits, the probe (:class:`musecl.evaluation.ProbeConfig`'s epochs
    and patience), the spatial split's blocks and buffer."""

    splits: tuple[str, ...] = ("random", "spatial")  # also "spatial-cv": every block tested once
    probe: str = "mlp"
    probe_max_epochs: int = 500
    probe_patience: int = 50
    block_size_m: float | None = None  # spatial blocks; None: a multiple of the hexagon size
    # training regions closer than this to a test region are dropped from the spatial split; "auto":
    # the distance beyond which the city's indicator values no longer correlate (0: no buffer)
    buffer_m: float | str = "auto"


@dataclass(frozen=True)
class MachineSettings(_StageSettings):
    """Where and how fast a run goes. Trained weights differ in their last bits with them (threads,
    processes), and amp changes the arithmetic (so it enters the cache keys), but none of them
    changes the method, its data or its sizes."""

    device: str = "cpu"
    amp: str = "off"  # image encoders' mixed precision: "off", "bf16", "fp16" (GPU), "auto" (what pays here)
    # where decoded images live: "memory" (one .pt cache, loaded whole) or "shards" (.npy shards
    # that stream from disk, for cities whose images do not fit in memory: musecl.scaling.shards,
    # found by its entry point); same numbers either way
    image_store: str = "memory"
    train_processes: int = 1  # >1: image encoders trained by that many torchrun processes (musecl train-encoders)
    # worker processes (0: one per CPU core) fitting methods side by side on the CPU, and probes;
    # probe scores do not depend on it, trained weights do in their last bits (threads per process)
    jobs: int = 0


# RunConfig's stages: attribute, settings class, and the heading a reader sees (RunConfig's table)
STAGES = {
    "sampling": (SamplingSettings, "similarity sampling (eq. 1-4)"),
    "image": (ImageEncoderSettings, "image encoders (eq. 5-6)"),
    "text": (TextSettings, "POI text (eq. 7)"),
    "fusion": (FusionSettings, "fusion (eq. 8-11)"),
    "evaluation": (EvaluationSettings, "evaluation"),
    "machine": (MachineSettings, "machine"),
}
RUN_KEYS = ("seed", "seeds", "retrain", "embedding_dim")  # RunConfig's own, shared by the stages
# the flat name of each stage setting (params files, papermill, the CLI, saved settings, cache keys):
# the field's name unless listed here
_FLAT_NAMES = {
    ("sampling", "rule"): "sampling_rule",
    ("image", "lr"): "encoder_lr", ("image", "patience"): "encoder_patience",
    **{("text", f): f"text_{f}" for f in ("epochs", "window", "pooling")},
    **{("fusion", f): f"fusion_{f}" for f in ("design", "loss", "epochs", "batch_size", "lr", "reconstruction")},
}
FLAT = {_FLAT_NAMES.get((stage, f.name), f.name): (stage, f.name)
        for stage, (cls, _) in STAGES.items() for f in dataclasses.fields(cls)}  # flat key -> (stage, field)
FLAT_NAME = {(STAGES[stage][0], name): key for key, (stage, name) in FLAT.items()}
# settings renamed since an earlier version: old files and saved models still load, with a warning
RENAMED = {"lr": "encoder_lr"}  # it never set the fusion's learning rate (fusion_lr) or the probe's


@dataclass(frozen=True, init=False)
class RunConfig:
    """Every setting of a MuseCL run: the seeds and sizes every stage shares, then one typed
    dataclass per stage. Defaults are the paper's / official code's where they exist.

    Made from the flat names a params file uses (``RunConfig(n_triplets=500, fusion_lr=1e-3)``,
    :meth:`from_dict`, :meth:`from_yaml`) or from stage settings (``RunConfig(fusion=FusionSettings(lr=1e-3))``);
    read by stage (``config.fusion.lr``); :meth:`to_dict` gives the flat names back.
    """

    # the stages' seed in a single fit and in the chapters that show one stage. Left out, it is the
    # first of ``seeds``; with retrain: per_seed one a params file gives must be one of them, so the
    # chapters show a model the results use (each seed trains its own stages)
    seed: int
    seeds: tuple[int, ...]
    # "per_seed": each seed re-runs every stage (sampling, encoders, text, fusion) before its split
    # and probe, so the spread over seeds includes the method's own; "once": stages trained with
    # ``seed``, seeds vary only the split and the probe (cheaper by the number of seeds)
    retrain: str
    embedding_dim: int  # the image encoders', the POI text's and so the fusion's
    sampling: SamplingSettings
    image: ImageEncoderSettings
    text: TextSettings
    fusion: FusionSettings
    evaluation: EvaluationSettings
    machine: MachineSettings

    def __init__(self, seed: int | None = None, seeds=(0, 1, 2, 3, 4), retrain: str = "per_seed",
                 embedding_dim: int = 128, sampling: SamplingSettings | None = None,
                 image: ImageEncoderSettings | None = None, text: TextSettings | None = None,
                 fusion: FusionSettings | None = None,
                 evaluation: EvaluationSettings | None = None, machine: MachineSettings | None = None,
                 **settings):
        _reject_unknown(settings)
        given = {"sampling": sampling, "image": image, "text": text, "fusion": fusion, "evaluation": evaluation,
                 "machine": machine}
        for stage, (cls, _) in STAGES.items():
            part = given[stage] if given[stage] is not None else cls()
            if not isinstance(part, cls):
                raise ConfigError(f"{stage} must be a {cls.__name__}; got {part!r}", key=stage)
            mine = {FLAT[key][1]: value for key, value in settings.items() if FLAT[key][0] == stage}
            object.__setattr__(self, stage, dataclasses.replace(part, **mine) if mine else part)
        for name, value in (("seeds", seeds), ("seed", seed), ("retrain", retrain), ("embedding_dim", embedding_dim)):
            if name == "seed" and value is None:
                value = self.seeds[0]  # the chapters show the stages of the first seed
            object.__setattr__(self, name, _check(name, value))
        _check_together(self)

    def __getattr__(self, name: str):
        # only reached for names a RunConfig lacks: say where a flat name now lives
        if name in FLAT:
            stage, field = FLAT[name]
            raise AttributeError(f"RunConfig has no attribute {name!r}: read config.{stage}.{field} "
                                 f"({name!r} stays its name in params files and to_dict())")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def keys(cls) -> list[str]:
        """Every flat setting name, in the order of the table a notebook shows."""
        return list(RUN_KEYS) + list(FLAT)

    def replace(self, **settings) -> "RunConfig":
        """A copy with some settings changed, given by their flat names (``replace(fusion_lr=1e-2)``)
        or as whole stages; checked as a new RunConfig is."""
        values = {k: getattr(self, k) for k in (*RUN_KEYS, *STAGES)}
        seeds = settings.get("seeds")
        if seeds is not None and "seed" not in settings and self.seed not in (
                seeds if isinstance(seeds, (list, tuple)) else (seeds,)):
            values["seed"] = None  # as when made: the first of the new seeds
        return RunConfig(**{**values, **settings})

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Settings by their flat names (old names of :data:`RENAMED` warned and taken)."""
        return cls(**_renamed(values))

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides) -> "RunConfig":
        values = {}
        if path is not None:
            try:
                values = load_yaml(path) or {}
            except YamlFileError as err:  # invalid YAML, or a key given twice (the file and line named)
                raise ConfigError(str(err)) from None
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: expected a mapping of parameter names to values")
        from_file = set(values)
        weights = values.get("weights")
        if isinstance(weights, str) and not Path(weights).is_absolute() and (Path(path).parent / weights).is_file():
            values["weights"] = str(Path(path).parent / weights)  # beside the file, wherever it is read from
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return _seed_of_the_chapters(cls.from_dict(values), given="seed" in values)
        except ConfigError as err:
            if path is None or err.key not in from_file:
                raise
            raise ConfigError(f"{path}: {err}", key=err.key) from None

    def to_dict(self) -> dict:
        """Every setting by its flat name (as params files write them)."""
        values = {k: getattr(self, k) for k in RUN_KEYS}
        values.update({key: getattr(getattr(self, stage), name) for key, (stage, name) in FLAT.items()})
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}

    def to_yaml(self) -> str:
        """The settings as a params file: flat names, one commented block per stage; :meth:`from_yaml`
        reads it back (a run writes it as ``config.yaml``)."""
        return "\n".join(f"# {heading}\n" + yaml.safe_dump(values, sort_keys=False)
                         for heading, values in self.by_section().items())

    def by_section(self) -> dict[str, dict]:
        """The flat settings grouped by stage, under the headings a reader sees."""
        values = self.to_dict()
        sections = {"run": {k: values[k] for k in RUN_KEYS}}
        for stage, (_, heading) in STAGES.items():
            sections[heading] = {key: values[key] for key, (s, _) in FLAT.items() if s == stage}
        return sections

    def _repr_html_(self) -> str:
        """A notebook shows a run's settings as a table, one row per stage; bold: what differs from
        the defaults (the paper's and the official code's settings where they have one)."""
        defaults = RunConfig().to_dict()

        def shown(key, value) -> str:
            text = f"{key}: {value!r}"
            if key == "margin" and value is None:  # the loss's own margin, which the figures name
                text += f" ({self.image.resolved_margin:g} for {self.image.triplet_loss})"
            if key == "weights" and HEAD_ARCH in (self.image.rs_arch, self.image.sv_arch):
                text += " (CNNs only: a lite0-head reads ImageNet features)"
            text = _escape(text, quote=False)
            return f"<b>{text}</b>" if value != defaults[key] else text

        sections = self.by_section()
        where = ["run"] + [f"{heading}: <code>.{stage}</code>" for stage, (_, heading) in STAGES.items()]
        table = pd.DataFrame({"RunConfig": where, "settings, as params files name them (<b>bold</b>: not the default)": [
            ", ".join(shown(k, v) for k, v in values.items()) for values in sections.values()]})
        with pd.option_context("display.max_colwidth", None):  # cut, a cell would lose its closing tags
            html = table.to_html(escape=False, index=False, notebook=True)
        # left on the th itself: a page's other DataFrames put a page-wide right-align on their headers
        return html.replace("<th>", '<th style="text-align: left;">')

    def subset(self, names: list[str]) -> dict:
        """Some settings by their flat names (a stage's cache key)."""
        d = self.to_dict()
        return {k: d[k] for k in names}


assert set(CHECKS) == set(RunConfig.keys()), "every RunConfig setting needs a check"


def _reject_unknown(settings: dict) -> None:
    """A ConfigError naming each setting RunConfig does not have, with the nearest known name."""
    known = RunConfig.keys()
    unknown = sorted(set(settings) - set(known), key=str)
    if not unknown:
        return
    near = {k: difflib.get_close_matches(str(k), known, n=1) for k in unknown}
    hints = [f"{n[0]!r}" + (f" for {k!r}" if len(unknown) > 1 else "") for k, n in near.items() if n]
    message = f"unknown parameter(s) {unknown}" + (f"; did you mean {', '.join(hints)}?" if hints else "")
    if not all(near.values()):
        message += f"; known: {known}"
    raise ConfigError(message, key=str(unknown[0]))


def _check_together(config: RunConfig) -> None:
    """The rules that join two settings, checked on every RunConfig (a params file, ``RunConfig(...)``,
    ``replace``), so a combination that cannot run fails when made, naming a key, not at fit."""
    image, fusion, machine = config.image, config.fusion, config.machine
    if image.head_reconstruction and HEAD_ARCH not in (image.rs_arch, image.sv_arch):
        raise ConfigError(f"head_reconstruction {image.head_reconstruction} needs rs_arch or sv_arch "
                          f"{HEAD_ARCH!r} (a CNN encoder has no decoder); got {image.rs_arch!r} and "
                          f"{image.sv_arch!r}", key="head_reconstruction")
    if image.patience is not None and image.val_fraction == 0:
        raise ConfigError(f"encoder_patience {image.patience} (early stopping) needs a validation part: "
                          "val_fraction > 0, or encoder_patience: null", key="encoder_patience")
    if machine.amp == "fp16" and machine.device == "cpu":
        raise ConfigError("amp 'fp16' needs a CUDA GPU (device: cuda or auto); on a CPU use 'bf16', 'auto' "
                          "or 'off'", key="amp")
    if image.weights == "imagenet" and "tiny" in (image.rs_arch, image.sv_arch):
        raise ConfigError("weights 'imagenet' has no weights for arch 'tiny' (rs_arch or sv_arch); use "
                          "resnet18, inception_v3 or lite0-head, or weights: random", key="weights")
    cnns = sorted({arch for arch in (image.rs_arch, image.sv_arch) if arch != HEAD_ARCH})
    if image.weights not in ("random", "imagenet") and len(cnns) > 1:
        raise ConfigError(f"weights {image.weights!r}: one checkpoint starts both image encoders, which are "
                          f"{cnns[0]!r} and {cnns[1]!r}; give rs_arch and sv_arch the checkpoint's "
                          "architecture, or use weights: random or imagenet", key="weights")
    if fusion.design == "aligned" and fusion.loss != "infonce":
        raise ConfigError(f"fusion_loss {fusion.loss!r} needs fusion_design: paper (the aligned design "
                          "trains with infonce); got fusion_design 'aligned'", key="fusion_loss")


def _seed_of_the_chapters(config: RunConfig, given: bool) -> RunConfig:
    """Settings as a person writes them (a params file, papermill, the CLI): with retrain: per_seed a
    ``seed`` that is given (it picks the stages the chapters show; left out, the first of ``seeds``)
    must be one of ``seeds``, or the chapters would show (and train) a model no result uses. Not
    checked on saved settings or in replace(), where code derives one seed's settings."""
    if given and config.retrain == "per_seed" and config.seed not in config.seeds:
        raise ConfigError(f"seed {config.seed} is not one of seeds {list(config.seeds)}: with retrain: per_seed every "
                          "seed trains its own stages, and seed picks the one the chapters show; leave it out (the "
                          "first of seeds) or set retrain: once", key="seed")
    return config


def _renamed(values: dict) -> dict:
    """``values`` with the old names of :data:`RENAMED` settings replaced by the new ones."""
    values = dict(values)
    for old, new in RENAMED.items():
        if old in values:
            if new in values:
                raise ConfigError(f"{old!r} is the old name of {new!r}; give only {new!r}", key=old)
            warnings.warn(f"run setting {old!r} is now called {new!r}; the old name will stop working",
                          FutureWarning, stacklevel=4)
            values[new] = values.pop(old)
    return values


def config_hash(*parts) -> str:
    """A short stable hash of JSON-able parts: names a cache folder."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
