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
# # POI text: skip-gram word vectors
#
# MuseCL's third semantic is the text of a region's points of interest: word vectors trained on
# every POI category and review, then one vector per region, the mean of its POIs' category
# vectors (eq. 7). This chapter shows the corpus, the word2vec settings, what the vectors learn
# and what the region vectors keep of the city.

# %% tags=["parameters"]
city = None                        # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"          # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings: musecl.config.RunConfig keys
device = None                      # None: as in params_file

# %%
import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue
from sklearn.decomposition import PCA

from musecl import plotting
from musecl.cache import Cache, load_table
from musecl.city import CATEGORY, REGION_ID, TEXT
from musecl.config import RunConfig
from musecl.encoders.text import PoiTextEncoder, category_token, poi_sentences
from musecl.methods.multisemantic import EMBEDDINGS_CSV, text_stage
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # chapter 1 lists what loading the city warns about
    data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
cache = Cache(f"{out_dir}/cache")
cfg   # show the settings that produced every number on the page

# %% [markdown]
# ## The corpus: one sentence per POI
#
# The paper trains in two phases: word vectors are learnt from *all* POI comments and
# categories, but a region is then represented by its POI *categories* alone. Each POI becomes
# one sentence, its category (one token, however many words the name has) followed by the words
# of its text:
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: poi_sentences
# ```

# %%
sentences = poi_sentences(data.pois)
examples = data.pois.sample(n=min(6, len(data.pois)), random_state=cfg.seed)
display(pd.DataFrame({CATEGORY: examples[CATEGORY].to_numpy(),
                      TEXT: examples[TEXT].fillna("").to_numpy() if TEXT in examples else "",
                      "sentence": [" ".join(sentences[data.pois.index.get_loc(i)]) for i in examples.index]}))

lengths = np.array([len(s) for s in sentences])
tokens = pd.Series([w for s in sentences for w in s])
categories = data.pois[CATEGORY].map(category_token)
per_category = categories.value_counts()
within = np.minimum(lengths - 1, cfg.text_window).sum() / max((lengths - 1).sum(), 1)
corpus = pd.Series({
    "sentences (POIs)": len(sentences),
    "tokens": len(tokens),
    "vocabulary (distinct tokens)": tokens.nunique(),
    "categories": len(per_category),
    "POIs without text": int((lengths == 1).sum()),
    "median tokens per sentence": float(np.median(lengths)),
    "POIs of the rarest category": f"{per_category.min()} ({per_category.idxmin()})",
    f"review words within {cfg.text_window} of the category token (%)": round(100 * within, 1),
}, name="corpus").to_frame()
glue("n_sentences", len(sentences), display=False)
glue("n_tokens", len(tokens), display=False)
glue("n_vocab", tokens.nunique(), display=False)
glue("rarest_count", int(per_category.min()), display=False)
glue("rarest_name", Markdown(f"`{per_category.idxmin()}`"), display=False)
glue("within_window", float(100 * within), display=False)
corpus

# %% [markdown]
# ## Skip-gram with the hierarchical softmax
#
# The paper uses gensim's Word2Vec with the skip-gram architecture and the "Huffman softmax"
# (hierarchical softmax) of Mikolov *et al.* (2013). Skip-gram predicts the words around a word
# from the word itself; the hierarchical softmax replaces the output layer by a Huffman tree over
# the vocabulary, so one prediction costs $O(\log_2 V)$ instead of $O(V)$, with short codes
# for frequent words. Mikolov *et al.* report that skip-gram suits small corpora and represents
# rare words well, and that the hierarchical softmax favours infrequent words, while negative
# sampling suits frequent ones: a fit for a few thousand POIs whose rarest category occurs only
# a handful of times. In gensim's terms: `sg=1`, `hs=1`, and `negative=0` to switch negative
# sampling off.
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: TextEncoderConfig
# ```
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: PoiTextEncoder.fit
# ```
#
# The vectors come from the cached text stage, so the fusion chapter uses these very vectors:

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    text_dir = text_stage(data, cfg, cache)
for w in caught:
    print(f"text stage warned: {w.message}")
encoder = PoiTextEncoder.load(text_dir / "encoder")
regions = load_table(text_dir / EMBEDDINGS_CSV).reindex(data.region_ids)
settings = json.loads((text_dir / "encoder" / "config.json").read_text())
pd.Series(settings, name="Word2Vec settings of this run").to_frame()

# %% [markdown]
# A word's context is its neighbours within `window` tokens, and gensim shrinks the window at
# random for each word (uniformly between 1 and `window`), so nearer words weigh more. The
# category token opens its sentence: only the first few words of a review ever fall in its
# window ({glue:text}`within_window:.0f`% of the review words here).
#
# ## What the word vectors learn
#
# The most similar words (cosine similarity) to a few words of the toy city's vocabulary, a
# category, two review adjectives and two more categories:

# %%
probe_words = [w for w in ("bar", "cheap", "luxury_boutique", "quiet", "park", "nightclub")
               if w in encoder.keys]
if not probe_words:  # another city: its three most frequent categories
    probe_words = list(per_category.index[:3])
nearest = {w: [f"{v} ({s:.2f})" for v, s in encoder.nearest_words(w, k=6)] for w in probe_words}
display(pd.DataFrame(nearest, index=pd.RangeIndex(1, 7, name="rank")))

cat_keys = [c for c in per_category.index if c in encoder.keys]
V = np.stack([encoder.word_vector(c) for c in cat_keys]).astype(float)
V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
sims = V @ V.T  # K x K over categories, not regions
np.fill_diagonal(sims, np.nan)
cos = pd.DataFrame(sims, index=cat_keys, columns=cat_keys)
near_cats = {c: [f"{o} ({cos.loc[c, o]:.2f})" for o in cos.loc[c].nlargest(4).index]
             for c in probe_words if c in cat_keys}
if near_cats:
    display(pd.DataFrame(near_cats, index=pd.RangeIndex(1, 5, name="rank"))
            .style.set_caption("nearest *categories* of each category"))
top_word = {w: encoder.nearest_words(w, k=1)[0] for w in probe_words}
glue("first_word", Markdown(f"`{probe_words[0]}`"), display=False)
glue("first_nearest", Markdown(", ".join(f"`{v}`" for v, _ in encoder.nearest_words(probe_words[0], k=3))),
     display=False)
glue("mean_cat_cos", float(np.nanmean(cos.values)), display=False)

# %% [markdown]
# A map of the category vectors: their first two principal components, coloured by a rough
# grouping of the toy city's categories (a category the grouping does not know is "other").

# %%
GROUPS = {
    "food and drink": ["restaurant", "cafe", "fast_food", "bakery"],
    "nightlife and leisure": ["bar", "wine_bar", "nightclub", "cinema", "museum", "art_gallery", "gym",
                              "hotel", "shopping_mall", "betting_shop"],
    "shops": ["supermarket", "organic_grocer", "discount_store", "convenience_store", "luxury_boutique",
              "pawn_shop", "pharmacy", "hardware_store"],
    "care, education, worship": ["school", "kindergarten", "hospital", "clinic", "library", "church"],
    "work, transport, industry": ["bank", "office", "warehouse", "car_repair", "parking", "gas_station",
                                  "bus_station", "farm_supply"],
    "green": ["park"],
}
group_of = {c: g for g, members in GROUPS.items() for c in members}
groups = pd.Series([group_of.get(c, "other") for c in cat_keys], index=cat_keys)
pca_words = PCA(n_components=2, random_state=cfg.seed).fit(V)
xy_words = pca_words.transform(V)
fig, ax = plt.subplots(figsize=(9, 6.5))
for i, g in enumerate(dict.fromkeys(list(GROUPS) + ["other"])):
    mask = (groups == g).to_numpy()
    if mask.any():
        ax.scatter(*xy_words[mask].T, s=40 + 4 * np.sqrt(per_category[cat_keys].to_numpy()[mask]),
                   color=plt.get_cmap("tab10")(i), label=g, alpha=0.85)
for (x, y), c in zip(xy_words, cat_keys):
    ax.annotate(c, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
ev = pca_words.explained_variance_ratio_ * 100
ax.set(xlabel=f"PC 1 ({ev[0]:.0f}% of the variance)", ylabel=f"PC 2 ({ev[1]:.0f}%)",
       title="category vectors, first two principal components (dot area: POIs of the category)")
ax.legend(fontsize=8, frameon=False, loc="best")
plt.show()

# %% [markdown]
# ## Eq. 7: a region is the mean of its categories
#
# With the trained mapping $W$ from words to vectors and the categories
# $\mathcal{T}_i = \{T_{i1}, \dots, T_{i|\mathcal{T}_i|}\}$ of the POIs in region $r_i$,
#
# $$e_i^{\text{POI}} = \frac{1}{|\mathcal{T}_i|} \sum_{j=1}^{|\mathcal{T}_i|} W(T_{ij}),
# \quad T_{ij} \in \mathcal{T}_i \quad (7)$$
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: PoiTextEncoder.transform
# ```
#
# Reviews shape the category vectors during training but are not averaged here, and a mean
# forgets how many POIs there were: a region with one café and a region with fifty cafés get the
# same vector. A region without any POI has nothing to average and gets the zero vector.

# %%
n_pois = data.poi_counts().sum(axis=1)
empty = (regions.abs().sum(axis=1) == 0) | regions.isna().any(axis=1)
glue("n_empty", int(empty.sum()), display=False)
glue("n_no_poi", int((n_pois == 0).sum()), display=False)
glue("n_regions", len(data), display=False)
glue("share_empty", float(100 * empty.mean()), display=False)
pd.Series({"regions": len(data), "regions with no POI": int((n_pois == 0).sum()),
           "regions with a zero POI vector": int(empty.sum()),
           "vector size": regions.shape[1]}, name="eq. 7 region vectors").to_frame()

# %% [markdown]
# The first principal component of the region vectors (over the regions that have POIs; the
# empty ones are grey), next to the number of POIs, and how it correlates with the toy city's
# hidden latent fields where the city has them:

# %%
has = ~empty
pca_regions = PCA(n_components=2, random_state=cfg.seed).fit(regions[has].to_numpy())
pcs = pd.DataFrame(pca_regions.transform(regions[has].to_numpy()), index=regions.index[has],
                   columns=["PC 1", "PC 2"]).reindex(data.region_ids)
ev_regions = pca_regions.explained_variance_ratio_ * 100
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
lim = float(np.nanquantile(np.abs(pcs["PC 1"]), 0.98))  # a few regions with one POI are extreme
plotting.plot_map(data, pcs["PC 1"], ax=axes[0], cmap="RdBu_r", vmin=-lim, vmax=lim,
                  title=f"PC 1 of the eq. 7 vectors ({ev_regions[0]:.0f}% of the variance)", label="PC 1")
plotting.plot_map(data, np.log1p(n_pois), ax=axes[1], title="POIs per region", label="ln(1 + POIs)")
fig.tight_layout()
plt.show()

glue("pc1_var", float(ev_regions[0]), display=False)
rho_count = float(pcs["PC 1"][has].corr(np.log1p(n_pois[has]), method="spearman"))
glue("rho_count", rho_count, display=False)
if data.latents is not None and not data.latents.empty:
    lat = data.latents.reindex(data.region_ids)
    busy = has & (n_pois >= 5)  # a mean of at least five category vectors
    corr = pd.DataFrame({f"{pc}, {name}": lat[rows].corrwith(pcs.loc[rows, pc], method="spearman")
                         for name, rows in (("regions with POIs", has), ("5+ POIs", busy)) for pc in pcs})
    best = corr.iloc[:, 0].abs().idxmax()
    rho_all, rho_busy = corr.loc[best, "PC 1, regions with POIs"], corr.loc[best, "PC 1, 5+ POIs"]
    glue("latent_sentence", Markdown(
        f"Among the toy city's latent fields, PC 1 follows `{best}` most closely: Spearman "
        f"ρ = {rho_all:.2f} over all regions with POIs, and {rho_busy:.2f} over the "
        f"{int(busy.sum())} regions with at least five POIs, whose mean is less noisy."), display=False)
    display(corr.round(2).style.background_gradient(cmap="RdBu_r", vmin=-1, vmax=1, axis=None)
            .format("{:.2f}").set_caption("Spearman correlation of the principal components with the latents"))
else:
    glue("latent_sentence", Markdown("This city has no latent fields to compare with."), display=False)
    display(Markdown("*This city has no `latents.csv` (as every real city): no comparison with latents.*"))

# %% [markdown]
# ## What we saw
#
# The corpus has {glue:text}`n_sentences` sentences, {glue:text}`n_tokens` tokens and a
# vocabulary of {glue:text}`n_vocab` words; the rarest category, {glue:md}`rarest_name`, has
# {glue:text}`rarest_count` POIs. The word vectors pick up what co-occurs in a review: the
# nearest words to {glue:md}`first_word` are {glue:md}`first_nearest`. Categories are
# described by their own words far more than by each other (mean cosine similarity between two
# category vectors {glue:text}`mean_cat_cos:.2f`), so the groups in the projection are loose.
#
# Of {glue:text}`n_regions` regions, {glue:text}`n_empty` ({glue:text}`share_empty:.0f`%) get
# the zero vector of eq. 7, and {glue:text}`n_no_poi` have no POI at all; fusion training
# (eq. 11) leaves such regions out, as a zero vector has no direction. The first
# principal component of the other regions' vectors explains {glue:text}`pc1_var:.0f`% of their
# variance, and its Spearman correlation with ln(1 + POIs) is {glue:text}`rho_count:.2f`
# although eq. 7 never sees the count: a mean of few category vectors is noisy and lies far
# from the city-wide average, so PC 1 partly measures how few POIs a region has.
# {glue:md}`latent_sentence`
#
# ## Exercises
#
# 1. **A wider window.** Set `text_window: 15` in a copy of the params file (a whole review then
#    fits in the category's window). Predict whether the nearest words of `bar` change, and
#    whether the mean cosine similarity between category vectors rises or falls. Rerun and check.
# 2. **Rich and poor.** Build an axis from the mean vector of `expensive upscale elegant` minus
#    that of `cheap budget discount`, project every category vector on it, and compare the
#    ranking with the mean `affluence` latent of the regions where each category's POIs lie.
#    Do the category vectors know which shops are for the rich?
# 3. **Counts lost.** Eq. 7 is a mean. Compute a second region vector, the *sum* of the category
#    vectors, and compare its first principal component with ln(1 + POIs). Which would you rather
#    give the fusion stage, and why does the paper's choice matter less for a city where every
#    region has many POIs?
