# ---
# jupyter:
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
# # A real city: Manhattan-180
#
# Manhattan's 180 regions are the standard benchmark of the mobility-based region embeddings
# MVURE, MGFN and HREP: taxi trips between regions, crime and check-in counts to predict, and
# community districts to recover by clustering. There are no images, so this chapter applies
# MuseCL's ideas to the modalities that exist (mobility and POIs), scores everything with the
# benchmark's own published protocol, and puts the published numbers beside ours.

# %% tags=["parameters"]
data_dir = None            # the data directory (MUSECL_DATA_DIR); None: the default
out_dir = "../build/work"  # the city folder and results.csv are written under it
seed = 0                   # seeds triplet sampling, encoders, text vectors and fusion

# %%
from musecl.notebooks import require_data

raw_files = require_data("manhattan", data_dir)

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from musecl.city import load_city, validate_city
from musecl.config import RunConfig
from musecl.datasets.manhattan import FILES, make_manhattan_city, read_landuse
from musecl.datasets.published import published_results
from musecl.datasets.sources import source_of
from musecl.evaluation import landuse_scores, pca_candidates, ridge_kfold_scores, ridge_kfold_select
from musecl.io import atomic_write
from musecl.methods.vector import ODSVD, VectorMuseCL, VectorViewConfig, od_matrix
from musecl.plotting import plot_map

city_dir = make_manhattan_city(f"{out_dir}/cities/manhattan", data_dir=data_dir)
problems = validate_city(city_dir)
assert not problems, problems
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the converter's own notes are in city.yaml's provenance
    city = load_city(city_dir)
landuse = read_landuse(city_dir)
city

# %% [markdown]
# ## The data
#
# {func}`~musecl.datasets.manhattan.make_manhattan_city` reads every raw file through the
# checksummed registry and writes an ordinary city folder (`musecl validate` passes on it), so
# everything below would run on any city with an OD table and POIs. Where each file comes from:

# %%
pd.DataFrame({"role": list(FILES), "file": list(FILES.values()),
              "source (repository @ commit: path)": [source_of(f) for f in FILES.values()]}).set_index("role")

# %%
od = od_matrix(city)
n_pois = city.poi_counts().sum(axis=1)
glue("n_regions", len(city), display=False)
glue("n_trips", float(od.sum() / 1e6), display=False)
glue("share_self", float(100 * np.trace(od) / od.sum()), display=False)
glue("n_pois", len(city.pois), display=False)
glue("n_categories", city.pois["category"].nunique(), display=False)
glue("n_no_poi", int((n_pois == 0).sum()), display=False)
glue("n_districts", landuse.nunique(), display=False)
glue("top_category", Markdown(f"`{city.pois['category'].value_counts().index[0]}`"), display=False)
glue("top_category_share", float(100 * city.pois["category"].value_counts(normalize=True).iloc[0]),
     display=False)
city.indicators.describe().T.round(1)

# %% [markdown]
# {glue:text}`n_regions` regions, {glue:text}`n_trips:.2f` million taxi trips
# ({glue:text}`share_self:.1f`% within a region), {glue:text}`n_pois` OpenStreetMap POIs of
# 2013 in {glue:text}`n_categories` categories (the most common, {glue:text}`top_category`,
# is {glue:text}`top_category_share:.0f`% of them; {glue:text}`n_no_poi` regions have none),
# and {glue:text}`n_districts` community districts as land-use labels. Crime and check-ins are
# the benchmark's targets; population density, median income and arrests were joined from
# census tracts and arrest points and are not part of the published benchmark.

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 5))
plot_map(city, city.indicators["crime"], ax=axes[0], title="crime (count)", cmap="magma")
plot_map(city, city.indicators["check_in"], ax=axes[1], title="check-ins (count)", cmap="magma")
plot_map(city, pd.Series(np.log1p(od.sum(axis=1)), index=city.region_ids), ax=axes[2],
         title="ln(1 + taxi trips out)")
plot_map(city, landuse.astype(str), ax=axes[3], title="community district", categorical=True)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The published protocol
#
# MVURE, MGFN and HREP all score an embedding the same way, and so do we: a ridge regression
# with $\alpha = 1$ on the embedding as it is (no standardisation), 5-fold cross-validation
# **without shuffling** (fold $k$ is the $k$-th block of region ids), negative predictions set
# to 0, MAE, RMSE and $R^2$ on the **raw counts**, computed once on the pooled out-of-fold
# predictions. Land use: k-means with 12 clusters (`random_state=3`) on the embedding, scored by
# NMI and ARI against the community districts.
#
# ```{literalinclude} ../musecl/evaluation.py
# :pyobject: ridge_kfold_predictions
# ```
#
# An unregularised-scale ridge on 144 training regions overfits when an embedding has many
# columns, so the number of columns matters. Choosing it by looking at the cross-validated
# scores would tune on the test folds. We therefore report each embedding twice: as it is (the
# published protocol), and with its number of principal components chosen **inside each
# training part** by an inner 5-fold cross-validation that never sees the held-out fold:
#
# ```{literalinclude} ../musecl/evaluation.py
# :pyobject: ridge_kfold_select
# ```

# %% [markdown]
# ## What was changed from MuseCL
#
# | MuseCL (paper) | here | why |
# |---|---|---|
# | street-view CNN, triplets by mobility similarity (eq. 1-2, 5-6) | MLP (1 hidden layer of 256, dropout 0.1) over the **mobility view**: $\ln(1+\text{trips})$ to and from every region (the region's OD row and column, $2 \times 180$ values, standardised); same triplet sampler and cosine triplet loss (eq. 6) | no street-view images exist |
# | satellite CNN, triplets by POI similarity (eq. 3-6) | MLP over the **POI view**: $\ln(1+\text{count})$ per POI category; same sampler and loss | no satellite images exist |
# | mobility similarity on (inflow, outflow) (eq. 1) | run twice: the paper's eq. 1, and the same Euclidean distance on the whole mobility view ("OD similarity") | with an OD matrix, "similar mobility" can mean *trips to the same places*, not only as many trips |
# | 201 / 20 epochs, batch 32 / 16 | 10 epochs, batch 128, 10,000 triplets per encoder | 180 regions, vectors instead of images: each epoch sees every region ~55 times |
# | POI text: skip-gram + hierarchical softmax (eq. 7) | unchanged; POI texts are OSM names | |
# | attentive fusion + InfoNCE (eq. 8-11) | unchanged (the mobility view takes the street-view slot, the POI view the satellite slot) | |
# | MLP probe on $\ln(1+x)$, random 60/20/20 split | the benchmark's ridge protocol above, raw counts | to compare with MVURE / MGFN / HREP |
#
# Two ways of looking at the embedding are added, as in the paper's ablation (its Figure 6):
# each view alone, the POI text alone, and the paper's `Concat` baseline [mobility view, POI view,
# POI text]. The plain baseline `OD SVD` is a truncated SVD of $\ln(1 + \mathrm{OD})$, 16 row
# and 16 column factors (a fixed choice; the second protocol column lets the training folds
# choose among 4 to 32 components instead).
#
# ```{literalinclude} ../musecl/methods/vector.py
# :pyobject: od_svd
# ```

# %%
cfg = RunConfig(seed=seed)
variants = {"eq. 1 similarity": "inout", "OD similarity": "od"}
embeddings = {"OD SVD": ODSVD(cfg, progress=False).fit_transform(city)}
fitted = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # 2 regions without POIs: zero POI vectors, left out of fusion
    for label, rule in variants.items():
        # the second run reuses the first one's POI encoder and text vectors (identical settings)
        method = VectorMuseCL(cfg, progress=False, view_config=VectorViewConfig(mobility_similarity=rule),
                              reuse=fitted.get("eq. 1 similarity")).fit(city)
        fitted[label] = method
        parts = {"mobility view only": method.stage_table("mobility"),
                 "POI view only": method.stage_table("poi"), "POI text only": method.stage_table("text")}
        embeddings[f"MuseCL (vector views), {label}"] = method.transform(city)
        embeddings[f"Concat (vector views), {label}"] = pd.concat(list(parts.values()), axis=1)
        embeddings[f"mobility view only, {label}"] = parts["mobility view only"]
        if rule == "inout":  # the POI view and the text do not depend on the mobility similarity
            embeddings["POI view only"] = parts["POI view only"]
            embeddings["POI text only"] = parts["POI text only"]
{name: e.shape[1] for name, e in embeddings.items()}

# %%
TASKS = ("crime", "check_in")
EXTRA = ("population_density", "median_income", "arrests")
rows = []
for name, emb in embeddings.items():
    candidates = pca_candidates(emb, dims=(4, 8, 16, 32))
    for task in TASKS + EXTRA:
        y = city.indicators[task].dropna()
        full = ridge_kfold_scores(emb, y)
        rows.append({"city": city.name, "task": task, "method": name, "protocol": "as published",
                     "n": len(y), **full})
        chosen = ridge_kfold_select(candidates, y)
        rows.append({"city": city.name, "task": task, "method": name,
                     "protocol": "dims chosen in training folds", "n": len(y),
                     **{k: v for k, v in chosen.items() if k != "chosen"},
                     "chosen": " ".join(c.removeprefix("k=") for c in chosen["chosen"])})
    rows.append({"city": city.name, "task": "land_use", "method": name, "protocol": "as published",
                 "n": len(landuse), **landuse_scores(emb, landuse)})
results = pd.DataFrame(rows)
with atomic_write(f"{out_dir}/manhattan/results.csv") as handle:
    results.to_csv(handle, index=False)
results.head()

# %% [markdown]
# ## Results beside the published numbers
#
# $R^2$ (MAE) on the benchmark's two tasks. Our rows: this run, the published protocol, and the
# same with the number of components chosen inside the training folds. The published rows are
# **the papers' numbers**, from their tables (MGFN, IJCAI 2022; HREP, AAAI 2023), on the same
# regions and targets but with their own embeddings.

# %%
def cell(r2, mae):
    return f"{r2:.3f} ({mae:.1f})"


ours = results[results["task"].isin(TASKS)]
table = {}
for (name, protocol), group in ours.groupby(["method", "protocol"], sort=False):
    g = group.set_index("task")
    table[(name, f"this run, {protocol}")] = {t: cell(g.loc[t, "r2"], g.loc[t, "mae"]) for t in TASKS}
published = published_results(data_dir)
if published is not None:
    theirs = published[published["city"] == "Manhattan-180"]
    for (source, name), group in theirs.groupby(["source", "method"], sort=False):
        if name not in ("MVURE", "MGFN", "HREP"):
            continue
        g = group.set_index("indicator")
        table[(name, f"published: {source}")] = {t: cell(g.loc[t, "r2"], g.loc[t, "mae"]) for t in TASKS}
comparison = pd.DataFrame.from_dict(table, orient="index")
comparison.index = pd.MultiIndex.from_tuples(comparison.index, names=["method", "numbers"])
comparison.columns = ["crime R2 (MAE)", "check-in R2 (MAE)"]
comparison

# %%
r2 = ours.pivot_table(index=["method", "protocol"], columns="task", values="r2")
best_published = {}
if published is not None:
    best_published = theirs.groupby("indicator")["r2"].max().to_dict()
main = "MuseCL (vector views), eq. 1 similarity"
od_main = "MuseCL (vector views), OD similarity"
mob_od = "mobility view only, OD similarity"
clean = "dims chosen in training folds"
glue("pub_crime", best_published.get("crime", float("nan")), display=False)
glue("pub_check", best_published.get("check_in", float("nan")), display=False)
for key, name in {"svd": "OD SVD", "muse": main, "museod": od_main, "mobod": mob_od,
                  "concatod": "Concat (vector views), OD similarity"}.items():
    for task, short in (("crime", "crime"), ("check_in", "check")):
        glue(f"{key}_{short}", float(r2.loc[(name, "as published"), task]), display=False)
        glue(f"{key}_{short}_cv", float(r2.loc[(name, clean), task]), display=False)
for task, short in (("crime", "crime"), ("check_in", "check")):
    above = [f"*{name}* ({protocol}, {row[task]:.3f})" for (name, protocol), row in r2.iterrows()
             if task in best_published and row[task] > best_published[task]]
    glue(f"beats_{short}", Markdown(", ".join(above) if above else "none"), display=False)
both = [f"*{name}* ({protocol})" for (name, protocol), row in r2.iterrows() if best_published
        and row["crime"] > best_published["crime"] and row["check_in"] > best_published["check_in"]]
glue("verdict", Markdown(
    f"{len(both)} of our rows beat both published numbers at once ({', '.join(both)})" if both else
    "**none** of our rows beats both published numbers at once: the goal is not reached"), display=False)
best_ours = r2.max()
glue("best_crime", float(best_ours["crime"]), display=False)
glue("best_check", float(best_ours["check_in"]), display=False)
glue("n_rows", len(r2), display=False)
att = fitted["OD similarity"].stage_table("attention")
glue("att_mob", float(att["mobility"].mean()), display=False)
hist = fitted["OD similarity"].histories_["fusion"]
glue("fusion_loss_first", float(hist["train_loss"].iloc[0]), display=False)
glue("fusion_loss_last", float(hist["train_loss"].iloc[-1]), display=False)
glue("log_batch", float(np.log(cfg.fusion_batch_size)), display=False)

# %% [markdown]
# ## Land use: clustering into 12 groups
#
# NMI and ARI of k-means on each embedding against the community districts (higher is better).
# The land-use numbers of the papers are not in `published_results.csv`; the data README quotes
# NMI 0.76-0.78 and ARI 0.58-0.62 for MVURE and MGFN (MGFN paper).

# %%
land = results[results["task"] == "land_use"].set_index("method")[["nmi", "ari"]].round(3)
glue("svd_nmi", float(land.loc["OD SVD", "nmi"]), display=False)
glue("svd_ari", float(land.loc["OD SVD", "ari"]), display=False)
glue("muse_nmi", float(land.loc[main, "nmi"]), display=False)
glue("museod_nmi", float(land.loc[od_main, "nmi"]), display=False)
land.sort_values("nmi", ascending=False)

# %% [markdown]
# ## The other indicators
#
# The same protocol on the three indicators joined here (not part of the published benchmark,
# so there is nothing to compare with): $R^2$ on the raw values, number of components chosen in
# the training folds.

# %%
results[(results["task"].isin(EXTRA)) & (results["protocol"] == clean)].pivot(
    index="method", columns="task", values="r2").reindex(columns=list(EXTRA)).round(3)

# %% [markdown]
# ## What we saw
#
# * The plain **OD SVD** reaches $R^2$ {glue:text}`svd_crime:.3f` on crime and
#   {glue:text}`svd_check:.3f` on check-ins under the published protocol
#   ({glue:text}`svd_crime_cv:.3f` / {glue:text}`svd_check_cv:.3f` with the number of components
#   chosen in the training folds), already at the level the papers report for MVURE, and it
#   recovers the community districts well (NMI {glue:text}`svd_nmi:.3f`, ARI
#   {glue:text}`svd_ari:.3f`).
# * **MuseCL over vector views, as the paper builds it** (eq. 1 similarity, fused output) is far
#   below: crime {glue:text}`muse_crime:.3f`, check-ins {glue:text}`muse_check:.3f` (NMI
#   {glue:text}`muse_nmi:.3f`). With OD similarity the fused output reaches
#   {glue:text}`museod_crime:.3f` / {glue:text}`museod_check:.3f`.
# * The fusion is what loses. Eq. 10 adds the two view embeddings coordinate by coordinate,
#   but the two encoders were trained apart, so coordinate $k$ means different things in each;
#   the attention gives the mobility view {glue:text}`att_mob:.2f` of the weight on average, and
#   the InfoNCE loss barely moves (from {glue:text}`fusion_loss_first:.3f` to
#   {glue:text}`fusion_loss_last:.3f`, against $\ln 64 =$ {glue:text}`log_batch:.3f` for chance):
#   only the attention weights are trained, and with $\tau = 1$ the cosine logits are probably
#   too flat to give it much of a gradient.
# * The **mobility view encoder alone, with OD similarity** is our strongest embedding on the two
#   regression tasks:
#   crime {glue:text}`mobod_crime:.3f` and check-ins {glue:text}`mobod_check:.3f` as published
#   ({glue:text}`mobod_crime_cv:.3f` / {glue:text}`mobod_check_cv:.3f` with components chosen in
#   the training folds). The best published numbers are {glue:text}`pub_crime:.2f` (crime, MGFN)
#   and {glue:text}`pub_check:.2f` (check-ins, HREP).
# * Above the best published crime $R^2$: {glue:text}`beats_crime` (our best is
#   {glue:text}`best_crime:.3f`). Above the best published check-in $R^2$:
#   {glue:text}`beats_check` (our best is {glue:text}`best_check:.3f`). On this run
#   {glue:text}`verdict`. Where a row is above, read it with care. No setting was tuned on
#   the test folds, but the OD-similarity variant was added after
#   the eq. 1 variant had been seen to do poorly, and the best of {glue:text}`n_rows` rows scored
#   on the same five folds is an optimistic estimate. The differences to the published numbers
#   are a few hundredths of $R^2$ on 180 regions and one seed.
# * The POI modality adds little here: the 2013 OSM POIs are few and dominated by bicycle
#   parking, and the POI view alone explains little of either target.

# %% [markdown]
# ## Exercises
#
# 1. Run the chapter with `seed=1` and `seed=2`. How much do the MuseCL rows move? Is the
#    ranking against the published numbers stable?
# 2. Replace eq. 10's sum by a concatenation of the two view embeddings before the attention
#    weights are applied. Does the fused embedding recover what the mobility view alone has?
# 3. Give the fusion a temperature of 0.1 (`RunConfig(temperature=0.1)`). Does the InfoNCE loss
#    fall further, and does that help the probes?
