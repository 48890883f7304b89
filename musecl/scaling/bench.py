"""``musecl bench``: how fast the pieces of MuseCL run, measured in one call, reported as JSON.

What is measured (medians over repeats; machine, threads and versions recorded):

* **Encoder training loop vs the model's ceiling.** The real loop (:func:`train_image_encoder`:
  the :class:`~musecl.training.Trainer`, :class:`TripletImageDataset` drawing one random image
  per role from an in-memory uint8 :class:`ImageStore`, augmentation on the batch, the triplet
  loss on one stacked forward pass of 3B images, the Adam step) against the *raw* training step
  of the same model on one fixed synthetic batch of the same 3B images: forward, loss, backward
  **and the Adam step in both** (the Trainer always steps; a fresh optimizer per repeat in both).
  The ratio loop / raw is what the data pipeline and bookkeeping cost; the goal is >= 0.9.
* **CPU settings.** ResNet-18 @64 forward + backward (:func:`throughput`, no
  optimizer) with ``channels_last`` on/off and 1 or 2 threads.
* **Triplet sampling** (:func:`musecl.sampling.sampling_benchmark`): time and peak traced memory
  for N regions, and the growth exponent (slope of log time against log N).
* **POI text** (skip-gram, eq. 7) seconds per million processed tokens (corpus tokens x epochs);
  **fusion** (eq. 8-11) training time; one **MLP probe** fit.
* **End to end:** the wall time of :func:`musecl.runner.run` (what ``musecl run`` does) on the
  toy city, with a fresh cache (``params/ci.yaml``; the quick mode uses ``params/smoke.yaml``).

No timing is asserted anywhere: the benchmark reports, the tests check correctness.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from musecl.city import REGION_ID, SATELLITE, STREETVIEW
from musecl.io import atomic_save_json
from musecl.scaling.bench_options import add_arguments
from musecl.training import amp_dtype, resolve_device

if TYPE_CHECKING:  # annotations only: the image module imports torch
    from musecl.encoders.image import ImageStore

BENCH_JSON = "bench.json"
GOALS = {"train_vs_raw_ratio": 0.9, "sampling_100k_s": 10.0, "sampling_100k_peak_mb": 1024.0}
PARAMS_DIR = Path(__file__).resolve().parents[2] / "params"


@dataclass(frozen=True)
class BenchSizes:
    """How big each measurement is. :data:`QUICK` (about a minute on 2 cores without the end-to-end
    run) and :data:`FULL` (the issue's sizes) are the presets; tests use tiny ones."""

    # encoders: the architectures, input sizes and batches of params/cnn.yaml
    rs_arch: str = "resnet18"
    rs_size: int = 64
    rs_batch: int = 32
    sv_arch: str = "inception_v3"
    sv_size: int = 75
    sv_batch: int = 16
    steps: int = 10  # training steps per repeat (one epoch of the loop = steps full batches)
    repeats: int = 5
    warmup: int = 2
    # channels_last / threads grid (ResNet-18 @64, forward + backward)
    grid_arch: str = "resnet18"
    grid_size: int = 64
    grid_batch: int = 96  # 3 x 32: what the satellite loop feeds the model per step
    grid_threads: tuple[int, ...] = (1, 2)
    grid_steps: int = 5
    # sampling
    sampling_n: tuple[int, ...] = (1_000, 10_000, 100_000)
    sampling_dims: tuple[int, ...] = (2, 30)
    sampling_triplets: int = 10_000
    sampling_repeats: int = 3
    # POI text, fusion, probe
    text_tokens: int = 2_000_000  # processed tokens = corpus tokens x epochs
    text_epochs: int = 5
    fusion_regions: int = 2_000  # a real city (the paper's have 1,000-3,000 regions)
    fusion_epochs: int = 50
    probe_rows: int = 360  # the training part of the toy city's 600 regions (60%)
    probe_epochs: int = 300
    small_repeats: int = 3
    # end to end
    end_to_end_params: str = "ci.yaml"
    end_to_end_regions: int = 600


FULL = BenchSizes()
QUICK = BenchSizes(steps=2, repeats=3, warmup=1, grid_steps=2, sampling_n=(1_000, 10_000),
                   sampling_repeats=2, text_tokens=500_000, fusion_regions=600, fusion_epochs=20,
                   probe_epochs=50, end_to_end_params="smoke.yaml")


# ------------------------------------------------------------------------------------------
# small helpers


def median(values: Sequence[float]) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median of no values")
    return float(np.median(values))


def growth_exponent(n: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) against log(n): time grows like n ** exponent."""
    n, t = np.asarray(n, dtype=float), np.asarray(seconds, dtype=float)
    if len(n) != len(t) or len(np.unique(n)) < 2:
        raise ValueError(f"need times for at least two different sizes; got n={n.tolist()}")
    if (n <= 0).any() or (t <= 0).any():
        raise ValueError(f"sizes and times must be positive; got n={n.tolist()}, "
                         f"seconds={t.tolist()}")
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def throughput_ratio(loop_images_per_s: float, raw_images_per_s: float) -> float:
    """Loop throughput as a fraction of the raw training step's (1.0: the pipeline costs nothing)."""
    if not raw_images_per_s > 0 or not loop_images_per_s > 0:
        raise ValueError(f"throughputs must be positive; got loop {loop_images_per_s}, raw {raw_images_per_s}")
    return float(loop_images_per_s) / float(raw_images_per_s)


def machine_info() -> dict:
    """What a reader needs to compare two benchmark runs: hardware, threads, software, load."""
    import sklearn
    import torchvision

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or None, "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "sklearn": sklearn.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import gensim

        info["gensim"] = gensim.__version__
    except ImportError:
        info["gensim"] = None
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


class _threads:
    """Temporarily run torch on ``n`` threads."""

    def __init__(self, n: int):
        self.n, self.old = int(n), torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


# ------------------------------------------------------------------------------------------
# encoders: training loop vs raw training step


def synthetic_store(kind: str, n_regions: int, size: int, seed: int = 0) -> "ImageStore":
    """Random uint8 images in memory: one per region (satellite) or 1-4 per region (street view),
    like the toy city. Content does not change the speed of a CNN on a CPU."""
    from musecl.encoders.image import ImageStore

    g = torch.Generator().manual_seed(seed)
    if kind == SATELLITE:
        counts = torch.ones(n_regions, dtype=torch.int64)
    else:
        counts = torch.randint(1, 5, (n_regions,), generator=g)
    images = torch.randint(0, 256, (int(counts.sum()), 3, size, size), dtype=torch.uint8, generator=g)
    return ImageStore(images, [f"r{i:06d}" for i in range(n_regions)], counts, kind=kind)


def synthetic_triplets(store, n_triplets: int, seed: int = 0):
    """Real triplets (the paper's sampling rule) over the store's regions, from random features
    shaped like the ones MuseCL pairs on: (inflow, outflow) for street view, 30 POI counts for
    satellite."""
    from musecl.sampling import TripletSampler

    rng = np.random.default_rng(seed)
    if store.kind == STREETVIEW:
        features = rng.lognormal(5.0, 1.5, size=(store.n_regions, 2))
    else:
        features = rng.poisson(rng.gamma(0.3, 3.0, size=(store.n_regions, 30))).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relaxed negatives on duplicate-heavy counts: irrelevant here
        return TripletSampler(n_triplets=n_triplets, seed=seed).sample(features, region_ids=store.region_ids)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model: torch.nn.Module, batch: int = 32, input_size: int = 64, steps: int = 10, warmup: int = 2,
               device: str | torch.device | None = "cpu", channels: int = 3) -> float:
    """Images per second of raw forward + backward on synthetic uint8 images (no data pipeline,
    no optimizer): the ceiling the trainer's ``images_per_s`` is compared with."""
    device = resolve_device(device)
    model = model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, channels, input_size, input_size), dtype=torch.uint8,
                      generator=generator).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().square().mean().backward()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def raw_step_throughput(model: torch.nn.Module, objective: Callable, images: torch.Tensor,
                        steps: int, lr: float = 5e-4,
                        precision: torch.dtype | None = None) -> float:
    """Images per second of the bare training step on one fixed batch (on the model's device):
    forward, loss, backward and the same Adam step the Trainer takes (a fresh optimizer, as each
    loop repeat has), under the same autocast ``precision`` and, for float16, gradient scaler."""
    model.train()
    device = images.device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)
    scaler = torch.amp.GradScaler(device.type) if precision == torch.float16 else None
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=precision or torch.float32,
                            enabled=precision is not None):
            loss = objective(model, images)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    _synchronize(device)
    return len(images) * steps / (time.perf_counter() - start)


def bench_encoder(kind: str, arch: str, input_size: int, batch_size: int, steps: int = 3,
                  repeats: int = 3, warmup: int = 1, loss: str = "cosine", seed: int = 0,
                  device: str = "cpu", amp: str = "off", store_on_device: bool = False,
                  channels_last: bool = False) -> dict:
    """Median images/s of the real training loop and of the raw training step, and their ratio.

    Each repeat runs the raw step for ``steps`` steps, then one epoch of
    :func:`train_image_encoder` over exactly ``steps`` full batches of triplets (no validation,
    no checkpoints), on the same model, input size, batch, thread count, device and ``amp``.
    On a GPU the loop's images come from host memory (each batch copied through pinned memory)
    or, with ``store_on_device``, from a store already on the GPU.
    """
    from musecl.encoders.image import (ImageTrainingConfig, TripletObjective, build_encoder,
                                       train_image_encoder)

    device = resolve_device(device)
    precision = amp_dtype(amp, device)

    if min(steps, repeats, batch_size) < 1 or warmup < 0:
        raise ValueError(f"need steps, repeats, batch_size >= 1 and warmup >= 0; "
                         f"got {steps}, {repeats}, {batch_size}, {warmup}")
    n_triplets = steps * batch_size
    store = synthetic_store(kind, max(64, n_triplets), input_size, seed)
    triplets = synthetic_triplets(store, n_triplets, seed)
    encoder = build_encoder(arch, 128, "random", seed=seed, channels_last=channels_last).to(device)
    objective = TripletObjective(loss)
    g = torch.Generator().manual_seed(seed + 1)
    fixed = store.images[torch.randint(0, len(store), (3 * batch_size,), generator=g)].to(device)
    if store_on_device:
        store = store.to(device)
    if warmup:
        # allocator, kernel caches
        raw_step_throughput(encoder, objective, fixed, warmup, precision=precision)
    config = ImageTrainingConfig(loss=loss, epochs=1, batch_size=batch_size, val_fraction=0.0,
                                 seed=seed, progress=False, device=str(device), amp=amp,
                                 store_on_device=store_on_device)
    loop, raw = [], []
    for _ in range(repeats):
        raw.append(raw_step_throughput(encoder, objective, fixed, steps, precision=precision))
        _, history = train_image_encoder(encoder, store, triplets, config)
        loop.append(float(history["images_per_s"].iloc[-1]))
    no_optimizer = throughput(encoder, batch=3 * batch_size, input_size=input_size, steps=steps,
                              warmup=0, device=device)
    loop_median, raw_median = median(loop), median(raw)
    return {"kind": kind, "arch": arch, "input_size": int(input_size),
            "batch_triplets": int(batch_size), "images_per_step": 3 * int(batch_size),
            "steps": int(steps), "repeats": int(repeats), "threads": torch.get_num_threads(),
            "optimizer_step": "in both", "device": str(device),
            "amp": str(precision) if precision is not None else "off",
            "channels_last": bool(channels_last),
            "store": "device" if store_on_device else "host",
            "loop_images_per_s": loop_median, "raw_images_per_s": raw_median,
            "ratio": throughput_ratio(loop_median, raw_median),
            "paired_ratio_median": median([a / b for a, b in zip(loop, raw)]),
            "loop_samples": loop, "raw_samples": raw,
            "raw_fwd_bwd_no_optimizer_images_per_s": no_optimizer}


def bench_compile(arch: str = "resnet18", input_size: int = 224, batch_size: int = 32, device: str = "cuda",
                  amp: str = "bf16", channels_last: bool = True, steps: int = 20, seed: int = 0) -> dict:
    """Does ``torch.compile`` pay? The bare training step eager and compiled (same model, batch,
    precision), and the seconds the first compiled steps took (compilation)."""
    from musecl.encoders.image import TripletObjective, build_encoder

    device = resolve_device(device)
    precision = amp_dtype(amp, device)
    objective = TripletObjective("cosine")
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (3 * batch_size, 3, input_size, input_size), dtype=torch.uint8,
                           generator=g).to(device)
    eager = build_encoder(arch, 128, "random", seed=seed, channels_last=channels_last).to(device)
    raw_step_throughput(eager, objective, images, 3, precision=precision)
    eager_rate = raw_step_throughput(eager, objective, images, steps, precision=precision)
    compiled = torch.compile(build_encoder(arch, 128, "random", seed=seed, channels_last=channels_last).to(device))
    start = time.perf_counter()
    raw_step_throughput(compiled, objective, images, 3, precision=precision)
    compile_seconds = time.perf_counter() - start
    compiled_rate = raw_step_throughput(compiled, objective, images, steps, precision=precision)
    return {"arch": arch, "input_size": int(input_size), "batch_triplets": int(batch_size), "device": str(device),
            "amp": str(precision) if precision is not None else "off", "channels_last": bool(channels_last),
            "eager_images_per_s": eager_rate, "compiled_images_per_s": compiled_rate,
            "speedup": compiled_rate / eager_rate, "compile_seconds": compile_seconds,
            "images_to_repay_compilation": (compile_seconds / (1 / eager_rate - 1 / compiled_rate)
                                            if compiled_rate > eager_rate else None)}


PAPER_ENCODERS = ((SATELLITE, "resnet18", 224, 32), (STREETVIEW, "inception_v3", 299, 16))


def bench_accelerator(device: str = "cuda", encoders=PAPER_ENCODERS, amps: Sequence[str] = ("off", "bf16", "fp16"),
                      steps: int = 10, repeats: int = 3, warmup: int = 3, larger_batch: int = 4,
                      compile: bool = False, progress: bool = True) -> dict:
    """The encoders at the paper's input sizes on a GPU: loop vs bare step for each precision,
    with the images on the host (copied per batch through pinned memory) and on the GPU; then,
    under the fastest of those, channels_last, and a ``larger_batch`` times larger batch; with
    ``compile``, :func:`bench_compile` under the fastest setting. What the scaling appendix's plan
    is measured with."""
    device = resolve_device(device)
    rows, compiled = [], []
    for kind, arch, size, batch in encoders:
        settings = [(amp, False, False) for amp in amps] + [(amp, True, False) for amp in amps]
        for amp, on_device, channels_last in settings:
            if progress:
                print(f"[bench] {arch} @{size} batch {batch}: amp {amp}, store on "
                      f"{'device' if on_device else 'host'}", file=sys.stderr, flush=True)
            rows.append(bench_encoder(kind, arch, size, batch, steps, repeats, warmup, device=str(device), amp=amp,
                                      store_on_device=on_device, channels_last=channels_last))
        best = max((r for r in rows if r["kind"] == kind), key=lambda r: r["loop_images_per_s"])
        best_amp = "off" if best["amp"] == "off" else {"torch.bfloat16": "bf16", "torch.float16": "fp16"}[best["amp"]]
        on_device = best["store"] == "device"
        rows.append(bench_encoder(kind, arch, size, batch, steps, repeats, warmup, device=str(device), amp=best_amp,
                                  store_on_device=on_device, channels_last=True))
        if larger_batch > 1:
            rows.append(bench_encoder(kind, arch, size, batch * larger_batch, steps, repeats, warmup,
                                      device=str(device), amp=best_amp, store_on_device=on_device, channels_last=True))
        if compile:
            compiled.append(bench_compile(arch, size, batch, str(device), best_amp, channels_last=True))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"device": str(device), "device_name": name, "rows": rows, "compile": compiled,
            "fastest": {kind: max((r for r in rows if r["kind"] == kind), key=lambda r: r["loop_images_per_s"])
                        for kind, _, _, _ in encoders}}


def bench_cpu_settings(arch: str = "resnet18", input_size: int = 64, batch: int = 96,
                       threads: Sequence[int] = (1, 2), steps: int = 3, warmup: int = 1, seed: int = 0) -> dict:
    """Forward + backward images/s with channels_last off/on and each thread count; the fastest."""
    from musecl.encoders.image import build_encoder

    rows = []
    for channels_last in (False, True):
        model = build_encoder(arch, 128, "random", channels_last=channels_last, seed=seed)
        for n in threads:
            with _threads(n):
                rate = throughput(model, batch=batch, input_size=input_size, steps=steps, warmup=warmup)
            rows.append({"arch": arch, "input_size": int(input_size), "batch": int(batch),
                         "channels_last": channels_last, "threads": int(n), "images_per_s": rate})
    best = max(rows, key=lambda r: r["images_per_s"])
    return {"rows": rows, "fastest": {"channels_last": best["channels_last"], "threads": best["threads"]}}


# ------------------------------------------------------------------------------------------
# sampling, text, fusion, probe


def bench_sampling(n_regions: Sequence[int] = (1_000, 10_000), dims: Sequence[int] = (2, 30),
                   n_triplets: int = 10_000, repeats: int = 2, seed: int = 0) -> dict:
    """Median seconds and the largest peak traced memory per (N, d), and the growth exponent per d."""
    from musecl.sampling import sampling_benchmark

    runs = [pd.DataFrame(sampling_benchmark(n_regions, dims, n_triplets=n_triplets, seed=seed))
            for _ in range(max(1, repeats))]
    table = (pd.concat(runs).groupby(["n_regions", "dim"], as_index=False)
             .agg(seconds=("seconds", "median"), peak_traced_mb=("peak_traced_mb", "max"),
                  n_exclude=("n_exclude", "first"), n_relaxed=("n_relaxed", "max")))
    exponents = {}
    if len(set(n_regions)) >= 2:
        for d, part in table.groupby("dim"):
            exponents[str(d)] = growth_exponent(part["n_regions"], part["seconds"].clip(lower=1e-4))
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in table.to_dict("records")]
    return {"n_triplets": int(n_triplets), "repeats": int(repeats), "rows": rows, "exponent": exponents}


class _Corpus:
    """Just enough of a City for :meth:`PoiTextEncoder.fit` (``name``, ``pois``)."""

    def __init__(self, pois: pd.DataFrame):
        self.name, self.pois = "synthetic corpus", pois


def synthetic_pois(n_tokens: int, n_categories: int = 30, vocabulary: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """POIs whose category + text add up to about ``n_tokens`` tokens; words Zipf-distributed."""
    from musecl.city import CATEGORY, TEXT

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, size=max(1, n_tokens // 7))  # text words per POI; +1 category token
    n_pois = int(np.searchsorted(np.cumsum(lengths + 1), n_tokens)) + 1
    lengths = lengths[:n_pois]
    words = np.array([f"w{i}" for i in range(vocabulary)])
    p = 1.0 / np.arange(1, vocabulary + 1)
    drawn = words[rng.choice(vocabulary, size=int(lengths.sum()), p=p / p.sum())]
    texts = [" ".join(chunk) for chunk in np.split(drawn, np.cumsum(lengths)[:-1])]
    return pd.DataFrame({REGION_ID: [f"r{i % 1000:06d}" for i in range(n_pois)],
                         CATEGORY: [f"category_{c}" for c in rng.integers(0, n_categories, n_pois)],
                         TEXT: texts})


def bench_text(n_tokens: int = 500_000, epochs: int = 5, repeats: int = 1, seed: int = 0) -> dict:
    """Skip-gram + hierarchical softmax (eq. 7) training time per million processed tokens."""
    from musecl.encoders.text import PoiTextEncoder, TextEncoderConfig, poi_sentences

    pois = synthetic_pois(max(1, n_tokens // epochs), seed=seed)
    corpus_tokens = sum(len(s) for s in poi_sentences(pois))
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        PoiTextEncoder(TextEncoderConfig(epochs=epochs, seed=seed)).fit(_Corpus(pois))
        seconds.append(time.perf_counter() - start)
    s = median(seconds)
    processed = corpus_tokens * epochs
    return {"corpus_tokens": int(corpus_tokens), "epochs": int(epochs), "processed_tokens": int(processed),
            "seconds": s, "seconds_per_million_tokens": s / processed * 1e6, "samples": seconds}


def _random_table(n: int, d: int, prefix: str, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(rng.standard_normal((n, d)).astype(np.float32),
                        index=pd.Index([f"r{i:06d}" for i in range(n)], name=REGION_ID),
                        columns=[f"{prefix}_{k}" for k in range(d)])


def bench_fusion(n_regions: int = 600, epochs: int = 50, dim: int = 128, repeats: int = 3, seed: int = 0) -> dict:
    """Training time of attentive fusion with InfoNCE (eq. 8-11) on random 128-d embeddings, as the
    library trains it: on one thread (a small model, all per-operation overhead)."""
    from musecl.fusion import FusionConfig, train_fusion

    rng = np.random.default_rng(seed)
    sv, rs, poi = (_random_table(n_regions, dim, p, rng) for p in ("sv", "rs", "poi"))
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            train_fusion(sv, rs, poi, FusionConfig(epochs=epochs, seed=seed))
        seconds.append(time.perf_counter() - start)
    s = median(seconds)
    return {"n_regions": int(n_regions), "epochs": int(epochs), "threads": 1, "seconds": s,
            "seconds_per_1k_region_epochs": s / (n_regions * epochs) * 1e3}


def bench_probe(n_rows: int = 360, epochs: int = 100, dim: int = 128, repeats: int = 3, seed: int = 0) -> dict:
    """One MLP probe fit (the paper's [512, 256, 128, 64] head) for exactly ``epochs`` epochs."""
    from musecl.evaluation import MLPProbe, ProbeConfig

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, dim))
    y = x[:, 0] + 0.1 * rng.standard_normal(n_rows)
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        MLPProbe(ProbeConfig(max_epochs=epochs, patience=epochs), seed=seed).fit(x, y)
        seconds.append(time.perf_counter() - start)
    s = median(seconds)
    return {"n_rows": int(n_rows), "epochs": int(epochs), "seconds": s, "seconds_per_epoch": s / epochs,
            "samples": seconds}


def bench_end_to_end(params_file: str | os.PathLike, n_regions: int = 600) -> dict:
    """Wall time of ``musecl run`` (:func:`musecl.runner.run`) on a freshly generated toy city with
    an empty cache, so every stage is really computed. City generation is timed apart."""
    from musecl.config import RunConfig
    from musecl.datasets.toy import make_toy_city
    from musecl.runner import run

    params_file = Path(params_file)
    config = RunConfig.from_yaml(params_file)
    with tempfile.TemporaryDirectory(prefix="musecl-bench-") as tmp:
        start = time.perf_counter()
        city = make_toy_city(Path(tmp) / "toy", n_regions=n_regions, seed=0, progress=False)
        city_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = run(city, Path(tmp) / "run", config, cache_dir=Path(tmp) / "cache", progress=False)
        seconds = time.perf_counter() - start
        run_json = json.loads((Path(tmp) / "run" / "run.json").read_text())
    return {"params": params_file.name, "n_regions": int(n_regions), "seconds": seconds,
            "city_generation_seconds": city_seconds, "method_seconds": run_json.get("seconds"),
            "result_rows": int(len(results))}


# ------------------------------------------------------------------------------------------
# the whole benchmark


def _headline(result: dict) -> dict:
    enc = {e["kind"]: e for e in result["encoders"]}
    head: dict = {"quick": result["settings"]["quick"]}
    for kind, short in ((SATELLITE, "rs"), (STREETVIEW, "sv")):
        if kind in enc:
            head[f"train_vs_raw_ratio_{short}"] = round(enc[kind]["ratio"], 3)
            head[f"loop_images_per_s_{short}"] = round(enc[kind]["loop_images_per_s"], 1)
            head[f"raw_images_per_s_{short}"] = round(enc[kind]["raw_images_per_s"], 1)
    sampling = result["sampling"]
    largest = max(r["n_regions"] for r in sampling["rows"])
    at_largest = [r for r in sampling["rows"] if r["n_regions"] == largest]
    head["sampling_n_max"] = largest
    head["sampling_s_at_n_max"] = round(max(r["seconds"] for r in at_largest), 3)
    head["sampling_peak_mb_at_n_max"] = max(r["peak_traced_mb"] for r in at_largest)
    if sampling["exponent"]:
        head["sampling_exponent"] = round(max(sampling["exponent"].values()), 2)
    if largest == 100_000:
        head["sampling_100k_s"] = head["sampling_s_at_n_max"]
        head["sampling_100k_peak_mb"] = head["sampling_peak_mb_at_n_max"]
    head["text_s_per_million_tokens"] = round(result["text"]["seconds_per_million_tokens"], 2)
    head["fusion_s"] = round(result["fusion"]["seconds"], 2)
    head["fusion_epochs"] = result["fusion"]["epochs"]
    head["probe_s"] = round(result["probe"]["seconds"], 2)
    if result.get("cpu_settings"):
        head["fastest_cpu_setting"] = result["cpu_settings"]["fastest"]
    if result.get("end_to_end"):
        head["end_to_end_s"] = round(result["end_to_end"]["seconds"], 1)
        head["end_to_end_params"] = result["end_to_end"]["params"]
    goals = {}
    for short in ("rs", "sv"):
        if f"train_vs_raw_ratio_{short}" in head:
            goals[f"ratio_{short}>=0.9"] = head[f"train_vs_raw_ratio_{short}"] >= GOALS["train_vs_raw_ratio"]
    if "sampling_100k_s" in head:
        goals["sampling_100k<10s"] = head["sampling_100k_s"] < GOALS["sampling_100k_s"]
        goals["sampling_100k<1GB"] = head["sampling_100k_peak_mb"] < GOALS["sampling_100k_peak_mb"]
    head["goals_met"] = goals
    head["threads"] = result["machine"]["torch_threads"]
    head["seconds"] = round(result["seconds"], 1)
    return head


def run_benchmark(quick: bool = False, out: str | os.PathLike | None = None, include_end_to_end: bool = True,
                  *, sizes: BenchSizes | None = None, params_file: str | os.PathLike | None = None,
                  cpu_settings: bool = True, progress: bool = True) -> dict:
    """Measure everything listed in the module docstring; return the summary (``result["headline"]``
    holds the numbers that matter) and, with ``out``, write it to ``out/bench.json`` atomically.

    ``sizes`` overrides the :data:`QUICK` / :data:`FULL` presets; ``params_file`` the settings of the
    end-to-end run (default ``params/smoke.yaml`` quick, ``params/ci.yaml`` full).
    """
    sizes = sizes or (QUICK if quick else FULL)
    if include_end_to_end:
        params_file = Path(params_file) if params_file is not None else PARAMS_DIR / sizes.end_to_end_params
        if not params_file.is_file():
            raise FileNotFoundError(f"end-to-end settings {params_file} not found; pass params_file= "
                                    "(musecl bench --params FILE) or include_end_to_end=False")

    stage_seconds: dict[str, float] = {}
    clock = [time.perf_counter(), None]

    def log(message: str, stage: str | None = None) -> None:
        now = time.perf_counter()
        if clock[1] is not None:
            stage_seconds[clock[1]] = round(now - clock[0], 2)
        clock[:] = [now, stage]
        if progress and stage is not None:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    result: dict = {"machine": machine_info(),
                    "settings": {"quick": bool(quick), **dataclasses.asdict(sizes)}}
    result["encoders"] = []
    for kind, arch, size, batch in ((SATELLITE, sizes.rs_arch, sizes.rs_size, sizes.rs_batch),
                                    (STREETVIEW, sizes.sv_arch, sizes.sv_size, sizes.sv_batch)):
        log(f"encoder {kind}: {arch} @{size}, batch {batch} triplets, {sizes.repeats} x {sizes.steps} steps",
            f"encoder_{kind}")
        result["encoders"].append(bench_encoder(kind, arch, size, batch, sizes.steps, sizes.repeats, sizes.warmup))
    if cpu_settings:
        log(f"channels_last and threads {sizes.grid_threads}: {sizes.grid_arch} @{sizes.grid_size}", "cpu_settings")
        result["cpu_settings"] = bench_cpu_settings(sizes.grid_arch, sizes.grid_size, sizes.grid_batch,
                                                    sizes.grid_threads, sizes.grid_steps, sizes.warmup)
    log(f"triplet sampling for N = {list(sizes.sampling_n)}", "sampling")
    result["sampling"] = bench_sampling(sizes.sampling_n, sizes.sampling_dims, sizes.sampling_triplets,
                                        sizes.sampling_repeats)
    log(f"POI text: {sizes.text_tokens:,} tokens", "text")
    result["text"] = bench_text(sizes.text_tokens, sizes.text_epochs)
    log(f"fusion: {sizes.fusion_regions} regions x {sizes.fusion_epochs} epochs", "fusion")
    result["fusion"] = bench_fusion(sizes.fusion_regions, sizes.fusion_epochs, repeats=sizes.small_repeats)
    log(f"probe: {sizes.probe_rows} rows x {sizes.probe_epochs} epochs", "probe")
    result["probe"] = bench_probe(sizes.probe_rows, sizes.probe_epochs, repeats=sizes.small_repeats)
    result["end_to_end"] = None
    if include_end_to_end:
        log(f"end to end: musecl run on the toy city with {params_file.name}", "end_to_end")
        result["end_to_end"] = bench_end_to_end(params_file, sizes.end_to_end_regions)
    log("done")
    result["stage_seconds"] = stage_seconds
    result["seconds"] = time.perf_counter() - start
    result["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    result["headline"] = _headline(result)
    if out is not None:
        atomic_save_json(Path(out) / BENCH_JSON, result)
    return result


def format_report(result: dict) -> str:
    """The summary as indented JSON without the headline, then the headline on the last line."""
    body = {k: v for k, v in result.items() if k != "headline"}
    return json.dumps(body, indent=2, default=str) + "\n" + json.dumps({"headline": result["headline"]})


# ------------------------------------------------------------------------------------------
# command line


def command(args: argparse.Namespace) -> int:
    if args.device != "cpu":
        result = {"machine": machine_info(),
                  "accelerator": bench_accelerator(args.device, steps=5 if args.quick else 10, compile=args.compile)}
        if args.out is not None:
            atomic_save_json(Path(args.out) / BENCH_JSON, result)
        print(json.dumps(result, indent=2, default=str), flush=True)
        return 0
    result = run_benchmark(quick=args.quick, out=args.out, include_end_to_end=args.end_to_end,
                           params_file=args.params)
    print(format_report(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="musecl bench", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
