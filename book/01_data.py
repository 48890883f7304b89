# ---
# jupyter:
#   schedule:
#     needs: []  # the city only
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
# # The data: what a city gives MuseCL
#
# This chapter opens a city folder and looks at everything MuseCL learns from (satellite and
# street-view images, points of interest with their review text, trips between regions) next to
# the socioeconomic indicators it must predict. It also shows the observation behind the paper's
# similarity sampling (eq. 1-4): regions with similar POIs are often far apart, so distance alone
# (Tobler's first law) is a poor guide to which regions are alike.

# %% [markdown] tags=["needs-latents"]
# This city is generated (by the book's toy-city generator), and it is built so that the paper's claim
# can be tested on it: each modality shows a different part of what makes a region, no indicator
# can be read off one modality, and the city records the *ceilings*, how much of each indicator
# all hidden causes, and each modality's share of them, could explain.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: a small toy city
seed = 0  # seeds the sampled region pairs (and the toy city if city is None)

# %% tags=["hide-input"]
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue
from PIL import Image
from scipy.stats import spearmanr

import musecl
from musecl import plotting
from musecl.city import (
    CATEGORY, DESTINATION, FLOW, INFLOW, KIND, MOBILITY, MODALITIES, ORIGIN, OUTFLOW, PATH, POI,
    REGION_ID, SATELLITE, STREETVIEW, TEXT,
)
from musecl.evaluation import ridge_cv_r2
from musecl.methods.base import join_words
from musecl.sampling import most_similar, poi_distance, pretext_features, transform_features

pd.set_option("display.max_colwidth", None)  # show texts whole

if city is None:  # run by hand without a city: a 150-region toy city
    from musecl.datasets.toy import make_toy_city

    city = make_toy_city(Path(tempfile.mkdtemp()) / "toy", n_regions=150,
                         seed=seed, progress=False)

# load_city warns when it fills or drops anything: show that as text
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    city = musecl.load_city(city)
for w in caught:
    print(f"load_city warned: {w.message}")
has_latents = city.latents is not None and not city.latents.empty
glue("n_regions", len(city), display=False)
city

# %% [markdown]
# ## The city folder
#
# A city is a folder of a few CSV files, a YAML file of metadata and a folder of images; its
# format is described in {doc}`city_format`. Every table is indexed by `region_id`. Regions are
# hexagons here, but any polygons will do. The metadata says which modalities the city has, where
# the data came from, and how each indicator is modelled: as the paper does, an indicator $x$ is
# predicted on the scale $y = \ln(1 + x)$, which tames its heavy right tail.

# %% tags=["hide-input"]
meta = city.meta
sv_paths = city.streetview_paths()
# a modality counts when city.yaml lists it and its files hold data; the chapter shows only those
present = {
    SATELLITE: city.has(SATELLITE) and len(city.satellite_paths()) > 0,
    STREETVIEW: city.has(STREETVIEW) and len(sv_paths) > 0,
    POI: city.has(POI) and len(city.pois) > 0,
    MOBILITY: city.has(MOBILITY) and (city.od is not None or bool(city.mobility.to_numpy().any())),
}
MODALITY_NAMES = {SATELLITE: "satellite images", STREETVIEW: "street-view images",
                  POI: "points of interest", MOBILITY: "trips (mobility)"}


missing = [MODALITY_NAMES[m] for m in MODALITIES if not present[m]]
if missing:
    shown = [MODALITY_NAMES[m] for m in MODALITIES if present[m]]
    missing_sentence = (f"This city has no {join_words(missing, 'or')}, so the chapter shows "
                        + (f"only its {join_words(shown, 'and')}." if shown
                           else "no modality at all, only its regions and indicators."))
else:
    missing_sentence = ""  # all four modalities: nothing to say
glue("missing_sentence", Markdown(missing_sentence), display=False)
facts = {
    "name": meta.name,
    "CRS": meta.crs,
    "hexagon size (centre to vertex, m)": meta.hexagon_size_m,
    "modalities": ", ".join(meta.modalities),
    "regions": len(city),
    "regions with a satellite image": len(city.satellite_paths()),
    "street-view images": sum(len(p) for p in sv_paths.values()),
    "POIs (categories)": f"{len(city.pois)} ({city.pois[CATEGORY].nunique()})",
    "origin-destination rows": "none" if city.od is None else len(city.od),
    "provenance": meta.provenance,
}
if missing:
    display(Markdown(f"```{{note}}\n{missing_sentence}\n```"))
pd.Series(facts, name="").to_frame()

# %% [markdown]
# The indicators, with their units and the *oracle* $R^2$ (explained at the end of the chapter)
# where the city records one. Two of the paper's indicators follow an input closely: the
# number of POIs (NP) follows the POIs, and the mobility count (MC) the trips (on the toy city neither
# is the exact total of its input table: the city registers more POIs than `pois.csv` lists,
# and `od.csv` keeps the largest flows only). They stay, for fidelity to the paper, but
# `city.yaml` marks them `derived_from_input`, and the book's headline means leave them out:
# predicting an input from itself says little about learning.

# %% tags=["hide-input"]
ind = meta.indicators
derived = meta.derived_indicators()
headline = meta.headline_indicators()
indicator_table = pd.DataFrame({
    "long name": {k: v.long_name for k, v in ind.items()},
    "unit": {k: v.unit for k, v in ind.items()},
    "modelled as": {k: "ln(1 + x)" if v.log else "x" for k, v in ind.items()},
    "derived from input": {k: derived.get(k, "") for k in ind},
    "median": city.indicators.median(),
    "max": city.indicators.max(),
    "regions without a value": city.indicators.isna().sum(),  # left out of its evaluation
    "oracle R²": pd.Series(meta.oracle_r2, dtype=float),
}).rename_axis("indicator")
if not indicator_table["regions without a value"].any():
    indicator_table = indicator_table.drop(columns="regions without a value")
indicator_table.dropna(axis="columns", how="all").round(2)  # a real city has no oracle R²

# %% [markdown]
# ## The hidden causes and the indicators, on the map
#
# A generated city also writes the *latent* fields it was drawn from (`latents.csv`): every
# modality and every indicator is a noisy function of them. A real city has no such file, and
# this section then shows only the indicators.

# %% mystnb={"figure": {"caption": "The toy city's hidden fields (latents), one map each: the ground truth every modality sees part of."}}
if has_latents:
    fig = plotting.plot_maps(city, city.latents, ncols=4, size=3.0)
    fig.suptitle("latent fields (the ground truth of the toy city)", y=1.01)
    plt.show()
else:
    display(Markdown("*No `latents.csv` (a real city): no latent maps.*"))

# %% mystnb={"figure": {"caption": "The indicators on the map, on the scale the probes predict (ln(1 + x) where the city says so)."}}
targets = city.targets()  # ln(1 + x) where the metadata says log: true
titles = {k: f"ln(1 + {k})" if v.log else k for k, v in ind.items()}
fig = plotting.plot_maps(city, targets, ncols=3, size=3.6, titles=titles)
plt.show()

# %% [markdown] tags=["needs-latents"]
# The latents are not one "urbanity" factor in disguise. If they were, every modality would see
# the same thing and fusing them could add nothing. How much any two of them move together
# across the regions (Pearson correlation) says how far that holds here:

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Pearson correlation between the hidden fields across regions: values near zero mean that two fields, and the modalities that see them, carry different information."}}
if has_latents:
    corr = city.latents.corr()
    off_diagonal = corr.where(~np.eye(len(corr), dtype=bool)).abs().stack()
    pair = off_diagonal.idxmax()
    signed_r = float(corr.loc[pair])  # the largest in size, with its sign
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    im = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(corr)), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(corr)), corr.index)
    for (r, c), v in np.ndenumerate(corr.to_numpy()):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title("correlation of the latents across regions")
    plt.show()
    if off_diagonal.max() < 0.5:
        latent_sentence = (f"**The modalities see different things.** The city's {len(corr)} "
                           "latents are not one factor in disguise: the largest correlation (in "
                           f"size) between two of them is {signed_r:.2f} ({pair[0]} and "
                           f"{pair[1]}).")
    else:
        latent_sentence = ("**Some hidden causes move together.** The largest correlation (in "
                           f"size) between two of the city's {len(corr)} latents is {signed_r:.2f} "
                           f"({pair[0]} and {pair[1]}), so modalities that see different latents "
                           "still share part of what they show.")
else:
    latent_sentence = ("This city has no latents (a real city), so what each modality sees is not "
                       "known.")
glue("latent_sentence", Markdown(latent_sentence), display=False)

# %% [markdown]
# ## What each modality sees
#
# No modality sees everything, which is what makes fusing them worth trying.

# %% [markdown] tags=["needs-latents"]
# `city.yaml` says which latents each modality is drawn from: a satellite image shows how much
# ground is built on and what the roofs are used for, but not how tall the buildings are or who
# lives in them; a street view shows facades (their height, their upkeep), people and cars, but
# not what lies behind the facade; POIs show what a place is used for and by whom; trips reveal
# the latents only through two numbers per region, the trips leaving and arriving (eq. 1).

# %%
shown_latents = {m: cols for m, cols in meta.modality_latents.items()
                 if present.get(m)}
if shown_latents:  # only the modalities this city has
    seen_by = pd.DataFrame({m: {lat: "✓" for lat in cols}
                            for m, cols in shown_latents.items()})
    seen_by = seen_by.reindex(list(meta.latents) or seen_by.index).fillna("")
    seen_by.columns = [f"{m} (through 2 numbers)" if m == "mobility" else m
                       for m in seen_by.columns]
    display(seen_by.rename_axis("latent"))
if has_latents and meta.latents:
    latent_table = pd.Series(meta.latents, name="what it is and who sees it")
    display(latent_table.rename_axis("latent").to_frame())
else:
    display(Markdown("*No latent descriptions in `city.yaml`.*"))


# %% [markdown]
# Each modality summarised as crudely as possible: the mean colour of the images, the number of
# POIs and their spread over categories, and the trips.

# %% [markdown] tags=["needs-latents"]
# These summaries check the descriptions: the table gives the Spearman rank correlation of each
# summary with each latent; a latent that no row tracks must be found by the encoders in finer
# detail, or not at all.

# %% tags=["hide-input"]
def image_colour(paths: pd.Series) -> pd.DataFrame:
    """Mean brightness, greenness G - (R + B) / 2 and blueness B - R."""
    rows = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255
        r, g, b = rgb[..., 0].mean(), rgb[..., 1].mean(), rgb[..., 2].mean()
        rows.append((rgb.mean(), g - (r + b) / 2, b - r))
    return pd.DataFrame(rows, index=paths.index,
                        columns=["brightness", "greenness", "blueness"])


counts = city.poi_counts()
shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
summaries = {}
if present[SATELLITE]:
    sat = image_colour(city.satellite_paths())
    summaries.update({f"satellite {k}": sat[k] for k in sat})
if present[STREETVIEW]:
    sv_all = city.images[city.images[KIND] == STREETVIEW]
    sv_all = sv_all.set_index(REGION_ID)[PATH]
    sv_colour = image_colour(sv_all).groupby(level=0).mean()
    summaries["street-view greenness"] = sv_colour["greenness"]
    summaries["street views per region"] = sv_all.groupby(level=0).size()
if present[POI]:
    summaries["ln(1 + POIs)"] = np.log1p(counts.sum(axis=1))
    logs = np.log(shares.mask(shares == 0, 1))  # 0 log 0 = 0
    summaries["POI category entropy"] = -(shares * logs).sum(axis=1)
if present[MOBILITY]:
    summaries["ln(1 + inflow)"] = np.log1p(city.mobility[INFLOW])
    summaries["ln(1 + outflow)"] = np.log1p(city.mobility[OUTFLOW])
summaries = pd.DataFrame(summaries, index=city.region_ids, dtype=float).reindex(city.region_ids)

if summaries.empty or not summaries.shape[1]:
    display(Markdown("*This city has no modality to summarise.*"))
    hidden_sentence = ""
elif has_latents:
    seen = pd.DataFrame({
        s: city.latents.corrwith(summaries[s], method="spearman")
        for s in summaries}).T
    display(seen.style
            .background_gradient(cmap="RdBu_r", vmin=-1, vmax=1, axis=None)
            .format("{:.2f}")
            .set_caption("Spearman correlation: summary (rows) vs latent"))
    hidden = seen.abs().max(axis=0)
    if hidden.min() < 0.3:
        hidden_sentence = ("The crude summaries of colour, counts and trips hardly track "
                           f"`{hidden.idxmin()}` (largest |ρ| = {hidden.min():.2f}): an encoder "
                           "has to find it in finer detail, or not at all.")
    else:
        hidden_sentence = (f"Even the latent the crude summaries track least, `{hidden.idxmin()}`, "
                           f"follows one of them with |ρ| = {hidden.min():.2f}: every latent shows "
                           "in colours, counts or trips.")
else:
    hidden_sentence = ""
    display(summaries.describe().T.round(2))

# %% [markdown]
# ## Images
#
# Six regions spread over the range of building footprint (or of the first indicator, in a city
# without latents): the satellite image on top, the region's first street view below it, where
# the city has both kinds.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Six regions spread over one ranking, lowest first: what a satellite tile and a street view of each look like (the kinds this city has)."}}
if has_latents and "footprint" in city.latents:
    key, ranking = "footprint", city.latents["footprint"]
else:
    key = next(iter(meta.indicators))
    ranking = city.indicators[key]  # as recorded (not ln(1 + x)): the value the titles print
kinds = [k for k in (SATELLITE, STREETVIEW) if present[k]]
paths_of = {SATELLITE: city.satellite_paths().to_dict(),
            STREETVIEW: {r: p[0] for r, p in sv_paths.items()}}
usable = ranking.dropna()
usable = usable[[all(r in paths_of[k] for k in kinds) for r in usable.index]]
usable = usable.sort_values()
if kinds and len(usable):
    n_show = min(6, len(usable))
    at = np.linspace(0, len(usable) - 1, n_show).round().astype(int)
    picks = usable.index[at]
    paths = [paths_of[k][r] for k in kinds for r in picks]
    titles = [f"{r}\n{key} = {usable[r]:,.{0 if abs(usable[r]) >= 100 else 2}f}" if k == kinds[0]
              else ""
              for k in kinds for r in picks]
    fig = plotting.plot_images(paths, titles, ncols=n_show, size=1.9)
    for ax in fig.axes:
        ax.title.set_fontsize(10)
    plt.show()
else:
    display(Markdown("*This city has no images.*"))

# %% [markdown]
# ## Points of interest
#
# Each POI has a category and, optionally, a text (a name, a review). Here are a few POIs from
# two regions at the two ends of a contrast (affluence in the toy city), among regions with at
# least five POIs:

# %% tags=["hide-input"]
n_pois = counts.sum(axis=1)
if has_latents and "affluence" in city.latents:
    contrast = city.latents["affluence"]
else:
    contrast = ranking
contrast = contrast[n_pois.reindex(contrast.index) >= 5].dropna()
if not present[POI]:
    display(Markdown("*This city has no POIs.*"))
elif len(contrast) >= 2:
    ends = (contrast.idxmin(), contrast.idxmax())
    sample = pd.concat([
        city.pois[city.pois[REGION_ID] == r].head(5)
        .assign(**{contrast.name: round(contrast[r], 2)})
        for r in ends])
    columns = [REGION_ID, contrast.name, CATEGORY] + ([TEXT] if (sample[TEXT] != "").any() else [])
    display(sample[columns].reset_index(drop=True))

# %% [markdown]
# A region's POIs enter the model twice: as the vector of counts per category, the $K$-vector
# of eq. 3 whose distances pick similar regions for the satellite encoder, and as text for the
# word2vec embedding of eq. 7. The counts come from:
#
# ```{literalinclude} ../musecl/city.py
# :pyobject: City.poi_counts
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "POI categories across the city (left) and the number of POIs per region (right)."}}
if present[POI]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5),
                             gridspec_kw={"width_ratios": [1, 1.2]})
    plotting.plot_category_counts(city, top=15, ax=axes[0])
    plotting.plot_map(city, np.log1p(n_pois), ax=axes[1],
                      title="POIs per region", label="ln(1 + POIs)")
    fig.tight_layout()
    plt.show()
    poi_sentence = (f"The city has {len(city)} regions and {len(city.pois):,} POIs; a typical "
                    f"region has {n_pois.median():.0f} of them and "
                    f"{(n_pois == 0).mean() * 100:.0f}% have none.")
else:
    poi_sentence = f"The city has {len(city)} regions and no POIs."
glue("n_pois", len(city.pois), display=False)
glue("poi_sentence", Markdown(poi_sentence), display=False)

# %% [markdown]
# ## Mobility
#
# Trips are given either per region (`mobility.csv`: inflow and outflow) or as an
# origin-destination table (`od.csv`), from which the inflow $m_i^{in}$ and outflow
# $m_i^{out}$ of eq. 1 follow by summing:
#
# ```{literalinclude} ../musecl/city.py
# :pyobject: inflow_outflow
# ```
#
# Left, the largest flows between regions; middle, each region's inflow against its outflow on
# log scales (a dot above the dotted line sends out more trips than it receives: a home region);
# right, the net flow $m^{in} - m^{out}$ on a signed log scale,
# $\operatorname{sign}(v)\ln(1 + |v|)$.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Trips: the largest flows between regions (left), each region's inflow against its outflow (middle) and its net inflow (right)."}}
if present[MOBILITY]:
    flows = city.mobility
    net = flows[INFLOW] - flows[OUTFLOW]
    signed_log = np.sign(net) * np.log1p(net.abs())
    lim = float(signed_log.abs().max()) or 1.0
    mix = city.latents["landuse"] if has_latents and "landuse" in city.latents else None

    # flows need od.csv
    panels = ["flows", "inout", "net"] if city.od is not None else ["inout", "net"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    ax_of = dict(zip(panels, axes))
    if "flows" in ax_of:
        plotting.plot_flows(city, top=300, ax=ax_of["flows"],
                            title="the 300 largest flows")
    plotting.plot_inflow_outflow(city, ax=ax_of["inout"], values=mix,
                                 title="inflow vs outflow",
                                 label=None if mix is None else "landuse (latent)")
    plotting.plot_map(city, signed_log, ax=ax_of["net"], cmap="RdBu_r",
                      vmin=-lim, vmax=lim, title="net inflow (red: more arrive)",
                      label="sign · ln(1 + |in − out|)")
    fig.tight_layout()
    plt.show()

    top_tenth = flows[INFLOW].nlargest(max(1, len(city) // 10))
    total_in = max(flows[INFLOW].sum(), 1)
    mobility_sentence = ("Trips cross the city: the tenth of the regions with the largest inflow "
                         f"receive {top_tenth.sum() / total_in * 100:.0f}% of all trips")
    if city.od is not None:  # length of the drawn flows, between region centres
        centre = city.centres()
        moves = city.od[city.od[ORIGIN] != city.od[DESTINATION]]
        drawn = moves.nlargest(300, FLOW)
        start = centre.loc[drawn[ORIGIN]].to_numpy()
        end = centre.loc[drawn[DESTINATION]].to_numpy()
        km_top_flows = float(np.median(np.hypot(*(start - end).T)) / 1000)
        mobility_sentence += f", the {len(drawn)} largest flows run a median {km_top_flows:.1f} km,"
    mobility_sentence += (f" and {(net > 0).mean() * 100:.0f}% of the regions receive more trips "
                          "than they send.")
else:
    display(Markdown("*This city has no trips (no `mobility.csv` or `od.csv`): no mobility "
                     "panels.*"))
    mobility_sentence = ""
glue("mobility_sentence", Markdown(mobility_sentence), display=False)

# %% [markdown]
# ## Similar is not the same as near
#
# The paper picks positive pairs for its image encoders by similarity of POIs (eq. 3-4) and of
# mobility (eq. 1-2), not by distance, arguing that Tobler's first law ("near things are more
# related than distant things") misses regions that are alike but far apart. Eq. 3 is the
# Euclidean distance between POI count vectors,
#
# $$\mathrm{dist}^{POI}_{i,j} = \sqrt{\textstyle\sum_{k=1}^{K} (POI_i^k - POI_j^k)^2},$$
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: poi_distance
# ```
#
# We compare it with the geographic distance between region centres on a random sample of
# pairs (all $N^2$ pairs would not scale to a real city), once on raw counts as in the paper and
# once on category *shares* (each row divided by its total), which ignore how many POIs a region
# has and keep only its mix.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "POI distance (eq. 3) against geographic distance for a random sample of region pairs, on raw counts (left) and on category shares (right): the red median line rising with distance would mean that near regions are more alike."}}
xy = city.xy_m()
if present[POI]:
    rng = np.random.default_rng(seed)
    n_pairs = 20_000
    i = rng.integers(0, len(city), n_pairs)
    j = (i + rng.integers(1, len(city), n_pairs)) % len(city)  # never i itself
    geo_km = np.hypot(*(xy[i] - xy[j]).T) / 1000
    X = counts.to_numpy()
    poi_dist, rho = {}, {}
    for t in ("raw", "share"):
        Xt = transform_features(X, t)
        poi_dist[t] = poi_distance(Xt[i], Xt[j])
        rho[t] = float(spearmanr(geo_km, poi_dist[t]).statistic)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    edges = np.quantile(geo_km, np.linspace(0, 1, 11))
    bins = list(zip(edges[:-1], edges[1:]))
    for ax, (t, d) in zip(axes, poi_dist.items()):
        y = np.log1p(d) if t == "raw" else d
        hb = ax.hexbin(geo_km, y, gridsize=35, bins="log", cmap="Blues", mincnt=1)
        med = [np.median(y[(geo_km >= a) & (geo_km <= b)]) for a, b in bins]
        ax.plot((edges[:-1] + edges[1:]) / 2, med, color="tab:red", lw=2,
                label="median per distance decile")
        ax.set(xlabel="geographic distance (km)",
               title=f"{t}: Spearman ρ = {rho[t]:.2f}",
               ylabel=("ln(1 + eq. 3 distance), raw counts" if t == "raw"
                       else "eq. 3 distance, category shares"))
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
        fig.colorbar(hb, ax=ax, label="pairs")
    fig.tight_layout()
    plt.show()

    # each region's most POI-similar other region, by nearest-neighbour search
    nearest_idx, _ = most_similar(X, k=1)
    km_to_similar = np.hypot(*(xy - xy[nearest_idx[:, 0]]).T) / 1000
    km_to_adjacent = np.hypot(*(xy - xy[most_similar(xy, k=1)[0][:, 0]]).T) / 1000
    strength = max(abs(rho["raw"]), abs(rho["share"]))
    related = "only weakly" if strength < 0.3 else "moderately" if strength < 0.6 else "strongly"
    tobler_sentence = (
        f"POI distance and geographic distance are {related} related (Spearman ρ = "
        f"{rho['raw']:.2f} on raw counts, {rho['share']:.2f} on category shares): each region's "
        f"most POI-similar region lies a median {np.median(km_to_similar):.1f} km away, "
        f"{np.median(km_to_similar) / np.median(km_to_adjacent):.0f} times the distance to its "
        f"nearest neighbour ({np.median(km_to_adjacent):.1f} km).")
else:
    tobler_sentence = ""
glue("tobler_sentence", Markdown(tobler_sentence), display=False)

# %% tags=["hide-input"]
if present[POI]:
    display(pd.DataFrame({"Spearman ρ, POI distance vs km": rho}).round(3))
else:
    display(Markdown("*This city has no POIs: eq. 3 has nothing to compare.*"))

# %% [markdown]
# Read the left panel with care. On raw counts the distance between two regions is dominated by
# how *many* POIs they have: two quiet regions with few POIs have close count vectors wherever
# they lie, so the raw distance need not grow as the regions move apart. On shares the mix
# counts. In both panels, set the trend of the median
# against the spread at each distance: a trend much smaller than the spread means that distance
# says little about POI similarity.
#
# Where do POI-similar regions lie? Left, every region coloured by the distance to its most
# POI-similar region (eq. 3 on raw counts, as the satellite encoder's triplets use it); right,
# one busy region with its 10 most POI-similar regions and its 10 nearest ones.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Left, each region coloured by the distance to its most POI-similar region; right, one busy anchor (black) with its 10 most POI-similar regions (orange) and its 10 nearest (blue): orange far from black means that similar regions are not near."}}
if present[POI]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    plotting.plot_map(city, pd.Series(km_to_similar, index=city.region_ids), ax=axes[0],
                      cmap="magma", title="km to the most POI-similar region", label="km")
    anchor = int(np.argmin(np.abs(n_pois.rank(method="first").to_numpy() - 0.9 * len(city))))
    similar10, _ = most_similar(X, k=10)
    near10, _ = most_similar(xy, k=10)
    ids = city.region_ids
    plotting.plot_region_groups(
        city, {"10 most POI-similar": ids[similar10[anchor]], "10 nearest": ids[near10[anchor]],
               "anchor": [ids[anchor]]}, colors=["tab:orange", "tab:blue", "black"], ax=axes[1],
        title=f"an anchor with {n_pois.iloc[anchor]} POIs")
    fig.tight_layout()
    plt.show()
else:
    display(Markdown("*This city has no POIs: no POI-similar regions to map.*"))

# %% [markdown]
# ## The ceilings: what the latents, and what each modality, could explain

# %% [markdown] tags=["needs-latents"]
# The toy city knows the noiseless function $g$ that turns latents $z_i$ into each indicator; the
# data are $y_i = \ln(1 + g(z_i)) + \varepsilon_i$ with Gaussian noise $\varepsilon_i$. The
# *oracle* $R^2$ scores the noiseless function itself,
#
# $$R^2_{\text{oracle}} = 1 - \frac{\sum_i \bigl(y_i - \ln(1 + g(z_i))\bigr)^2}{\sum_i (y_i - \bar y)^2},$$
#
# so no method that sees only the data can beat it on average. The functions $g$:
#
# ```{literalinclude} ../musecl/datasets/toy.py
# :pyobject: _indicator_means
# ```
#
# A modality that shows only some of the latents has a lower ceiling: the best it can do is the
# conditional mean $E[\ln(1 + g(z)) \mid \text{what it shows}]$. The generator estimates it for
# each modality (`modality_oracle_r2` in `city.yaml`; the estimator is described under
# `generator.ceiling_estimator`) and writes every ceiling's prediction per region to
# `ceilings.csv`, so that the results chapters score each ceiling on exactly the regions their
# methods are tested on. If the full ceiling is well above every single modality's, a method
# that fuses the modalities has something to gain; that is what the paper claims MuseCL does.
#
# The black diamonds are what the *raw inputs* of MuseCL's contrastive stages already give:
# $\ln(1 + \text{inflow}), \ln(1 + \text{outflow})$ and $\ln(1 + \text{count})$ of every POI
# category (the vectors of eq. 1 and eq. 3), read by a ridge regression over 5 folds. A learned
# representation has to beat them to show that it learned anything from the images.
#
# ```{literalinclude} ../musecl/sampling.py
# :pyobject: pretext_features
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The ceilings per indicator: R² from every hidden field, from what each single modality shows, and from the raw inputs."}}
ceiling_names = {"satellite": "satellite", "streetview": "street view", "poi": "POIs",
                 "mobility": "trip counts"}
if meta.oracle_r2:
    ceilings = pd.DataFrame({"all latents": pd.Series(meta.oracle_r2, dtype=float)})
    for m, label in ceiling_names.items():
        if m in meta.modality_oracle_r2 and present[m]:  # only the modalities this city has
            ceilings[label] = pd.Series(meta.modality_oracle_r2[m], dtype=float)
    ceilings = ceilings.reindex(headline + list(derived))
    RAW = "raw inputs (ridge)"
    if present[POI] or present[MOBILITY]:  # the pretext inputs: POI counts and trip counts
        ceilings[RAW] = ridge_cv_r2(pretext_features(city), city, indicators=list(ceilings.index),
                                    seed=seed)

    fig, ax = plt.subplots(figsize=(10, 4))
    bars = ceilings.drop(columns=RAW, errors="ignore")
    width = 0.8 / bars.shape[1]
    colours = dict(zip(["all latents", *ceiling_names.values()],
                       ["black", "tab:green", "tab:orange", "tab:purple", "tab:blue"]))
    for k, (name, col) in enumerate(bars.items()):
        ax.bar(np.arange(len(bars)) + (k - (bars.shape[1] - 1) / 2) * width, col, width,
               label=name, color=colours[name], alpha=0.85 if k else 0.35)
    if RAW in ceilings:
        ax.scatter(np.arange(len(bars)), ceilings[RAW], marker="D", color="black",
                   zorder=3, label="raw inputs (ridge, 5 folds)")
    ax.set_xticks(range(len(bars)),
                  [f"{i}\n(derived: {derived[i]})" if i in derived else i for i in bars.index])
    if derived:
        ax.axvline(len(headline) - 0.5, color="grey", lw=0.8, ls="--")
    ax.set(ylabel="$R^2$ on ln(1 + x)", ylim=(min(0, float(ceilings.min().min())), 1),
           title="ceilings per indicator: every latent, each modality's view, and the raw inputs")
    ax.legend(fontsize=8, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    plt.show()

    means = ceilings.loc[headline].mean()
    modality_means = means.drop(["all latents", RAW], errors="ignore")
    parts = [f"Averaged over the headline indicators ({', '.join(headline)}), all latents "
             f"together allow R² = {means['all latents']:.2f}"]
    if len(modality_means):
        best_modality = modality_means.idxmax()
        per_indicator_best = ceilings.loc[headline, list(modality_means.index)].max(axis=1).mean()
        parts.append(f"the best single modality ({best_modality}) {modality_means.max():.2f} "
                     f"(the best modality per indicator, {per_indicator_best:.2f})")
    if RAW in means:
        parts.append(f"the raw inputs of the contrastive stages {means[RAW]:.2f}")
    room = (means["all latents"] - means.drop("all latents").max() if len(means) > 1
            else float("nan"))
    if len(parts) == 1:
        sentence = parts[0] + "."
    else:
        gain = ("that only a fusion of what the images show can win"
                if present[SATELLITE] and present[STREETVIEW]
                else "that only a method combining this city's inputs can win"
                if len(modality_means) > 1
                else "that no single input of this city reaches")
        sentence = (", ".join(parts[:-1]) + ("," if len(parts) > 2 else "") + " and " + parts[-1]
                    + f": {room:.2f} of R² {gain}. (Scored out of fold over every region; "
                    "chapters 7 and 8 score the same ceilings on each seed's test regions, so "
                    "their numbers, and which single modality comes first when two are close, can "
                    "differ a little.)")
else:
    sentence = "This city records no ceilings: no known limit on what a method could reach."
    room = float("nan")
glue("ceiling_sentence", Markdown(sentence), display=False)

# %% tags=["hide-input"]
if meta.oracle_r2:
    display(ceilings.round(3).rename_axis("indicator"))
    display(pd.DataFrame({"mean over the headline indicators": means}).round(3))
else:
    display(Markdown(f"*{sentence}*"))
# for "What we saw": the findings, in words that follow this city's numbers
if room != room:  # no ceilings, or nothing to set against the full one
    room_finding = ""
elif room >= 0.10:
    room_finding = ("**Fusion has room to win on this city.** No single modality, and not the "
                    "raw inputs either, comes close to what all hidden causes together explain, so "
                    "a method that combines the modalities can gain what none of them shows alone.")
elif room >= 0.03:
    room_finding = ("**Fusion has some room to win on this city, but not much.** The best single "
                    "view comes close to what all hidden causes together explain.")
else:
    room_finding = ("**Fusion has little room to win on this city.** A single view already "
                    "explains about as much as all hidden causes together, so combining modalities "
                    "can add little.")
glue("room_finding", Markdown(room_finding), display=False)
if present[POI]:
    ratio = float(np.median(km_to_similar) / max(np.median(km_to_adjacent), 1e-9))
    if strength < 0.3 and ratio >= 3:
        near_finding = ("**Similar is not near**, as the paper argues: positive pairs chosen by "
                        "POI similarity mostly join regions far apart, which a sampler that trusts "
                        "distance (Tobler's first law) would never pair.")
    elif strength >= 0.3 and ratio < 3:
        near_finding = ("**On this city similar is mostly near**: POI similarity follows distance, "
                        "so sampling positives by similarity picks much the same pairs as sampling "
                        "by distance would.")
    else:
        near_finding = ("**Similar is only partly near**: POI similarity follows distance a "
                        "little, so sampling by similarity finds pairs that distance alone would "
                        "partly miss.")
else:
    near_finding = ("**Whether similar regions are near cannot be checked here**: this city has "
                    "no POIs.")
glue("near_finding", Markdown(near_finding), display=False)
glue("hidden_sentence", Markdown(hidden_sentence), display=False)

# %% [markdown] tags=["needs-latents"]
# Three readings of the chart. First, the *gap* between the grey bar and the best coloured bar of
# an indicator is what no single modality can explain: only a representation that combines
# modalities can close it. Second, the derived indicators (right of the dashed line) are nearly
# handed over by their input (NP by the POIs, MC by the trip counts), which is why headline
# means leave them out. Third, the gap between what the raw inputs reach and the full ceiling
# is the room a method has to win by adding what the images show.

# %% [markdown]
# ## What we saw
#
# {glue:md}`missing_sentence`
#
# - {glue:md}`room_finding` {glue:md}`ceiling_sentence`
# - {glue:md}`latent_sentence` {glue:md}`hidden_sentence`
# - {glue:md}`near_finding` {glue:md}`tobler_sentence`
#
# ## Exercises
#
# 1. **Sampling noise.** Re-run the chapter with `seed = 1` and the same city (a new sample of
#    20,000 pairs; with `city = None` the seed would also generate another toy city: pass its folder).
#    Predict by how much the Spearman $\rho$ moves: by more or less than 0.02? Check, then halve
#    `n_pairs` and check again.
# 2. **Counts or mix?** On raw counts, two empty edge regions are perfectly similar, wherever they
#    lie. Replace `"share"` by `"log1p"` in the Tobler cell: do you expect $\rho$ closer to the raw
#    or to the share value? Then keep only pairs of regions that both have at least five POIs
#    and see which reading of eq. 3 is more "Toblerian".
# 3. **Which modality for which indicator?** From the table of ceilings, name for each headline
#    indicator the two modalities whose views together should come closest to the full ceiling,
#    using the table of what each modality sees and the functions $g$ above. Which indicator
#    needs the street view most, and why?
# 4. **A different city.** Generate `musecl toy-city --out /tmp/toy2 --regions 1200 --seed 3` and
#    run `musecl book --city /tmp/toy2 --only 01_data`. Predict, before looking: does the gap
#    between the full ceiling and the best single modality stay above 0.15? Does the median
#    distance to the most POI-similar region grow with the city?
