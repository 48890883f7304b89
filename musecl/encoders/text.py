"""POI text encoder: skip-gram word vectors, and a region vector as the mean of its POI categories (eq. 7).

The paper trains gensim Word2Vec with skip-gram and the hierarchical (Huffman-tree) softmax on
*all* POI categories and comments, then represents a region by the *categories* alone:

.. math:: e_i^{POI} = \\frac{1}{|T_i|} \\sum_j W(T_{ij})   \\qquad (7)

Each POI is one sentence: its category (one token, the whole category name lower-cased) followed
by the words of its text, so category vectors are learnt from the words people use beside them.

Reproducible for a seed: one worker thread, gensim's ``seed``, and a hash function for gensim
that does not depend on ``PYTHONHASHSEED`` (Python's ``hash`` of a string changes per process).
Saved as plain files (``vectors.npy``, ``vocab.json``, ``config.json``): no pickle.
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

from musecl.city import CATEGORY, REGION_ID, TEXT, City
from musecl.io import atomic_save_json, atomic_write

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

VECTORS_NPY, VOCAB_JSON, CONFIG_JSON = "vectors.npy", "vocab.json", "config.json"


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (apostrophes inside a word kept).

    Deliberately simple: scripts written without spaces (Chinese, Japanese) come out as one token
    per run of characters; segment such text before writing ``pois.csv`` if that matters.
    """
    if not isinstance(text, str):
        return []
    return _WORD.findall(text.lower())


def category_token(category: str) -> str:
    """The vocabulary key of a POI category: the whole name, stripped and lower-cased (one token)."""
    return " ".join(str(category).split()).lower()


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

    def __post_init__(self):
        if self.vector_size < 1 or self.window < 1 or self.epochs < 1 or self.min_count < 1:
            raise ValueError(f"vector_size, window, epochs and min_count must be >= 1; got {self}")
        if self.hs == 0 and self.negative == 0:
            raise ValueError("hs=0 and negative=0 leaves Word2Vec without an output layer; "
                             "set hs=1 (the paper) or negative>0")


def poi_sentences(pois: pd.DataFrame) -> list[list[str]]:
    """One sentence per POI: [category token] + tokens of its text (the corpus of the training phase)."""
    texts = pois[TEXT] if TEXT in pois.columns else pd.Series("", index=pois.index)
    return [[category_token(c)] + tokenize(t) for c, t in zip(pois[CATEGORY], texts)]


class PoiTextEncoder:
    """Skip-gram + Huffman-softmax word vectors of POI categories and texts; eq. 7 region vectors.

    ``fit(city)`` trains on all POIs of the city; ``transform(city)`` returns one row per region
    (index ``region_id``, columns ``poi_0 .. poi_{d-1}``). A region without any POI whose category
    is in the vocabulary gets a zero vector (there is nothing to average); the count is warned.
    """

    def __init__(self, config: TextEncoderConfig | None = None, **overrides):
        config = config or TextEncoderConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.keys: list[str] | None = None
        self.vectors: np.ndarray | None = None
        self._index: dict[str, int] = {}

    # -- training --------------------------------------------------------------------------
    def fit(self, city: City) -> "PoiTextEncoder":
        from gensim.models import Word2Vec

        sentences = poi_sentences(city.pois)
        if not sentences:
            raise ValueError(f"{city.name}: the city has no POIs (pois.csv is empty); "
                             "the POI text encoder needs at least one")
        c = self.config
        model = Word2Vec(sentences=sentences, vector_size=c.vector_size, window=c.window,
                         min_count=c.min_count, sg=c.sg, hs=c.hs, negative=c.negative,
                         epochs=c.epochs, seed=c.seed, workers=1, hashfxn=stable_hash)
        self._set_vectors(list(model.wv.index_to_key), np.asarray(model.wv.vectors, dtype=np.float32))
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

    def transform(self, city: City) -> pd.DataFrame:
        """Eq. 7: each region's vector is the mean of its POIs' category vectors (categories only)."""
        self._check_fitted()
        ids = city.region_ids
        pois = city.pois
        tokens = pois[CATEGORY].map(category_token)
        codes = tokens.map(self._index)
        known = codes.notna().to_numpy() & pois[REGION_ID].isin(ids).to_numpy()
        n_unknown = int((~codes.notna()).sum())
        if n_unknown:
            warnings.warn(f"{city.name}: {n_unknown} POIs have a category not in the vocabulary "
                          "and are left out of eq. 7", stacklevel=2)
        row = ids.get_indexer(pois[REGION_ID][known])
        col = codes[known].astype(np.int64).to_numpy()
        d = self.vectors.shape[1]
        total = np.zeros((len(ids), d), dtype=np.float64)
        np.add.at(total, row, self.vectors[col].astype(np.float64))
        count = np.bincount(row, minlength=len(ids)).astype(np.float64)
        empty = count == 0
        if empty.any():
            warnings.warn(f"{city.name}: {int(empty.sum())} of {len(ids)} regions have no POI with a "
                          "known category; their POI vector is zero", stacklevel=2)
        out = total / np.maximum(count, 1.0)[:, None]
        frame = pd.DataFrame(out.astype(np.float32), index=ids.copy(),
                             columns=[f"poi_{k}" for k in range(d)])
        frame.index.name = REGION_ID
        return frame

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
        """Write ``vectors.npy``, ``vocab.json`` and ``config.json`` (plain files, no pickle)."""
        self._check_fitted()
        directory = Path(directory)
        with atomic_write(directory / VECTORS_NPY, "wb") as handle:
            np.save(handle, self.vectors, allow_pickle=False)
        with atomic_write(directory / VOCAB_JSON, "w") as handle:
            json.dump(self.keys, handle, ensure_ascii=False)
        atomic_save_json(directory / CONFIG_JSON, {"class": type(self).__name__,
                                                   **dataclasses.asdict(self.config)})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PoiTextEncoder":
        directory = Path(directory)
        for name in (VECTORS_NPY, VOCAB_JSON, CONFIG_JSON):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory / name} is missing; was this folder written "
                                        "by PoiTextEncoder.save?")
        raw = json.loads((directory / CONFIG_JSON).read_text())
        raw.pop("class", None)
        encoder = cls(TextEncoderConfig(**raw))
        keys = json.loads((directory / VOCAB_JSON).read_text(encoding="utf-8"))
        encoder._set_vectors(keys, np.load(directory / VECTORS_NPY, allow_pickle=False))
        return encoder
