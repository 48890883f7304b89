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
# # Attentive fusion aligned to POI text
#
# The two image encoders give every region a street-view vector $e_i^{SV}$ and a satellite
# vector $e_i^{RV}$. This chapter fuses them with learned, per-region attention weights
# (eq. 8-10) and trains those weights so that the fused vector agrees with the region's POI text
# vector by a contrastive InfoNCE loss (eq. 11).

# %% tags=["parameters"]
city = None                        # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"          # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings: musecl.config.RunConfig keys
device = None                      # None: as in params_file

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from musecl.config import RunConfig
from musecl.methods import MuseCL
from musecl.plotting import plot_map
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
cfg

# %% [markdown]
# ## The attention (eq. 8-10)
#
# For each region $i$ and modality $m \in \{SV, RV\}$ a score is computed with parameters
# $\mathbf{c}, \mathbf{M}, \mathbf{b}$ shared by both modalities, turned into weights by a
# softmax, and the weights mix the two vectors:
#
# $$\alpha_i^m = \mathbf{c}^T \, \mathrm{ReLU}(\mathbf{M} e_i^m + \mathbf{b}), \qquad
# \beta_i^m = \frac{\exp(\alpha_i^m)}{\sum_{m'} \exp(\alpha_i^{m'})}, \qquad
# e_i^{Image} = \sum_m \beta_i^m e_i^m.$$
#
# ```{literalinclude} ../musecl/fusion.py
# :pyobject: AttentiveFusion.forward
# ```
#
# Only $\mathbf{M}, \mathbf{b}, \mathbf{c}$ are trained here; the image encoders stay as the
# previous chapters left them. The fused vector is therefore always a convex combination of the
# two image vectors: the POI text shapes *how much* of each modality a region keeps, not the
# vector's content. That is the paper's design, and worth remembering when reading the results.
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
# the number of regions. The official code instead fits the fused vector to the POI vector with a
# mean squared error over all regions (`fusion_loss: mse`); {doc}`appendix_deviations` lists it.

# %%
method = MuseCL(cfg, cache_dir=f"{out_dir}/cache", progress=False).fit(data)
history = method.history("fusion")
beta = method.attention()
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(history["epoch"], history["train_loss"], label="train")
if "val_loss" in history:
    ax.plot(history["epoch"], history["val_loss"], label="validation")
ax.set(xlabel="epoch", ylabel=f"{cfg.fusion_loss} loss", title="fusion training")
ax.legend()
plt.show()

# %% [markdown]
# ## Where the street view counts
#
# The map shows $\beta_i^{SV}$, the weight of the street-view vector in each region (the
# satellite weight is $1 - \beta_i^{SV}$).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
plot_map(data, beta["sv"], ax=axes[0], cmap="coolwarm", title=r"street-view weight $\beta^{SV}$",
         label=r"$\beta^{SV}$")
axes[1].hist(beta["sv"], bins=30, color="tab:blue")
axes[1].set(xlabel=r"$\beta^{SV}$", ylabel="regions", title="distribution over regions")
fig.tight_layout()
plt.show()

beta_mean, beta_sd = float(beta["sv"].mean()), float(beta["sv"].std())
glue("beta_sv_mean", beta_mean, display=False)
glue("beta_sv_sd", beta_sd, display=False)
if data.latents is not None:
    corr = data.latents.corrwith(beta["sv"], method="spearman").rename("Spearman rho with beta_SV")
    display(corr.to_frame().round(2))

# %% [markdown]
# ## Did the alignment work?
#
# If eq. 11 did its job, a region's fused vector is closer to its own POI vector than to another
# region's. We compare the cosine similarity of matched pairs with that of shuffled pairs, and
# count how often the own POI vector is the most similar one within random batches of the
# training batch size (chance: one in the batch size).

# %%
image = method.transform(data).to_numpy()
poi = method.stage_table("text").reindex(data.region_ids).to_numpy()
has_poi = np.linalg.norm(poi, axis=1) > 0


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# the loss compares e_image with e_POI through the fusion head when their sizes differ
import torch  # noqa: E402

from musecl.fusion import AttentiveFusion  # noqa: E402

model = AttentiveFusion.load(method.stage_dirs["fusion"] / "fusion")
with torch.no_grad():
    projected = model.head(torch.from_numpy(image).float()).numpy()
a, b = unit(projected[has_poi]), unit(poi[has_poi])
rng = np.random.default_rng(cfg.seed)
matched = (a * b).sum(axis=1)
shuffled = (a * b[rng.permutation(len(b))]).sum(axis=1)
n = min(cfg.fusion_batch_size, len(a))
hits = []
for _ in range(20):
    order = rng.permutation(len(a))
    for start in range(0, len(a) - n + 1, n):
        idx = order[start:start + n]
        sims = a[idx] @ b[idx].T  # n x n within one batch only
        hits.append(np.mean(sims.argmax(axis=1) == np.arange(n)))
top1 = float(np.mean(hits))
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(matched, bins=30, alpha=0.6, label="own region")
ax.hist(shuffled, bins=30, alpha=0.6, label="random region")
ax.set(xlabel="cosine similarity to the POI vector", ylabel="regions")
ax.legend()
plt.show()
glue("sim_matched", float(matched.mean()), display=False)
glue("sim_shuffled", float(shuffled.mean()), display=False)
glue("top1", top1, display=False)
glue("chance", 1 / n, display=False)
glue("batch", n, display=False)
glue("n_no_poi", int((~has_poi).sum()), display=False)

# %% [markdown]
# ## What we saw
#
# - On average a region keeps a street-view weight of {glue:text}`beta_sv_mean:.2f`
#   (standard deviation {glue:text}`beta_sv_sd:.2f` across regions); the map shows where the
#   attention prefers one modality over the other.
# - The fused vectors are closer to their own region's POI vector (mean cosine
#   {glue:text}`sim_matched:.2f`) than to a random region's ({glue:text}`sim_shuffled:.2f`); in
#   batches of {glue:text}`batch` regions the own POI vector is the most similar one
#   {glue:text}`top1:.1%` of the time, against {glue:text}`chance:.1%` by chance.
# - {glue:text}`n_no_poi` regions have no POIs; their POI vector is zero, so they carry nothing
#   to align with and are left out of fusion training (they still get a fused vector).
#
# Because the fused vector is a mix of two fixed vectors, the alignment can only move each region
# along the segment between its two image vectors; how much that helps the indicators is the
# subject of the next chapter.
#
# ## Exercises
#
# 1. Rerun with `fusion_loss: mse` (the official code's loss) in a copy of `params/ci.yaml`.
#    Predict first: will the weights $\beta$ spread out more or less? Check with the histogram.
# 2. Set `temperature: 0.1`. The paper's eq. 11 has no temperature (it is 1); with cosine
#    similarities in $[-1, 1]$ a lower temperature sharpens the softmax. Does the top-1 rate rise?
# 3. Which latent of the toy city does $\beta^{SV}$ follow most closely, and why would the
#    street view matter more there? (The toy city's `city.yaml` says which latents each modality
#    sees.)
