# ---
# jupyter:
#   schedule:
#     needs: [03_satellite_encoder, 04_streetview_encoder, 05_poi_text]  # their trained stages
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
# # Attentive fusion aligned to POI text
#
# The two image encoders give every region a street-view vector $e_i^{SV}$ and a satellite
# vector $e_i^{RV}$. This chapter fuses them with learned, per-region attention weights
# (eq. 8-10) and trains the fusion so that the fused vector agrees with the region's POI text
# vector by a contrastive InfoNCE loss (eq. 11). It does so twice: as the paper writes it, and
# in the design this book uses by default, built so that eq. 8-11 do what the paper says they do:
# bring POI semantics into the image representation. We measure whether each does; where the
# settings allow, an end-to-end option also trains the image encoders through the fusion. A city
# without images fuses its two vector views instead (mobility and POIs, as in {doc}`10_manhattan`),
# and a note below says so where that is the case.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

import torch

from musecl import report
from musecl.config import RunConfig
from musecl.methods import MuseCL, make_method
from musecl.methods.base import unsupported_reason
from musecl.methods.multisemantic import fine_tuning_unsupported, image_views
from musecl.methods.vector import VectorMuseCL
from musecl.notebooks import require_method
from musecl.plotting import plot_map
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
SHOWS = ("the attentive fusion of two views of a region (eq. 8-10) aligned to the POI text by "
         "InfoNCE (eq. 11): the attention per region, its map, and what the alignment keeps")
# the views fused here: (key of beta, what the page calls the view, beta's symbol), street view first
SLOTS = {"streetview": ("sv", "street view", "SV"), "satellite": ("rs", "satellite", "RV"),
         "mobility": ("mobility", "mobility view", "mob"), "poi": ("poi", "POI view", "POI")}
with_images = bool(image_views(data)) or unsupported_reason(report.VECTOR_TARGET, data) is not None
if with_images:  # both image kinds, or the one the city has (eq. 10 with beta = 1)
    require_method(data, "MuseCL", shows=SHOWS)
    KINDS = [kind for kind in ("streetview", "satellite") if kind in image_views(data)]
    if len(KINDS) == 1:
        display(Markdown(report.one_view_note(data.name, image_views(data))))
else:  # no images: the two vector views of MuseCL (vector views)
    display(Markdown(report.vector_target_note(data.name, "this chapter fuses the two views of")
                     + " The mobility view stands where the street view stands below, the POI view "
                     "where the satellite stands; nothing here fine-tunes, as there are no image "
                     "encoders."))
    KINDS = ["mobility", "poi"]
VIEWS = [SLOTS[kind] for kind in KINDS]
FIRST = VIEWS[0]


def fit_design(config, reuse=None):
    """MuseCL with these settings; ``reuse``: a fitted run whose encoders and POI vectors it shares
    (MuseCL finds them in its stage cache by itself)."""
    if with_images:
        return MuseCL(config, cache_dir=f"{out_dir}/cache", progress=False).fit(data)
    return VectorMuseCL(config, cache_dir=f"{out_dir}/cache", progress=False, reuse=reuse).fit(data)


cfg

# %% [markdown]
# ## The attention (eq. 8-10)
#
# For each region $i$ and modality $m \in \{SV, RV\}$ a score is computed with parameters
# $\mathbf{c}, \mathbf{M}, \mathbf{b}$ shared by both modalities, turned into weights by a
# softmax, and the weights mix the two vectors:
#
# $$\alpha_i^m = \mathbf{c}^T \, \mathrm{ReLU}(\mathbf{M} e_i^m + \mathbf{b}), \qquad
# \beta_i^m = \frac{\exp(\alpha_i^m)}{\sum_{m'} \exp(\alpha_i^{m'})},$$
#
# $$e_i^{Image} = \sum_m \beta_i^m e_i^m.$$
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: AttentiveFusion.forward
# ```
#
# The paper does not say whether eq. 11's loss reaches the image encoders; the official code trains
# only the fusion, so in the literal version only $\mathbf{M}, \mathbf{b}, \mathbf{c}$ are trained
# here and the image encoders stay as the previous chapters left them. The fused vector is therefore always a convex
# combination of the two image vectors: the POI text shapes *how much* of each modality a region
# keeps, not the vector's content. Worse, the two encoders were trained apart, so coordinate $k$
# of $e^{SV}$ has nothing to do with coordinate $k$ of $e^{RV}$: a mix of the two is not
# "both views of the region", and the only thing InfoNCE can do is pick, region by region, the
# modality whose vector happens to point nearer the POI vector.
#
# ## The alignment (eq. 11)
#
# Within a mini-batch of $n$ regions, each fused vector should be more similar (cosine) to its
# own region's POI vector than to the other regions' POI vectors:
#
# $$\mathcal{L}_i = -\log \frac{\exp(\mathrm{sim}(e_i^{Image}, e_i^{POI}))}
# {\sum_{j=1}^{n} \exp(\mathrm{sim}(e_i^{Image}, e_j^{POI}))}.$$
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: info_nce
# ```
#
# The other regions of the batch are the negatives, so memory grows with the batch, never with
# the number of regions. `both_ways` (the aligned design below) averages this loss with its mirror
# image, each POI vector picking its own region's image vector. The official code instead fits the fused vector to the POI vector with a
# mean squared error over all regions (`fusion_design: paper`, `fusion_loss: mse`), listed with
# the other differences in {doc}`appendix_deviations`.
#
# ## The aligned design (the default)
#
# The same equations (but tanh in eq. 8, as the official code, where the paper writes ReLU), on
# *learned views* of the frozen embeddings (`fusion_design: aligned`):
# each image embedding is standardised and projected by its own linear layer,
# $h_i^m = W^m e_i^m$, so that the two views share coordinates; eq. 8-10 score and mix the
# $h_i^m$. There is no LayerNorm on the $h_i^m$: it would give every region a vector of the same
# length, and the length says how much happens in a region (a LayerNorm there did worse on a
# second toy city, never this one; the numbers are beside `VIEW_NORM` in `musecl/fusion.py`).
# Eq. 11 compares $e_i^{Image}$ with a projection of the POI vector,
# $g_i = \mathrm{LN}(W^{POI} e_i^{POI})$, at a learned temperature, in both directions; and a
# decoder from $e_i^{Image}$ back to both image embeddings (weight `fusion_reconstruction`)
# keeps what only the images show, which an alignment to the text alone would erase. Its weight
# against InfoNCE, 30 by default, was chosen on a second toy city, never on this one (the numbers
# are in the comment beside `DEFAULT_RECONSTRUCTION` in `musecl/fusion.py`): MuseCL predicted
# best there at 30, by margins of a few thousandths over 10 and 100 (seed means, no intervals:
# a choice among near-equals), while the alignment weakened but held.
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: AlignedFusion.views
# ```
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: AlignedFusion.forward
# ```
#
# Below, the default design is MuseCL's fusion as every later chapter uses it; the paper's
# design is trained beside it on the same encoders and POI vectors (a few seconds), for
# comparison.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Fusion training per epoch: the InfoNCE of eq. 11 against chance (ln of the batch size), for both designs (left), and the aligned design's reconstruction error (right)."}}
method = fit_design(cfg)
other = "paper" if cfg.fusion.design == "aligned" else "aligned"
designs = {cfg.fusion.design: method,  # the other design on the same encoders and POI vectors
           other: fit_design(cfg.replace(fusion_design=other, fusion_loss="infonce"), reuse=method)}
poi = method.stage_table("text").reindex(data.region_ids).to_numpy()
has_poi = np.linalg.norm(poi, axis=1) > 0
chance = float(np.log(cfg.fusion.batch_size))
COLOURS = {"aligned": "C0", "paper": "C1",
           "aligned, fine-tuned heads": "C2"}  # the same in every figure
fig, (ax, ax_rec) = plt.subplots(1, 2, figsize=(10, 3.2))
for design, fitted in designs.items():
    history = fitted.history("fusion")
    # with a reconstruction term the history logs the InfoNCE part on its own
    nce = history.get("train_infonce", history["train_loss"])
    ax.plot(history["epoch"], nce, color=COLOURS[design], label=f"{design} design")
    if "train_reconstruction" in history:
        ax_rec.plot(history["epoch"], history["train_reconstruction"], color=COLOURS[design],
                    label=f"{design} design")
ax.axhline(chance, color="grey", ls=":", label=f"chance, ln {cfg.fusion.batch_size}")
ax.set(xlabel="epoch", ylabel="InfoNCE (eq. 11)", title="alignment")
ax.legend(fontsize=8)
ax_rec.set(xlabel="epoch", ylabel="mean squared error",
           title="reconstruction of the " + " and ".join(view[1] for view in VIEWS))
if ax_rec.lines:
    ax_rec.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# InfoNCE can be read against chance, $\ln n$ for a batch of $n$ regions: a loss at chance means
# the fused vector says nothing about which POI vector is its region's (the alignment itself is
# checked further down). The aligned design minimises the InfoNCE plus `fusion_reconstruction`
# times the reconstruction error.
#
# ## Where each view counts
#
# The maps show $\beta_i^{SV}$, the weight of the street-view vector in each region (the
# satellite weight is $1 - \beta_i^{SV}$), for both designs, and its distribution over regions.
# On a city without images they show the weight of the mobility view instead.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The weight β of eq. 9 of the street view (on a city without images: of the mobility view) per region, for both fusion designs: on the map and as a distribution."}}
betas = {design: fitted.attention()[FIRST[0]] for design, fitted in designs.items()}
two_views = len(VIEWS) == 2
# a region with one of the two views (no satellite image, say) has nothing to weigh: beta is 0 or 1
# there by construction, so the statistics below leave it out
both = method.stage_table(KINDS[0]).dropna(how="all").index
for kind in KINDS[1:]:
    both = both.intersection(method.stage_table(kind).dropna(how="all").index)
n_one_view = int(betas[cfg.fusion.design].notna().sum()
                 - betas[cfg.fusion.design].index.isin(both).sum())
if two_views:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    symbol = f"$\\beta^{{{FIRST[2]}}}$"
    for ax, (design, beta) in zip(axes[:2], betas.items()):
        plot_map(data, beta, ax=ax, cmap="coolwarm", vmin=0, vmax=1,
                 title=f"{design} design: {symbol}", label=symbol)
    for design, beta in betas.items():
        axes[2].hist(beta[beta.index.isin(both)], bins=np.linspace(0, 1, 41), alpha=0.6,
                     color=COLOURS[design], label=f"{design} design")
    axes[2].set(xlabel=symbol, ylabel="regions",
                title="distribution over regions" + (" with both views" if n_one_view else ""))
    axes[2].legend(fontsize=9)
    fig.tight_layout()
    plt.show()
else:
    display(Markdown(f"*With one view eq. 9 has nothing to weigh: β = 1 for the {FIRST[1]} in "
                     "every region, in both designs, so there is no map to draw.*"))

# %% tags=["hide-input"]
EXTREME = f"share of regions with β_{FIRST[2]} < 0.02 or > 0.98"
spread = pd.DataFrame({design: {"median": beta.median(), "5th percentile": beta.quantile(0.05),
                                "95th percentile": beta.quantile(0.95),
                                EXTREME: ((beta < 0.02) | (beta > 0.98)).mean()}
                       for design, beta in ((d, b[b.index.isin(both)])
                                            for d, b in betas.items())}).round(3)
beta = betas[cfg.fusion.design].loc[lambda b: b.index.isin(both)]  # the regions with both views
if two_views:
    if n_one_view:
        display(Markdown(f"*{n_one_view} regions have one of the two views (on the maps: β = 0 "
                         "or 1 by construction); the histogram and the table leave them out "
                         f"({len(both)} regions).*"))
    display(spread)
    if data.latents is not None:
        corr = data.latents.corrwith(beta, method="spearman").rename(
            f"Spearman ρ with β_{FIRST[2]} ({cfg.fusion.design})")
        display(corr.to_frame().round(2))

# %% [markdown]
# ## The end-to-end option: heads that learn from the fusion
#
# In both designs the image encoders are trained first, on their triplets, and then held fixed:
# the fusion learns only its own weights. With encoders that are heads on frozen features (this
# book's `lite0-head`) there is a cheap end-to-end option, the method *MuseCL (fine-tuned
# heads)*: it starts from the same triplet-trained heads as MuseCL and trains them on together
# with a new aligned fusion, so that the gradient of eq. 11 reaches the image encoders. Each
# head's own triplet loss (eq. 5-6, with its reconstruction term) stays in the sum, on a batch of
# its triplets at every step, so a head keeps what the similarity pairing taught it. The heads
# move at a tenth of the fusion's learning rate (`HEAD_LR_FACTOR` in `musecl/fusion.py`, with
# what it measured on a second toy city).
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: fine_tuning_loss
# ```
#
# The backbones stay frozen. For CNN encoders (`resnet18`, `inception_v3`, `tiny`) the same option
# fine-tunes the whole networks on images, *MuseCL (fine-tuned CNNs)*
# (`musecl.fusion.fine_tune_cnns`): every step runs both CNNs forward and backward on a batch of
# regions and on a batch of each kind's triplets, which is work for a GPU (`params/paper.yaml`). It
# is tested on tiny CNNs, but no run of it at the paper's sizes has been recorded: this book's
# chapters do not run it.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Fine-tuning the heads with the fusion, per epoch: the InfoNCE of eq. 11 with and without fine-tuned heads (left), and each head's triplet loss during fine-tuning against its value at the end of its own training (right)."}}
TUNED = "MuseCL (fine-tuned heads)"
if not with_images:
    why_not_fine_tuned = f"{data.name} has no images, so there are no image encoders to fine-tune"
elif (lacks := unsupported_reason(TUNED, data)) is not None:  # it fine-tunes both heads
    why_not_fine_tuned = f"{data.name} has {lacks}, and it fine-tunes both image heads"
else:
    why_not_fine_tuned = fine_tuning_unsupported(cfg)
if why_not_fine_tuned is None:
    tuned = make_method(TUNED, cfg, cache_dir=f"{out_dir}/cache", progress=False)
    designs["aligned, fine-tuned heads"] = tuned.fit(data)  # MuseCL's heads and POI vectors
    history = tuned.history("fusion")
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(history["epoch"], history["train_infonce"], color=COLOURS["aligned, fine-tuned heads"],
            label="fine-tuned heads")
    fixed = designs["aligned"].history("fusion")
    ax.plot(fixed["epoch"], fixed["train_infonce"], color=COLOURS["aligned"],
            label="heads held fixed")
    ax.axhline(chance, color="grey", ls=":", label=f"chance, ln {cfg.fusion.batch_size}")
    ax.set(xlabel="epoch", ylabel="InfoNCE (eq. 11)", title="alignment")
    own_end = {}
    for (kind, stage), colour in zip((("sv", "streetview"), ("rs", "satellite")), ("C4", "C5")):
        own_end[stage] = tuned.history(stage)["train_loss"].iloc[-1]
        ax_t.plot(history["epoch"], history[f"train_triplet_{kind}"], color=colour,
                  label=f"{stage} head, fine-tuning")
        ax_t.axhline(own_end[stage], color=colour, ls=":",
                     label=f"{stage} head, end of its own training")
    ax_t.set(xlabel="epoch", ylabel="triplet loss (eq. 6) + reconstruction",
             title="the heads' own losses")
    for axis in (ax, ax_t):  # below the plots, where they hide no curve
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    plt.show()
    last = history.iloc[-1]
    now = {"streetview": last["train_triplet_sv"], "satellite": last["train_triplet_rs"]}
    rose = [stage for stage in now if now[stage] > own_end[stage] * 1.02]  # more than 2% up
    fine_tune_losses = (
        "In the last epoch of fine-tuning the heads' own losses (triplet loss plus "
        "reconstruction, as each head was trained) were "
        f"{now['streetview']:.3f} (street view) and {now['satellite']:.3f} (satellite), "
        f"against {own_end['streetview']:.3f} and {own_end['satellite']:.3f} at the end of "
        "their own training (lower is better): "
        + (f"the {' and '.join(rose)} head's loss rose, which is what the alignment cost its "
           "own objective." if rose
           else "no head's loss rose by more than 2%, so the alignment cost their own objectives "
                "nothing measurable (the triplet term alone is not logged apart during "
                "fine-tuning)."))
else:
    fine_tune_losses = f"Not run: {why_not_fine_tuned}."
glue("fine_tune_losses", Markdown(fine_tune_losses), display=False)

# %% [markdown]
# {glue:md}`fine_tune_losses`

# %% [markdown]
# ## Did the alignment work?
#
# If eq. 11 did its job, a region's fused vector is closer to its own POI vector than to another
# region's, in the space the loss compares them in. We compare the cosine similarity of matched
# pairs with that of shuffled pairs, and count how often the own POI vector is the most similar
# one within random batches of the training batch size (chance: one in the batch size).


# %% tags=["hide-input"]
def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


rng = np.random.default_rng(cfg.seed)
n = min(cfg.fusion.batch_size, int(has_poi.sum()))
alignment = {}
for design, fitted in designs.items():
    model = fitted.fusion_model()
    with torch.no_grad():  # the two vectors eq. 11 compares, for every region with POIs
        a, b = model.align_space(
            torch.tensor(fitted.transform(data).to_numpy(), dtype=torch.float32),
            torch.tensor(poi, dtype=torch.float32))  # copies: pandas' arrays are read-only
    a, b = unit(a.numpy()[has_poi]), unit(b.numpy()[has_poi])
    matched = (a * b).sum(axis=1)
    shuffled = (a * b[rng.permutation(len(b))]).sum(axis=1)
    hits = []
    for _ in range(20):
        order = rng.permutation(len(a))
        for start in range(0, len(a) - n + 1, n):
            idx = order[start:start + n]
            # n x n in one batch
            hits.append(np.mean((a[idx] @ b[idx].T).argmax(axis=1) == np.arange(n)))
    alignment[design] = {"cosine, own region": matched.mean(),
                         "cosine, random region": shuffled.mean(),
                         "own POI vector is the nearest in a batch": float(np.mean(hits))}
alignment = pd.DataFrame(alignment)
display(alignment.round(3))
n_no_poi = int((~has_poi).sum())
glue("no_poi_sentence", Markdown(
    f"{n_no_poi} region{' has' if n_no_poi == 1 else 's have'} no POIs; a zero POI vector carries "
    "nothing to align with, so such regions are left out of fusion training (they still get a "
    "fused vector)."), display=False)
if "aligned, fine-tuned heads" in alignment:
    top1_tuned = float(alignment.loc["own POI vector is the nearest in a batch",
                                     "aligned, fine-tuned heads"])
    top1_fixed = float(alignment.loc["own POI vector is the nearest in a batch", "aligned"])
    tuned_finding = ("the gradient of eq. 11 reaching the encoders tightens the alignment"
                     if top1_tuned > top1_fixed + 0.02 else "no clear gain in alignment")
    glue("fine_tune_finding", Markdown(
        "With the heads fine-tuned through the fusion, the own POI vector is the nearest in a "
        f"batch {top1_tuned:.1%} of the time, against {top1_fixed:.1%} with the heads held fixed: "
        f"{tuned_finding}."
        " Whether it predicts better: chapter 8, row *MuseCL (fine-tuned heads)*."), display=False)
else:
    glue("fine_tune_finding", Markdown(f"The end-to-end option did not run: {why_not_fine_tuned}."),
         display=False)
# for "What we saw": the findings, in words that follow this run's numbers
extreme = spread.loc[EXTREME]
collapses = {design: float(extreme[design]) >= 0.10 for design in ("paper", "aligned")}
collapse_finding = {
    (True, False): "**The paper's literal fusion often gives a region all its weight on one "
                   "modality; the aligned design mixes both.**",
    (False, False): "**Neither design puts all of a region's weight on one modality.**",
    (True, True): "**Both designs often give a region all its weight on one modality.**",
    (False, True): "**The aligned design, not the paper's, often gives a region all its weight on "
                   "one modality.**",
}[collapses["paper"], collapses["aligned"]]
glue("attention_finding", Markdown(
    f"{collapse_finding} With the paper's design {extreme['paper']:.0%} of the regions"
    f"{' with both views' if n_one_view else ''} put (almost) all their "
    f"weight on one modality, with the aligned design {extreme['aligned']:.0%}; in the design the "
    f"book uses ({cfg.fusion.design}) a region keeps on average a weight of {beta.mean():.2f} on "
    f"the {FIRST[1]} (standard deviation {beta.std():.2f} across regions)." if two_views else
    f"**One view, nothing to weigh:** {data.name} has {FIRST[1]} images alone, so β = 1 in every "
    "region and the fused vector is that view, aligned to the POI text."), display=False)
used = alignment[cfg.fusion.design]
top1_used = float(used["own POI vector is the nearest in a batch"])
if top1_used >= 0.5 and top1_used >= 5 / n:
    align_lead = (f"**The alignment works in the design the book uses ({cfg.fusion.design})**: "
                  "eq. 11 brings the POI semantics into the fused "
                  f"{'image ' if with_images else ''}vector.")
elif top1_used > 2 / n:
    align_lead = ("**The alignment works only partly in the design the book uses "
                  f"({cfg.fusion.design}).**")
else:
    align_lead = ("**The alignment did not work in the design the book uses "
                  f"({cfg.fusion.design})**: the fused vector finds its own region's POI vector no "
                  "better than chance.")
closer = ("closer to" if used["cosine, own region"] > used["cosine, random region"] + 0.02
          else "no closer to")
glue("align_finding", Markdown(
    f"{align_lead} The fused vectors are {closer} their own region's POI vector (mean cosine "
    f"{used['cosine, own region']:.2f}) than to a random region's "
    f"({used['cosine, random region']:.2f}); in batches of {n} regions the own POI vector is the "
    f"most similar one {top1_used:.1%} of the time, against "
    f"{float(alignment.loc['own POI vector is the nearest in a batch', other]):.1%} for the "
    f"{other} design and {1 / n:.1%} by chance."), display=False)

# %% [markdown]
# ## What we saw
#
# - {glue:md}`attention_finding`
# - {glue:md}`align_finding`
# - {glue:md}`fine_tune_finding`
# - {glue:md}`no_poi_sentence`
#
# Whether the fused vector predicts the indicators better than its inputs is the subject of the
# next two chapters.
#
# ## Exercises
#
# 1. Rerun with `fusion_design: paper` and `fusion_loss: mse` (the official code) in a copy of
#    `params/ci.yaml`. Predict first: will the weights $\beta$ spread out more or less than with
#    InfoNCE? Check with the histogram.
# 2. Set `fusion_reconstruction: 0`. The aligned design then only aligns; predict what happens to
#    the indicators in {doc}`07_prediction` (hint: which latents can the POI text not see?).
# 3. Which latent of the toy city does $\beta^{SV}$ follow most closely, and why would the
#    street view matter more there? (The toy city's `city.yaml` says which latents each modality
#    sees.)
