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
# # The street-view encoder, trained by mobility similarity
#
# This chapter trains the street-view encoder $F_{SV}$ of the paper's section 4.2: a network (the
# paper's Inception-v3, or in the book's CI settings a head on frozen ImageNet features; the
# settings below say which) that maps each street-view image to a 128-d vector, taught by the triplet loss of
# eq. 5-6 to put regions with similar inflow and outflow of people (eq. 1-2) close together. A
# region has several street views; its embedding is the mean of theirs. The loss, the trainer and
# the checkpoints are those of {doc}`03_satellite_encoder`; here we look at what differs.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %%
import warnings

from musecl.cache import Cache
from musecl.config import RunConfig
from musecl.notebooks import require_modalities
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*no satellite image")  # not used in this chapter
    data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
require_modalities(
    data, ("streetview", "mobility"),
    shows="the street-view encoder trained on mobility-similarity triplets "
          "(eq. 1-2, 5-6), what its embedding knows, and its training curves")
cache = Cache(f"{out_dir}/cache")
cfg  # show the settings that produced every number on the page

# %% tags=["hide-input"]
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from musecl import plotting
from musecl.cache import city_fingerprint, load_table
from musecl.city import INFLOW, OUTFLOW, SATELLITE, STREETVIEW
from musecl.encoders.heads import FEATURE_HEADS
from musecl.evaluation import latent_probe, triplet_agreement
from musecl.encoders.image import ImageStore, augment_images, build_encoder
from musecl.methods.multisemantic import (TRIPLETS_CSV, backbone_features, image_settings,
                                          image_stage, initial_embedding, stage_encoder)
from musecl.sampling import Triplets
from musecl.report import history_table, latent_training_finding, training_findings
from musecl.training import split_indices

KIND = STREETVIEW
settings = image_settings(cfg, KIND)  # arch, image_size, epochs, batch_size of this encoder
is_head = settings["arch"] in FEATURE_HEADS  # a head on frozen ImageNet features instead of a CNN
has_latents = data.latents is not None and not data.latents.empty
sv_paths = data.streetview_paths()
n_views = pd.Series({r: len(p) for r, p in sv_paths.items()}, dtype=int).reindex(
    data.region_ids, fill_value=0)
glue("arch", Markdown(f"`{settings['arch']}`"), display=False)
glue("image_size", settings["image_size"], display=False)
glue("head_sentence", Markdown(
    f"**This run's encoder is `{settings['arch']}`**: a head trained on frozen EfficientNet-Lite0 "
    f"ImageNet features of the views ({settings['image_size']} px; see chapter 3), not the "
    "Inception-v3 above." if is_head else
    "(`sv_arch: lite0-head` would train a head on frozen ImageNet features instead: "
    "see chapter 3.)"), display=False)
pd.Series(settings, name="street-view encoder").to_frame()

# %% [markdown]
# ## The network: the paper's Inception-v3, or a head on frozen features
#
# As in the paper and the official code, the street-view encoder is torchvision's Inception-v3
# with its auxiliary classifier switched off and its classifier `fc` replaced by
# `Linear(2048, 128)`; the same `build_encoder` as in the previous chapter builds it
# (`arch="inception_v3"`). Inception-v3 was designed for 299-pixel inputs and refuses anything
# under 75 pixels (its stem shrinks the image too far). The encoder's input step therefore
# enlarges smaller images bilinearly, after normalising them with the ImageNet statistics:
#
# ```{literalinclude} ../musecl/encoders/image.py
# :pyobject: ImageEncoder.prepare
# ```
#
# This run uses {glue:text}`image_size`-pixel street views (Inception-v3 was designed for 299;
# the paper gives no size). The table follows a
# batch through the main blocks:

# %% tags=["hide-input"]
inception = build_encoder("inception_v3", cfg.embedding_dim, weights="random", seed=cfg.seed).eval()
blocks = ("Conv2d_1a_3x3", "maxpool1", "maxpool2", "Mixed_5d", "Mixed_6e", "Mixed_7c", "avgpool",
          "fc")
shapes = []
hooks = [getattr(inception.net, name).register_forward_hook(
    lambda module, inputs, output, name=name: shapes.append((name, tuple(output.shape[1:]))))
         for name in blocks]
size = settings["image_size"]
with torch.no_grad():
    inception(torch.zeros((2, 3, size, size), dtype=torch.uint8))
for hook in hooks:
    hook.remove()
n_params = sum(p.numel() for p in inception.parameters())
glue("inception_params_m", n_params / 1e6, display=False)
glue("inception_last_map", shapes[5][1][-1], display=False)
print(inception.net.fc, "| dropout before it:", inception.net.dropout)
pd.DataFrame(shapes,
             columns=["block", f"output shape for a {size} px image (C, H, W)"]).set_index("block")

# %% [markdown]
# Inception-v3 has {glue:text}`inception_params_m:.1f` million parameters, twice ResNet-18's.
# Its last feature map is {glue:text}`inception_last_map` x {glue:text}`inception_last_map`
# here (8 x 8 at 299 px). torchvision keeps a dropout layer (p = 0.5) in front of `fc`; it is
# active while training and off when embedding. This run trains {glue:md}`arch` (the `sv_arch`
# setting; the smoke settings swap in the tiny CNN).
#
# ## Triplets by mobility, augmentation by mirroring
#
# The positives and negatives come from the similarity of inflow and outflow (eq. 1-2), not of
# POIs: a street view shows people, cars, shop fronts, what a flow of visitors leaves behind. A
# street view has a sky and a ground, so the official code does not rotate it; it mirrors it
# left-right with probability 1/2. Four street views, original on top, two random draws below:

# %% mystnb={"figure": {"caption": "Augmentation: four street views (top row) and two random mirrorings of each."}}
first_views = pd.Series({r: p[0] for r, p in sv_paths.items()})
picks = np.linspace(0, len(first_views) - 1, 4).round().astype(int)
show = first_views.iloc[picks]
small = ImageStore.from_pairs(list(show.items()), size=128, kind=KIND)
generator = torch.Generator().manual_seed(cfg.seed)
draws = [small.images] + [augment_images(small.images, "hflip", generator)
                          for _ in range(2)]
arrays = [img.permute(1, 2, 0).numpy() for batch in draws for img in batch]
titles = ([f"{rid}" for rid in show.index]
          + [f"draw {d}" for d in (1, 2) for _ in show.index])
fig = plotting.plot_images(arrays, titles, ncols=4, size=1.9)
plt.show()

# %% [markdown]
# ## Several views per region
#
# Each triplet role gets one street view drawn at random from its region (the official code's
# choice), so over the epochs the encoder sees all of a region's views under the same label. After
# training, the region's embedding is the mean of the embeddings of all its views; regions
# without any street view get an empty (NaN) row, which fusion fills with the column means and
# gives no attention weight (the region's fused vector is then its satellite view alone):
#
# ```{literalinclude} ../musecl/encoders/image.py
# :pyobject: embed_regions
# ```

# %% mystnb={"figure": {"caption": "Street views per region: how many each region has, and where."}}
fig, axes = plt.subplots(1, 2, figsize=(10, 4),
                         gridspec_kw={"width_ratios": [1, 1.3]})
counts = n_views.value_counts().sort_index()
axes[0].bar(counts.index, counts.to_numpy(), color="tab:blue")
axes[0].set(xlabel="street views in the region", ylabel="regions",
            title="views per region")
plotting.plot_map(data, n_views.where(n_views > 0), ax=axes[1],
                  cmap="viridis", title="street views per region",
                  label="views" + (" (grey: none)" if (n_views == 0).any() else ""))
fig.tight_layout()
plt.show()
glue("n_images", int(n_views.sum()), display=False)
glue("views_median", float(n_views[n_views > 0].median()), display=False)
glue("views_max", int(n_views.max()), display=False)

# %% [markdown]
# ## Training
#
# The cached stage samples mobility triplets over the regions that have street views, trains the
# encoder and embeds every region, exactly as for the satellite encoder. {glue:md}`head_sentence`

# %% tags=["hide-input"]
stage = image_stage(data, cfg, KIND, cache, progress=False)
history = pd.read_csv(stage / "history.csv")
triplets = Triplets.read_frame(stage / TRIPLETS_CSV)
encoder_config = json.loads((stage / "encoder" / "config.json").read_text())
training = encoder_config["training"]
glue("n_triplets", len(triplets), display=False)
glue("train_seconds", float(history["seconds"].sum()), display=False)
glue("epochs_run", len(history), display=False)
glue("epochs_words", f"{len(history)} epoch" + ("s" if len(history) != 1 else ""), display=False)
glue("best_epoch", training["best_epoch"], display=False)
flows = data.mobility[[INFLOW, OUTFLOW]]
example = triplets.iloc[0]
display(flows.loc[[example["anchor"], example["positive"], example["negative"]]]
        .set_axis(["anchor", "positive", "negative"]).rename_axis("role of triplet 0")
        .style.format("{:,.0f}")
        .set_caption("The first triplet: its three regions' trips in and out (eq. 1)"))
history_table(history, training["best_epoch"])

# %% mystnb={"figure": {"caption": "Training curves of the street-view encoder per epoch, training and validation: the loss (with a reconstruction term: also its two parts), the similarities and the share of triplets still inside the margin."}}
plotting.plot_triplet_training(history, training, encoder_config["arch"])
plt.show()

# %% [markdown]
# The model kept at the end is the one of the best validation epoch (epoch
# {glue:text}`best_epoch` of {glue:text}`epochs_run`). In the official code the street-view
# encoder trains for fewer epochs than the satellite one (20 against 201); the settings at the
# top of the page give this run's (`sv_epochs`, `rs_epochs`).
#
# ## Starting weights
#
# (Training speed against the bare network: see
# {doc}`the benchmark appendix <appendix_benchmark>`.)

# %% tags=["hide-input"]
store = ImageStore.from_city(data, KIND, settings["image_size"],
                             # the images the stage trained on (cached)
                             cache=cache.root / "images" / f"{KIND}-{settings['image_size']}-"
                                   f"{city_fingerprint(data, labels=False)}.pt")
source = encoder_config["weights_source"]
if is_head:
    weights_text = (f"The backbone is EfficientNet-Lite0 with its ImageNet weights (`{source}`), "
                    "frozen; the head started from random weights and learned from "
                    f"{len(triplets):,} triplets, {cfg.image.val_fraction:.0%} of them held out to "
                    "validate "
                    "(`sv_arch: lite0-head`; a region's features are the mean over its views).")
elif source == "random":
    weights_text = ("**Random initialisation: ImageNet weights cannot be downloaded here.** The "
                    "paper starts from ImageNet weights; this encoder learned everything it knows "
                    f"from {len(triplets):,} triplets of one toy city.")
else:
    weights_text = f"The encoder started from `{source}` (recorded in `encoder/config.json`)."
glue("weights_text", Markdown(weights_text), display=False)
display(Markdown(weights_text))

# %% [markdown]
# ## Do a region's views agree?
#
# Averaging is only a good summary if a region's views resemble each other more than they
# resemble other regions' views. For up to 200 regions with at least two views we embed the first
# two views with the trained encoder and compare the cosine similarity of the two views of one
# region with that of views of two different regions.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Do a region's views agree? Similarity of two views of the same region against two views of different regions."}}
encoder = stage_encoder(stage)  # the CNN, or frozen backbone + head, on single views
owner = np.repeat(np.arange(store.n_regions), store.counts.numpy())
rng = np.random.default_rng(cfg.seed)
multi = np.flatnonzero(
    store.counts.numpy() >= 2)  # regions with two views or more: up to 200 of them
multi = np.sort(rng.choice(multi, size=min(200, len(multi)), replace=False))
rows = np.stack([store.starts.numpy()[multi],
                 store.starts.numpy()[multi] + 1])  # their first two views
with torch.no_grad():
    pair = [torch.nn.functional.normalize(
                torch.cat([encoder(store.images[torch.as_tensor(r[k:k + 64])])
                           for k in range(0, len(r), 64)]), dim=1).numpy()
            for r in rows]
same = (pair[0] * pair[1]).sum(axis=1)  # two views of the same region
shift = rng.integers(1, len(multi), len(multi))
other = (pair[0]  # of two other regions
         * pair[1][(np.arange(len(multi)) + shift) % len(multi)]).sum(axis=1)
fig, ax = plt.subplots(figsize=(6, 3.3))
bins = np.linspace(min(same.min(), other.min()), 1, 30)
ax.hist(other, bins=bins, density=True, alpha=0.6, label="views of different regions")
ax.hist(same, bins=bins, density=True, alpha=0.6, label="two views of the same region")
ax.set(xlabel="cosine similarity of view embeddings", ylabel="density")
ax.legend(fontsize=8)
plt.show()
glue("sim_same", float(np.median(same)), display=False)
glue("sim_other", float(np.median(other)), display=False)

# %% [markdown]
# ## The learned embedding
#
# The first two principal components of the region embeddings, on the map (a region without a
# street view would be grey):

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The first principal components of the street-view embedding, on the map."}}
embedding = load_table(stage / "embeddings.csv").reindex(data.region_ids)
present = embedding.dropna()
n_missing = int(embedding.isna().any(axis=1).sum())
glue("missing_views", "every region has at least one" if n_missing == 0 else
     f"{n_missing} region{' has' if n_missing == 1 else 's have'} none", display=False)
pca = PCA(n_components=min(5, present.shape[1], len(present)), random_state=cfg.seed)
pcs = pd.DataFrame(pca.fit_transform(present.to_numpy()), index=present.index,
                   columns=[f"PC{k + 1}" for k in range(pca.n_components_)])
fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
for k, ax in enumerate(axes):
    name = f"PC{k + 1}"
    plotting.plot_map(data, pcs[name], ax=ax, cmap="RdBu_r",
                      title=f"{name} ({pca.explained_variance_ratio_[k]:.0%} of the variance)",
                      label=name)
fig.tight_layout()
plt.show()

# %% [markdown]
# Two query regions (10th and 90th percentile of PC1) and the five regions with the closest
# embeddings (cosine distance, nearest-neighbour search); each shown by its first street view.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Two query regions (first image of each row, at the 10th and 90th percentile of the first principal component) and their five nearest regions in the street-view embedding by cosine distance, each shown by its first street view: the more alike a row looks, the more the embedding follows what the views show."}}
nn_index = NearestNeighbors(n_neighbors=6, metric="cosine").fit(present.to_numpy())
queries = [pcs["PC1"].sort_values().index[int(q * (len(pcs) - 1))] for q in (0.1, 0.9)]
distance, neighbour = nn_index.kneighbors(present.loc[queries].to_numpy())
paths, titles, groups = [], [], {}
for q, row_d, row_n in zip(queries, distance, neighbour):
    ids = present.index[row_n]
    paths += [first_views[r] for r in ids]
    titles += [f"query {q}"] + [f"{r}\ncos dist {d:.3f}" for r, d in zip(ids[1:], row_d[1:])]
    groups[f"query {q}"] = [q]
    groups[f"neighbours of {q}"] = list(ids[1:])
fig = plotting.plot_images(paths, titles, ncols=6, size=1.8)
plt.show()

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Where the two query regions (red, blue) and their five embedding neighbours each (light red, light blue) lie: neighbours far from their query were matched by what the views show, not by place."}}
ax = plotting.plot_region_groups(data, groups,
                                 colors=["tab:red", "salmon", "tab:blue", "lightskyblue"],
                                 title="the queries and their embedding neighbours")
plt.show()

# %% [markdown]
# ## What did it learn?
#
# The same checks as for the satellite encoder, the first and the third against the untrained
# encoder (same architecture and random start): first the share of held-out validation triplets in the right
# order (chance 50 %).

# %% [markdown] tags=["needs-latents"]
# On a generated city two more: the Spearman correlation of the first principal components with
# the toy city's latents, and a cross-validated linear probe from the embedding to each latent,
# with the mean colour of a region's views as the floor. The last column puts the trained *satellite* encoder
# of {doc}`03_satellite_encoder` beside it (trained there, reused here from the cache). The toy
# city hides `height`, `affluence` and `activity` from above and shows them in the streets
# (facades, their upkeep, people and cars), so those are the rows to watch (a CNN from random
# weights, `params/cnn.yaml`, need not see them after a few epochs); the satellite embedding can
# predict them only through their (weak) correlation with what it does show.

# %% tags=["hide-input"]
untrained = (initial_embedding(data, cfg, KIND, cache, stage, store)  # as the stage embeds
             .reindex(present.index))
colour = pd.DataFrame(store.images.float().mean(dim=(2, 3)).numpy(), columns=["R", "G", "B"])
mean_colour = colour.groupby(owner).mean().set_axis(store.region_ids).reindex(present.index)


_, val_rows = split_indices(len(triplets), cfg.image.val_fraction, cfg.seed)
glue("n_val_triplets", len(val_rows), display=False)
glue("n_train_triplets", len(triplets) - len(val_rows), display=False)
check = pd.Series({"untrained": triplet_agreement(untrained, triplets.iloc[val_rows]),
                   "trained": triplet_agreement(present, triplets.iloc[val_rows])},
                  name="validation triplets in the right order")
glue("agree_untrained", float(check["untrained"]) * 100, display=False)
glue("agree_trained", float(check["trained"]) * 100, display=False)
check.to_frame().style.format("{:.1%}")


# %% tags=["hide-input"]
def probe_r2(features: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """5-fold cross-validated R^2 of a ridge read-out of each target (``latent_probe``)."""
    return latent_probe(features, targets, seed=cfg.seed)[0]


if has_latents:
    latents = data.latents.reindex(present.index)
    rho = pd.DataFrame({pc: latents.corrwith(pcs[pc], method="spearman") for pc in pcs.columns[:3]})
    display(rho.round(2).style.background_gradient(cmap="RdBu_r", vmin=-1, vmax=1, axis=None)
            .format("{:.2f}").set_caption("Spearman ρ, latent (rows) vs principal component of the "
                                          "embedding"))
    satellite = load_table(image_stage(data, cfg, SATELLITE, cache, progress=False)
                           / "embeddings.csv")
    probes = pd.DataFrame({"mean colour (3 numbers)": probe_r2(mean_colour, latents),
                           "untrained encoder": probe_r2(untrained, latents),
                           "trained encoder": probe_r2(present, latents),
                           "satellite encoder (chapter 3)":
                               probe_r2(satellite.reindex(present.index), latents)})
    if is_head:  # the frozen features themselves: what the head starts from
        features = backbone_features(data, cfg, KIND, cache)
        probes.insert(1, "frozen Lite0 features",
                      probe_r2(features.reindex(present.index), latents))
    display(probes.round(2).style.background_gradient(cmap="Greens", vmin=0, vmax=1, axis=None)
            .format("{:.2f}").set_caption("cross-validated R² of a linear probe, latent (rows) "
                                          "from features"))
    best_pc1 = rho["PC1"].abs().idxmax()
    lead = probes["trained encoder"] - probes["satellite encoder (chapter 3)"]
    activity = (" For `activity` the probe reaches "
                f"{probes.loc['activity', 'trained encoder']:.2f} from street views against "
                f"{probes.loc['activity', 'satellite encoder (chapter 3)']:.2f} from the satellite "
                "embedding." if "activity" in probes.index else "")
    glue("probe_sentence", Markdown(
        "A linear probe recovers the latents with a mean R² of "
        f"{probes['trained encoder'].mean():.2f} from the trained street-view embedding, against "
        f"{probes['untrained encoder'].mean():.2f} from the untrained one and "
        f"{probes['mean colour (3 numbers)'].mean():.2f} from the mean colour.{activity} "
        + ("The frozen Lite0 features themselves reach "
           f"{probes['frozen Lite0 features'].mean():.2f}: the trained head keeps "
           + ("less than its input shows. "
              if probes["frozen Lite0 features"].mean() > probes["trained encoder"].mean() + 0.02
              else "what its input shows. ")
           if is_head else "")
        + (f"Street views beat the satellite embedding most on `{lead.idxmax()}` "
           f"({lead.max():+.2f}) and trail it most on `{lead.idxmin()}` "
           f"({lead.min():+.2f})." if lead.max() > 0.01 else
           "The satellite embedding matches or beats street views on every latent, most "
           f"clearly on `{lead.idxmin()}` ({lead.min():+.2f}).")), display=False)
else:
    display(Markdown("*This city has no `latents.csv` (a real city): the latent checks are "
                     "skipped; the prediction chapter scores the embedding on the indicators "
                     "instead.*"))
    glue("probe_sentence", Markdown("This city has no latents, so the probe was skipped."),
         display=False)

# for "What we saw": the findings, in words that follow this run's numbers
task_finding, fit_sentence = training_findings(check["trained"], check["untrained"], history)
glue("task_finding", Markdown(task_finding), display=False)
glue("fit_sentence", Markdown(fit_sentence), display=False)
agree_gap = float(np.median(same) - np.median(other))
glue("views_finding", Markdown(
    "**A region's views agree**, so their mean summarises the region:" if agree_gap > 0.1 else
    "**A region's views agree only a little**, so their mean is a noisy summary of "
    "the region:" if agree_gap > 0.02
    else "**A region's views agree no more than views of different regions**, so their mean blurs "
         "the region rather than summarising it:"), display=False)
if has_latents:
    sees_more, sees_less = lead.max() > 0.1, lead.min() < -0.1
    probe_finding = (
        "**Street views and satellite images show different parts of the city**, which is what "
        "fusing them needs."
        if sees_more and sees_less else
        "**Street views show more of the city than the satellite "
        "embedding does.**" if sees_more else
        "**Street views add nothing here that the satellite embedding does not already show.**")
    probe_finding += " " + latent_training_finding(probes, "the street-view embedding")
    pc1_sentence = ("The first principal component carries "
                    f"{pca.explained_variance_ratio_[0]:.0%} of the variance and follows "
                    f"`{best_pc1}` most closely (Spearman ρ = {rho.loc[best_pc1, 'PC1']:.2f}).")
else:
    probe_finding = ""
    pc1_sentence = (f"The first principal component carries {pca.explained_variance_ratio_[0]:.0%} "
                    "of the variance.")
glue("probe_finding", Markdown(probe_finding), display=False)
glue("pc1_sentence", Markdown(pc1_sentence), display=False)

# %% [markdown]
# ## What we saw
#
# - {glue:md}`task_finding` On the {glue:text}`n_val_triplets` held-out triplets the trained
#   embedding puts
#   {glue:text}`agree_trained:.0f`% in the right order, against {glue:text}`agree_untrained:.0f`%
#   before training (chance: 50%). The {glue:md}`arch` encoder trained on
#   {glue:text}`n_train_triplets` of the {glue:text}`n_triplets` mobility triplets (the rest held
#   out) for {glue:text}`epochs_words`
#   ({glue:text}`train_seconds:.0f` s of training loop); {glue:md}`fit_sentence`
# - {glue:md}`views_finding` two views of the same region have a median cosine similarity of
#   {glue:text}`sim_same:.2f`, views of different regions {glue:text}`sim_other:.2f`. The city has
#   {glue:text}`n_images` street views, a median of {glue:text}`views_median:.0f` per region with
#   a view (at most {glue:text}`views_max`); {glue:text}`missing_views`.
# - {glue:md}`probe_finding` {glue:md}`probe_sentence`
#
# ## Exercises
#
# 1. **Bigger views.** With `params/cnn.yaml` (Inception-v3 from random weights, 75 px views, its
#    smallest input), set `sv_image_size: 128`. Predict the change in training time (images/s scale
#    roughly with the number of pixels; the history gives this run's), then check. Does the
#    agreement of a region's views rise? (The toy city draws its street views at 64 px, so both
#    sizes enlarge them on loading: 128 px adds pixels, not detail. On a city with larger pictures
#    it adds both.)
# 2. **One view per region.** Averaging can only help when views differ. In the agreement
#    histogram, what would you expect for a city with exactly one view per region? Embed each
#    region's *first* view alone (`store.images[store.starts]`), compute the probe $R^2$ from it
#    and compare with the mean over views.
# 3. **Which similarity?** The satellite encoder is taught by POIs and the street-view encoder by
#    trips. From the probe table, which latents would you expect to move if the street-view
#    triplets were sampled by POI similarity instead (`poi_triplets` in `musecl.sampling`)?
