# ---
# jupyter:
#   schedule:
#     needs: [06_fusion]
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
# # Predicting socioeconomic indicators
#
# The last step of MuseCL: a small multi-layer perceptron predicts each indicator, on the
# $\ln(1+x)$ scale (an indicator whose `city.yaml` entry says `log: false` keeps its own scale),
# from the region embeddings, scored by $R^2$ and RMSE on held-out regions.
# We repeat it over several seeds and each way of holding regions out that the run's settings
# name (by default two: regions drawn at random, and whole spatial blocks).

# %% [markdown] tags=["needs-latents"]
# On a generated city we read every number against its ceilings: what the true latent fields
# could explain, scored on the very regions the probe is tested on.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file
data_dir = None  # folder with published_results.csv; None: the default

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from musecl import report
from musecl.config import RunConfig
from musecl.datasets.published import published_results
from musecl.evaluation import (BUFFER_CORRELATION, CEILING_METHODS, SPLITS, correlation_by_distance,
                               correlation_range, evaluate_ceilings, predict_indicator,
                               spatial_setting, spatial_split)
from musecl.io import atomic_write
from musecl.methods import MuseCL
from musecl.notebooks import require_method
from musecl.plotting import plot_predicted_vs_true
from musecl.runner import (fit_and_score, probe_settings, resolve_city, seed_configs,
                           supported_methods)

cfg = RunConfig.from_yaml(params_file, device=device)
data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
cfg

# %% [markdown]
# ## The probe
#
# As in the paper and the official code: an MLP with hidden layers $[512, 256, 128, 64]$ and ReLU,
# mean squared error, Adam (learning rate $5 \cdot 10^{-4}$), batch 32, inputs standardised on
# the training part, early stopping on the validation part (after `probe_patience` epochs without a
# better validation loss: 50 in the official code, 5 in this book's `params/ci.yaml`, chosen on
# validation parts only, as its comment says). Regions are split 60/20/20 into training,
# validation and test; the scores are
#
# $$R^2 = 1 - \frac{\sum_{i \in \text{test}} (y_i - \hat y_i)^2}{\sum_{i \in \text{test}} (y_i - \bar y)^2},
# \qquad \mathrm{RMSE} = \sqrt{\tfrac{1}{n_\text{test}} \textstyle\sum_{i \in \text{test}} (y_i - \hat y_i)^2}$$
#
# with $y_i = \ln(1 + x_i)$ for an indicator $x$ ($y_i = x_i$ for one with `log: false`).
#
# ```{literalinclude} ../musecl/evaluation.py
# :pyobject: MLPProbe.fit
# ```
#
# Two things go beyond the paper, which reports one random split and one seed. Each seed draws
# its own split and probe initialisation, and we report mean and standard deviation. And next to
# the random split we use a **spatial block split**: whole square blocks of the map go to
# training, validation or test. Neighbouring regions are alike, so a random split rewards knowing
# *where* a region is; the block split asks whether the embedding knows *what* it is. Blocks
# alone are not enough: a test region at the edge of its block still has training neighbours
# just across the edge. So the split also drops every training and validation region closer to
# a test region than a *buffer*, sized from the city itself: the distance beyond which two
# regions' indicator values no longer correlate.
#
# ```{literalinclude} ../musecl/evaluation.py
# :pyobject: spatial_block_split
# ```
#
# The correlation of two regions' values against the distance between them (a correlogram,
# from pairs around sampled regions), and the buffer it gives (`buffer_m: auto` in the
# settings; a number of metres overrides it):

# %% tags=["hide-input"] mystnb={"figure": {"caption": "How far neighbours give a region's value away: correlation of indicator values by distance, with the spatial split's buffer."}}
headline = data.meta.headline_indicators()
correlogram = correlation_by_distance(data, headline, seed=cfg.seed)
blocks = spatial_setting(data, cfg.evaluation.block_size_m, cfg.evaluation.buffer_m)
reach = correlation_range(data, headline, seed=cfg.seed)
fig, ax = plt.subplots(figsize=(7, 3.6))
for name in headline:
    ax.plot(correlogram.index / 1000, correlogram[name], marker="o", ms=3, label=name)
ax.plot(correlogram.index / 1000, correlogram[headline].mean(axis=1), color="black", lw=2,
        label="mean")
ax.axhline(BUFFER_CORRELATION, color="grey", ls=":", lw=1)
ax.axvline(reach / 1000, color="tab:gray", ls="--", lw=1.2, label="correlation range")
ax.axvline(blocks.buffer_m / 1000, color="tab:red", ls="--", lw=1.2, label="buffer")
ax.set(xlabel="distance between region centres (km)", ylabel="correlation of their values",
       title="how far neighbours give a region's value away")
ax.legend(fontsize=8, ncol=3)
fig.tight_layout()
plt.show()
if cfg.evaluation.buffer_m != "auto":
    how = "as set by `buffer_m` in the settings."
elif blocks.buffer_m < reach:
    how = (f"the correlation range ({reach / 1000:.1f} km, where the mean correlation of the "
           f"headline indicators falls below {BUFFER_CORRELATION}) capped at half a block, so that "
           "enough regions are left to train on. Nearer than the range, some leakage remains.")
else:
    how = ("the correlation range: the distance where the mean correlation of the headline "
           f"indicators falls below {BUFFER_CORRELATION}.")
glue("buffer_sentence", Markdown(f"The spatial split uses blocks of {blocks.size_m / 1000:.1f} "
                                 f"km and a buffer of {blocks.buffer_m / 1000:.1f} km: {how}"),
     display=False)

# %% [markdown]
# {glue:md}`buffer_sentence`
#
# `musecl run` fits and scores every method through one function, which this chapter calls too.
# With `retrain: per_seed` (this run: {glue:text}`retrain`) it fits the method again
# for each seed, every stage seeded by it, and scores that fit on that seed's split and probe
# only; with `once` it fits once and scores on every seed. Trained stages and probe scores stay
# in the cache, so the results chapter does not fit MuseCL a second time:
#
# ```{literalinclude} ../musecl/runner.py
# :pyobject: fit_and_score
# ```
#
# ```{literalinclude} ../musecl/runner.py
# :pyobject: seed_configs
# ```

# %% tags=["hide-input"]
# MuseCL, or on a city without images its version on vectors (chapter 10)
target = report.headline_method(supported_methods(["MuseCL", report.VECTOR_TARGET], data)[0])
if target is None:
    require_method(data, "MuseCL", shows="MuseCL's embedding read by the probe: R2 and RMSE per "
                   "indicator in each split beside the ceilings, and predicted against true "
                   "values (chapter 8 scores every method this city supports)")
glue("retrain", cfg.retrain, display=False)
# the first seed's embedding and every seed's rows (each seed's own fit under retrain: per_seed)
cache_dir = Path(f"{out_dir}/cache")
embedding, results, _, _ = fit_and_score(target, data, cfg, cache_dir, progress=False)
if target == "MuseCL":
    # cached stages
    method = MuseCL(seed_configs(cfg)[0], cache_dir=cache_dir, progress=False).fit(data)
    if (note := report.one_view_note(data.name, method.views)) is not None:
        display(Markdown(note))
else:
    display(Markdown(report.vector_target_note(data.name, "this chapter reads")
                     + " Read *MuseCL* in the text below as that method."))
# the floors every results table carries, on the same splits and probes (their scores are cached:
# chapter 8 reads them back)
floors, _ = supported_methods(["Location kNN", "Pretext features"], data)
results = pd.concat([results, *(fit_and_score(name, data, cfg, cache_dir, progress=False)[1]
                                for name in floors)],
                    ignore_index=True)
probe = probe_settings(cfg)
with atomic_write(f"{out_dir}/results/prediction.csv") as handle:
    results.to_csv(handle, index=False)
# the city's ceilings scored on the same test parts (empty for a real city)
ev = cfg.evaluation
ceilings = evaluate_ceilings(data, seeds=cfg.seeds, splits=ev.splits, block_size_m=ev.block_size_m,
                             buffer_m=ev.buffer_m)
indicators = [i for i in data.meta.indicators if i in set(results["indicator"])]
derived = data.meta.derived_indicators()
all_latents = CEILING_METHODS["all"]
ceiling_mean = (ceilings.groupby(["method", "split", "indicator"])["r2"].mean() if len(ceilings)
                else None)
for split in cfg.evaluation.splits:  # one table per split; "mean ± sd" over seeds,
    # as in chapter 8's tables
    r2_text = report.results_table(results, "r2", split, indicators=indicators)
    shown = pd.DataFrame({
        f"{target} R2": r2_text.loc[target],
        f"{target} RMSE": report.results_table(results, "rmse", split,
                                               indicators=indicators).loc[target],
        **{f"{name} R2": r2_text.loc[name] for name in floors}})
    if ceiling_mean is not None:
        views = (ceiling_mean.drop(all_latents, level="method").xs(split, level="split")
                 .unstack("method"))
        shown["best single modality R2"] = views.max(axis=1).reindex(shown.index).round(3)
        shown["ceiling R2"] = ceiling_mean[all_latents][split].reindex(shown.index).round(3)
    shown.index = pd.Index([f"{i} (derived from {derived[i]})" if i in derived else i
                            for i in shown.index],
                           name=None)
    caption = (f"{data.name}, {split} split: {target} beside the floors"
               + (" and the ceilings" if ceiling_mean is not None else "")
               + (", mean ± sd over seeds" if len(cfg.seeds) > 1 else ""))
    display(shown.style.format(precision=3, na_rep="–").set_caption(caption)
            .set_table_attributes('class="musecl-results"'))

# %% [markdown]
# The rows are the city's indicators ({glue:md}`indicator_names`). Each cell is
# {glue:md}`cell_meaning` on this city. Beside MuseCL stand the two floors every
# results table of this book carries, read by the same probes on the same splits: *Location kNN*
# (the region's centre alone, five nearest neighbours) and *Pretext features* ($\ln(1 + \cdot)$ of
# the trips and POI counts per category that MuseCL's contrastive stages learn from, with no
# learning at all). An embedding that does not clear them has learned nothing the probe could not
# read from where a region is or from its raw counts. The rows are also written to
# `results/prediction.csv` in the output folder, one per method, indicator, split and seed.
# Indicators derived from an input (the number of POIs, the trip count) are shown but left out of
# the means below.

# %% [markdown] tags=["needs-latents"]
# The ceiling columns score the city's noiseless indicator functions (*ceiling*: every latent;
# *best single modality*: the best of what one modality shows, see {doc}`01_data`) on the same
# test regions, seed by seed, so each is the ceiling of its own split.

# %% tags=["hide-input"]
glue("indicator_names", Markdown(data.meta.spelled_out(indicators)), display=False)
glue("cell_meaning", Markdown(
    f"the mean ± standard deviation over the seeds {', '.join(map(str, cfg.seeds))}"
    if len(cfg.seeds) > 1 else f"the score of seed {cfg.seeds[0]} (one seed: no deviation)"),
    display=False)
glue("headline", ", ".join(headline), display=False)
headline_r2 = report.mean_headline(results, headline)
mean_r2 = headline_r2[target]
paired = {split: report.paired_differences(results, headline, target=target, split=split)
          for split in cfg.evaluation.splits}
glue("floor_finding", Markdown(report.floor_sentence(paired, floors, target=target)), display=False)
ceiling_means = (ceilings[ceilings["indicator"].isin(headline)]
                 .groupby(["method", "split"])["r2"].mean()
                 if len(ceilings) else None)
import json  # noqa: E402

if target == "MuseCL":
    sources = {stage: json.loads((method.stage_dirs[stage] / "encoder" / "config.json")
                                 .read_text())["weights_source"]
               for stage in method.views}
    def started_from(source: str) -> str:
        kind, _, where = source.partition(":")
        return {"imagenet": f"ImageNet weights (`{where}`)",
                "checkpoint": f"the checkpoint `{where}`"}.get(
            kind, "random weights")

    encoders = ("The " + " and the ".join(f"{stage} encoder started from {started_from(source)}"
                                          for stage, source in sources.items())
                + ". A `lite0-head` encoder always reads EfficientNet-Lite0's ImageNet features; "
                "the setting `weights` above sets only the start of the ResNet-18 and Inception-v3 "
                "encoders. Whether the paper's CNNs, trained longer at the paper's sizes on a GPU, "
                "do better on the toy city: a recorded GPU run, in chapter 8.")
else:
    encoders = (f"{target} has no image encoders: its two view encoders are small networks on the "
                "vectors, trained from random weights on the similarity triplets.")
glue("encoders_sentence", Markdown(encoders), display=False)

# for "What we saw": the findings, in words that follow this run's numbers
splits = [split for split in SPLITS if split in mean_r2]
scored = report.by_split({split: float(mean_r2[split]) for split in splits})
if len(ceilings):
    full = {split: float(ceiling_means.get((all_latents, split), float("nan"))) for split in splits}
    views = ceiling_means.drop(all_latents, level="method", errors="ignore")
    # the single-modality ceiling with the highest headline mean, per split, and MuseCL minus it
    # seed by seed on the same test regions
    best_view = {split: views.xs(split, level="split").idxmax() for split in splits} if len(views) \
        else {}
    against = {split: report.paired_differences(pd.concat([results, ceilings]), headline,
                                                target=target, split=split).loc[name]
               for split, name in best_view.items()}
    verdicts = {split: row["verdict"] for split, row in against.items()}
    told = [split for split, v in verdicts.items() if v in ("better", "worse")]
    if not best_view:  # no single-modality ceilings: nothing to read the fusion against
        lead = ("**How MuseCL compares with a single modality's ceiling is not known for "
                "this city.**")
    elif not told and all(verdicts.values()):
        lead = ("**MuseCL is level with what the best single modality could explain**: the "
                "seeds cannot tell the two apart, so this run does not show that the fusion "
                "combined what different modalities show.")
    elif all(v == "better" for v in verdicts.values()):
        lead = ("**MuseCL beats what the best single modality could explain**, so the fusion "
                "combined what different modalities show.")
    elif all(v == "worse" for v in verdicts.values()):
        lead = ("**MuseCL stays below what the best single modality could explain**, so this run "
                "does not show that the fusion combined what different modalities show.")
    else:
        place = {"better": "above", "worse": "below"}  # else level, or no interval (one seed)
        lead = ("**Against what the best single modality could explain, MuseCL is "
                + " and ".join(f"{place.get(v, 'level')} under the {split} split"
                               for split, v in verdicts.items())
                + "**" + (" (one seed gives no interval)" if not all(verdicts.values()) else "")
                + ".")
    view_words = "; ".join(  # "Ceiling: what street view shows" -> street view
        f"{name.removeprefix('Ceiling: what ').removesuffix(' shows')} allows "
        f"{views[name, split]:.3f} under the {split} split ({target} minus it, paired, "
        f"{report.interval_text(against[split])})" for split, name in best_view.items())
    ceiling_finding = (
        f"{lead} Averaged over the headline indicators ({', '.join(headline)}) and seeds it "
        f"reaches R² {scored}; on the same test regions every latent together allows "
        + " and ".join(f"{full[split]:.3f}" for split in splits)
        + (f"; of the single modalities, the one with the best headline mean: {view_words} "
           "(per indicator the best one differs: the table's column)" if best_view else "")
        + ", so MuseCL recovers "
        + " and ".join(f"{mean_r2[split] / full[split]:.0%}" for split in splits)
        + " of the full ceiling.")
else:
    ceiling_finding = (f"Averaged over the headline indicators ({', '.join(headline)}) and seeds, "
                       f"MuseCL reaches R² {scored}. This city records no ceilings, so how far "
                       "that is from what the data allow is not known.")
glue("ceiling_finding", Markdown(ceiling_finding), display=False)
spatial = spatial_split(splits)  # the one held-out part, else cross-fitting (every block tested)
held = "the spatial one" if spatial == "spatial" else "spatial cross-fitting"
if "random" in splits and spatial and mean_r2["random"] <= 0:
    spatial_finding = ("**MuseCL predicts no better than the mean here**: R² "
                       f"{mean_r2['random']:.3f} under the random split and "
                       f"{mean_r2[spatial]:.3f} under {held}, so what neighbours "
                       "contribute to the score cannot be read from the two.")
elif "random" in splits and spatial:
    drop = float(mean_r2["random"] - mean_r2[spatial])
    share_lost = drop / abs(float(mean_r2["random"])) if mean_r2["random"] else float("nan")
    numbers = (f"from {mean_r2['random']:.3f} under the random split to {mean_r2[spatial]:.3f} "
               f"under {held}")
    harder = " The spatial split is the harder and more honest test."
    spatial_finding = (
        "**Much of the random-split score comes from neighbours that resemble each other**: with "
        f"whole blocks held out, MuseCL drops {numbers}.{harder}" if share_lost > 0.3 else
        "**Part of the random-split score comes from neighbours that resemble each other**: with "
        f"whole blocks held out, MuseCL drops {numbers}.{harder}" if share_lost > 0.1 else
        f"**The score holds up when whole blocks of the map are held out**: MuseCL goes {numbers}"
        + (": on this city the held-out blocks were no harder to predict than random regions."
           if drop <= 0 else "."))
else:
    spatial_finding = (f"No {'spatial' if 'random' in splits else 'random'} split was run, so "
                       "what neighbours contribute to the score is not measured.")
glue("spatial_finding", Markdown(spatial_finding), display=False)

# %% [markdown]
# ## Predicted against true (the paper's Figure 4)
#
# One probe per indicator (seed {glue:text}`first_seed`, random split); validation regions in
# light blue circles, test regions in dark purple triangles (the paper's colours), the dotted line
# is perfect prediction.

# %% mystnb={"figure": {"caption": "Predicted against true values for each indicator (random split, first seed): the paper's Figure 4."}}
glue("first_seed", cfg.seeds[0], display=False)
predictions = pd.concat([predict_indicator(embedding, data, ind,
                                           split="random", seed=cfg.seeds[0],
                                           probe=cfg.evaluation.probe,
                                           probe_config=probe)
                         for ind in data.meta.indicators])
fig = plot_predicted_vs_true(predictions, log={name: ind.log
                                               for name, ind in data.meta.indicators.items()})
plt.show()

# %% [markdown]
# ## The paper's numbers, for reference
#
# The paper reports MuseCL on real cities (Beijing, Shanghai, New York) with ImageNet-pretrained
# encoders trained far longer. They are **the paper's numbers on other data**, shown so the
# reader knows the scale of what was claimed, not as a comparison with the toy city.

# %%
published = published_results(data_dir)
if published is None:
    print("published_results.csv is not in the data directory "
          "(set MUSECL_DATA_DIR); the paper's numbers are not shown.")
else:
    paper = published[published["method"] == "MuseCL"][
        ["source", "city", "indicator", "r2", "rmse"]]
    display(paper.rename(columns={"r2": "paper R2", "rmse": "paper RMSE"}).reset_index(drop=True)
            .style.format(precision=3).hide(axis="index")
            .set_caption("The paper's numbers for MuseCL (other cities and data; not comparable "
                         "with this city)"))

# %% [markdown]
# ## What we saw
#
# - {glue:md}`ceiling_finding`
# - {glue:md}`spatial_finding`
# - {glue:md}`floor_finding`
# - {glue:md}`encoders_sentence`
#
# The next chapter adds the paper's baselines and its ablation, and compares each method with
# MuseCL seed by seed.
#
# ## Exercises
#
# 1. Set `splits: [random]` and `seeds: [0]`, the paper's protocol. How much does a single
#    number move when you change only the seed? Compare with the standard deviations above.
# 2. Replace the MLP by a ridge regression (`probe: ridge`), or let each fit's validation part
#    choose between the two (`probe: mlp-or-ridge`). Which indicators lose, and does the ranking
#    of indicators change?
# 3. Double `rs_epochs` and `sv_epochs`. Which stages are retrained (look at the cache folder) and
#    which are reused?
