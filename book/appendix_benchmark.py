# ---
# jupyter:
#   schedule:
#     alone: true  # it times the machine: nothing else runs beside it
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How fast it runs: the benchmark
#
# This appendix runs `musecl bench` on the machine that built the book and reads its report: how
# much of a CNN's raw training speed the real triplet-training loop (eq. 5-6) keeps, how triplet
# sampling (eq. 1-4) grows with the number of regions, and what the POI text (eq. 7), fusion
# (eq. 8-11) and probes cost. {doc}`appendix_scaling` plans what a country and a GPU would need.

# %% tags=["parameters"]
out_dir = "../build/work"  # bench.json is written to <out_dir>/bench
quick = True  # small sizes (a minute); False: up to 100k regions
end_to_end = False  # also time `musecl run` on the toy city (minutes)

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from musecl.scaling.bench import run_benchmark

# %% [markdown]
# ## Comparing like with like
#
# The training loop's speed is only meaningful next to a ceiling: the same model, fed the same
# number of images per step, at the same input size and thread count, with nothing else to do.
# A triplet step pushes $3B$ images through the encoder in one stacked forward pass (anchors,
# positives, negatives), so the ceiling is a bare step on one fixed batch of $3B$ synthetic
# uint8 images: forward, the triplet loss, backward **and the same Adam step** the trainer takes.
#
# ```{literalinclude} ../musecl/scaling/bench.py
# :pyobject: raw_step_throughput
# ```
#
# The loop is the real one, `train_image_encoder`: triplets sampled by the paper's rule, one
# random image per role drawn from an in-memory uint8 image store, rotations or flips applied to
# the whole batch and the loss bookkeeping (the progress bar off, as in the book's runs). Its
# images come from memory, so no disk is timed.
# Each repeat times the bare step, then one epoch of the loop, so both see the same load on a
# shared machine; the report gives the medians and their ratio (the goal is at least 0.9).
#
# ```{literalinclude} ../musecl/scaling/bench.py
# :pyobject: bench_encoder
# ```
#
# Sampling time is measured for growing numbers of regions $N$ with the number of triplets fixed
# (10,000, the official count); the growth exponent $k$ in $t \propto N^k$ is the slope of
# $\log t$ against $\log N$:
#
# ```{literalinclude} ../musecl/scaling/bench.py
# :pyobject: growth_exponent
# ```

# %%
result = run_benchmark(quick=quick, out=f"{out_dir}/bench",
                       include_end_to_end=end_to_end, progress=False)
head = result["headline"]
machine = result["machine"]
pd.Series({k: machine[k] for k in ("platform", "cpu_count", "usable_cpus",
                                   "torch_threads", "torch", "torchvision",
                                   "numpy", "load_average_1min",
                                   "load_average_1min_end")},
          name="machine").to_frame()

# %% [markdown]
# ## The training loop against the bare step

# %%
encoders = pd.DataFrame(result["encoders"]).set_index("kind")[
    ["arch", "input_size", "images_per_step", "threads", "loop_images_per_s",
     "raw_images_per_s", "ratio", "raw_fwd_bwd_no_optimizer_images_per_s"]]
encoders.round(2)

# %%
grid = pd.DataFrame(result["cpu_settings"]["rows"])
grid.pivot_table(index="channels_last", columns="threads",
                 values="images_per_s").round(1)

# %% [markdown]
# The last table is a forward and backward pass of ResNet-18 at 64 px on a batch of 96 images
# (three times the satellite batch), without the optimizer, for `channels_last` off and on and
# for one and two threads.

# %% [markdown]
# ## Triplet sampling as the city grows

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Triplet sampling time against the number of regions (log-log) for both similarities: a slope of 1 is linear growth, 2 that of an N × N similarity matrix."}}
sampling = pd.DataFrame(result["sampling"]["rows"])
exponents = result["sampling"]["exponent"]
fig, ax = plt.subplots(figsize=(6, 4))
labels = {2: "mobility (d = 2, eq. 1)", 30: "POI counts (d = 30, eq. 3)"}
for d, part in sampling.groupby("dim"):
    ax.loglog(part["n_regions"], part["seconds"], "o-",
              label=f"{labels.get(d, f'd = {d}')}: exponent "
                    f"{exponents.get(str(d), float('nan')):.2f}")
ax.set_xlabel("regions N")
ax.set_ylabel(f"seconds for {result['sampling']['n_triplets']:,} triplets")
ax.set_title("Triplet sampling time (log-log)")
ax.legend()
plt.show()

# %% tags=["hide-input"]
sampling.set_index(["dim", "n_regions"])

# %% [markdown]
# ## Text, fusion, probe and the whole run

# %% tags=["hide-input"]
fusion = result["fusion"]
fusion_size = f"{fusion['n_regions']:,} regions x {fusion['epochs']} epochs"
other = pd.DataFrame({
    "what": ["POI text (eq. 7)", f"fusion (eq. 8-11), {fusion['threads']} thread(s)",
             "MLP probe, 1 thread"],
    "size": [f"{result['text']['processed_tokens']:,} tokens processed", fusion_size,
             f"{result['probe']['n_rows']} rows x {result['probe']['epochs']} epochs"],
    "seconds": [result["text"]["seconds"], fusion["seconds"], result["probe"]["seconds"]],
})
if result["end_to_end"]:
    e2e = result["end_to_end"]
    other.loc[len(other)] = ["musecl run, toy city", f"{e2e['n_regions']} regions, {e2e['params']}",
                             e2e["seconds"]]
other.round(2)

# %% tags=["hide-input"]
ratio_rs, ratio_sv = head["train_vs_raw_ratio_rs"], head["train_vs_raw_ratio_sv"]
glue("ratio_rs", ratio_rs, display=False)
glue("ratio_sv", ratio_sv, display=False)
glue("loop_rs", head["loop_images_per_s_rs"], display=False)
glue("raw_rs", head["raw_images_per_s_rs"], display=False)
glue("loop_sv", head["loop_images_per_s_sv"], display=False)
glue("raw_sv", head["raw_images_per_s_sv"], display=False)
glue("threads", machine["torch_threads"], display=False)
glue("load", machine["load_average_1min"], display=False)
glue("n_max", head["sampling_n_max"], display=False)
glue("sampling_s", head["sampling_s_at_n_max"], display=False)
glue("sampling_mb", head["sampling_peak_mb_at_n_max"], display=False)
glue("exponent", head.get("sampling_exponent", float("nan")), display=False)
glue("exponent_sentence", Markdown(  # no math in glued Markdown: it would show its dollars
    "far below the N² of a similarity matrix" if head.get("sampling_exponent", 2) < 1.5 else
    "near the N² of a similarity matrix in time at these sizes, where the number of distinct "
    "anchors (up to 10,000) still grows with N; beyond that, time grows linearly (see the scaling "
    "appendix), and no N × N matrix is held in memory"), display=False)
glue("text_s", head["text_s_per_million_tokens"], display=False)
glue("fusion_s", head["fusion_s"], display=False)
glue("fusion_epochs", head["fusion_epochs"], display=False)
glue("fusion_regions", fusion["n_regions"], display=False)
glue("probe_s", head["probe_s"], display=False)
glue("bench_s", head["seconds"], display=False)
fast = head["fastest_cpu_setting"]
glue("fastest", Markdown(f"`channels_last={fast['channels_last']}` with {fast['threads']} "
                         "thread(s)"), display=False)
met = [ratio >= 0.9 for ratio in (ratio_rs, ratio_sv)]
# per encoder: was the loop faster than its bare step in every repeat, or do the repeats overlap?
apart = {e["arch"]: min(e["loop_samples"]) > max(e["raw_samples"]) for e in result["encoders"]}
faster = [f"`{arch}`" for arch, yes in apart.items() if yes]
level = [f"`{arch}`" for arch, yes in apart.items() if not yes]
glue("ratio_sentence", Markdown(
    "Both loops reach the goal of 0.9" + ("." if max(ratio_rs, ratio_sv) <= 1 else
    ". Above 1 the loop was faster than its bare step"
    + (f"; for {' and '.join(level)} the repeats of the two overlap, so they are equally fast "
       "within this machine's noise" if level else "")
    + (f"; for {' and '.join(faster)} the loop was faster in every repeat, which this page does "
       "not explain (each repeat times the bare step first)" if faster else "") + ".")
    if all(met) else
    "The goal of 0.9 is not reached on this run; on a machine shared with other jobs the two "
    "timings of a repeat can see different loads, so rerun `musecl bench` on a quiet machine "
    "before reading much into it." if not any(met) else
    "One loop reaches the goal of 0.9 and one does not on this run; the medians of a few "
    "repeats on a shared machine are noisy."), display=False)
glue("mode_sentence", Markdown(
    f"These are the *quick* sizes (up to {head['sampling_n_max']:,} regions). `musecl bench` "
    "without `--quick` measures 1,000 to 100,000 regions and the end-to-end run." if quick else
    "These are the full sizes of `musecl bench`."), display=False)

# %% [markdown]
# ## What we saw
#
# On this machine ({glue:text}`threads` torch threads, load average {glue:text}`load:.1f` when the
# benchmark started) the satellite loop (ResNet-18) trained at {glue:text}`loop_rs:.1f` images/s
# against {glue:text}`raw_rs:.1f` for the bare step: a ratio of {glue:text}`ratio_rs:.2f`. The
# street-view loop (Inception-v3) ran at {glue:text}`loop_sv:.1f` against {glue:text}`raw_sv:.1f`
# images/s, a ratio of {glue:text}`ratio_sv:.2f`. {glue:md}`ratio_sentence` The forward and backward
# pass of ResNet-18 at 64 px was fastest with {glue:md}`fastest`.
#
# Sampling 10,000 triplets for {glue:text}`n_max:,` regions took {glue:text}`sampling_s:.2f` s and
# at most {glue:text}`sampling_mb:.0f` MB of traced memory; time grew like $N^k$ with $k$ =
# {glue:text}`exponent:.2f` at most, {glue:md}`exponent_sentence`. The POI text
# encoder needed {glue:text}`text_s:.1f` s per million processed tokens, fusion training on
# {glue:text}`fusion_regions` regions for {glue:text}`fusion_epochs` epochs {glue:text}`fusion_s:.2f` s
# and one probe fit {glue:text}`probe_s:.2f` s. Fusion and the probe are small models whose steps
# are mostly per-operation overhead, where a second thread costs more than it gives, so the
# library trains them on one thread (`musecl.training.one_torch_thread`). The whole benchmark
# took {glue:text}`bench_s:.0f` s. {glue:md}`mode_sentence`
#
# `musecl bench` also times a whole `musecl run` of MuseCL on the toy city (`end_to_end_s`;
# `musecl bench --out DIR` keeps the full report in `DIR/bench.json`). This page does not repeat
# that run: the book itself is the end-to-end measurement, below. Timings on a machine shared
# with other jobs are noisy; the medians of several repeats damp that, they do not remove it.
#
# ## The book itself, end to end
#
# Every chapter executed for this book recorded its wall time, when it started and ended, and the
# cores it ran on (in the executed notebook's metadata, `musecl`), with the parameters it ran with.
# `musecl book` runs two chapters side by side (`--at-once`, Linux), each pinned to its own share
# of the cores: most chapters keep only one of two cores busy (loading libraries, drawing, one small
# model at a time), so two of them on one core each finish sooner than one after the other. Not
# pinned, two chapters that each train on two threads slowed each other down about threefold
# (measured on the 2-core machine on 2026-11-30: chapters 3 and 4 side by side took 121 s and 227 s
# instead of 40 s and 65 s). A chapter starts when the chapters it reads from are done (its header's `schedule: needs`;
# without one it waits for every chapter before it); the Manhattan chapter, long and reading only
# its own city, starts first, so it runs beside chapters 1-7 instead of holding up the results
# chapter; the results chapter gets both cores, and this page runs alone, so nothing else loads the
# machine while it times it:
#
# ```{literalinclude} ../musecl/book.py
# :pyobject: chapter_needs
# ```
#
# The chapters before this page ran in this same build, on this machine, so their span is the
# end-to-end time of the whole pipeline (toy city generated, triplets sampled, every encoder
# trained, every method of Table 1 evaluated, the real cities converted and evaluated), minus
# this page and the rendering (and the landing page, when it ran after this one). A chapter
# pinned to one core takes longer than it would on two: its own time says what it cost in this
# build, not alone. A chapter that found its executed copy current was not re-executed; its time
# is the one from the run that produced it, and then no span is drawn.
#
# Clean builds from a fresh clone on the 2-core machines we build on (2-5 December 2026) took 9 to
# 27 minutes for `make book` and 9 to 22 for `make test`: the same code at different hours, the
# machine's speed varies that much, which is why `make book` first times a reference workload and
# prints it. Each clean build's times are in the repository's `CHANGELOG.md`.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "When each chapter of this build ran (minutes from the first start); two bars at the same time ran side by side."}}
import json
from pathlib import Path

from musecl.book import MACHINE_SPEED_JSON, time_reference_workload

executed_dir = Path(out_dir).parent / "executed"
speed_now = time_reference_workload()
speed_file = Path(out_dir).parent / MACHINE_SPEED_JSON
speed_start = json.loads(speed_file.read_text())["reference_s"] if speed_file.is_file() else None
glue("speed_sentence", Markdown(
    f"The machine's speed, as the time of a fixed one-thread workload (`time_reference_workload`: "
    f"300 steps of the probe's matrix products): {speed_now:.2f} s now"
    + (f", {speed_start:.2f} s when the build started" if speed_start is not None else
       " (the build's own measurement was not found: this page ran outside `musecl book`)")
    + ". Compare it between builds before comparing their times: a shared machine's speed "
    "changes by the hour."), display=False)
rows = []
for path in sorted(executed_dir.glob("*.ipynb")):
    meta = json.loads(path.read_text()).get("metadata", {}).get("musecl", {})
    if "seconds" in meta and path.stem != "appendix_benchmark":
        rows.append({"chapter": path.stem, "seconds": meta["seconds"],
                     "started": meta.get("started"),
                     "finished": meta.get("finished"), "cores": meta.get("cores"),
                     "params": Path(str(meta.get("parameters", {}).get("params_file", "-"))).name,
                     "complete": meta.get("complete", False)})
book_times = pd.DataFrame(rows, columns=["chapter", "seconds", "started", "finished", "cores",
                                         "params", "complete"])
landing = (  # it may run beside a chapter after the results, or after this page:
    book_times["chapter"] == "index")
if landing.any() and not (book_times.loc[landing, "started"]
                          > book_times.loc[~landing, "started"].min()).all():
    book_times = book_times[~landing]  # then its times are those of an earlier build
if len(book_times):
    total = book_times["seconds"].sum()
    slowest = (f"the slowest was `{book_times.loc[book_times['seconds'].idxmax(), 'chapter']}` "
               f"({book_times['seconds'].max() / 60:.1f} min)")
    timed = book_times.dropna(subset=["started", "finished"])
    span = timed["finished"].max() - timed["started"].min() if len(timed) else float("nan")
    # else some ran in an earlier build
    one_build = len(timed) == len(book_times) and span <= total + 60
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(book_times) + 1))
    if one_build:
        t0 = timed["started"].min()
        ax.barh(book_times["chapter"], book_times["seconds"] / 60,
                left=(book_times["started"] - t0) / 60)
        ax.set_title(f"Chapters before this page: {span / 60:.1f} min from the first start to the "
                     "last end")
        pinned = book_times["cores"].dropna()
        how = (f"two at a time, each on {int(pinned.min())} of the {int(pinned.max())} cores "
               "unless it ran alone"
               if len(pinned) and pinned.min() < pinned.max() else "one after the other")
        glue("book_sentence", Markdown(
            f"The chapters before this page ran {how}; they took {span / 60:.1f} minutes from the "
            f"first start to the last end ({total / 60:.1f} minutes of chapter time); {slowest}."),
             display=False)
    else:
        ax.barh(book_times["chapter"], book_times["seconds"] / 60)
        ax.set_title(f"Chapter execution times (sum before this page: {total / 60:.1f} min)")
        glue("book_sentence", Markdown(
            f"The chapters before this page took {total / 60:.1f} minutes of chapter time in all "
            f"(some ran in an earlier build, so no span is given); {slowest}."), display=False)
    ax.invert_yaxis()
    ax.set_xlabel("minutes")
    plt.show()
else:
    glue("book_sentence", Markdown("*No executed chapters were found next to this page's "
                                   f"output folder (`{executed_dir}`): run the whole book with "
                                   "`musecl book`.*"), display=False)

# %% tags=["hide-input"]
(book_times.set_index("chapter")[["seconds", "cores", "params", "complete"]].round(1)
 if len(book_times) else None)  # own cell: the figure's caption would repeat under it

# %% [markdown]
# {glue:md}`book_sentence` {glue:md}`speed_sentence`
#
# ## Methods side by side
#
# The methods of the results chapter do not depend on each other, so on the CPU `musecl run` fits
# several at once, in worker processes with a share of the cores each (`jobs` in the settings; a
# stage two methods share is computed once, the cache makes the second wait). A small CNN or the
# MLP probe uses two threads poorly, so two methods side by side finish sooner than one after
# the other (`CHANGELOG.md` has the measurements):
#
# ```{literalinclude} ../musecl/runner.py
# :pyobject: fit_methods
# ```
#
# Trained stages are cached by their settings and the city's files, so a chapter reuses what an
# earlier chapter trained, and an interrupted run resumes from its last checkpoint.

# %% [markdown]
# ## On a GPU (recorded, not run by this build)
#
# CI builds this book without a GPU, so this page does not measure one. The table below is **read from a
# file recorded on a lent NVIDIA H200** (`book/measurements/gpu-h200-2026-11-27.json`, written
# by `.ci/gpu_check`, which runs `musecl bench --device cuda`): the encoders at the paper's input
# sizes, the training loop against the bare step, per precision, with the images on the host
# (each batch copied through pinned memory) or on the GPU. {doc}`appendix_scaling` draws the
# conclusions (bf16, channels_last and the images on the GPU are now the defaults there). A
# second recorded GPU run measures the method rather than the speed: the paper's CNNs trained at
# the paper's sizes, in {doc}`08_results` (there the satellite encoder trained at 5,800-8,000
# images/s and the street-view one at about 2,250, as the table below predicts).

# %% tags=["hide-input"]
recorded = json.loads(Path("measurements/gpu-h200-2026-11-27.json").read_text())
gpu = pd.DataFrame(recorded["accelerator_rows"] + recorded["extra_rows"])
gpu["amp"] = gpu["amp"].str.replace("torch.", "", regex=False)
gpu_table = (gpu[["arch", "input_size", "batch_triplets", "amp", "channels_last", "store",
                  "loop_images_per_s", "raw_images_per_s", "ratio"]]
             .sort_values(["arch", "batch_triplets", "loop_images_per_s"])
             .round({"ratio": 2, "loop_images_per_s": 0, "raw_images_per_s": 0}))
print(f"{recorded['machine']['cuda']}, torch {recorded['machine']['torch']}, recorded "
      f"{recorded['date']}; tests there: {recorded['tests']}")
display(gpu_table.reset_index(drop=True))
compiled = pd.DataFrame(recorded["compile"]).drop(columns=["device"], errors="ignore")
compiled["amp"] = compiled["amp"].str.replace("torch.", "", regex=False)
display(  # a failed compile has no timings, a good one no error
    compiled.round(2).astype(object).fillna("–"))

# %% [markdown]
# ## Several processes and images on disk, executed here
#
# Two pieces of {doc}`appendix_scaling` run on this CPU too, so this build executes them: not
# for speed (that needs GPUs and large cities), but to show that they work and what they write.
#
# **Images on disk.** `musecl.scaling.shards.shards_from_city(city, kind, size, DIR)` decodes the toy city's satellite
# images straight into `.npy` shards and returns a store that reads only the rows a batch asks
# for, through memory maps. Its rows are those of the in-memory store:

# %% tags=["hide-input"]
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import yaml

from musecl.encoders.image import ImageStore
from musecl.runner import resolve_city
from musecl.scaling.shards import shards_from_city

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the toy city's regions without a satellite image, on purpose
    toy = resolve_city("toy", cities_dir=f"{out_dir}/cities")
scratch = Path(tempfile.mkdtemp(prefix="musecl-appendix-"))
in_memory = ImageStore.from_city(toy, "satellite", 64)
sharded = shards_from_city(toy, "satellite", 64, scratch / "satellite-64-shards", shard_size=128)
rows = torch.randint(0, len(in_memory), (96,), generator=torch.Generator().manual_seed(0))


def batch_ms(store, repeats=20):
    start = time.perf_counter()
    for _ in range(repeats):
        store.images[rows]
    return 1000 * (time.perf_counter() - start) / repeats


print(repr(sharded).replace(str(scratch), "<scratch>"))  # a temporary folder
print("the same 96 random rows from both:",
      torch.equal(in_memory.images[rows], sharded.images[rows]))
print(f"one batch of 96 rows: {batch_ms(in_memory):.2f} ms from memory, {batch_ms(sharded):.2f} ms "
      "from the shards (this machine's page cache holds them)")
display(pd.DataFrame([{"file": f.name, "kB": round(f.stat().st_size / 1024)}
                      for f in sorted((scratch / "satellite-64-shards").iterdir())]))

# %% [markdown]
# **Two processes.** The `torchrun` command of {doc}`appendix_scaling`, with two processes over
# Gloo on this CPU, trains a small satellite encoder on the toy city into a cache that
# `musecl run` with the same settings would reuse. Each process trains on its half of every
# epoch's triplets; the history (one row per epoch) is summed over both, and `images_per_s`
# counts the images of both processes.

# %% tags=["hide-input"]
settings = {"n_triplets": 256, "rs_arch": "tiny", "rs_image_size": 32, "rs_epochs": 2,
            "rs_batch_size": 16, "train_processes": 2}
params = scratch / "two_processes.yaml"
params.write_text(yaml.safe_dump(settings))
command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
           "-m", "musecl.cli",
           "train-encoders", str(toy.root), "--params", str(params), "--out", str(scratch / "run"),
           "--kinds", "satellite"]
start = time.perf_counter()
done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                      text=True, timeout=600)
if done.returncode != 0:
    raise RuntimeError(f"torchrun failed:\n{done.stderr[-3000:]}")
print("torchrun --nproc_per_node 2 -m musecl.cli train-encoders TOY --params two_processes.yaml "
      f"--out RUN --kinds satellite  ({time.perf_counter() - start:.0f} s)")
print(done.stdout.strip().replace(str(scratch / "run"), "RUN"))
print(yaml.safe_dump(settings).strip())
stage = Path(done.stdout.split("satellite encoder:")[1].split()[0])
display(pd.read_csv(stage / "history.csv")[["epoch", "train_loss", "val_loss",
                                            "images_per_s"]].round(3))

# %% [markdown]
# ## Exercises
#
# 1. Run `musecl bench --quick` twice. Which numbers move the most between runs, and why would the
#    ratio move less than the two throughputs it is made of?
# 2. Predict the sampling time for 1,000,000 regions from the exponent above, then measure it with
#    `musecl.sampling.sampling_benchmark([1_000_000], dims=[2])`. Does memory stay bounded?
# 3. The bare step and the loop both include the Adam step. Compare `raw_images_per_s` with
#    `raw_fwd_bwd_no_optimizer_images_per_s`: what share of a step does the optimizer take for
#    ResNet-18, and why is it larger for a small input size?
