# ---
# jupyter:
#   schedule:
#     needs: []
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
# # Similarity and triplet sampling
#
# The image encoders learn from triplets of regions: an anchor, a *positive* that should end up
# close to it and a *negative* that should end up far. This chapter shows how MuseCL picks them:
# by similarity of mobility for street views and of POIs for satellite images (eq. 1-4), not by
# distance on the map, and what the two readings of "similar" and "dissimilar" (the paper's and
# the official code's) produce.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %% tags=["hide-input"]
import dataclasses
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from musecl import plotting
from musecl.cache import Cache
from musecl.city import INFLOW, MOBILITY, OUTFLOW, POI, SATELLITE, STREETVIEW
from musecl.config import RunConfig
from musecl.methods.multisemantic import sampler_for
from musecl.notebooks import require_modalities
from musecl.runner import resolve_city
from musecl.sampling import (geographic_triplets, mobility_distance, mobility_triplets,
                             most_similar, poi_distance, poi_triplets, sampling_benchmark,
                             similarity)

cfg = RunConfig.from_yaml(params_file, device=device)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # chapter 1 lists what loading the city warns about
    data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
require_modalities(data, (POI, MOBILITY), any_of=True,
                   shows="how alike its regions are by POIs (eq. 3-4) or by mobility (eq. 1-2), "
                         "and the triplets the image encoders would be trained on")
cache = Cache(f"{out_dir}/cache")
# the similarities of eq. 1-4, each with the images whose triplets it draws; the chapter shows
# those the city can compute (it has the POIs or the mobility)
KINDS = {"POI": dict(modality=POI, lacks="POIs", eqs="eq. 3-4", eq_dist="eq. 3", eq_sim="eq. 4",
                     images=SATELLITE, images_name="satellite images", encoder="satellite"),
         "mobility": dict(modality=MOBILITY, lacks="mobility data", eqs="eq. 1-2", eq_dist="eq. 1",
                          eq_sim="eq. 2", images=STREETVIEW, images_name="street views",
                          encoder="street-view")}
kinds = [kind for kind, spec in KINDS.items() if data.has(spec["modality"])]
cfg   # show the settings that produced every number on the page

# %% [markdown]
# ## Eq. 1-4: distance, then similarity
#
# Each region $r_i$ has a mobility vector, its inflow and outflow of trips
# $(m_i^{in}, m_i^{out})$, and a POI vector, its counts $POI_i^k$ in each of $K$ categories.
# The paper measures how alike two regions are by the Euclidean distance between these vectors
# and turns the distance into a similarity by taking its inverse:
#
# $$dist_{i,j}^{PM} = \sqrt{\sum_{d \in \{in, out\}} (m_i^d - m_j^d)^2} \quad (1) \qquad
# \lambda_{i,j}^{PM} = \frac{1}{dist_{i,j}^{PM}} \quad (2)$$
#
# $$dist_{i,j}^{POI} = \sqrt{\sum_{k=1}^K (POI_i^k - POI_j^k)^2} \quad (3) \qquad
# \lambda_{i,j}^{POI} = \frac{1}{dist_{i,j}^{POI}} \quad (4)$$
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: mobility_distance
# ```
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: poi_distance
# ```
#
# Street-view images are paired by mobility (eq. 1-2), satellite images by POIs (eq. 3-4): the
# paper's reasoning is that street views show how people move through a place and satellite
# images show its built environment and land use. {glue:md}`left_out`

# %% tags=["hide-input"]
counts = data.poi_counts()
flows = data.mobility[[INFLOW, OUTFLOW]].astype(float)
vectors = {"POI": counts, "mobility": flows}
distance = {"POI": poi_distance, "mobility": mobility_distance}
glue("left_out", Markdown(" ".join(
    f"This city has no {KINDS[kind]['lacks']}, so the {kind} similarity ({KINDS[kind]['eqs']}) "
    f"and the triplets of the {KINDS[kind]['encoder']} encoder are left out of this chapter."
    for kind in KINDS if kind not in kinds)), display=False)


def region_vectors(r) -> dict[str, str]:
    """One row of the table: the region's vectors for the similarities this city has."""
    shown = {}
    if "mobility" in kinds:
        shown["(inflow, outflow)"] = f"{tuple(flows.loc[r].astype(int))}"
    if "POI" in kinds:
        shown["POIs"] = f"{int(counts.loc[r].sum())}"
    return {f"{r}: {', '.join(shown)}": ", ".join(shown.values())}


a, b = data.region_ids[:2]  # the first two regions of regions.csv
rows = {**region_vectors(a), **region_vectors(b)}
for kind in ("mobility", "POI"):
    if kind in kinds:
        d_ab = float(distance[kind](vectors[kind].loc[a], vectors[kind].loc[b]))
        rows[f"{KINDS[kind]['eq_dist']} {kind} distance"] = f"{d_ab:.2f}"
        rows[f"{KINDS[kind]['eq_sim']} {kind} similarity"] = f"{similarity(d_ab):.3g}"
pd.Series(rows, name="the first two regions").to_frame()

# %% [markdown]
# ### Identical vectors
#
# Eq. 2 and 4 divide by the distance, which is zero when two regions have identical vectors,
# and that can happen: every region without a single POI has the same POI vector (all zeros),
# and so has every region with one bakery and nothing else (the table below counts them here). The library clamps the distance at a
# tiny $\varepsilon$, so identical vectors get the largest *finite* similarity instead of
# infinity:
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: similarity
# ```

# %%
d = np.array([0.0, 1e-12, 0.5, 1.0, 2.0, 10.0])
pd.DataFrame({"distance d": [f"{v:g}" for v in d],
              "similarity 1 / max(d, eps)":
                  [f"{v:g}" for v in similarity(d)]})

# %% [markdown]
# How many regions does this concern? Identical vectors are found by grouping equal rows, so
# this too needs no $N \times N$ matrix:

# %% tags=["hide-input"]

def identical_pairs(features: pd.DataFrame) -> tuple[int, int]:
    """Regions that share their vector with at least one other, and pairs of such regions,
    from group sizes (no N x N matrix)."""
    size = features.groupby(list(features.columns)).size()
    return int(size[size > 1].sum()), int((size * (size - 1) // 2).sum())


identical = pd.DataFrame(
    {kind: [int((vectors[kind].sum(axis=1) == 0).sum()), *identical_pairs(vectors[kind])]
     for kind in kinds},
    index=["regions with no POI / no trips", "regions sharing their vector with another",
           "pairs at distance 0 (1/d infinite)"]).T
# for "What we saw": the first similarity's counts, and the mobility one's alongside the POI one's
first = kinds[0]
empty_first, dup_first, pairs_first = identical.loc[first]
glue("n_regions", len(data), display=False)
eq_sim = KINDS[first]["eq_sim"]
glue("dup_counts", Markdown(
    f"{empty_first} {'has' if empty_first == 1 else 'have'} no "
    f"{'POI' if first == 'POI' else 'trip'} at all and "
    + (f"{dup_first} share their {first} vector with at least one other region, giving "
       f"{pairs_first} pairs whose {eq_sim} similarity, 1/0, is infinite" if dup_first else
       f"no two regions share their {first} vector, so no pair's {eq_sim} similarity is "
       "infinite (1/0)")),
     display=False)
glue("dup_tail", Markdown(f" ({identical.loc['mobility'].iloc[1]} regions share their "
                          "mobility vector)"
                          if len(kinds) == 2 else ""), display=False)
identical.rename(index={kind: f"{'POI counts' if kind == 'POI' else kind} "
                              f"({KINDS[kind]['eq_dist']})"
                        for kind in kinds})

# %% [markdown]
# Sorting by $1/d$ is the same as sorting by $d$, so the sampler works on distances throughout
# and never meets $1/0$. Identical vectors raise a second, quieter problem: a nearest-neighbour
# search returns the *same* handful of a large group of identical regions to every member of
# the group (every POI-less region would get the same five positives). The sampler therefore
# draws the positive of such an anchor among *all* regions identical to it (found by comparing
# rows as bytes; a sparse matrix, such as a region's OD row and column, by a digest of each row):
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: _spread_over_identical
# ```
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: _identical_groups
# ```

# %% [markdown]
# ## From similarities to triplets: two rules
#
# The paper says only that positives have "higher similarity" and negatives "lower similarity".
# The library offers two readings (`sampling_rule` in the run settings):
#
# | rule | anchor | positive | negative |
# |---|---|---|---|
# | `paper` (default) | uniform over regions | uniform among the anchor's $k$ most similar others | uniform among regions outside its $M$ most similar, and never more similar than the positive |
# | `official` (the official scripts) | uniform over regions | the single most similar other region | any other region, uniformly |
#
# Both are one class, `TripletSampler`; its `sample` method:
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: TripletSampler.sample
# ```
#
# {glue:md}`triplet_regions`

# %% tags=["hide-input"]
sv_paths = data.streetview_paths()
# the regions each encoder trains on: those with its images; every region on a city without them
with_images = {"POI": list(data.satellite_paths().index), "mobility": list(sv_paths)}
regions = {kind: with_images[kind] if data.has(KINDS[kind]["images"]) else list(data.region_ids)
           for kind in kinds}
sampler = sampler_for(cfg)
other_rule = "official" if sampler.rule == "paper" else "paper"
samplers = {sampler.rule: sampler, other_rule: dataclasses.replace(sampler, rule=other_rule)}
draw = {"POI": poi_triplets, "mobility": mobility_triplets}
sampled = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for rule, s in samplers.items():
        for kind in kinds:
            sampled[kind, rule] = draw[kind](data, s, regions=regions[kind])
for w in caught:
    print(f"sampler warned: {w.message}")
text = ("The encoders train on the triplets of `sampler_for(cfg)` drawn over the regions that have "
        "such images")
no_images = [kind for kind in kinds if not data.has(KINDS[kind]["images"])]
if not no_images:
    text += ("; we draw exactly those here (same sampler, same seed, same regions, same order), "
             "and the same number of triplets with the other rule for comparison.")
else:
    text += ". " + " ".join(f"This city has no {KINDS[kind]['images_name']}, so its {kind} "
                            f"triplets are drawn among all {len(regions[kind])} regions, the ones "
                            f"the {KINDS[kind]['encoder']} encoder would train on."
                            for kind in no_images)
    text += (" We draw them as the encoders do (same sampler, same seed, same regions, same "
             "order), and the same number of triplets with the other rule for comparison.")
glue("triplet_regions", Markdown(text), display=False)
sampler

# %% [markdown]
# How similar are the positives and the negatives to their anchor ({glue:text}`n_triplets`
# triplets per encoder and rule)? For each triplet we rank the positive and the negative among
# all other regions by similarity to the anchor: 0% is the most similar region, 100% the least.
# (The rank is counted against a random sample of at most 1,000 regions, which keeps this look
# at the triplets linear in the number of regions too.)

# %% tags=["hide-input"]
features = {kind: vectors[kind].loc[regions[kind]].to_numpy(float) for kind in kinds}


def similarity_rank(kind: str, anchors: np.ndarray, others: np.ndarray,
                    n_sample: int = 1000) -> np.ndarray:
    """Percent of regions strictly closer to each anchor than ``others`` (0: the most similar)."""
    X = features[kind]
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(len(X), size=min(n_sample, len(X)), replace=False)
    d_other = distance[kind](X[anchors], X[others])
    closer = np.zeros(len(anchors))
    valid = np.zeros(len(anchors))
    for j in sample:  # one column of distances at a time: memory O(triplets)
        d = distance[kind](X[anchors], X[j])
        keep = anchors != j
        closer += keep & (d < d_other)
        valid += keep
    return 100 * closer / valid


rows, ranks = [], {}
for kind, X in features.items():
    m = samplers["paper"].effective_sizes(len(X))[1]  # the paper rule's M: its negatives lie beyond
    _, d_top = most_similar(X, k=max(m, 5))
    for rule in samplers:
        t = sampled[kind, rule]
        d5, dm = d_top[t.anchor, 4], d_top[t.anchor, m - 1]
        ranks[kind, rule] = {"positive": similarity_rank(kind, t.anchor, t.positive),
                             "negative": similarity_rank(kind, t.anchor, t.negative)}
        rows.append({"encoder": kind, "rule": rule,
                     "negative MORE similar than positive (%)": 100 * np.mean(t.d_neg < t.d_pos),
                     "negative AS similar as positive (%)": 100 * np.mean(t.d_neg == t.d_pos),
                     "negative is the positive region (%)": 100 * np.mean(t.negative == t.positive),
                     "negative among anchor's 5 most similar (%)": 100 * np.mean(t.d_neg <= d5),
                     "negative among anchor's M most similar (%)": 100 * np.mean(t.d_neg <= dm),
                     "positive identical to anchor (%)": 100 * np.mean(t.d_pos == 0),
                     "median similarity rank of positive (%)":
                         np.median(ranks[kind, rule]["positive"]),
                     "median similarity rank of negative (%)":
                         np.median(ranks[kind, rule]["negative"])})
rules = pd.DataFrame(rows).set_index(["encoder", "rule"])
glue("n_triplets", cfg.sampling.n_triplets, display=False)


def per_kind(column: str, rule: str = "official") -> dict[str, str]:
    return {kind: f"{float(rules.loc[(kind, rule), column]):.1f}" for kind in kinds}


# the prose below, for the similarities this city has ("What we saw" keeps the numbers)
same_pct = per_kind("positive identical to anchor (%)", rule="paper")
m_of = {kind: samplers["paper"].effective_sizes(len(regions[kind]))[1] for kind in kinds}
if len(kinds) == 2:
    glue("m_values", Markdown(f"{m_of['POI']} for the POI triplets, {m_of['mobility']} for the "
                              "mobility ones"),
         display=False)
    same_text = (f"{same_pct['POI']}% of the POI triplets and {same_pct['mobility']}% of the "
                 "mobility triplets")
else:
    glue("m_values", Markdown(f"{m_of[first]} for the {first} triplets"), display=False)
    same_text = f"{same_pct[first]}% of the {first} triplets"
if "POI" in kinds:
    t = sampled["POI", "paper"]
    same = t.d_pos == 0
    same_empty = float(100 * np.mean(
        counts.loc[regions["POI"]].to_numpy().sum(axis=1)[t.anchor[same]] == 0)
                       ) if same.any() else 0.0
    is_asked = "is asked" if data.has(SATELLITE) else "would be asked"
    if same.any():  # only where there are identical pairs to speak of
        same_text += (f"; in {same_empty:.0f}% of those identical POI pairs the anchor has no POI "
                      f"at all, and then the satellite encoder {is_asked} to bring together two "
                      "stretches of water, fields or empty land that may look nothing alike "
                      "from above")
glue("same_sentence", Markdown("With the paper rule, the positive is identical to the anchor in "
                               f"{same_text}."),
     display=False)
rules.round(1).T

# %% [markdown]
# "As similar" means exactly the same distance: a tie. A negative counts as "among the anchor's
# 5 most similar" when it is at least as similar as the anchor's fifth most similar region (ties
# included), and "among the $M$ most similar" when at least as similar as the $M$-th, the
# regions the paper rule never takes as negatives ($M$ = {glue:md}`m_values`: a tenth of the
# regions, at least 50 and at most 200). The histograms show where the negatives of each rule
# fall, with the median rank of the positives as vertical lines.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Where each rule's negatives fall among the anchor's most similar regions (0%: the most similar), beside the median positive."}}
fig, axes = plt.subplots(len(kinds), 1, figsize=(10, 6.5 if len(kinds) == 2 else 3.6), sharex=True,
                         squeeze=False)
axes = axes[:, 0]
bins = np.linspace(0, 100, 41)
for ax, kind in zip(axes, kinds):
    for rule, colour in (("paper", "tab:blue"), ("official", "tab:orange")):
        ax.hist(ranks[kind, rule]["negative"], bins=bins, color=colour, alpha=0.55,
                label=f"{rule} rule: negative")
    for rule, ls in (("paper", "-"), ("official", "--")):
        median = np.median(ranks[kind, rule]["positive"])
        ax.axvline(median, color="k", ls=ls, lw=1,
                   label=f"{rule} rule: median positive ({median:.1f}%)")
    ax.set(ylabel="triplets",
           title=f"{kind} triplets ({'satellite' if kind == 'POI' else 'street view'})")
axes[-1].set_xlabel("similarity rank of the negative among all regions (% of regions more similar "
                    "to the anchor)")
for ax in axes:  # each panel's own medians, beside it: the bars stay uncovered
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Looking at triplets
#
# {glue:md}`gallery_intro`

# %% tags=["hide-input"]
# pictures of the triplets whose images the city has (the others are said to be left out here)
pictured = [kind for kind in kinds if data.has(KINDS[kind]["images"])]
anchor_has = {"POI": 'any POI (a region without POIs has a zero count vector, see "Identical '
                     'vectors" above)',
              "mobility": "any trip"}
gallery_intro = ""
if pictured:
    which = "triplets of each kind" if len(pictured) == 2 else f"{pictured[0]} triplets"
    gallery_intro = (f"Four {which}, drawn at random among those whose anchor has "
                     f"{' or '.join(anchor_has[kind] for kind in pictured)}. Each row is anchor, "
                     "positive, negative.")
gallery_intro = " ".join([gallery_intro] + [
    f"*This city has no {KINDS[kind]['images_name']}: its {kind} triplets cannot be shown as "
    "pictures.*"
    for kind in kinds if kind not in pictured]).strip()
glue("gallery_intro", Markdown(gallery_intro), display=False)
glue("raw_counts", Markdown(
    "On raw counts, as the paper has them, eq. 3 mostly measures *how many* POIs a region has: two "
    "regions with a handful of POIs each are close whatever their categories, while two busy "
    "regions with the same mix but different totals are far apart. Exercise 2 tries category "
    "shares instead." if "POI" in kinds else ""),
     display=False)
rng = np.random.default_rng(cfg.seed)
xy = data.centres()
n_pois = counts.sum(axis=1)


def km(r1, r2) -> float:
    return float(np.hypot(*(xy.loc[r1] - xy.loc[r2])) / 1000)


def pick(frame: pd.DataFrame, ok: pd.Series, n: int = 4) -> pd.DataFrame:
    usable = frame[ok.reindex(frame["anchor"]).to_numpy()]
    return usable.iloc[np.sort(rng.choice(len(usable), size=min(n, len(usable)), replace=False))]


# %% tags=["hide-input"] mystnb={"figure": {"caption": "POI triplets on satellite images, one per row (anchor, positive, negative): the titles give each region's number of POIs and main categories, and for the positive and the negative their eq. 3 distance to the anchor and how many km away they lie."}}
if "POI" in pictured:
    poi_frame = sampled["POI", sampler.rule].to_frame()
    chosen = pick(poi_frame, n_pois > 0)
    sat = data.satellite_paths()
    paths, titles = [], []
    for _, t in chosen.iterrows():
        for role in ("anchor", "positive", "negative"):
            r = t[role]
            paths.append(sat[r])
            extra = "" if role == "anchor" else \
                f", d = {t['d_pos' if role == 'positive' else 'd_neg']:.1f}, " \
                f"{km(t['anchor'], r):.1f} km"
            top = counts.loc[r].nlargest(2)
            mix = ", ".join(f"{c} {v}" for c, v in top.items() if v > 0) or "no POI"
            titles.append(f"{role}: {n_pois[r]} POIs{extra}\n{mix}")
    if paths:
        fig = plotting.plot_images(paths, titles, ncols=3, size=2.6)
        fig.suptitle(f"POI triplets on satellite images ({sampler.rule} rule); d = eq. 3 "
                     "distance", y=1.01)
        plt.show()

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Mobility triplets on street views, one per row (anchor, positive, negative; the first street view of each region): the titles give each region's inflow and outflow, and for the positive and the negative their eq. 1 distance to the anchor and how many km away they lie."}}
if "mobility" in pictured:
    mob_frame = sampled["mobility", sampler.rule].to_frame()
    chosen = pick(mob_frame, flows.sum(axis=1) > 0)
    paths, titles = [], []
    for _, t in chosen.iterrows():
        for role in ("anchor", "positive", "negative"):
            r = t[role]
            paths.append(sv_paths[r][0])
            extra = "" if role == "anchor" else \
                f", d = {t['d_pos' if role == 'positive' else 'd_neg']:.0f}, " \
                f"{km(t['anchor'], r):.1f} km"
            titles.append(f"{role}{extra}\ninflow {flows.loc[r, INFLOW]:.0f}, outflow "
                          f"{flows.loc[r, OUTFLOW]:.0f}")
    if paths:
        fig = plotting.plot_images(paths, titles, ncols=3, size=2.6)
        fig.suptitle(f"mobility triplets on street views ({sampler.rule} rule; first street view "
                     "of each region); d = eq. 1 distance", y=1.01)
        plt.show()

# %% [markdown]
# {glue:md}`raw_counts`
#
# ## Similar is not near
#
# The paper's argument against Tobler's first law ("near things are more related than distant
# things") as the only source of positive pairs is that alike regions may lie far apart.
# {glue:md}`near_intro`
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: most_similar
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "A busy anchor (black) with its 10 most similar regions (orange) and its 10 nearest regions (blue), one map per similarity: orange far from black means that similar regions are not near."}}
K = 10
all_xy = data.xy_m()
near_idx, _ = most_similar(all_xy, k=K)
ids = data.region_ids
fig, axes = plt.subplots(1, len(kinds), figsize=(11 if len(kinds) == 2 else 5.8, 4.6),
                         squeeze=False)
median_km = {}
for ax, kind in zip(axes[0], kinds):
    values = n_pois if kind == "POI" else flows[INFLOW]
    similar_idx, _ = most_similar(vectors[kind].to_numpy(float), k=K)
    order = values.reindex(ids).rank(method="first").to_numpy()
    anchor = int(np.argmin(np.abs(order - 0.9 * len(order))))
    plotting.plot_region_groups(
        data, {f"{K} most {kind}-similar": ids[similar_idx[anchor]],
               f"{K} nearest": ids[near_idx[anchor]], "anchor": [ids[anchor]]},
        colors=["tab:orange", "tab:blue", "black"], ax=ax,
        title=f"{kind}: anchor with {values[ids[anchor]]:.0f} "
              f"{'POIs' if kind == 'POI' else 'trips in'}")
    # over every region: how far away are its most similar and its nearest regions?
    far = np.hypot(*(all_xy[:, None, :] - all_xy[similar_idx]).transpose(2, 0, 1)) / 1000
    close = np.hypot(*(all_xy[:, None, :] - all_xy[near_idx]).transpose(2, 0, 1)) / 1000
    median_km[kind] = (float(np.median(far)), float(np.median(close)))
fig.tight_layout()
plt.show()
busy = {"POI": "the one at the 90th percentile of POI counts",
        "mobility": "the one at the 90th percentile of inflow"}
glue("near_intro", Markdown(
    f"Here is one busy region ({busy[first]}) with its {K} most {first}-similar regions and its "
    f"{K} nearest regions on the map"
    + (f", and a region at the 90th percentile of inflow with its {K} most mobility-similar "
       "regions:" if len(kinds) == 2 else ":")), display=False)
similar_km = f"{K} most {first}-similar regions lie a median {median_km[first][0]:.1f} km away"
if len(kinds) == 2:
    similar_km += f" and its {K} most mobility-similar {median_km['mobility'][0]:.1f} km"
glue("near_sentence", Markdown(f"A region's {similar_km}, against {median_km[first][1]:.1f} km "
                               f"for its {K} nearest."), display=False)

# %% tags=["hide-input"]
pd.DataFrame(median_km, index=[f"median km to the {K} most similar",
                               f"median km to the {K} nearest"]).round(2)

# %% [markdown]
# Geographic triplets, as Tile2vec draws them for the baselines (positive among the 5 nearest
# regions, negative among the farthest quarter), make the contrast plain: the distribution of
# the distance between anchor and positive.
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: geographic_triplets
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Distance from anchor to positive and to negative: similarity triplets against geographic ones."}}
# the POI triplets when the city has POIs, else the mobility ones, over the same regions
frame = sampled[first, sampler.rule].to_frame()
ours = f"{first} triplets (MuseCL, {KINDS[first]['encoder']})"
geo = geographic_triplets(xy.loc[regions[first]].to_numpy(), n_triplets=cfg.sampling.n_triplets,
                          seed=cfg.seed, region_ids=regions[first]).to_frame()
km_pos = {ours: [km(a, p) for a, p in zip(frame["anchor"], frame["positive"])],
          "geographic triplets (Tile2vec)": list(geo["d_pos"] / 1000)}
km_neg = {ours: [km(a, n) for a, n in zip(frame["anchor"], frame["negative"])],
          "geographic triplets (Tile2vec)": list(geo["d_neg"] / 1000)}
fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
bins = np.linspace(0, max(max(map(max, km_pos.values())), max(map(max, km_neg.values()))), 50)
for ax, (what, table) in zip(axes, (("positive", km_pos), ("negative", km_neg))):
    for (name, values), colour in zip(table.items(), ("tab:orange", "tab:blue")):
        ax.hist(values, bins=bins, alpha=0.6, color=colour, label=name)
    ax.set(ylabel="triplets", title=f"anchor to {what}")
axes[1].set_xlabel("km between the anchor and the other region")
axes[0].legend(fontsize=8, frameon=False)
fig.tight_layout()
plt.show()
summary = pd.DataFrame({f"median km to the {w}": {k: np.median(v) for k, v in t.items()}
                        for w, t in (("positive", km_pos), ("negative", km_neg))})
follows = (f"{first} similarity hardly follows distance"
           if summary.iloc[0, 0] >= 0.8 * summary.iloc[0, 1] else
           f"the positive lies nearer than the negative, so {first} similarity partly follows "
           "distance")
glue("triplet_km", Markdown(
    f"In the {first} triplets the positive is a median {summary.iloc[0, 0]:.1f} km from the anchor "
    f"and the negative {summary.iloc[0, 1]:.1f} km: {follows}, while geographic triplets put the "
    f"positive {summary.iloc[1, 0]:.1f} km away."), display=False)

# %% tags=["hide-input"]
# for "What we saw": the findings, in words that follow this city's numbers
off_m = {kind: float(rules.loc[(kind, "official"), "negative among anchor's M most similar (%)"])
         for kind in kinds}
pap_m = {kind: float(rules.loc[(kind, "paper"), "negative among anchor's M most similar (%)"])
         for kind in kinds}
off_5 = {kind: float(rules.loc[(kind, "official"), "negative among anchor's 5 most similar (%)"])
         for kind in kinds}
which = " (POI / mobility)" if len(kinds) == 2 else ""


def pct(values: dict) -> str:
    return " / ".join(f"{values[kind]:.1f}%" for kind in kinds)


if max(off_m.values()) >= 2 and max(off_m.values()) > 2 * max(pap_m.values()):
    lead = "**The paper rule gives cleaner negatives than the official one.**"
elif max(pap_m.values()) >= 2 and max(pap_m.values()) > 2 * max(off_m.values()):
    lead = "**Here the official rule gives cleaner negatives than the paper rule.**"
else:
    lead = "**The two rules give negatives of much the same quality here.**"
glue("rule_finding", Markdown(
    f"{lead} The official rule's uniform negative lies among the anchor's M most similar regions, "
    f"those the paper rule refuses as negatives, in {pct(off_m)}{which} of the triplets, and among "
    f"its 5 most similar in {pct(off_5)}, against {pct(pap_m)} among the M most similar under the "
    "paper rule. Such triplets teach the encoder to push apart regions that "
    f"{KINDS[first]['eqs'] if len(kinds) == 1 else 'eq. 1-4'} call alike."),
     display=False)
same_max = max(float(same_pct[kind]) for kind in kinds)
glue("identical_finding", Markdown(
    "**Identical vectors hardly matter on this city.**" if pairs_first == 0 and same_max < 1 else
    "**Identical vectors matter on this city**: the clamp of eq. 2 and 4 and the spread of "
    "positives over identical regions are needed."), display=False)
pos_ratio = summary.iloc[0, 0] / max(summary.iloc[1, 0], 1e-9)
glue("near_finding", Markdown(
    "**Similarity triplets are not geographic triplets.** Positives chosen by similarity lie far "
    "from their anchor, where a sampler that trusts distance (Tile2vec) would "
    "never look." if pos_ratio >= 3 else
    "**Similarity triplets are only partly geographic.** Positives chosen by similarity lie "
    "farther from their anchor than Tile2vec's, but not by much." if pos_ratio >= 1.5 else
    "**On this city similarity triplets look much like geographic ones**: positives chosen by "
    "similarity lie about as near their anchor as Tile2vec's."), display=False)
summary.round(2)

# %% [markdown]
# ## Scaling: no N x N matrix
#
# Eq. 2 and 4 read as if every pair of regions needed a similarity, an $N \times N$ matrix:
# 800 MB (763 MiB) of doubles for 10,000 regions and 80 GB for 100,000. The sampler never builds one: the
# $k$ most similar regions come from a nearest-neighbour search, and negatives are uniform
# candidates rejected when too similar, so memory grows with the number of triplets and
# neighbours, not with $N^2$. The features themselves may be as wide as the city: with an OD
# table, "similar mobility" can compare a region's trips to and from every region ($d = 2N$,
# {doc}`10_manhattan`); the sampler then takes a scipy sparse matrix, made dense a block of rows
# at a time, and draws the triplets the dense array would, bit for bit.
# `sampling_benchmark` measures the usual case on synthetic data (lognormal flows for $d = 2$,
# over-dispersed POI counts with many duplicates for $d = 30$), 10,000 triplets each:

# %%
bench = pd.DataFrame(sampling_benchmark(n_regions=(1_000, 10_000),
                                        dims=(2, 30), seed=cfg.seed))
bench["N x N matrix would need (MiB)"] = bench["n_regions"] ** 2 * 8 / 2**20  # float64
glue("bench_seconds", float(bench["seconds"].max()), display=False)
glue("bench_mb", float(bench["peak_traced_mb"].max()), display=False)
bench[["n_regions", "dim", "n_triplets", "n_exclude", "seconds",
       "peak_traced_mb", "N x N matrix would need (MiB)"]].rename(columns={
    "n_regions": "regions N", "dim": "d", "n_triplets": "triplets",
    "n_exclude": "M", "seconds": "s", "peak_traced_mb": "peak MiB"}).round(2)

# %% [markdown]
# ## What we saw
#
# - {glue:md}`rule_finding`
# - {glue:md}`near_finding` {glue:md}`near_sentence` {glue:md}`triplet_km`
# - {glue:md}`identical_finding` Of the {glue:text}`n_regions` regions, {glue:md}`dup_counts`{glue:md}`dup_tail`.
#   {glue:md}`same_sentence`
# - Sampling needs no $N \times N$ matrix: 10,000 triplets from up to 10,000 regions took at most
#   {glue:text}`bench_seconds:.1f` s and {glue:text}`bench_mb:.0f` MiB.
#
# ## Exercises
#
# 1. **One positive or five?** Set `n_positive_candidates: 1` in a copy of the params file and
#    rerun the chapter. Predict how the paper rule's "positive identical to anchor" share and the
#    median similarity rank of its positives move. Which image encoder would you expect to
#    overfit sooner with a single positive per anchor, and why?
# 2. **Counts or mix?** Pass `TripletSampler(..., transform="share")` to `poi_triplets` (the
#    category mix instead of raw counts). Predict whether the share of POI triplets whose positive
#    is identical to the anchor goes up or down, and whether the median anchor-positive distance
#    in km grows or shrinks. Check.
# 3. **A bigger city.** Add `100_000` to `n_regions` in the benchmark cell. Does the time grow
#    linearly with $N$? What would the $N \times N$ matrix of eq. 4 need?
