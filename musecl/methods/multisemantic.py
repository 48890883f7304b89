"""MuseCL itself: the four cached stages of the paper's Figure 2, and the method that chains them.

1. satellite encoder, triplets by POI similarity (eq. 3-6)
2. street-view encoder, triplets by mobility similarity (eq. 1-2, 5-6)
3. POI text vectors (eq. 7)
4. attentive fusion of 1 and 2, aligned to 3 (eq. 8-11); on a city with one of the two image
   kinds, of that one alone (:func:`image_views`)

*MuseCL (fine-tuned heads)* replaces stage 4 by the end-to-end option on feature heads: the two
heads of stages 1-2 train on with the fusion (:func:`musecl.fusion.fine_tune_heads`).

Each stage is a cache folder keyed by its settings and the city's files: later chapters reuse
what earlier ones trained, and a changed setting retrains only what follows it."""
from __future__ import annotations

import warnings
from dataclasses import asdict
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd

from musecl.cache import city_fingerprint, entry_key, load_table, save_table
from musecl.city import MOBILITY, POI, SATELLITE, STREETVIEW, City
from musecl.config import RunConfig
from musecl.encoders.heads import (
    FEATURE_HEADS,
    efficientnet_lite0,
    embed_features,
    head_encoder,
    initial_head,
    load_head,
    pooled_features_module,
    save_head,
    train_feature_head,
)
from musecl.encoders.image import (
    ARCHS,
    COLUMN_PREFIX,
    ImageStore,
    ImageTrainingConfig,
    TripletObjective,
    build_encoder,
    embed_regions,
    load_encoder,
    save_encoder,
    train_image_encoder,
)
from musecl.encoders.text import POI_TEXT, PoiTextEncoder, TextEncoderConfig, text_context
import musecl.fusion
from musecl.fusion import (AlignedFusion, AttentiveFusion, FusionConfig, OneViewWarning, fine_tune_cnns,
                           fine_tune_heads, fuse, load_fusion, train_fusion)
from musecl.io import (
    CONFIG_JSON, WEIGHTS_PT, atomic_save_json, check_choice, read_saved_config, sha256_of,
)
from musecl.methods.base import EMBEDDINGS_CSV, HISTORY_CSV, StagedMethod, groups_met, register
from musecl.sampling import SAMPLING_FORMAT, Triplets, TripletSampler, mobility_triplets, poi_triplets
from musecl.training import amp_dtype, processes, resolve_device

SAMPLING_KEYS = ["seed", "n_triplets", "sampling_rule", "n_positive_candidates"]
TRAINING_KEYS = ["weights", "embedding_dim", "triplet_loss", "margin", "encoder_lr", "encoder_patience", "val_fraction"]
IMAGE_KEYS = {
    SATELLITE: SAMPLING_KEYS + TRAINING_KEYS + ["rs_arch", "rs_image_size", "rs_epochs", "rs_batch_size"],
    STREETVIEW: SAMPLING_KEYS + TRAINING_KEYS + ["sv_arch", "sv_image_size", "sv_epochs", "sv_batch_size"],
}
TEXT_KEYS = ["seed", "embedding_dim", "text_epochs", "text_window"]
FUSION_KEYS = ["seed", "fusion_design", "fusion_loss", "fusion_epochs", "fusion_batch_size", "fusion_lr",
               "temperature", "fusion_reconstruction"]
PREFIX = {SATELLITE: "rs", STREETVIEW: "sv"}

TRIPLETS_CSV = "triplets.csv"
ATTENTION_CSV = "attention.csv"
FEATURES_FORMAT = 1  # bump when a backbone's feature extraction changes: old cache entries are ignored
FUSION_FORMAT = 4  # bump when the fusion stage's training or files change: older entries are retrained
# (4: the aligned design's image views without LayerNorm, musecl.fusion.VIEW_NORM)
FINE_TUNED_FORMAT = 3  # the same for the fine-tuned stage's tables
FINE_TUNED_TABLES = {SATELLITE: "embeddings-rs.csv", STREETVIEW: "embeddings-sv.csv"}


def sampler_for(cfg: RunConfig):
    """The triplet sampler of a run (eq. 1-4): the paper's rule or the official code's."""
    return TripletSampler(**asdict(cfg.sampling), seed=cfg.seed)


def image_settings(cfg: RunConfig, kind: str) -> dict:
    """arch, image size, epochs and batch size of the satellite (rs_*) or street-view (sv_*) encoder."""
    names = ("arch", "image_size", "epochs", "batch_size")
    return {name: getattr(cfg.image, f"{PREFIX[kind]}_{name}") for name in names}


def reconstruction_weight(cfg: RunConfig, kind: str) -> float:
    """``head_reconstruction`` for a head on frozen features; 0 for a CNN, which has no decoder."""
    return cfg.image.head_reconstruction if image_settings(cfg, kind)["arch"] in FEATURE_HEADS else 0.0


def training_settings(cfg: RunConfig, kind: str, checkpoint_dir: Path, progress: bool = True):
    """The run's triplet-training settings for one encoder (a head trains on the CPU: no device, amp)."""
    s = image_settings(cfg, kind)
    return ImageTrainingConfig(
        loss=cfg.image.triplet_loss, margin=cfg.image.resolved_margin, reconstruction=reconstruction_weight(cfg, kind),
        epochs=s["epochs"], batch_size=s["batch_size"],
        lr=cfg.image.lr, val_fraction=cfg.image.val_fraction, patience=cfg.image.patience, seed=cfg.seed,
        device=cfg.machine.device, checkpoint_dir=str(checkpoint_dir), resume=True, progress=progress,
        amp=cfg.machine.amp)


def weights_key(weights: str) -> str:
    """What a cache key records of ``weights``: "random"/"imagenet" as they are; a checkpoint by the
    sha256 of the file it loads (so the key follows the content, not the path)."""
    if weights in ("random", "imagenet"):
        return weights
    path = Path(weights)
    path = path / WEIGHTS_PT if path.is_dir() else path
    return f"checkpoint:{sha256_of(path)}" if path.is_file() else weights


def similarity_triplets(city: City, cfg: RunConfig, kind: str, regions: list[str]):
    """MuseCL's pairing: satellite by POI similarity (eq. 3-4), street view by mobility (eq. 1-2)."""
    sample = poi_triplets if kind == SATELLITE else mobility_triplets
    return sample(city, sampler_for(cfg), regions=regions)


TRIPLET_SOURCES = {"similarity": similarity_triplets}  # baselines register theirs (e.g. "geographic")


def layers_key(layers: str) -> dict:
    """The cache-key entry of the backbone layers: nothing for "last", so older entries keep their keys."""
    return {} if layers == "last" else {"layers": layers}


def precision_key(amp: str, device: str) -> dict:
    """The cache-key entry of autocast: the resolved dtype ("auto" differs by hardware); nothing at
    full precision, so float32 entries keep their keys."""
    precision = amp_dtype(amp, resolve_device(device))
    return {} if precision is None else {"amp": str(precision)}


IMAGE_STORE_PLUGINS = "musecl.image_stores"  # entry-point group of the stores other than "memory"


def city_image_store(city: City, kind: str, size: int, cache, progress: bool = True,
                     image_store: str = "memory", fingerprint: str | None = None):
    """The city's ``kind`` images at ``size`` px, decoded once for every method (``image_store``:
    "memory", or "shards" for images that do not fit)."""
    group = processes()
    name = f"{kind}-{int(size)}-{fingerprint or city_fingerprint(city, labels=False)}"
    folder = cache.root / "images"
    if image_store == "memory":
        build = partial(ImageStore.from_city, city, kind, size, cache=folder / f"{name}.pt")
    else:
        build = partial(image_store_plugin(image_store), city, kind, size, folder / f"{name}-{image_store}")
    if not group.is_main():  # under torchrun the first process decodes, the others then read its files
        group.barrier()
        return build(progress=False)
    store = build(progress=progress)
    group.barrier()
    return store


def image_store_plugin(name: str):
    """The builder ``(city, kind, size, folder, progress) -> ImageStore`` of a non-"memory" store,
    from entry-point group ``musecl.image_stores``: the core names no scaling module, and another
    package can add its own. Raises ValueError when not installed."""
    plugins = {entry.name: entry for entry in entry_points(group=IMAGE_STORE_PLUGINS)}
    if name not in plugins:
        known = ["memory", *sorted(plugins)]
        raise ValueError(f"image_store {name!r} is not installed; installed: {known}. musecl registers 'shards' "
                         "when it is installed by pip (pip install -e .), not when run from a source folder")
    return plugins[name].load()


def image_stage(city: City, cfg: RunConfig, kind: str, cache, progress: bool = True,
                triplets: str = "similarity") -> Path:
    """Train the satellite or street-view encoder on ``triplets`` (a ``TRIPLET_SOURCES`` name) and
    embed every region (NaN without such images); return the folder (``encoder/``,
    ``triplets.csv``, ``history.csv``, ``embeddings.csv``). Checkpoints under
    ``<cache>/checkpoints`` let an interrupted run resume."""
    group = processes()
    if triplets not in TRIPLET_SOURCES:
        raise ValueError(f"unknown triplet source {triplets!r}; known: {sorted(TRIPLET_SOURCES)}")
    fingerprint = city_fingerprint(city, labels=False)
    key = {"city": fingerprint, "kind": kind, "triplets": triplets, "sampling_format": SAMPLING_FORMAT,
           **cfg.subset(IMAGE_KEYS[kind])}
    key.update(precision_key(cfg.machine.amp, cfg.machine.device))
    if "amp" in key:
        key["amp_embedding"] = True  # the regions are embedded under autocast too
    if cfg.machine.train_processes > 1:  # several processes train on other batches: other weights
        key["train_processes"] = cfg.machine.train_processes
    s = image_settings(cfg, kind)
    if weight := reconstruction_weight(cfg, kind):  # 0 keeps the keys of stages trained before it existed
        key["head_reconstruction"] = weight
    head = s["arch"] in FEATURE_HEADS  # a head on the backbone's cached features, or a CNN
    if head:  # it never reads ``weights``:
        del key["weights"]  # new features, new head (efficientnet_stage's key has the rest)
        key["features_format"] = FEATURES_FORMAT
        key["columns"] = "prefix_k"  # rs_0 ..., as a CNN's (entries without this key: rs0 ...)
        key.update(layers_key(cfg.image.backbone_layers))
    else:
        key["weights"] = weights_key(cfg.image.weights)

    def compute(folder: Path) -> None:
        if group.world_size() != cfg.machine.train_processes:
            raise RuntimeError(
                f"the {kind} encoder is set to train in {cfg.machine.train_processes} process(es) (train_processes) "
                f"and is not in the cache {cache.root}; this is {group.world_size()}. Train it with "
                f"`torchrun --nproc_per_node={cfg.machine.train_processes} -m musecl.cli train-encoders CITY "
                "--params PARAMS --out OUT`, then rerun with the same settings, or set train_processes to "
                f"{group.world_size()}")
        training = training_settings(cfg, kind, cache.checkpoints(key), progress)
        arch, size, dim = s["arch"], s["image_size"], cfg.embedding_dim
        if head:
            backbone_dir = efficientnet_stage(city, cfg, kind, size, cache, progress)
            features = load_table(backbone_dir / EMBEDDINGS_CSV)
            regions = [str(r) for r in features.dropna(how="any").index]
        else:
            store = city_image_store(city, kind, size, cache, progress, cfg.machine.image_store,
                                     fingerprint)
            regions = list(store.region_ids)
        drawn = TRIPLET_SOURCES[triplets](city, cfg, kind, regions)
        drawn.to_frame().to_csv(folder / TRIPLETS_CSV, index=False)
        if head:
            net, history = train_feature_head(features, drawn, training, embedding_dim=dim)
            backbone = read_saved_config(backbone_dir)
            provenance = {"arch": arch, "weights_source": backbone["weights_source"],
                          "backbone": backbone}
            save_head(net, folder / "encoder", provenance)
            embedding = embed_features(net, features.reindex(city.region_ids), prefix=COLUMN_PREFIX[kind])
        else:
            # channels_last: faster with bf16 on a GPU and for Inception-v3 on the CPU
            net = build_encoder(arch, dim, cfg.image.weights, seed=cfg.seed, channels_last=True)
            net, history = train_image_encoder(net, store, drawn, training)
            save_encoder(net, folder / "encoder")
            embedding = embed_regions(net, store, region_ids=city.region_ids, progress=progress,
                                      amp=cfg.machine.amp)
        history.to_csv(folder / HISTORY_CSV, index=False)
        save_table(embedding, folder / EMBEDDINGS_CSV)

    stage = f"encoder-{kind}" if triplets == "similarity" else f"encoder-{kind}-{triplets}"
    return cache.get_or_compute(stage, key, compute)


def efficientnet_stage(city: City, cfg: RunConfig, kind: str, image_size: int, cache,
                       progress: bool = True) -> Path:
    """Global-pooled features of EfficientNet-Lite0 with ImageNet weights, of its last conv layer
    (1280-d) or its stages, per ``backbone_layers``
    (:func:`musecl.encoders.heads.pooled_features_module`); ImageNet-normalised inputs, not
    TensorFlow's (x - 127) / 128: the converted weights' first BatchNorm statistics expect that."""
    machine, layers = cfg.machine, cfg.image.backbone_layers
    fingerprint = city_fingerprint(city, labels=False)
    key = {"city": fingerprint, "kind": kind, "model": "efficientnet-lite0",
           "image_size": int(image_size), "format": FEATURES_FORMAT,
           **precision_key(machine.amp, machine.device), **layers_key(layers)}

    def compute(folder: Path) -> None:
        net, path = efficientnet_lite0(image_size)
        store = city_image_store(city, kind, image_size, cache, progress, machine.image_store,
                                 fingerprint)
        module = pooled_features_module(net, image_size, layers).to(resolve_device(machine.device))
        table = embed_regions(module, store, batch_size=32, region_ids=city.region_ids,
                              progress=progress, amp=machine.amp)
        save_table(table, folder / EMBEDDINGS_CSV)
        atomic_save_json(folder / CONFIG_JSON,
                         {"arch": "efficientnet-lite0", "kind": kind, "image_size": int(image_size),
                          "dim": table.shape[1], "weights_source": f"imagenet:{path.name}", "layers": layers})

    return cache.get_or_compute(f"pretrained-{kind}", key, compute)


def backbone_features(city: City, cfg: RunConfig, kind: str, cache) -> pd.DataFrame:
    """The frozen backbone's features (cached) that this run's feature heads read."""
    size = image_settings(cfg, kind)["image_size"]
    return load_table(efficientnet_stage(city, cfg, kind, size, cache, False) / EMBEDDINGS_CSV)


def stage_encoder(stage: Path, initial: bool = False, seed: int = 0, weights: str = "random"):
    """An image stage's encoder as one module on uint8 images (a CNN, or backbone + head).
    ``initial``: untrained at its starting point (``seed``, ``weights``), the control for what
    training added."""
    config = read_saved_config(stage / "encoder")
    if config.get("class") != "FeatureHead":
        trained = load_encoder(stage / "encoder")
        if not initial:
            return trained
        return build_encoder(trained.config["arch"], trained.embedding_dim, weights, seed=seed).eval()
    head = load_head(stage / "encoder")
    head = initial_head(head, seed) if initial else head
    return head_encoder(head, config["arch"], config["backbone"]["image_size"], config["weights_source"],
                        config["backbone"].get("layers", "last"))


def initial_embedding(city: City, cfg: RunConfig, kind: str, cache, stage: Path, store=None) -> pd.DataFrame:
    """Every region's embedding by the stage's untrained encoder, computed as the stage embeds."""
    config = read_saved_config(stage / "encoder")
    if config.get("class") == "FeatureHead":
        features = backbone_features(city, cfg, kind, cache)
        return embed_features(initial_head(load_head(stage / "encoder"), cfg.seed), features.reindex(city.region_ids),
                              prefix=COLUMN_PREFIX[kind])
    if store is None:
        size = image_settings(cfg, kind)["image_size"]
        store = city_image_store(city, kind, size, cache, False, cfg.machine.image_store)
    encoder = stage_encoder(stage, initial=True, seed=cfg.seed, weights=cfg.image.weights)
    return embed_regions(encoder, store, region_ids=city.region_ids, amp=cfg.machine.amp)


def text_settings(cfg: RunConfig):
    """The run's POI text settings (:class:`musecl.encoders.text.TextEncoderConfig`)."""
    return TextEncoderConfig(**asdict(cfg.text), vector_size=cfg.embedding_dim, seed=cfg.seed)


def text_stage(city: City, cfg: RunConfig, cache) -> Path:
    """Skip-gram + hierarchical softmax on all POI categories and texts; eq. 7 region vectors."""
    key = {"city": city_fingerprint(city, labels=False), **cfg.subset(TEXT_KEYS)}
    if cfg.text.pooling != "mean":  # the paper's eq. 7 keeps the keys it always had
        key["text_pooling"] = cfg.text.pooling
    context = text_context(city.pois)
    if context != POI_TEXT:  # category-only POIs: another corpus; cities with text keep their keys
        key["text_context"] = context

    def compute(folder: Path) -> None:
        encoder = PoiTextEncoder(text_settings(cfg))
        save_table(encoder.fit_transform(city), folder / EMBEDDINGS_CSV)
        encoder.save(folder / "encoder")

    return cache.get_or_compute("text", key, compute)


def fusion_settings(cfg: RunConfig):
    """The run's fusion settings (:class:`musecl.fusion.FusionConfig`)."""
    return FusionConfig(**asdict(cfg.fusion), seed=cfg.seed)


def image_views(city: City) -> tuple[str, ...]:
    """The image kinds MuseCL encodes on ``city`` (from ``MuseCL.needs_any``): satellite images
    (triplets from POIs, eq. 3-4), street views where there are trips (eq. 1-2). With one kind
    (many real cities lack street views) MuseCL fuses it alone: eq. 10 with beta = 1, eq. 11 as is."""
    return tuple(group[0] for group in groups_met(MuseCL, city))


def fusion_key(cfg: RunConfig) -> dict:
    """What a cached fusion depends on besides its inputs: the stage's format, the run's fusion
    settings and ``musecl.fusion.VIEW_NORM``, read when called (an experiment that sets it trains
    fusions of its own instead of reading the book's)."""
    return {"format": FUSION_FORMAT, "view_norm": musecl.fusion.VIEW_NORM, **cfg.subset(FUSION_KEYS)}


def fusion_stage(city: City, cfg: RunConfig, cache, sv_dir: Path | None, rs_dir: Path | None,
                 text_dir: Path) -> Path:
    """Attentive fusion of the image embeddings aligned to the POI vectors (eq. 8-11); None views left out."""
    upstream = [None if d is None else entry_key(d) for d in (sv_dir, rs_dir, text_dir)]
    key = {"upstream": upstream, **fusion_key(cfg)}

    def compute(folder: Path) -> None:
        poi = load_table(text_dir / EMBEDDINGS_CSV)
        sv, rs = (None if d is None else load_table(d / EMBEDDINGS_CSV) for d in (sv_dir, rs_dir))
        shape = rs if sv is None else sv  # a missing view: NaN everywhere, shaped as the other
        sv, rs = (pd.DataFrame(np.nan, index=shape.index.copy(), columns=shape.columns) if t is None else t
                  for t in (sv, rs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OneViewWarning)  # meant: the city has one image kind
            train_fusion_into(folder, sv, rs, poi, cfg)

    return cache.get_or_compute("fusion", key, compute)


def train_fusion_into(folder: Path, sv: pd.DataFrame, rs: pd.DataFrame, target: pd.DataFrame,
                      cfg: RunConfig) -> None:
    """Fuse ``sv`` and ``rs`` aligned to ``target`` and write a fusion stage's folder."""
    model, history = train_fusion(sv, rs, target, fusion_settings(cfg))
    _save_fusion(folder, model, history, sv, rs)


def _save_fusion(folder: Path, model, history: pd.DataFrame, sv: pd.DataFrame, rs: pd.DataFrame):
    """A fusion stage's files: the model, its history, the fused embedding and beta (eq. 9-10)."""
    embedding, beta = fuse(model, sv, rs)
    model.save(folder / "fusion")
    history.to_csv(folder / HISTORY_CSV, index=False)
    save_table(embedding, folder / EMBEDDINGS_CSV)
    save_table(beta, folder / ATTENTION_CSV)


# what the end-to-end option fine-tunes: lite0 heads on cached features, or whole CNNs (for a GPU)
FINE_TUNES = ("heads", "cnns")


def fine_tuning_unsupported(cfg: RunConfig, fine_tunes: str = "heads") -> str | None:
    """Why these settings cannot fine-tune ``fine_tunes`` ("heads", "cnns") through the fusion, or None."""
    check_choice("fine_tunes", fine_tunes, FINE_TUNES)
    archs = {k: getattr(cfg.image, k) for k in ("rs_arch", "sv_arch")}
    wrong = [k for k, arch in archs.items() if (arch in FEATURE_HEADS) != (fine_tunes == "heads")]
    if wrong:
        wanted = f"one of {sorted(FEATURE_HEADS)}" if fine_tunes == "heads" else f"a CNN, one of {list(ARCHS)}"
        other = "MuseCL (fine-tuned CNNs)" if fine_tunes == "heads" else "MuseCL (fine-tuned heads)"
        return (f"fine-tuning {fine_tunes} needs {' and '.join(wrong)} to be {wanted}; "
                f"got {', '.join(f'{k} {archs[k]!r}' for k in wrong)} (for the other kind: {other})")
    if cfg.fusion.design != "aligned":
        return f"fine-tuning trains the aligned fusion design; got fusion_design {cfg.fusion.design!r}"
    return None


def fine_tuned_fusion_stage(city: City, cfg: RunConfig, cache, sv_dir: Path, rs_dir: Path,
                            text_dir: Path, fine_tunes: str = "heads") -> Path:
    """The fusion stage with the end-to-end option: both triplet-trained encoders train on with the
    fusion and their own triplets (:func:`musecl.fusion.fine_tune_heads` or ``fine_tune_cnns``).
    The folder adds the fine-tuned encoders and embeddings (``encoder-rs/``, ``embeddings-rs.csv``,
    ``sv`` likewise). Raises ValueError when the settings do not allow it."""
    if reason := fine_tuning_unsupported(cfg, fine_tunes):
        raise ValueError(reason)
    dirs = {"sv": sv_dir, "rs": rs_dir}
    upstream = [entry_key(d) for d in (sv_dir, rs_dir, text_dir)]
    settings = fusion_settings(cfg)
    key = {"upstream": upstream, "fine_tune": fine_tunes, "tables": FINE_TUNED_FORMAT,
           "head_lr_factor": settings.head_lr_factor, **fusion_key(cfg)}
    if fine_tunes == "cnns":  # the CNNs train on the device, in its precision
        key.update(precision_key(cfg.machine.amp, cfg.machine.device))

    def compute(folder: Path) -> None:
        triplets = {p: Triplets.read_frame(dirs[p] / TRIPLETS_CSV) for p in dirs}
        poi = load_table(text_dir / EMBEDDINGS_CSV)
        # one objective for both kinds: both are heads (with their reconstruction term) or both CNNs
        objective = TripletObjective(cfg.image.triplet_loss, cfg.image.resolved_margin,
                                     reconstruction_weight(cfg, SATELLITE))
        if fine_tunes == "heads":
            saved, heads, features = {}, {}, {}
            for kind, p in PREFIX.items():
                saved[p] = read_saved_config(dirs[p] / "encoder")
                heads[p] = load_head(dirs[p] / "encoder")
                features[p] = backbone_features(city, cfg, kind, cache)
            model, history = fine_tune_heads(heads, features, triplets, poi, objective, settings)
            embedded = {p: embed_features(getattr(model, f"encoder_{p}"), features[p].reindex(city.region_ids),
                                          prefix=COLUMN_PREFIX[kind]) for kind, p in PREFIX.items()}
            for p in dirs:
                save_head(getattr(model, f"encoder_{p}"), folder / f"encoder-{p}",
                          {k: saved[p][k] for k in ("arch", "weights_source", "backbone")})
        else:
            machine = cfg.machine
            stores = {p: city_image_store(city, kind, image_settings(cfg, kind)["image_size"], cache, False,
                                          machine.image_store) for kind, p in PREFIX.items()}
            cnns = {p: load_encoder(dirs[p] / "encoder") for p in dirs}
            model, history = fine_tune_cnns(cnns, stores, triplets, poi, objective, settings,
                                            device=machine.device, amp=machine.amp)
            embedded = {p: embed_regions(getattr(model, f"encoder_{p}"), stores[p], region_ids=city.region_ids,
                                         amp=machine.amp) for p in dirs}  # on the device it trained on
            model.cpu()
            for p in dirs:
                save_encoder(getattr(model, f"encoder_{p}"), folder / f"encoder-{p}")
        for kind, p in PREFIX.items():
            save_table(embedded[p], folder / FINE_TUNED_TABLES[kind])
        _save_fusion(folder, model.fusion, history, embedded["sv"], embedded["rs"])

    return cache.get_or_compute("fusion-fine-tuned", key, compute)


@register("MuseCL")
class MuseCL(StagedMethod):
    """The full method: fused image embedding (eq. 10) aligned to POI text (eq. 11). On a city with
    one image kind the fusion reads it alone (:func:`image_views`); ``views`` says which."""
    needs = (POI,)
    needs_any = ((SATELLITE,), (STREETVIEW, MOBILITY))
    STAGES = ("satellite", "streetview", "text", "fusion")
    cost = 3  # trains both image encoders, which several other methods then reuse

    def fit_stages(self, city: City) -> dict[str, Path]:
        cfg = self.config
        images = {kind: image_stage(city, cfg, kind, self.cache, self.progress) for kind in image_views(city)}
        text = text_stage(city, cfg, self.cache)
        return {**images, "text": text, "fusion": self._fusion_stage(city, images, text)}

    def _fusion_stage(self, city: City, images: dict[str, Path], text: Path) -> Path:
        return fusion_stage(city, self.config, self.cache, images.get(STREETVIEW),
                            images.get(SATELLITE), text)

    @property
    def views(self) -> tuple[str, ...]:
        """The image kinds fused ("satellite", "streetview"): both, or the one the city has."""
        self._check_fitted()
        return tuple(kind for kind in (SATELLITE, STREETVIEW) if kind in self.stage_dirs)

    def attention(self) -> pd.DataFrame:
        """beta of eq. 9 per region: the weight of its street-view and satellite embeddings."""
        return self.stage_table("fusion", ATTENTION_CSV)

    def fusion_model(self) -> "AttentiveFusion | AlignedFusion":
        """The trained fusion (eq. 8-11), read back from its stage folder."""
        self._check_fitted()
        return load_fusion(self.stage_dirs["fusion"] / "fusion")

    def transform(self, city: City) -> pd.DataFrame:
        """The region embeddings e^Image (eq. 10) of the city the method was fitted on."""
        self._check_fitted(city)
        return self.stage_table("fusion").reindex(city.region_ids)


@register("MuseCL (fine-tuned heads)")
class MuseCLFineTunedHeads(MuseCL):
    """MuseCL with the end-to-end option on feature heads: eq. 11's loss also trains the two image
    heads (their triplet losses stay as terms). Needs rs_arch and sv_arch "lite0-head", and both
    image kinds (it fine-tunes the two heads together)."""
    needs = (SATELLITE, STREETVIEW, POI, MOBILITY)
    needs_any = ()
    fine_tunes = "heads"

    @classmethod
    def settings_reason(cls, config: RunConfig) -> str | None:
        return fine_tuning_unsupported(config, cls.fine_tunes)

    def fit_stages(self, city: City) -> dict[str, Path]:
        if reason := self.settings_reason(self.config):  # before any stage trains
            raise ValueError(f"{self.name}: {reason}")
        return super().fit_stages(city)

    def _fusion_stage(self, city: City, images: dict[str, Path], text: Path) -> Path:
        return fine_tuned_fusion_stage(city, self.config, self.cache, images[STREETVIEW],
                                       images[SATELLITE], text, self.fine_tunes)

    def stage_table(self, stage: str, table: str = EMBEDDINGS_CSV) -> pd.DataFrame:
        """As MuseCL's, but the image embeddings are the fine-tuned encoders'; their ``history`` and
        triplets stay those of the training fine-tuning starts from."""
        if stage in FINE_TUNED_TABLES and table == EMBEDDINGS_CSV:
            return super().stage_table("fusion", FINE_TUNED_TABLES[stage])
        return super().stage_table(stage, table)


@register("MuseCL (fine-tuned CNNs)")
class MuseCLFineTunedCNNs(MuseCLFineTunedHeads):
    """MuseCL with the end-to-end option on CNN encoders, for a GPU: eq. 11's loss also trains the
    two whole CNNs, on images (their triplet losses stay as terms). Needs rs_arch and sv_arch CNNs
    (resnet18, inception_v3 or tiny) and both image kinds; runs on ``device`` in ``amp``."""
    fine_tunes = "cnns"
