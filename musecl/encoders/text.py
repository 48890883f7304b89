"""POI text encoder: skip-gram word vectors, and a region vector as the mean of its POI categories (eq. 7).

The paper trains gensim Word2Vec with skip-gram and the hierarchical (Huffman-tree) softmax on
*all* POI categories and comments, then represents a region by the *categories* alone:

.. math:: e_i^{POI} = \\frac{1}{|T_i|} \\sum_j W(T_{ij})   \\qquad (7)

Each POI is one sentence: its category token followed by the words of its text, so category
vectors are learnt from the words people use beside them. POIs without text (e.g. OpenStreetMap
tags) would give one-token sentences, from which skip-gram learns nothing; there the context is
*region co-occurrence* instead (:func:`region_sentences`, chosen by :func:`text_context`).

Reproducible for a seed: one worker thread, gensim's ``seed`` and :func:`stable_hash`. Saved as
plain files, no pickle.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from gensim.models import Word2Vec

from musecl.city import CATEGORY, REGION_ID, TEXT, City, category_key
from musecl.config import TEXT_POOLINGS
from musecl.io import CONFIG_JSON, atomic_save_json, atomic_write, check_choice, n_of_regions, read_saved_config

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

VECTORS_NPY, VOCAB_JSON = "vectors.npy", "vocab.json"

POI_TEXT, REGION_COOCCURRENCE = "poi text", "region co-occurrence"  # the two contexts of a category
AUTO = "auto"  # TextEncoderConfig.context: poi text if any POI has text, else region co-occurrence
CONTEXTS = (AUTO, POI_TEXT, REGION_COOCCURRENCE)
MAX_SENTENCE = 10_000  # gensim silently cuts longer sentences; region sentences are split at this length


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (apostrophes inside a word kept). Deliberately
    simple: text without spaces (Chinese, Japanese) gives one token per run; segment it first."""
    if not isinstance(text, str):
        return []
    return _WORD.findall(text.lower())


# a POI category's vocabulary key: the whole name, one token, lower case
category_token = category_key


def stable_hash(text: str) -> int:
    """A string hash that is the same in every process (unlike ``hash``), for gensim's ``hashfxn``."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class TextEncoderConfig:
    """Word2Vec settings. Defaults follow the paper: skip-gram (sg=1) with the hierarchical
    softmax (hs=1, negative=0) and 128-d vectors to match the image embeddings."""

    vector_size: int = 128
    window: int = 5
    min_count: int = 1
    epochs: int = 5
    seed: int = 0
    sg: int = 1
    hs: int = 1
    negative: int = 0
    # what a category is learnt from: "poi text", "region co-occurrence" or "auto"
    context: str = AUTO
    sample: float | None = None  # subsampling of frequent words; None: by context (see sample_for)
    region_copies: int = 10  # region co-occurrence: shuffled copies of each region's sentence
    pooling: str = "mean"  # a region's vector from its categories' (TEXT_POOLINGS; "mean" is eq. 7)

    def __post_init__(self):
        check_choice("pooling", self.pooling, TEXT_POOLINGS, " (mean: the paper's eq. 7)")
        check_choice("context", self.context, CONTEXTS)
        if self.sample is not None and self.sample < 0:
            raise ValueError(f"sample must be >= 0 (0: off) or None; got {self.sample}")
        if min(self.vector_size, self.window, self.epochs, self.min_count, self.region_copies) < 1:
            raise ValueError("vector_size, window, epochs, min_count and region_copies must be "
                             f">= 1; got {self}")
        if self.hs == 0 and self.negative == 0:
            raise ValueError("hs=0 and negative=0 leaves Word2Vec without an output layer; "
                             "set hs=1 (the paper) or negative>0")

    def sample_for(self, context: str) -> float:
        """Word2Vec's ``sample``: the setting, or gensim's default 1e-3 for poi text (the paper's
        run) and 0 (off) for region co-occurrence. Subsampling frequent words is meant for "the"
        and "of"; in a corpus of categories it would drop most tokens (about four in five with 30
        equally common categories)."""
        if self.sample is not None:
            return self.sample
        return 0.0 if context == REGION_COOCCURRENCE else 1e-3


def poi_sentences(pois: pd.DataFrame) -> list[list[str]]:
    """One sentence per POI: [category token] + tokens of its text (the training-phase corpus)."""
    texts = pois[TEXT] if TEXT in pois.columns else pd.Series("", index=pois.index)
    return [[category_token(c)] + tokenize(t) for c, t in zip(pois[CATEGORY], texts)]


def has_text(pois: pd.DataFrame) -> bool:
    """Whether any POI's text says more than its category (``"Fast food"`` beside category
    ``fast_food`` says nothing more)."""
    if TEXT not in pois.columns:
        return False
    return any(bool(words) and words != tokenize(str(c))  # lazy: stops at the first POI with text
               for c, words in zip(pois[CATEGORY], map(tokenize, pois[TEXT])))


def text_context(pois: pd.DataFrame, context: str = AUTO) -> str:
    """``context`` itself, or for ``"auto"``: ``"poi text"`` when any POI has text
    (:func:`has_text`), else ``"region co-occurrence"``."""
    check_choice("context", context, CONTEXTS)
    if context != AUTO:
        return context
    return POI_TEXT if has_text(pois) else REGION_COOCCURRENCE


def region_sentences(pois: pd.DataFrame, seed: int = 0, copies: int = 1) -> list[list[str]]:
    """One sentence per region (regions in sorted order): the category token of each of its
    POIs, once per POI, in a random order drawn from ``seed``; split every :data:`MAX_SENTENCE`
    tokens. ``copies`` > 1 repeats the whole corpus, each region shuffled anew each time.

    Once per POI, so that training weighs categories and their pairs as eq. 7 does, by their POIs.
    Shuffled, because the order of ``pois.csv`` means nothing and is often sorted by category, so
    that skip-gram's window would see mostly one category; shuffled, a window is a random sample
    of the region's POIs. Several copies, because each draws another sample, so the pairs trained
    approach all pairs of the region (a window as long as the region would instead let its most
    common categories fill every context); ten copies give about as many tokens as a POI corpus
    with ten words of text per POI.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1; got {copies}")
    rng = np.random.default_rng(seed)
    tokens = pd.Series(pois[CATEGORY].map(category_token).to_numpy(),
                       index=pois[REGION_ID].astype(str).to_numpy())
    regions = [words.to_numpy() for _, words in tokens.groupby(level=0, sort=True)]
    sentences: list[list[str]] = []
    for _ in range(copies):
        for words in regions:
            shuffled = words[rng.permutation(len(words))].tolist()
            sentences.extend(shuffled[i:i + MAX_SENTENCE]
                             for i in range(0, len(shuffled), MAX_SENTENCE))
    return sentences


def training_sentences(pois: pd.DataFrame, context: str = AUTO, seed: int = 0,
                       region_copies: int = 10) -> list[list[str]]:
    """Word2Vec's corpus under ``context`` (:func:`text_context`): :func:`poi_sentences`, or
    :func:`region_sentences` with ``copies=region_copies``."""
    if text_context(pois, context) == POI_TEXT:
        return poi_sentences(pois)
    return region_sentences(pois, seed, region_copies)


def untrained_words(sentences: list[list[str]]) -> list[str]:
    """Words that never share a sentence with a different word, sorted: skip-gram has no context
    for them, so their vectors stay random and their nearest neighbours mean nothing."""
    alone, with_context = set(), set()
    for sentence in sentences:
        first = sentence[0] if sentence else None
        (with_context if any(w != first for w in sentence) else alone).update(sentence)
    return sorted(alone - with_context)


class PoiTextEncoder:
    """Skip-gram + Huffman-softmax word vectors of POI categories and texts; eq. 7 region vectors.

    ``fit(city)`` trains on all POIs of the city; ``transform(city)`` returns one row per region
    (index ``region_id``, columns ``poi_0 .. poi_{d-1}``), a zero vector (warned) for a region with
    no POI of a known category. ``context``: what the vectors were learnt from
    (:func:`text_context`); ``fit`` warns about categories that had none (:func:`untrained_words`).
    """

    def __init__(self, config: TextEncoderConfig | None = None, **overrides):
        config = config or TextEncoderConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.keys: list[str] | None = None
        self.vectors: np.ndarray | None = None
        self.context: str | None = None  # the context used by the last fit (or the loaded encoder)
        self._index: dict[str, int] = {}

    # -- training --------------------------------------------------------------------------
    def fit(self, city: City) -> "PoiTextEncoder":
        c = self.config
        if len(city.pois) == 0:
            raise ValueError(f"{city.name}: the city has no POIs (pois.csv is empty); "
                             "the POI text encoder needs at least one")
        context = text_context(city.pois, c.context)
        sentences = training_sentences(city.pois, context, c.seed, c.region_copies)
        categories = set(city.pois[CATEGORY].map(category_token))
        lonely = [w for w in untrained_words(sentences) if w in categories]
        if lonely:
            where = ("have no POI with text" if context == POI_TEXT
                     else "never share a region with another category")
            warnings.warn(f"{city.name}: {len(lonely)} of {len(categories)} categories {where} "
                          f"(context: {context}), so their vectors are untrained random values: "
                          f"{', '.join(lonely[:5])}{' ...' if len(lonely) > 5 else ''}",
                          stacklevel=2)
        model = Word2Vec(sentences=sentences, vector_size=c.vector_size, window=c.window,
                         min_count=c.min_count, sg=c.sg, hs=c.hs, negative=c.negative,
                         sample=c.sample_for(context), epochs=c.epochs, seed=c.seed, workers=1,
                         hashfxn=stable_hash)
        self._set_vectors(list(model.wv.index_to_key),
                          np.asarray(model.wv.vectors, dtype=np.float32))
        self.context = context
        return self

    def _set_vectors(self, keys: list[str], vectors: np.ndarray) -> None:
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} vocabulary keys but {len(vectors)} vectors")
        self.keys, self.vectors = keys, vectors
        self._index = {k: i for i, k in enumerate(keys)}

    def _check_fitted(self) -> None:
        if self.vectors is None:
            raise RuntimeError("PoiTextEncoder is not fitted: call fit(city) or PoiTextEncoder.load(dir)")

    # -- representation --------------------------------------------------------------------
    def word_vector(self, word: str) -> np.ndarray:
        """The trained vector W(word); categories are looked up by :func:`category_token`."""
        self._check_fitted()
        if word not in self._index:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self.keys)} words); "
                           "for a category use category_token(name)")
        return self.vectors[self._index[word]]

    def transform(self, city: City, pooling: str | None = None) -> pd.DataFrame:
        """Eq. 7: each region's vector is the mean of its POIs' category vectors (categories only);
        with ``pooling="log-scaled"`` that mean times ln(1 + its POIs with a known category).
        ``pooling``: None for the encoder's own setting (``config.pooling``)."""
        self._check_fitted()
        pooling = self.config.pooling if pooling is None else pooling
        check_choice("pooling", pooling, TEXT_POOLINGS, " (mean: the paper's eq. 7)")
        ids, pois = city.region_ids, city.pois
        codes = pois[CATEGORY].map(category_token).map(self._index)
        known = codes.notna().to_numpy() & pois[REGION_ID].isin(ids).to_numpy()
        if n_unknown := int(codes.isna().sum()):
            warnings.warn(f"{city.name}: {n_unknown} POIs have a category not in the vocabulary "
                          "and are left out of eq. 7", stacklevel=2)
        row = ids.get_indexer(pois[REGION_ID][known])
        col = codes[known].astype(np.int64).to_numpy()
        d = self.vectors.shape[1]
        total = np.zeros((len(ids), d), dtype=np.float64)
        np.add.at(total, row, self.vectors[col].astype(np.float64))
        count = np.bincount(row, minlength=len(ids)).astype(np.float64)
        empty = count == 0
        if n_empty := int(empty.sum()):
            zero = "its POI vector is" if n_empty == 1 else "their POI vectors are"
            warnings.warn(f"{city.name}: {n_of_regions(n_empty, len(ids))} no POI with a known "
                          f"category; {zero} zero", stacklevel=2)
        out = total / np.maximum(count, 1.0)[:, None]
        if pooling == "log-scaled":
            out *= np.log1p(count)[:, None]
        return pd.DataFrame(out.astype(np.float32), index=ids.rename(REGION_ID),
                            columns=[f"poi_{k}" for k in range(d)])

    def fit_transform(self, city: City) -> pd.DataFrame:
        return self.fit(city).transform(city)

    def nearest_words(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words with the highest cosine similarity to ``word`` (itself excluded)."""
        v = self.word_vector(word).astype(np.float64)
        norms = np.linalg.norm(self.vectors, axis=1) * max(np.linalg.norm(v), 1e-12)
        sims = (self.vectors @ v) / np.maximum(norms, 1e-12)
        sims[self._index[word]] = -np.inf
        order = np.argsort(-sims, kind="stable")[: max(0, min(k, len(self.keys) - 1))]
        return [(self.keys[i], float(sims[i])) for i in order]

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``vectors.npy``, ``vocab.json`` and ``config.json`` (plain files, no pickle);
        ``config.json`` holds the settings and ``context_used``, the context the vectors came from."""
        self._check_fitted()
        directory = Path(directory)
        with atomic_write(directory / VECTORS_NPY, "wb") as handle:
            np.save(handle, self.vectors, allow_pickle=False)
        with atomic_write(directory / VOCAB_JSON, "w") as handle:
            json.dump(self.keys, handle, ensure_ascii=False)
        atomic_save_json(directory / CONFIG_JSON, {"class": type(self).__name__,
                                                   **dataclasses.asdict(self.config),
                                                   "context_used": self.context})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PoiTextEncoder":
        directory = Path(directory)
        raw = read_saved_config(directory, (VECTORS_NPY, VOCAB_JSON, CONFIG_JSON), "PoiTextEncoder.save")
        raw.pop("class", None)
        # an encoder saved before contexts existed was trained on one sentence per POI
        context = raw.pop("context_used", None) or POI_TEXT
        encoder = cls(TextEncoderConfig(**raw))
        keys = json.loads((directory / VOCAB_JSON).read_text(encoding="utf-8"))
        encoder._set_vectors(keys, np.load(directory / VECTORS_NPY, allow_pickle=False))
        encoder.context = context
        return encoder
