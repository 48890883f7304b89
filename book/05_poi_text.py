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
# # POI text: skip-gram word vectors
#
# MuseCL's third semantic is the text of a region's points of interest: word vectors trained on
# every POI category and review, then one vector per region, the mean of its POIs' category
# vectors (eq. 7). This chapter shows the corpus, the word2vec settings, what the vectors learn
# and what the region vectors keep of the city. A city whose POIs have no text (categories only)
# is learnt from another context, region co-occurrence; the chapter says which one it used.

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); None: the generated toy city
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %% tags=["hide-input"]
import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from musecl import plotting
from musecl.cache import Cache, load_table
from musecl.city import CATEGORY, REGION_ID, TEXT
from musecl.config import RunConfig
from musecl.encoders.text import (POI_TEXT, REGION_COOCCURRENCE, PoiTextEncoder, TextEncoderConfig,
                                  category_token, text_context, tokenize,
                                  training_sentences, untrained_words)
from musecl.evaluation import ridge_cv_r2
from musecl.methods.multisemantic import EMBEDDINGS_CSV, text_stage
from musecl.notebooks import require_modalities
from musecl.runner import resolve_city

cfg = RunConfig.from_yaml(params_file, device=device)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # chapter 1 lists what loading the city warns about
    data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
require_modalities(data, ("poi",), shows="the skip-gram vectors of POI categories and words "
                                         "(eq. 7), their nearest neighbours, and each region's "
                                         "average POI vector on the map")
cache = Cache(f"{out_dir}/cache")
cfg   # show the settings that produced every number on the page

# %% [markdown]
# ## The corpus: one sentence per POI, or per region
#
# The paper trains in two phases: word vectors are learnt from *all* POI comments and
# categories, but a region is then represented by its POI *categories* alone. Each POI becomes
# one sentence, its category (one token, however many words the name has) followed by the words
# of its text:
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: poi_sentences
# ```
#
# That needs text. Many cities a user brings have none: OpenStreetMap gives an amenity tag per
# POI and often no name, let alone a review. One-token sentences give skip-gram no context at
# all, and every category vector would stay at its random starting value. For such a city
# (no `text` column, or texts that only repeat their category) the encoder learns from
# *region co-occurrence* instead: one sentence per region, the categories of its POIs in a
# seeded random order, so that categories which share regions end up close:
#
# ```{literalinclude} ../musecl/encoders/text.py
# :pyobject: region_sentences
# ```

# %% tags=["hide-input"]
context = text_context(data.pois)  # what TextEncoderConfig's default, context="auto", picks
copies = TextEncoderConfig().region_copies
sentences = training_sentences(data.pois, context, cfg.seed, copies)
categories = data.pois[CATEGORY].map(category_token)
per_category = categories.value_counts()
texts = data.pois[TEXT] if TEXT in data.pois else pd.Series("", index=data.pois.index)
n_with_text = int(sum(bool(w) and w != tokenize(c)
                      for c, w in zip(data.pois[CATEGORY], texts.map(tokenize))))
if context == POI_TEXT:
    CONTEXT_NOTE = (
        f"**Context: POI text.** {n_with_text:,} of {len(data.pois):,} POIs have a text, and each "
        "category is learnt from the words written beside it. Its nearest neighbours below are the "
        "words, and the categories, that are described in similar words.")
else:
    CONTEXT_NOTE = (
        "**Context: region co-occurrence.** This city's POIs have no text (no `text` column, or "
        "texts that only repeat the category), so one sentence per POI would hold a single token "
        "and teach skip-gram nothing: the vectors would be random. Each region is one sentence of "
        f"its POIs' categories instead ({copies} shuffled copies of it), so two categories end up "
        "close when they are found in the same regions, next to the same other categories. The "
        "vocabulary holds only categories, and the nearest neighbours below are categories of the "
        "same kind of place (what shares a neighbourhood), not words with a similar meaning.")
display(Markdown(f"```{{note}}\n{CONTEXT_NOTE}\n```"))

if context == POI_TEXT:
    examples = data.pois.sample(n=min(6, len(data.pois)), random_state=cfg.seed)
    display(pd.DataFrame({CATEGORY: examples[CATEGORY].to_numpy(),
                          TEXT: texts[examples.index].to_numpy(),
                          "sentence": [" ".join(sentences[data.pois.index.get_loc(i)])
                                       for i in examples.index]}))
else:
    region_of = sorted(data.pois[REGION_ID].astype(str).unique())  # region_sentences' order
    shown = pd.Series(sentences[:len(region_of)], index=region_of)  # the first copy
    shown = shown[shown.map(len) >= 2].sample(n=min(4, int((shown.map(len) >= 2).sum())),
                                              random_state=cfg.seed)
    display(pd.DataFrame({"POIs": shown.map(len), "sentence (first 12 tokens)": shown.map(
        lambda s: " · ".join(s[:12]) + (" …" if len(s) > 12 else ""))}).rename_axis(REGION_ID))

lengths = np.array([len(s) for s in sentences])
tokens = pd.Series([w for s in sentences for w in s])
within = np.minimum(lengths - 1, cfg.text.window).sum() / max((lengths - 1).sum(), 1)
corpus = {
    "context": context,
    "sentences": f"{len(sentences):,} " + ("(POIs)" if context == POI_TEXT
                                           else f"({copies} × regions with POIs)"),
    "tokens": len(tokens),
    "vocabulary (distinct tokens)": tokens.nunique(),
    "categories": len(per_category),
    "median tokens per sentence": float(np.median(lengths)),
    "POIs of the rarest category": f"{per_category.min()} ({per_category.idxmin()})",
}
if context == POI_TEXT:
    corpus["POIs without text"] = int((lengths == 1).sum())
    corpus[f"review words within {cfg.text.window} of the category token (%)"] = round(
        100 * within, 1)
corpus = pd.Series(corpus, name="corpus").to_frame()
glue("n_sentences", len(sentences), display=False)
glue("n_tokens", len(tokens), display=False)
glue("n_vocab", tokens.nunique(), display=False)
glue("rarest_count", int(per_category.min()), display=False)
glue("rarest_name", Markdown(f"`{per_category.idxmin()}`"), display=False)
if context == POI_TEXT:
    window_sentence = ("The category token opens its sentence: only the first few words of a "
                       f"review ever fall in its window ({100 * within:.0f}% of the review "
                       "words here).")
else:
    window_sentence = ("In a region's sentence the order is random, so a category's window is "
                       f"a random sample of up to {2 * cfg.text.window} of its region's POIs, and "
                       f"each of the {copies} copies draws another sample.")
glue("window_sentence", Markdown(window_sentence), display=False)
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
# sampling suits frequent ones: a fit for a small corpus whose rarest categories are rare (here
# {glue:md}`rarest_name`, with {glue:text}`rarest_count` POIs). In gensim's terms: `sg=1`, `hs=1`, and `negative=0` to switch negative
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
# The vectors come from the cached text stage, so the fusion chapter uses these very vectors
# (`context_used` says which context they were learnt from; `sample`, None, means the context's
# default: gensim's 1e-3 for POI text, no subsampling for region co-occurrence, where every token
# is a category and none is a filler word):

# %% tags=["hide-input"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    text_dir = text_stage(data, cfg, cache)
for w in caught:
    print(f"text stage warned: {w.message}")
encoder = PoiTextEncoder.load(text_dir / "encoder")
regions = load_table(text_dir / EMBEDDINGS_CSV).reindex(data.region_ids)
settings = json.loads((text_dir / "encoder" / "config.json").read_text())
if encoder.context != context:  # a cache entry written before contexts existed
    display(Markdown(f"```{{warning}}\nThe cached text stage was trained with the context "
                     f"*{encoder.context}*, not *{context}*: it predates context detection. Delete "
                     f"`{text_dir}` and rerun to retrain it.\n```"))
# words skip-gram had no context for: their vectors are random starting values, never shown as semantics
trained_on = training_sentences(data.pois, encoder.context, encoder.config.seed,
                                encoder.config.region_copies)
untrained = set(untrained_words(trained_on))
pd.Series(settings, name="Word2Vec settings of this run").to_frame()

# %% [markdown]
# A word's context is its neighbours within `window` tokens, and gensim shrinks the window at
# random for each word (uniformly between 1 and `window`), so nearer words weigh more.
# {glue:md}`window_sentence`
#
# ## What the word vectors learn
#
# The most similar words (cosine similarity) to a few words of the vocabulary: for the toy city
# four categories and two review adjectives; for another city its three most common
# categories. A word that never shared a sentence with another word (a category whose
# POIs all lack text, or that never shares a region with another category) kept its random
# starting vector: it is left out, as a probe and as a neighbour.

# %% tags=["hide-input"]
def nearest_trained(word: str, k: int) -> list[tuple[str, float]]:
    """``encoder.nearest_words`` without the untrained words."""
    near = encoder.nearest_words(word, k=k + len(untrained))
    return [(v, s) for v, s in near if v not in untrained][:k]


trained_categories = [c for c in per_category.index if c in encoder.keys and c not in untrained]
probe_words = [w for w in ("bar", "cheap", "luxury_boutique", "quiet", "park", "nightclub")
               if w in encoder.keys and w not in untrained]
if not probe_words:  # another city: its three most frequent categories
    probe_words = trained_categories[:3]
if untrained:
    shown_untrained = sorted(untrained & set(per_category.index))
    display(Markdown(f"*{len(shown_untrained)} of {len(per_category)} categories had no context "
                     "and are not shown as anyone's neighbour: "
                     f"{', '.join(f'`{c}`' for c in shown_untrained[:10])}"
                     f"{' …' if len(shown_untrained) > 10 else ''}.*"))
can_show = len(trained_categories) >= 2
if can_show:
    k_near = min(6, len(encoder.keys) - len(untrained) - 1)
    nearest = {w: [f"{v} ({s:.2f})" for v, s in nearest_trained(w, k_near)] for w in probe_words}
    display(pd.DataFrame(nearest, index=pd.RangeIndex(1, k_near + 1, name="rank")))
else:
    display(Markdown("```{warning}\nFewer than two categories had any context to learn from: their "
                     "vectors are random starting values, so no neighbours are shown.\n```"))

cat_keys = trained_categories if can_show else [c for c in per_category.index if c in encoder.keys]
V = np.stack([encoder.word_vector(c) for c in cat_keys]).astype(float)
V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
sims = V @ V.T  # K x K over categories, not regions
np.fill_diagonal(sims, np.nan)
cos = pd.DataFrame(sims, index=cat_keys, columns=cat_keys)
k_cats = min(4, len(cat_keys) - 1)
near_cats = {c: [f"{o} ({cos.loc[c, o]:.2f})" for o in cos.loc[c].nlargest(k_cats).index]
             for c in probe_words if c in cat_keys}
if near_cats and encoder.context == POI_TEXT and can_show:
    # under co-occurrence every word is a category: shown above
    display(pd.DataFrame(near_cats, index=pd.RangeIndex(1, k_cats + 1, name="rank"))
            .style.set_caption("the nearest categories (no other words) of each category"))
mean_cat_cos = float(np.nanmean(cos.values)) if len(cat_keys) >= 2 else float("nan")
glue("mean_cat_cos", mean_cat_cos, display=False)

rho_together = float("nan")
if encoder.context == REGION_COOCCURRENCE and can_show:
    # what the vectors should reflect, counted directly: do two categories' POI counts rise and
    # fall together across the regions?
    # one column per category
    X = data.poi_counts().rename(columns=category_token)[cat_keys].to_numpy(float)
    together = pd.DataFrame(X).corr().to_numpy()
    iu = np.triu_indices(len(cat_keys), 1)
    ok = ~np.isnan(together[iu])  # a category with the same count everywhere has no correlation
    rho_together = float(spearmanr(sims[iu][ok], together[iu][ok]).statistic)
    display(Markdown(
        "How closely the vectors follow the co-occurrence they were learnt from: over "
        f"{int(ok.sum())} pairs of categories, the Spearman correlation between the cosine "
        "similarity of two category vectors and the correlation, across regions, of the two "
        f"categories' POI counts is ρ = {rho_together:.2f}. The closer to 1, the more the "
        "neighbours above mean \"found in the same regions\"; near 0, they are mostly "
        "training noise."))

if not can_show:
    vectors_sentence = ("The word vectors carry no meaning for this city: no category had any "
                        "context to learn from, so every vector is a random starting value.")
elif encoder.context == POI_TEXT:
    first = nearest_trained(probe_words[0], 3)
    vectors_sentence = (
        "The word vectors pick up what co-occurs in a review: the nearest words to "
        f"`{probe_words[0]}` are {', '.join(f'`{v}`' for v, _ in first)}. " + (
            "Categories are described by their own words far more than by each other (mean cosine "
            f"similarity between two category vectors {mean_cat_cos:.2f}), so the groups in the "
            "projection are loose."
            if mean_cat_cos < 0.3 else
            "Categories share much of their vocabulary (mean cosine similarity between two "
            f"category vectors {mean_cat_cos:.2f}), so related categories lie close in the "
            "projection."))
else:
    first = nearest_trained(probe_words[0], 3)
    vectors_sentence = (
        "The POIs have no text, so the vectors were learnt from region co-occurrence, to place "
        "together categories found in the same regions. The nearest categories to "
        f"`{probe_words[0]}` are {', '.join(f'`{v}`' for v, _ in first)}; the cosine similarity of "
        "two category vectors follows the correlation of their POI counts across regions with "
        f"Spearman ρ = {rho_together:.2f}"
        + (f", only weakly: with these settings ({cfg.text.epochs} epochs) the neighbours are "
           "largely noise"
           if rho_together < 0.3 else "")
        + f", and the mean cosine similarity between two category vectors is {mean_cat_cos:.2f}.")
glue("vectors_sentence", Markdown(vectors_sentence), display=False)

# %% [markdown]
# A map of the category vectors: their first two principal components, coloured by a rough
# grouping of the toy city's categories (a category the grouping does not know is "other").
# Categories without context are left out (they would be random points).

# %% tags=["hide-input"] mystnb={"figure": {"caption": "POI category vectors, first two principal components: categories close here were learnt as alike."}}
GROUPS = {
    "food and drink": ["restaurant", "cafe", "fast_food", "bakery"],
    "nightlife and leisure": ["bar", "wine_bar", "nightclub", "cinema", "museum", "art_gallery",
                              "gym", "hotel", "shopping_mall", "betting_shop"],
    "shops": ["supermarket", "organic_grocer", "discount_store", "convenience_store",
              "luxury_boutique", "pawn_shop", "pharmacy", "hardware_store"],
    "care, education, worship": ["school", "kindergarten", "hospital", "clinic", "library",
                                 "church"],
    "work, transport, industry": ["bank", "office", "warehouse", "car_repair", "parking",
                                  "gas_station", "bus_station", "farm_supply"],
    "green": ["park"],
}
group_of = {c: g for g, members in GROUPS.items() for c in members}
groups = pd.Series([group_of.get(c, "other") for c in cat_keys], index=cat_keys)
if can_show and len(cat_keys) >= 3:
    pca_words = PCA(n_components=2, random_state=cfg.seed).fit(V)
    xy_words = pca_words.transform(V)
    fig, ax = plt.subplots(figsize=(9, 6.5))
    for i, g in enumerate(dict.fromkeys(list(GROUPS) + ["other"])):
        mask = (groups == g).to_numpy()
        if mask.any():
            ax.scatter(*xy_words[mask].T,
                       s=40 + 4 * np.sqrt(per_category[cat_keys].to_numpy()[mask]),
                       color=plt.get_cmap("tab10")(i), label=g, alpha=0.85)
    plotting.label_points(ax, xy_words, cat_keys)
    ev = pca_words.explained_variance_ratio_ * 100
    ax.set(xlabel=f"PC 1 ({ev[0]:.0f}% of the variance)", ylabel=f"PC 2 ({ev[1]:.0f}%)",
           title=f"category vectors ({encoder.context}), first two principal components "
                 "(dot area: POIs of the category)")
    ax.legend(fontsize=8, frameon=False, loc="best")
    plt.show()
else:
    display(Markdown("*Too few trained category vectors for a map.*"))

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
# Whatever the category vectors were learnt from (reviews, or the regions a category shares),
# only they are averaged here, and a mean forgets how many POIs there were: a region with one
# café and a region with fifty cafés get the same vector. A region without any POI has nothing to
# average and gets the zero vector.

# %%
n_pois = data.poi_counts().sum(axis=1)
empty = (regions.abs().sum(axis=1) == 0) | regions.isna().any(axis=1)
n_empty, n_no_poi = int(empty.sum()), int((n_pois == 0).sum())
glue("empty_sentence", Markdown(
    f"Of {len(data):,} regions, {n_empty} ({100 * empty.mean():.1f}%) "
    f"{'gets' if n_empty == 1 else 'get'} the zero vector of eq. 7 ({n_no_poi} "
    f"{'has' if n_no_poi == 1 else 'have'} no POI at all)."), display=False)
pd.Series({"regions": len(data),
           "regions with no POI": int((n_pois == 0).sum()),
           "regions with a zero POI vector": int(empty.sum()),
           "vector size": regions.shape[1]},
          name="eq. 7 region vectors").to_frame()

# %% [markdown]
# The first principal component of the region vectors (over the regions that have POIs; the
# empty ones are grey), next to the number of POIs, and how it correlates with the toy city's
# hidden latent fields where the city has them:

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The eq. 7 region vectors: their first principal component (left) beside the number of POIs per region (right)."}}
has = ~empty
pca_regions = PCA(n_components=2, random_state=cfg.seed).fit(regions[has].to_numpy())
pcs = pd.DataFrame(pca_regions.transform(regions[has].to_numpy()), index=regions.index[has],
                   columns=["PC 1", "PC 2"]).reindex(data.region_ids)
ev_regions = pca_regions.explained_variance_ratio_ * 100
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
lim = float(np.nanquantile(np.abs(pcs["PC 1"]), 0.98))  # a few regions with one POI are extreme
plotting.plot_map(data, pcs["PC 1"], ax=axes[0], cmap="RdBu_r", vmin=-lim, vmax=lim,
                  title=f"PC 1 of the eq. 7 vectors ({ev_regions[0]:.0f}% of the variance)",
                  label="PC 1")
plotting.plot_map(data, np.log1p(n_pois), ax=axes[1], title="POIs per region", label="ln(1 + POIs)")
fig.tight_layout()
plt.show()

rho_count = float(pcs["PC 1"][has].corr(np.log1p(n_pois[has]), method="spearman"))
glue("rho_count", rho_count, display=False)
if data.latents is not None and not data.latents.empty:
    lat = data.latents.reindex(data.region_ids)
    busy = has & (n_pois >= 5)  # a mean of at least five category vectors
    corr = pd.DataFrame({f"{pc}, {name}": lat[rows].corrwith(pcs.loc[rows, pc], method="spearman")
                         for name, rows in (("regions with POIs", has), ("5+ POIs", busy))
                         for pc in pcs})
    # the closest latent of either component
    on_all = corr[[f"{pc}, regions with POIs" for pc in pcs]].abs()
    best, best_pc = on_all.stack().idxmax()
    best_pc = best_pc.split(",")[0]
    rho_all, rho_busy = (corr.loc[best, f"{best_pc}, regions with POIs"],
                         corr.loc[best, f"{best_pc}, 5+ POIs"])
    glue("latent_sentence", Markdown(
        f"Of the two components and the toy city's latent fields, {best_pc} and `{best}` go "
        f"together most closely: Spearman ρ = {rho_all:.2f} over all regions with POIs, and "
        f"{rho_busy:.2f} over the {int(busy.sum())} regions with at least "
        "five POIs."), display=False)
else:
    glue("latent_sentence", Markdown("This city has no latent fields to compare with."),
         display=False)

# %% tags=["hide-input"]
if data.latents is not None and not data.latents.empty:
    display(corr.round(2).style.background_gradient(cmap="RdBu_r", vmin=-1, vmax=1, axis=None)
            .format("{:.2f}").set_caption("Spearman correlation of the principal components with "
                                          "the latents"))
    strongest = max(abs(rho_all), abs(rho_busy))
    latent_finding = ("**The region vectors follow the city's hidden fields.**"
                      if strongest >= 0.4 else
                      "**The region vectors follow the city's hidden fields only weakly.**"
                      if strongest >= 0.2 else
                      "**The region vectors hardly follow the city's hidden fields.**")
else:
    display(Markdown("*This city has no `latents.csv` (as every real city): no comparison with "
                     "latents.*"))
    latent_finding = ""
# for "What we saw": the findings, in words that follow this city's numbers
glue("latent_finding", Markdown(latent_finding), display=False)
glue("count_finding", Markdown(
    "**A region's eq. 7 vector partly measures how few POIs it has**, although eq. 7 never sees "
    "the count: the first principal component of the non-empty vectors explains "
    f"{ev_regions[0]:.0f}% of their variance, and its Spearman correlation with ln(1 + POIs) is "
    f"{rho_count:.2f}. A mean of few category vectors is noisy and lies far from the city-wide "
    "average." if abs(rho_count) >= 0.2 else
    "**A region's eq. 7 vector does not measure how many POIs it has**, as a mean should not: the "
    f"first principal component of the non-empty vectors explains {ev_regions[0]:.0f}% of their "
    "variance, and its Spearman correlation with ln(1 + POIs) is only "
    f"{rho_count:.2f}."), display=False)

# %% [markdown]
# ## What the mean keeps, measured
#
# How much three summaries of a region's POIs say about the indicators, each read by
# {func}`~musecl.evaluation.ridge_cv_r2` (a standardised ridge regression, out of fold over five
# folds; nothing of ours is trained on the indicators): the eq. 7 mean; the same mean scaled by
# ln(1 + POIs), whose direction is the mix of categories and whose length says how many there
# are; and the ln(1 + count) per category that the *Pretext features* baseline reads
# ({doc}`chapter 8 <08_results>`). Only the indicators that are not derived from an input are
# scored ({glue:md}`headline_names`; the column *mean* averages them). The
# run setting `text_pooling: log-scaled` hands the scaled vector to every stage that reads the
# POI vectors (fusion, *POI only*, *Concat*); the book runs the paper's mean.

# %% tags=["hide-input"]
headline = data.meta.headline_indicators()
glue("headline_names", Markdown(data.meta.spelled_out(headline)), display=False)
if headline:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # regions without POIs: counted above
        summaries = {"eq. 7 mean": encoder.transform(data, pooling="mean"),
                     "eq. 7 mean × ln(1 + POIs)": encoder.transform(data, pooling="log-scaled"),
                     "ln(1 + count) per category":
                         np.log1p(data.poi_counts().reindex(data.region_ids).fillna(0))}
    kept = pd.DataFrame({name: ridge_cv_r2(table, data, headline, seed=cfg.seed)
                         for name, table in summaries.items()}).T
    kept.insert(0, "mean", kept.mean(axis=1))
    kept.index.name = "summary of a region's POIs"
    means = kept["mean"]
    gain = means["eq. 7 mean × ln(1 + POIs)"] - means["eq. 7 mean"]
    glue("pooling_finding", Markdown(
        ("**Eq. 7's mean drops what the number of POIs says**: scaled by ln(1 + POIs), the same "
         f"vectors reach ridge R² {means.iloc[1]:.3f} (mean over the scored indicators) "
         "instead of "
         f"{means.iloc[0]:.3f}"
         if gain > 0.02 else
         "**On this city the number of POIs adds little to eq. 7's mean**: ridge R² "
         f"{means.iloc[0]:.3f} for the mean, {means.iloc[1]:.3f} scaled by ln(1 + POIs)")
        + f" (ln counts per category: {means.iloc[2]:.3f}). MuseCL aligns its image embedding with "
        "the mean (eq. 11), so the fused vector can learn from the POIs only what the mean "
        "keeps."), display=False)
    display(kept.round(3))
else:
    glue("pooling_finding",
         Markdown("This city has no indicators to measure the summaries against."), display=False)
    display(Markdown("*No indicators: nothing to measure the summaries against.*"))

# %% [markdown]
# ## What we saw
#
# - {glue:md}`vectors_sentence` They were learnt from {glue:text}`n_sentences:,` sentences
#   ({glue:text}`n_tokens:,` tokens, a vocabulary of {glue:text}`n_vocab` words); the rarest
#   category, {glue:md}`rarest_name`, has {glue:text}`rarest_count` POIs.
# - {glue:md}`count_finding`
# - {glue:md}`pooling_finding`
# - {glue:md}`latent_finding` {glue:md}`latent_sentence`
# - {glue:md}`empty_sentence` Fusion training (eq. 11) leaves them out, as a zero vector has no
#   direction.
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
