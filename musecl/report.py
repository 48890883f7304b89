"""Tables 1-2, Figure 6 and the discussion as views of the one tidy results table
(``musecl.evaluation.RESULT_COLUMNS``): every number is a groupby of it, never typed by hand.
The paper's own numbers join from ``published_results.csv`` under a label that says so."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from scipy import stats

from musecl.evaluation import RESULT_COLUMNS, SPLITS, as_names
from musecl.io import atomic_write, check_choice
from musecl.methods.base import METHODS, join_words
from musecl.methods.combinations import ABLATION, ALL_METHODS, IMAGE_FREE, PAPER_BASELINES
from musecl.methods.vector import VIEW_PARTS
from musecl.plotting import plot_at_a_glance

METRICS = ("r2", "rmse")
HIGHER_IS_BETTER = {"r2": True, "rmse": False}
TARGET = "MuseCL"
VECTOR_TARGET = "MuseCL (vector views)"  # MuseCL's structure on a city without images
LOCATION = "Location kNN"
IMPROVEMENT_ROW = "improvement over best baseline"
NUMBER_TABLE = 'class="musecl-results"'  # a table of numbers: book/_static_css/musecl.css keeps its cells on one line
HEADLINE = "headline mean"  # column: the mean over the indicators not derived from an input
OURS = "this run"
# the paper's spellings -> this project's method names (its Tile2vec etc. -> our "-style" stand-ins)
PAPER_NAMES = {"Resnet-18": "ResNet-18", "Resnet18": "ResNet-18", "Inception-v3": "Inception v3",
               "Add-srv": "Add-svrv", "Fusion-srv": "Fusion-svrv", "Ours": "MuseCL",
               "Tile2vec": "Tile2vec-style", "Urban2vec": "Urban2vec-style", "PG-SimCL": "PG-SimCL-style"}
FORMATS = ("markdown", "html", "styler")


# ---- selecting rows ----
def _check_results(results: pd.DataFrame, metric: str) -> None:
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a DataFrame (results.csv); got {type(results).__name__}")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; expected {RESULT_COLUMNS}")
    check_choice("metric", metric, METRICS)


def _rows(results: pd.DataFrame, metric: str, split: str, city: str | None = None,
          one_city: bool = True) -> pd.DataFrame:
    """The rows of one split (and one city when asked), with a clear error when there are none."""
    _check_results(results, metric)
    rows = results[results["split"] == split]
    if rows.empty:
        raise ValueError(f"no results for split {split!r}; the table has {sorted(results['split'].unique())}")
    if city is not None:
        rows = rows[rows["city"] == city]
        if rows.empty:
            raise ValueError(f"no results for city {city!r}; the table has {sorted(results['city'].unique())}")
    elif one_city and rows["city"].nunique() > 1:
        raise ValueError(f"the results hold several cities {sorted(rows['city'].unique())}; pass city=")
    return rows


def method_order(methods: Sequence[str], methods_order: Sequence[str] | None = None) -> list[str]:
    """``methods`` in a table's row order: ``methods_order``'s selection (an unknown name raises
    ValueError), else the paper's Table 1, the ablation, the added methods, then the others."""
    present = list(dict.fromkeys(methods))
    if methods_order is not None:
        unknown = [m for m in methods_order if m not in present and m not in METHODS]
        if unknown:
            raise ValueError(f"methods_order names unknown method(s) {unknown}; the table has {present}")
        return [m for m in methods_order if m in present]
    known = [m for m in (*ALL_METHODS, *IMAGE_FREE, *VIEW_PARTS) if m in present]
    return known + [m for m in present if m not in known]


def headline_means(results: pd.DataFrame, indicators: Sequence[str], metric: str = "r2") -> pd.DataFrame:
    """Per city, method, split and seed: the mean of ``metric`` over ``indicators`` (a city's
    headline indicators); NaN where a seed lacks one of them."""
    _check_results(results, metric)
    wanted = list(indicators)
    rows = results[results["indicator"].isin(wanted)]
    grouped = rows.groupby(["city", "method", "split", "seed"], sort=False)
    # a NaN score counts as lacking: else a mean over fewer indicators is paired with one over all
    out = grouped[metric].mean().where((grouped["indicator"].nunique() == len(wanted))
                                       & (grouped[metric].count() == len(wanted)))
    return out.rename(metric).reset_index()


def mean_headline(results: pd.DataFrame, indicators: Sequence[str], metric: str = "r2") -> pd.Series:
    """The mean over seeds of :func:`headline_means`, by (method, split)."""
    return headline_means(results, indicators, metric).groupby(["method", "split"])[metric].mean()


def numeric_tables(results: pd.DataFrame, metric: str = "r2", split: str = "random",
                   methods_order: Sequence[str] | None = None, indicators: Sequence[str] | None = None,
                   city: str | None = None, mean_of: Sequence[str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sd (over seeds, ddof=1) of ``metric``, method x indicator. ``mean_of``: indicators
    whose per-seed mean is the first column, ``HEADLINE`` (in view when a wide table scrolls)."""
    indicators, mean_of = as_names(indicators), as_names(mean_of)
    rows = _rows(results, metric, split, city)
    grouped = rows.groupby(["method", "indicator"], sort=False)[metric]
    mean, std = grouped.mean().unstack(), grouped.std().unstack()
    order = method_order(rows["method"], methods_order)
    cols = list(dict.fromkeys(rows["indicator"])) if indicators is None else list(indicators)
    if indicators is None and mean_of:
        cols = [c for c in mean_of if c in cols] + [c for c in cols if c not in mean_of]
    unknown = [c for c in cols + list(mean_of or []) if c not in mean.columns]
    if unknown:
        raise ValueError(f"no results for indicator(s) {unknown}; the table has {list(mean.columns)}")
    mean, std = mean.reindex(index=order, columns=cols), std.reindex(index=order, columns=cols)
    if mean_of:
        per_seed = headline_means(rows, mean_of, metric).groupby("method", sort=False)[metric]
        mean.insert(0, HEADLINE, per_seed.mean().reindex(order))
        std.insert(0, HEADLINE, per_seed.std().reindex(order))
    mean.index.name = std.index.name = "method"
    mean.columns.name = std.columns.name = "indicator"
    return mean, std


def _format(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def results_table(results: pd.DataFrame, metric: str = "r2", split: str = "random",
                  methods_order: Sequence[str] | None = None, indicators: Sequence[str] | None = None,
                  city: str | None = None, digits: int = 3,
                  mean_of: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`numeric_tables` as Table 1's "mean ± std" text (one seed: the mean alone)."""
    mean, std = numeric_tables(results, metric, split, methods_order, indicators, city, mean_of)
    return _as_text(mean, std, digits)


def _as_text(mean: pd.DataFrame, std: pd.DataFrame, digits: int, metric: str | None = None,
             target: str = TARGET, baselines: Sequence[str] | None = None) -> pd.DataFrame:
    """"mean ± std" text; with ``metric``, plus :func:`improvement`'s row where it has a number."""
    text = pd.DataFrame([[_format(m, s, digits) for m, s in zip(mean.loc[i], std.loc[i])] for i in mean.index],
                        index=mean.index.copy(), columns=mean.columns.copy())
    if metric is not None and (gain := improvement(mean, metric, target, baselines)).notna().any():
        text.loc[IMPROVEMENT_ROW] = [f"{g:.2f}%" if pd.notna(g) else "" for g in gain]
    return text


# ---- marks and improvement ----
def rank_marks(mean: pd.DataFrame, metric: str = "r2") -> pd.DataFrame:
    """"best" / "second" / "" per cell: per indicator (column), the best and runner-up method by
    mean (highest R2, lowest RMSE). Ties go to the row listed first; NaN is never marked."""
    check_choice("metric", metric, METRICS)
    marks = pd.DataFrame("", index=mean.index, columns=mean.columns)
    for col in mean.columns:
        values = mean[col].dropna()
        order = values.sort_values(ascending=not HIGHER_IS_BETTER[metric], kind="stable").index
        for label, row in zip(("best", "second"), order[:2]):
            marks.loc[row, col] = label
    return marks


def improvement(mean: pd.DataFrame, metric: str = "r2", target: str = TARGET,
                baselines: Sequence[str] | None = None) -> pd.Series:
    """The paper's "Impr." row, in %: ``target`` against the best of ``baselines`` present
    (default: the paper's Table 1 methods except MuseCL). R2: 100 (target - best) / |best|;
    RMSE: 100 (best - target) / best, so a positive number is always an improvement. NaN where
    the target or every baseline is missing, or the best baseline is 0."""
    check_choice("metric", metric, METRICS)
    present = [m for m in (PAPER_BASELINES if baselines is None else baselines) if m in mean.index and m != target]
    if target not in mean.index or not present:
        return pd.Series(np.nan, index=mean.columns, name=IMPROVEMENT_ROW, dtype=float)
    higher, t = HIGHER_IS_BETTER[metric], mean.loc[target]
    best = mean.loc[present].max() if higher else mean.loc[present].min()  # an RMSE is >= 0: abs(best) is best
    return (100 * ((t - best) if higher else (best - t)) / best.abs()).where(best != 0).rename(IMPROVEMENT_ROW)


def _render(text: pd.DataFrame, marks: pd.DataFrame, fmt: str, caption: str):
    if fmt in ("styler", "html"):
        def css(frame: pd.DataFrame) -> pd.DataFrame:
            style = {"best": "font-weight: bold", "second": "text-decoration: underline"}
            return marks.reindex(index=frame.index, columns=frame.columns, fill_value="").map(
                lambda m: style.get(m, ""))

        # the class lets the book's stylesheet keep "0.592 ± 0.020" on one line
        styler = text.style.apply(css, axis=None).set_caption(caption).set_table_attributes(NUMBER_TABLE)
        return styler if fmt == "styler" else styler.to_html()

    def cell(value: str, mark: str) -> str:
        value = value.replace("|", "\\|")
        return {"best": "**{}**", "second": "<u>{}</u>"}.get(mark, "{}").format(value) if value else value

    lines = ["| " + " | ".join([str(text.index.name or "method")] + [str(c) for c in text.columns]) + " |",
             "|" + "---|" * (len(text.columns) + 1)]
    for i in text.index:
        cells = [cell(text.loc[i, c], marks.loc[i, c] if i in marks.index else "") for c in text.columns]
        lines.append("| " + " | ".join([str(i)] + cells) + " |")
    return "\n".join(lines) + "\n"


def styled_table(results: pd.DataFrame, metric: str = "r2", split: str = "random",
                 methods_order: Sequence[str] | None = None, indicators: Sequence[str] | None = None,
                 city: str | None = None, digits: int = 3, fmt: str = "markdown", target: str = TARGET,
                 baselines: Sequence[str] | None = None, mean_of: Sequence[str] | None = None,
                 ceilings: pd.DataFrame | None = None):
    """:func:`results_table` as the paper prints it: best **bold**, second underlined, and the
    :func:`improvement` row. ``ceilings`` (``evaluate_ceilings`` rows) are listed under the
    methods, unranked. ``fmt``: "markdown" (a string), "styler" (needs jinja2) or "html"."""
    check_choice("fmt", fmt, FORMATS)
    mean, std = numeric_tables(results, metric, split, methods_order, indicators, city, mean_of)
    text = _as_text(mean, std, digits, metric, target, baselines)
    marks = rank_marks(mean, metric)
    if ceilings is not None and (ceilings["split"] == split).any():
        cols = [c for c in text.columns if c != HEADLINE]
        ceiling_text = results_table(ceilings, metric, split, indicators=cols, city=city, digits=digits,
                                     mean_of=mean_of or None)
        text = pd.concat([text, ceiling_text.reindex(columns=text.columns, fill_value="")])
    label = {"r2": "R2 (higher is better)", "rmse": "RMSE (lower is better)"}[metric]
    where = city or str(_rows(results, metric, split)["city"].iloc[0])
    caption = f"{where}, {split} split: {label}, mean ± std over seeds"
    if mean_of:
        caption += f"; {HEADLINE}: over {', '.join(mean_of)}"
    return _render(text, marks, fmt, caption)


# ---- the paper's numbers ----
def paper_method_name(name: str) -> str:
    """The canonical name of a method as spelled in the paper's tables ("Resnet-18" -> "ResNet-18")."""
    name = str(name).strip()
    return PAPER_NAMES.get(name, {m.lower(): m for m in ALL_METHODS}.get(name.lower(), name))


WITHOUT_TEXT = ("Add-svrv", "Fusion-svrv")  # the paper's rows that combine the two image embeddings, no POI text


def paper_lead_sentence(results: pd.DataFrame, published: pd.DataFrame, indicators: Sequence[str], city_name: str,
                        source: str = "MuseCL paper Table 1", paper_city: str = "Beijing") -> str | None:
    """MuseCL's lead over :data:`WITHOUT_TEXT` in the paper and in this run, in words (the cities
    differ, so only the orderings compare). None when either side lacks the rows."""
    paper = published[(published["source"] == source) & (published["city"] == paper_city)]
    theirs = paper.groupby("method")["r2"].mean()
    ours = headline_means(results[results["split"] == "random"], indicators).groupby("method")["r2"].mean()
    rows = [m for m in WITHOUT_TEXT if m in theirs.index and m in ours.index]
    if not rows or TARGET not in theirs.index or TARGET not in ours.index:
        return None
    leads = "; ".join(f"over *{m}* {theirs[TARGET] - theirs[m]:+.2f} in the paper and "
                      f"{round(ours[TARGET] - ours[m], 3) + 0.0:+.3f} here" for m in rows)
    return (f"The values come from different cities; the orderings can be set side by side. MuseCL's lead {leads} "
            f"(the paper: mean R² over its {paper_city} indicators; here: the headline mean on {city_name}, random "
            "split). The paper credits its lead to the POI text the fusion aligns to; the paired intervals above "
            "say whether this run's lead exceeds what the seeds move.")


def with_published(table: pd.DataFrame, published: pd.DataFrame | None, city_label: str,
                   metric: str = "r2", source: str | None = None) -> pd.DataFrame:
    """``table`` (:func:`results_table`, or :func:`numeric_tables`' means) beside the paper's
    numbers: columns (indicator, "this run") and (indicator, "paper (<city_label>)"), plus rows for
    methods only the paper has. ``published`` None: ``table``, with a warning. ``source``: the
    paper, where several report the city."""
    if published is None:
        warnings.warn("no published results (data directory absent); the table is shown without the "
                      "paper's numbers", stacklevel=2)
        return table
    needed = {"city", "indicator", "method", metric}
    if not needed <= set(published.columns):
        raise ValueError(f"published table lacks column(s) {sorted(needed - set(published.columns))}")
    paper = published[published["city"] == city_label]
    if source is not None:
        paper = paper[paper["source"] == source]
    if paper.empty:
        raise ValueError(f"no published numbers for city {city_label!r}"
                         + (f" and source {source!r}" if source else "")
                         + f"; cities: {sorted(published['city'].unique())}")
    paper = paper.assign(method=paper["method"].map(paper_method_name))
    if paper.duplicated(["indicator", "method"]).any():
        raise ValueError(f"several sources report {city_label!r} ({sorted(paper['source'].unique())}); "
                         "pass source=")
    numbers = paper.pivot(index="method", columns="indicator", values=metric)
    label = f"paper ({city_label})"
    textual = any(table[c].dtype == object or pd.api.types.is_string_dtype(table[c]) for c in table.columns)
    rows = list(table.index) + [m for m in method_order(numbers.index, PAPER_BASELINES) if m not in table.index]
    rows += [m for m in numbers.index if m not in rows]
    out = {}
    for indicator in table.columns:
        ours = table[indicator].reindex(rows)
        out[(indicator, OURS)] = ours.fillna("") if textual else ours
        if indicator not in numbers.columns:  # an empty column of the paper's would only take width
            continue
        theirs = numbers[indicator].reindex(rows)
        out[(indicator, label)] = theirs.map(lambda v: "" if pd.isna(v) else f"{v:.4f}") if textual else theirs
    joined = pd.DataFrame(out, index=pd.Index(rows, name=table.index.name or "method"))
    return joined.rename_axis(columns=["indicator", "source"])


# ---- sentences for the discussion ----
def _means(results: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    rows = _rows(results, metric, split, one_city=False)
    return rows.groupby(["city", "indicator", "method"], sort=False)[metric].agg(["mean", "std"]).reset_index()


def winners(results: pd.DataFrame, split: str = "random", metric: str = "r2",
            methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Per city and indicator: the best method by mean, its mean and std, the runner-up and the
    margin between them (always >= 0; for RMSE the runner-up's minus the best's)."""
    means = _means(results, metric, split)
    if methods is not None:
        means = means[means["method"].isin(list(methods))]
    rows = []
    for (city, indicator), g in means.groupby(["city", "indicator"], sort=False):
        g = g.sort_values("mean", ascending=not HIGHER_IS_BETTER[metric], kind="stable")
        best = g.iloc[0]
        second = g.iloc[1] if len(g) > 1 else {"method": None, "mean": np.nan}
        rows.append({"city": city, "indicator": indicator, "best": best["method"], "best_mean": best["mean"],
                     "best_std": best["std"], "runner_up": second["method"], "runner_up_mean": second["mean"],
                     "margin": abs(best["mean"] - second["mean"]), "n_methods": len(g)})
    return pd.DataFrame(rows)


def location_vs(results: pd.DataFrame, split: str = "random", metric: str = "r2",
                location: str = LOCATION, target: str = TARGET) -> pd.DataFrame:
    """Per city and indicator: Location kNN's mean against MuseCL's and against the best other
    method, and its rank among all methods (1 = best). Positive differences favour location."""
    means = _means(results, metric, split)
    if location not in set(means["method"]):
        raise ValueError(f"no {location!r} rows for split {split!r}; run it (musecl run --methods all)")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    rows = []
    for (city, indicator), g in means.groupby(["city", "indicator"], sort=False):
        by = g.set_index("method")["mean"]
        if location not in by.index:
            continue
        loc, t, others = by[location], by.get(target, np.nan), by.drop(location).dropna()
        best_other = (others.idxmax() if sign > 0 else others.idxmin()) if len(others) else None
        other = others.get(best_other, np.nan)
        rows.append({"city": city, "indicator": indicator, "location": loc, "musecl": t,
                     "location_minus_musecl": sign * (loc - t), "best_other": best_other,
                     "best_other_mean": other, "location_minus_best_other": sign * (loc - other),
                     "location_rank": int((sign * others > sign * loc).sum()) + 1})
    return pd.DataFrame(rows)


# what the columns of winners() and location_vs() are called in a page (any metric)
READABLE = {"best": "best method", "best_mean": "its mean", "best_std": "its sd", "runner_up": "runner-up",
            "runner_up_mean": "runner-up's mean", "margin": "margin", "n_methods": "methods compared",
            "location": "Location kNN", "musecl": "MuseCL", "location_minus_musecl": "location − MuseCL",
            "best_other": "best other method", "best_other_mean": "its mean",
            "location_minus_best_other": "location − best other", "location_rank": "location's rank"}


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`winners` or :func:`location_vs` as a page shows it (columns in words)."""
    keys = ["city", "indicator"] if table["city"].nunique() > 1 else ["indicator"]
    table = table.drop(columns=[] if "city" in keys else ["city"]).dropna(axis="columns", how="all")
    return table.set_index(keys).rename(columns=READABLE)


def by_split(values: dict) -> str:
    """Numbers per split in words: "0.563 (random) and 0.335 (spatial)"."""
    return " and ".join(f"{value:.3f} ({split})" if isinstance(value, float) else f"{value} ({split})"
                        for split, value in values.items())


def interval_text(row) -> str:
    """A row of :func:`paired_differences` as "+0.050 [+0.010, +0.090]"; "0.000 (the same)" when
    the two agree within rounding in every seed."""
    if abs(row["difference"]) < 5e-4 and not abs(row["high"] - row["low"]) >= 1e-3:  # NaN: one seed
        return "0.000 (the same)"
    if row["high"] != row["high"]:  # NaN: fewer than two seeds
        return f"{row['difference']:+.3f} (one seed: no interval)"
    return f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def one_view_note(city_name: str, views: Sequence[str]) -> str | None:
    """A sentence for a city where MuseCL fused one image kind (``MuseCL.views``), None for both."""
    if len(views) != 1:
        return None
    kind, lacking = {"satellite": ("satellite", "street views with trips (eq. 1-2)"),
                     "streetview": ("street-view", "satellite images")}[views[0]]
    return (f"*{city_name} has no {lacking}, so here MuseCL fuses its {kind} embedding alone: eq. 10 with "
            f"$\\beta = 1$, aligned to the POI text by eq. 11 as in the paper, which fuses both image kinds.*")


def vector_target_note(city_name: str, lead: str) -> str:
    """A sentence for a city without images, where MuseCL (vector views) stands in for MuseCL;
    ``lead`` says what the page does with it ("this chapter reads")."""
    return (f"**{city_name} has no images, so {lead} *{VECTOR_TARGET}*:** MuseCL's stages on two vectors per "
            "region instead of two pictures (its trips to and from every region; its POI counts), trained on "
            "the same similarity triplets, with the same POI text vectors and the same fusion (chapter 10 "
            "builds it).")


def headline_method(methods: Sequence[str]) -> str | None:
    """The method a results page compares with: MuseCL, else its image-free version, else None."""
    return next((m for m in (TARGET, VECTOR_TARGET) if m in set(methods)), None)


def paired_text(paired: dict[str, pd.DataFrame], target: str = TARGET) -> pd.DataFrame:
    """:func:`paired_differences` of each split side by side, as :func:`interval_text` and verdict."""
    # by method name: a method with no scores in one split is missing from that split's table
    methods = list(dict.fromkeys(m for table in paired.values() for m in table.index))
    return pd.DataFrame({(split, what): column.reindex(methods).fillna("")
                         for split, table in paired.items() for what, column in (
        (f"{target} minus method [95% interval]", table.apply(interval_text, axis=1).astype(object)),
        (f"{target} is", table["verdict"]))}, index=pd.Index(methods, name=next(iter(paired.values())).index.name))


def paired_differences(results: pd.DataFrame, indicators: Sequence[str], target: str = TARGET,
                       split: str = "random", metric: str = "r2", confidence: float = 0.95,
                       city: str | None = None) -> pd.DataFrame:
    """Per method: ``target`` minus the method in the mean of ``metric`` over ``indicators``, paired
    seed by seed (a seed gives every method the same split), with a Student-t interval over the
    seeds: ``difference``, ``low``, ``high``, ``n_seeds`` and ``verdict`` ("better": the interval
    above 0, "worse": below, "unclear"; "" with one seed). RMSE's sign is flipped: positive favours
    the target. The interval is only as wide as what the seeds re-draw (every stage with
    ``retrain: per_seed``; else only the split and the probe)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    rows = _rows(results, metric, split, city)
    per_seed = headline_means(rows, indicators, metric).pivot_table(index="seed", columns="method",
                                                                    values=metric)
    if target not in per_seed.columns:
        raise ValueError(f"no {target!r} rows for split {split!r}; "
                         f"methods: {sorted(per_seed.columns)}")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    out = []
    for method in method_order(per_seed.columns.drop(target)):
        diff = (sign * (per_seed[target] - per_seed[method])).dropna()
        n, mean = len(diff), float(diff.mean())  # NaN without seeds
        half = (float(stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n))
                if n > 1 else np.nan)
        verdict = ("" if n < 2 else "better" if mean - half > 0 else "worse" if mean + half < 0
                   else "unclear")
        out.append({"method": method, "difference": mean, "low": mean - half, "high": mean + half,
                    "n_seeds": n, "verdict": verdict})
    return pd.DataFrame(out).set_index("method")


def verdict_changes(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """"*method* (unclear -> better)" for each method whose verdict differs between two
    :func:`paired_differences` tables of the same target (methods in both)."""
    return [f"*{m}* ({before.loc[m, 'verdict']} -> {after.loc[m, 'verdict']})"
            for m in before.index.intersection(after.index)
            if before.loc[m, "verdict"] != after.loc[m, "verdict"]]


def cross_fitting_sentence(holdout: pd.DataFrame, crossed: pd.DataFrame, target: str = TARGET) -> str:
    """What spatial cross-fitting changes: :func:`paired_differences` of the same seeds' embeddings
    scored on one held-out part (``holdout``) and with every block tested (``crossed``)."""
    both = holdout.index.intersection(crossed.index)
    width = {name: float((table.loc[both, "high"] - table.loc[both, "low"]).mean())
             for name, table in (("one", holdout), ("every", crossed))}
    said = []
    for verdict, word in (("better", "better than"), ("worse", "worse than"),
                          ("unclear", "not told apart from")):
        names = [f"*{m}*" for m in both if crossed.loc[m, "verdict"] == verdict]
        if names:
            said.append(f"{word} {join_words(names, 'and')}")
    changed = verdict_changes(holdout, crossed)
    ratio = width["one"] / width["every"] if width["every"] > 0 else float("inf")
    how = (f"{ratio:.1f} times narrower" if ratio >= 1 else f"{1 / ratio:.1f} times wider")
    return (f"With every block tested, the 95% intervals are {how} on average "
            f"({width['every']:.3f} wide against {width['one']:.3f}). "
            + (f"{target} is then {join_words(said, 'and')}. " if said else "")
            + (f"Verdicts that change: {join_words(changed, 'and')}." if changed
               else "No verdict changes."))


def read_out_comparison(mlp: pd.DataFrame, ridge: pd.DataFrame, indicators: Sequence[str],
                        splits: Sequence[str], target: str = TARGET,
                        ceilings: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The same embeddings read by the run's MLP probe (``mlp``: results rows) and by a ridge
    regression (``ridge``): (headline mean ± sd per method, read-out and split, with every ceiling
    of ``ceilings`` where given; ``target`` minus each method under ridge,
    :func:`paired_text`; a sentence on what the read-out moves, with ``target``'s
    :func:`ceiling_share` under each).
    A probe is part of the measurement: an MLP fitted on a few hundred regions can read a table
    of raw counts worse than a linear map does, and a verdict that moves with it is the probe's."""
    methods = list(dict.fromkeys([target, *mlp["method"]]))
    rows = {"MLP": mlp, "ridge": ridge}
    paired = {split: {probe: paired_differences(table, indicators, target=target, split=split)
                      for probe, table in rows.items()} for split in splits}
    # a ceiling reads the latents, not an embedding: one value under both read-outs
    shown = list(dict.fromkeys([*methods, "Ceiling: all latents", *([] if ceilings is None else ceilings["method"])]))
    levels = pd.DataFrame({(split, f"{probe} probe"): at_a_glance(
        table, indicators, ceilings, splits=[split], methods=dict.fromkeys(shown, ""))[f"R² ({split} split)"]
        for split in splits for probe, table in rows.items()})
    levels = levels.reindex([m for m in shown if m in levels.index]).fillna("")

    first = splits[0]
    moved = (mean_headline(ridge, indicators) - mean_headline(mlp, indicators)).xs(first, level="split")
    others = moved.drop(target).sort_values(key=abs, ascending=False)
    most = [f"*{m}* ({g:+.3f})" for m, g in others.items() if abs(g) >= 0.0005][:3]
    before, after = (ceiling_share(t, ceilings, indicators, target) for t in (mlp, ridge))
    share = f" ({before:.0%} -> {after:.0%} of the all-latent ceiling)" if before and after else ""
    lead = (f"Read by a ridge regression instead of the MLP ({first} split), {target}'s headline mean R² moves "
            f"by {moved[target]:+.3f}{share}" + (f", and the rows that move most are {join_words(most, 'and')}. "
                                                 if most else "; no other row moves. "))
    changes = {split: verdict_changes(paired[split]["MLP"], paired[split]["ridge"]) for split in splits}
    said = [f"under the {split} split {join_words(found, 'and')}" for split, found in changes.items() if found]
    if said:
        tail = (f"Verdicts against {target} that change with the read-out (MLP -> ridge): {'; '.join(said)}. "
                "Those verdicts the probe decides as much as the embeddings do; the bar above keeps the run's "
                "probe.")
    elif all((paired[split]["ridge"]["verdict"] == "").all() for split in splits):
        tail = "With one seed there are no intervals, so no verdicts to compare."
    else:
        tail = (f"No verdict against {target} changes with the read-out: the verdicts above are the "
                "embeddings', not the probe's.")
    differences = paired_text({split: paired[split]["ridge"] for split in splits}, target=target).rename(
        columns={f"{target} minus method [95% interval]": f"{target} minus method, ridge [95% interval]"})
    return levels, differences, lead + tail


def floor_sentence(paired: dict[str, pd.DataFrame], floors: Sequence[str], target: str = TARGET,
                   with_numbers: bool = True) -> str:
    """The target against the simple baselines a learned embedding must clear, in words;
    ``paired``: :func:`paired_differences` per split; ``with_numbers``: with the intervals (without:
    the verdict alone, for a page that links to them)."""
    rows = {(f, split): table.loc[f] for split, table in paired.items() for f in floors if f in table.index}
    if not rows:
        return f"No simple baseline ran beside {target} here, so what it adds to them is not known."
    ran = list(dict.fromkeys(f for f, _ in rows))

    def where(verdicts: set) -> list[str]:  # "Pretext features under the random and spatial splits"
        found = {f: [s for (g, s), row in rows.items() if g == f and row["verdict"] in verdicts] for f in ran}
        by_splits = {}  # floors with the same splits are named together: "A or B under the random split"
        for f, s in found.items():
            if s:
                by_splits.setdefault(tuple(s), []).append(f)
        return [f"{' or '.join(fs)} under the {' and '.join(s)} split" + ("s" if len(s) > 1 else "")
                for s, fs in by_splits.items()]

    worse, unclear = where({"worse"}), where({"unclear"})  # a loss is said as one, not as "not clearly better"
    if all(row["verdict"] == "" for row in rows.values()):
        lead = f"**With one seed there is no interval** to tell whether {target} clears {' and '.join(ran)}"
    elif not worse and not unclear:
        where_all = "every split" if len(paired) > 1 else f"the {next(iter(paired))} split"
        lead = f"**{target} is better than {' and '.join(ran)} in {where_all}**"
    else:
        lead = (f"**{target} is "
                + ", and ".join(([f"worse than {', and than '.join(worse)}"] if worse else [])
                                + ([f"not clearly better than {', nor than '.join(unclear)}"] if unclear else []))
                + "**")
    numbers = "; ".join(f"{target} minus {f} " + " and ".join(
        f"{interval_text(row)} ({split}: {row['verdict']})" if row["verdict"] else f"{row['difference']:+.3f} ({split})"
        for (g, split), row in rows.items() if g == f) for f in ran)
    how = ("paired over the seeds, mean headline R², 95% intervals" if any(r["verdict"] for r in rows.values())
           else "mean headline R²")
    return f"{lead} ({how}: {numbers})." if with_numbers else f"{lead}."


# ---- the book's bar for MuseCL, and where its shortfall goes ----
BAR = ("SV only", "RS only", "POI only", "Concat", "Pretext features")  # its inputs and what they are built from
VECTOR_BAR = (*VIEW_PARTS[:2], "POI only", VIEW_PARTS[2], "Pretext features")  # the same for MuseCL (vector views)
BARS = {TARGET: BAR, VECTOR_TARGET: VECTOR_BAR}  # each version of MuseCL: the rows it must beat
SIDE_BY_SIDE = {TARGET: "SV+RS", VECTOR_TARGET: VIEW_PARTS[2]}  # ... and its two encoders' vectors, unfused
GOAL_SHARE = 0.85  # of the all-latent ceiling, random split


def ceiling_share(results: pd.DataFrame, ceilings: pd.DataFrame | None, indicators: Sequence[str],
                  target: str = TARGET) -> float | None:
    """``target``'s random-split headline mean over the all-latent ceiling's (None: no ceiling)."""
    if ceilings is None:
        return None
    ceiling = mean_headline(ceilings, indicators)
    own = mean_headline(results, indicators)
    key = ("Ceiling: all latents", "random")
    return float(own[(target, "random")] / ceiling[key]) if key in ceiling and (target, "random") in own else None


def bar_checks(paired: dict[str, pd.DataFrame], share: float | None,
               bar: Sequence[str] = BAR, goal_share: float = GOAL_SHARE) -> dict:
    """The book's bar, check -> split -> passed: "beats M" for each method M of ``bar`` the run
    scored (its :func:`paired_differences` verdict is "better"; None with one seed) and, on a city
    with a ceiling, whether ``share`` (:func:`ceiling_share`) reaches ``goal_share``."""
    checks = {}
    for m in bar:
        verdicts = {split: table.loc[m, "verdict"] for split, table in paired.items()
                    if m in table.index}
        if verdicts:
            checks[f"beats {m}"] = {split: verdict == "better" if verdict else None
                                    for split, verdict in verdicts.items()}
    if share is not None:
        name = f"≥ {goal_share:.0%} of the all-latent ceiling (is {share:.0%})"
        checks[name] = {"random": share >= goal_share}
    return checks


def bar_sentence(checks: dict[str, dict[str, bool | None]], target: str = TARGET, where_not: str = "") -> str:
    """How many of :func:`bar_checks` the target clears (``where_not`` follows a failure)."""
    decided = [passed for row in checks.values() for passed in row.values() if passed is not None]
    undecided = sum(map(len, checks.values())) - len(decided)
    if not decided:
        return "No check can be decided with one seed: each needs a paired interval, so two or more seeds."
    return (f"{target} clears {sum(decided)} of the {len(decided)} checks"
            + (f" that this run can decide; {undecided} more need two or more seeds for a paired interval."
               if undecided else ".") + (f" {where_not}" if where_not and not all(decided) else ""))


def bar_failures(checks: dict[str, dict[str, bool | None]], target: str = TARGET,
                 paired: dict[str, pd.DataFrame] | None = None) -> str:
    """The checks of :func:`bar_checks` that ``target`` fails, in one sentence (the landing page's);
    with the ``paired`` differences they came from, a loss is said as one ("worse than")."""
    decided = [passed for row in checks.values() for passed in row.values() if passed is not None]
    if not decided:
        return "one seed decides none of the book's checks (each needs a paired interval, so two or more seeds)"
    beats = {name.removeprefix("beats "): [split for split, passed in row.items() if passed is False]
             for name, row in checks.items() if name.startswith("beats ")}

    def failed(lost: bool) -> list[str]:  # "*Concat* (random and spatial split)"
        found = {m: [s for s in splits if (paired is not None and paired[s].loc[m, "verdict"] == "worse") == lost]
                 for m, splits in beats.items()}
        return [f"*{m}* ({' and '.join(splits)} split)" for m, splits in found.items() if splits]

    worse, missed = failed(True), failed(False)
    short = [re.fullmatch(r"≥ (\S+) of the all-latent ceiling \(is (\S+)\)", name)  # bar_checks' wording
             for name, row in checks.items() if not name.startswith("beats ") and False in row.values()]
    if not worse and not missed and not short:
        return f"{target} clears every one of the {len(decided)} checks of the book's bar"
    lead = f"{target} clears {sum(decided)} of the {len(decided)} checks of the book's bar"
    parts = ([f"it is worse than {join_words(worse, 'and')}"] if worse else []) + \
        ([f"it is not clearly better than {join_words(missed, 'or')}"] if missed else []) + \
        [f"it reaches {m[2]} of the all-latent ceiling, not the {m[1]} asked" for m in short]
    return lead + ": " + "; ".join(parts)


def bar_table(checks: dict[str, dict[str, bool | None]], splits: Sequence[str]) -> pd.DataFrame:
    """:func:`bar_checks` as the page shows it: a row a check, a column a split, yes / no."""
    words = {True: "yes", False: "no", None: "one seed: no interval"}
    return pd.DataFrame({name: {split: words[passed] for split, passed in row.items()}
                         for name, row in checks.items()}).T.reindex(columns=list(splits)).fillna("")


def room_sentence(raw: dict[str, float], ceiling: float | None, goal_share: float = GOAL_SHARE) -> str:
    """How much room the raw inputs leave, in words: ``raw`` maps a row of unlearned inputs to its
    random-split headline mean; ``ceiling``: the all-latent ceiling's (None: a real city)."""
    if ceiling is None:
        return "This city records no ceiling, so there is no share of it to measure."
    if not raw:
        return "No row of raw inputs ran, so the room they leave is not measured."
    best = max(raw, key=raw.get)
    share = raw[best] / ceiling
    return (f"How much room the inputs leave: read by the same probe, MuseCL's raw inputs reach at most "
            f"{raw[best]:.3f} (*{best}*), {share:.0%} of the all-latent ceiling ("
            + ", ".join(f"*{m}* {v:.3f}" for m, v in raw.items()) + ", random split)"
            + (f". So on this city the {goal_share:.0%} check asks for more than the probe reads from the raw "
               "inputs themselves: an embedding learned from them can pass it only by making what they hold "
               "easier to read." if share < goal_share else "."))


def shortfall(r2: pd.Series, ceiling: float, inputs: Sequence[str], own: str, target: str = TARGET,
              split: str = "random", goal_share: float = GOAL_SHARE) -> dict[str, float]:
    """``target``'s shortfall from ``goal_share`` x ``ceiling`` in parts that add up to it: the goal
    minus the best read-out of ``inputs`` (``beyond_inputs``), that minus the read-out of the
    target's embedding ``own`` (``kept_less``), that minus the target (``probe``). ``r2``: headline
    mean R2 by (method, split); also ``goal``, ``total`` and ``best_inputs``."""
    goal = goal_share * ceiling
    best = max(inputs, key=lambda name: r2[(name, split)])
    at_inputs, at_own, at_target = (float(r2[(name, split)]) for name in (best, own, target))
    return {"goal": goal, "total": goal - at_target, "beyond_inputs": goal - at_inputs,
            "kept_less": at_inputs - at_own, "probe": at_own - at_target, "best_inputs": best}


def shortfall_sentence(r2: pd.Series, ceiling: float, perfect: str, read: dict[str, str], own: str,
                       columns: int, target: str = TARGET, split: str = "random",
                       goal_share: float = GOAL_SHARE) -> str:
    """:func:`shortfall` in words. ``perfect``: the row given the latents; ``read``: read-out row
    -> what it reads from ("every raw input"); ``columns``: the target embedding's width."""
    parts = shortfall(r2, ceiling, list(read), own, target, split, goal_share)
    at = {name: float(r2[(name, split)]) for name in (perfect, *read, own, target)}
    share = {name: f"{value:.3f} ({value / ceiling:.0%})" for name, value in at.items()}
    given = at[perfect] / ceiling
    return (f"Given the latents themselves the probe reaches {at[perfect]:.3f} ({given:.0%} of the ceiling): "
            + ("the probe loses little" if given >= 0.9 else f"the probe itself loses {1 - given:.0%}")
            + f". The {goal_share:.0%} check asks for {parts['goal']:.3f}. Read out of "
            + ", out of ".join(f"{words}{' the latents give' if k == 0 else ''} {share[name]}"
                               for k, (name, words) in enumerate(read.items()))
            + f", out of {target}'s embedding {share[own]}, and {target} itself gets {share[target]} through "
            f"the probe ({split} split). "
            + (f"So {target} clears the check by {-parts['total']:.3f}." if parts["total"] <= 0 else
               f"So of {target}'s shortfall from the check ({parts['total']:.3f} R²), "
               f"{parts['beyond_inputs']:.3f} is beyond what its inputs show to a ridge fitted to the latents, "
               f"{parts['kept_less']:.3f} is what its embedding keeps less of than its inputs show, and "
               f"{parts['probe']:.3f} is what the probe does not read from the embedding's {columns} columns.")
            + (" The check thus asks an embedding learned without the latents to show them better than a ridge "
               "regression fitted to the latents reads them from the same inputs." if parts["beyond_inputs"] > 0
               else ""))


def reference_vs_sentence(r2: pd.Series, pairs: dict[str, pd.Series], reference: str, what: str,
                          method: str = "Pretext features", lead: str = "") -> str:
    """A reference row against a method of the bar, in words: ``pairs``: split -> the
    :func:`paired_differences` row of ``method`` (``reference`` the target); ``what``: what the
    reference reads the latents out of; ``lead``: words before the sentence ("With every block
    tested")."""
    splits, verdicts = list(pairs), [p["verdict"] for p in pairs.values()]
    would = ("one seed cannot tell whether an" if "" in verdicts else
             "an" if all(v == "better" for v in verdicts) else "even an")
    return ((f"{lead}, read" if lead else "Read") + f" out of {what} the latents give "
            + " / ".join(f"{r2[(reference, s)]:.3f}" for s in splits)
            + f" against *{method}*' " + " / ".join(f"{r2[(method, s)]:.3f}" for s in splits)
            + f" ({' / '.join(splits)} split; paired differences " + ", ".join(map(interval_text, pairs.values()))
            + f"): {would} embedding that showed the latents as well as that read-out would "
            + ("not clearly " if would == "even an" else "") + f"pass the bar's check against *{method}*.")


RECORDED = " (paper CNNs, GPU)"  # suffix of a recorded run's method names, set beside this run's
UNTRAINED_BACKBONE = {"SV only": "Inception v3", "RS only": "ResNet-18"}  # each trained encoder's bare CNN


def beside_recorded_run(results: pd.DataFrame, recorded_rows: pd.DataFrame, recorded: dict,
                        indicators: Sequence[str], splits: Sequence[str], encoders: str,
                        ceilings: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """A recorded run (``recorded_rows`` of the same city, e.g. ``book/measurements/``;
    ``recorded``: its JSON summary) beside this run on their common seeds and ``splits``: (table of
    headline means and paired differences, recorded minus this run, a row per split and method; a
    sentence that also names the ``splits`` the recorded run lacks). ``encoders`` names this run's
    image encoders. ``ceilings``: this run's, scored on the same test parts as both runs (same
    city, seeds and splits), so the table carries them as every results table does. Raises
    ValueError without common seeds, splits or MuseCL rows."""
    seeds = sorted(set(recorded_rows["seed"]) & set(results["seed"]))  # compared seed by seed
    missing = [s for s in splits if s not in set(recorded_rows["split"])]
    splits = [s for s in splits if s not in missing]
    names = ("MuseCL", "Concat", "SV only", "RS only", "Inception v3", "ResNet-18", "Pretext features", LOCATION)
    methods = [m for m in names if m in set(results["method"]) & set(recorded_rows["method"])]
    if not seeds or not splits or TARGET not in methods:
        raise ValueError(f"the recorded run shares no seeds, no splits or no {TARGET} rows with this run")
    mine = results[results["method"].isin(methods) & results["seed"].isin(seeds)]
    theirs = recorded_rows[recorded_rows["method"].isin(methods) & recorded_rows["seed"].isin(seeds)]
    both = pd.concat([mine, theirs.assign(method=theirs["method"] + RECORDED)], ignore_index=True)
    text = {split: results_table(both, "r2", split, mean_of=indicators)[HEADLINE] for split in splits}
    gap = {split: pd.DataFrame({m: paired_differences(both[both["method"].isin([m, m + RECORDED])], indicators,
                                                      target=m + RECORDED, split=split).loc[m]
                                for m in methods}).T for split in splits}
    which = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"  # may be fewer than the tables'
    columns = (f"this build, {which}", f"GPU run, {which}", "GPU run minus this build [95% interval]")
    # a row per split and method (three columns fit the page; a column per split did not)
    table = pd.concat({split: pd.DataFrame(dict(zip(columns, (
        text[split].reindex(methods), text[split].reindex([m + RECORDED for m in methods]).set_axis(methods),
        gap[split].apply(interval_text, axis=1))))) for split in splits}, names=["split", "method"])
    ceiling = (ceilings[ceilings["seed"].isin(seeds) & ceilings["split"].isin(splits)]
               if ceilings is not None else pd.DataFrame())
    for split in splits if len(ceiling) else ():  # the same regions in both runs: one value, both columns
        level = results_table(ceiling, "r2", split, mean_of=indicators)[HEADLINE]
        for name, value in level.items():
            table.loc[(split, name), :] = [value, value, "(the same test parts)"]
    table = table.sort_index(level="split", key=lambda s: s.map(splits.index), sort_remaining=False)

    verdict = {split: gap[split].loc[TARGET, "verdict"] for split in splits}  # "better": the recorded run's
    lower = [split for split, v in verdict.items() if v == "worse"]  # the recorded MuseCL scored lower
    higher = [split for split, v in verdict.items() if v == "better"]
    untold = [s for s in splits if s not in lower + higher]
    unclear = f" (under the {' and '.join(untold)} split the seeds cannot tell)" if untold else ""
    if lower and not higher:
        finding = (f"So this build's results are not a lower bound that the paper's encoders, trained longer at "
                   f"the paper's sizes, would lift: from random weights they score lower than this build's "
                   f"encoders ({encoders}) under the {' and '.join(lower)} split{unclear}, at the training this "
                   "loan allowed. Whether the paper's full schedule or its ImageNet-pretrained CNNs would do "
                   "better, this run could not test.")
    elif higher and not lower:
        finding = (f"So this build's results understate MuseCL under the {' and '.join(higher)} split{unclear}: "
                   "the paper's encoders, trained longer, lift it.")
    else:
        finding = (f"With {len(seeds)} seed(s) in common this comparison neither shows that this build "
                   "understates MuseCL nor that it does not.")
    means = mean_headline(both, indicators)
    backbone = "; ".join(f"*{trained}* {means[(trained + RECORDED, 'random')]:.3f} against *{bare}* "
                         f"{means[(bare + RECORDED, 'random')]:.3f}" for trained, bare in UNTRAINED_BACKBONE.items()
                         if {(trained + RECORDED, "random"), (bare + RECORDED, "random")} <= set(means.index))
    no_encoder = [m for m in ("Pretext features", LOCATION) if m in methods]
    same = all(abs(gap[split].loc[m, "difference"]) < 5e-4 for m in no_encoder for split in splits)
    protocol = ("score the same on both machines (to the third decimal; the MLP probe's float sums differ "
                "slightly across CPUs): the splits and probes are the same, only the image encoders differ."
                if same else "differ too: this build's evaluation settings are not the recorded run's, so the "
                "two columns differ in more than the image encoders.")
    still_falling = sum(e["best_epoch"] == e["epochs"] for e in recorded.get("encoders", []))
    schedule = (f" The validation loss of {still_falling} of the {len(recorded['encoders'])} encoders it trained "
                "(one per image kind and seed) was lowest at their last epoch: they were still learning when the "
                "schedule ended." if still_falling else "")
    sentence = (f"On the seeds both runs have ({', '.join(map(str, seeds))}), MuseCL with the paper's encoders "
                "trained on the GPU minus MuseCL of this build, headline mean, 95% interval: "
                + "; ".join(f"{split} split {interval_text(gap[split].loc[TARGET])}" for split in splits)
                + f". {finding}{schedule}"
                + (f" On the GPU, the trained encoders against their untrained backbones (random split): {backbone}."
                   if backbone else "")
                + (f" The rows that use no trained image encoder ({', '.join(f'*{m}*' for m in no_encoder)}) "
                   f"{protocol}" if no_encoder else "")
                + (f" The recorded run has no {' or '.join(missing)} split to compare." if missing else ""))
    return table, sentence


def information_sentence(mean_r2: pd.DataFrame, paired: dict[str, pd.DataFrame] | None = None,
                         poi_ceiling: float | None = None, heads: bool = True, target: str = TARGET,
                         encoders_vs_features: pd.Series | None = None) -> str:
    """Where MuseCL loses information, in words. ``mean_r2``: headline R2 (method x split);
    ``paired``: each split's :func:`paired_differences` of ``target``; ``poi_ceiling``: what the
    POIs show; ``heads``: the image encoders are heads on Lite0 features; ``encoders_vs_features``:
    *SV+RS* minus the frozen Lite0 features, paired (random split), which decides whether the
    triplet tasks kept less than the images show (without it the sentence does not say)."""
    r2 = mean_r2["random"]
    paired = paired or {}
    lite0, pretext = "EfficientNet-Lite0 (ImageNet)", "Pretext features"
    side = SIDE_BY_SIDE[target]
    why = []
    if {"POI only", pretext} <= set(r2.index) and r2["POI only"] < r2[pretext]:  # else not a loss to explain
        allows = f", although what the POIs show allows {poi_ceiling:.3f}" if poi_ceiling is not None else ""
        why.append(f"its alignment target, the eq. 7 POI vector, reaches only {r2['POI only']:.3f} alone (random "
                   f"split){allows}: averaging category vectors drops how many POIs of each kind a region has, "
                   f"which the counts in *{pretext}* keep")
    if {target, "Fusion-svrv"} <= set(r2.index) and "Fusion-svrv" in paired.get("random", pd.DataFrame()).index:
        verdict = paired["random"].loc["Fusion-svrv", "verdict"]  # MuseCL minus Fusion-svrv, paired
        does = {"better": "adds to what the images alone give (paired interval above)",
                "worse": "costs more than it brings (paired interval above)",
                "unclear": "neither adds nor costs measurably (paired interval above)"}.get(
                    verdict, "may add or cost (one seed gives no interval to tell)")
        why.append(f"the same fusion with the region's own image embeddings as its target instead of the POI "
                   f"vector (*Fusion-svrv*) reaches {r2['Fusion-svrv']:.3f} against {target}'s {r2[target]:.3f}: on "
                   f"this city the alignment to the POI text {does}")
    if {lite0, "SV+RS"} <= set(r2.index):
        row = encoders_vs_features
        keep = {"worse": "keep less than the images show", "better": "keep more than the frozen features show",
                "unclear": "keep about as much as the frozen features show, as far as the seeds can tell"
                }.get("" if row is None else row["verdict"], "may keep more or less than the frozen features "
                      "show (no paired interval to tell)")
        why.append(f"the two trained image encoders together (*SV+RS*) reach {r2['SV+RS']:.3f}, "
                   + ("the frozen features their heads were trained on " if heads else
                      "a frozen ImageNet model's features of the same images ")
                   + f"(*{lite0}*) {r2[lite0]:.3f}"
                   + (f" (*SV+RS* minus *{lite0}*, paired, {interval_text(row)})" if row is not None else "")
                   + f": the triplet tasks {keep} (on a generated city chapters 3 and 4 measure it per latent)")
    fused = {split: table.loc[side] for split, table in paired.items() if side in table.index}
    if target in r2.index and fused:
        verdicts = {split: row["verdict"] for split, row in fused.items()}
        worse = [split for split, v in verdicts.items() if v == "worse"]
        does = (f"loses part of what the two show side by side ({' and '.join(worse)} split)" if worse else
                "adds to what the two show side by side" if all(v == "better" for v in verdicts.values()) else
                "neither adds nor loses measurably" if all(verdicts.values()) else
                "may add or lose (one seed gives no interval to tell)")
        words = (f"fusing the two encoders' vectors into one aligned to the POI text, as {target} does, {does}: "
                 f"{target} minus *{side}*, paired, " + ", ".join(f"{split} split {interval_text(row)}"
                                                                for split, row in fused.items()))
        summed = "Add-svrv"  # the two vectors added, nothing trained: eq. 10 with equal weights
        if worse and summed in mean_r2.index and all(mean_r2.loc[summed, s] < mean_r2.loc[side, s] for s in worse):
            words += (f"; their plain sum with nothing trained (*{summed}*) stays below *SV+RS* too ("
                      + ", ".join(f"{mean_r2.loc[summed, s]:.3f} against {mean_r2.loc['SV+RS', s]:.3f}, {s}"
                                  for s in worse)
                      + "): combining the two into one vector costs what they keep side by side, whether "
                      "the combination is trained or not")
        why.append(words)
    if {lite0, pretext} <= set(r2.index) and r2[lite0] < r2[pretext]:
        weak = (", and that target is weak (point 1)" if "POI only" in r2.index and r2["POI only"] < r2[pretext]
                else "")
        why.append(f"even the frozen features of both images ({r2[lite0]:.3f}) stay below *{pretext}* "
                   f"({r2[pretext]:.3f}): at this image size the pictures predict less than the pretext inputs "
                   "do, so an image embedding can only overtake those inputs through what the alignment to the "
                   f"POI vectors carries into it{weak}")
    return ("Where the information goes: " + "; ".join(f"({i}) {part}" for i, part in enumerate(why, 1)) + "."
            if why else
            f"(The rows needed to trace where {target} loses information were not run.)")


# ---- an image encoder's training, in words ----
def latent_training_finding(probes: pd.DataFrame, subject: str = "the embedding", tolerance: float = 0.03) -> str:
    """What training changed in how well a ridge reads the city's latents out of an image encoder, in words.
    ``probes``: R2 per latent (rows) in columns "trained encoder", "untrained encoder" and, for a head on frozen
    features, "frozen Lite0 features": a head that wins back what its random start hid has learned nothing
    beyond its input, and the sentence says so. Mean gaps within ``tolerance`` count as none."""
    trained, untrained = probes["trained encoder"].mean(), probes["untrained encoder"].mean()
    change = trained - untrained
    said = (f"Training made {subject} tell more about the city's hidden fields" if change > tolerance else
            f"Training made {subject} tell less about the city's hidden fields, not more" if change < -tolerance
            else f"Training left what {subject} tells about the city's hidden fields about where it was")
    if "frozen Lite0 features" in probes:
        beyond = trained - probes["frozen Lite0 features"].mean()
        said += (", beyond what the frozen features it reads show" if beyond > tolerance else
                 ", and less than the frozen features it reads show" if beyond < -tolerance else
                 ", and about as much as the frozen features it reads show: it won back what its random start "
                 "hid, no more" if change > tolerance else
                 ", about as much as the frozen features it reads show")
    return said + "."


def training_findings(agree_trained: float, agree_untrained: float, history: pd.DataFrame) -> tuple[str, str]:
    """Two sentences: whether an image encoder learned its task (``agree_*``: share of held-out
    triplets in order, trained and untrained) and how its losses moved (``history``: ``train_loss``,
    ``val_loss``, or their ``_triplet`` parts where present)."""
    lift = 100 * (agree_trained - agree_untrained)
    task = ("**The encoder learned its task.**" if lift >= 5 and agree_trained > 0.55 else
            "**The encoder learned little of its task.**" if lift > 0 else "**The encoder did not learn its task.**")
    part, name = ("triplet", "triplet loss (the reconstruction term aside)") if "train_triplet" in history else \
        ("loss", "loss")
    first, last = history.iloc[0], history.iloc[-1]
    if len(history) == 1:  # "went from 0.330 to 0.330" would read as if nothing trained
        return task, (f"its one epoch of training ended at a training {name} of {last[f'train_{part}']:.3f} "
                      f"and a validation one of {last[f'val_{part}']:.3f}.")
    train = f"its training {name} went from {first[f'train_{part}']:.3f} to {last[f'train_{part}']:.3f}"
    val_first, val_last = first[f"val_{part}"], last[f"val_{part}"]
    if last[f"train_{part}"] < 0.5 * val_last:
        fit = (f"{train} while the validation one went only from {val_first:.3f} to {val_last:.3f}: it fits "
               "its own triplets far better than new ones.")
    else:
        fit = f"{train} and the validation one from {val_first:.3f} to {val_last:.3f}."
    return task, fit


def history_table(history: pd.DataFrame, best_epoch: int | None = None, rows: int = 10):
    """An encoder's training history as a Styler of about ``rows`` epochs (the first, evenly spaced
    ones, ``best_epoch`` and the last; the figure shows all)."""
    step = max(1, -(-len(history) // rows))
    keep = sorted({0, len(history) - 1, *range(0, len(history), step)}
                  | set(np.flatnonzero(history["epoch"].to_numpy() == best_epoch)))
    columns = {"lr": "lr", "train_loss": "loss (train)", "val_loss": "loss (val)",
               "train_triplet": "triplet (train)", "val_triplet": "triplet (val)",
               "train_active": "active (train)", "val_active": "active (val)",
               "images_per_s": "images/s", "seconds": "s"}
    table = (history.iloc[keep].set_index("epoch")[[c for c in columns if c in history]]
             .rename(columns=columns))
    formats = {"lr": "{:.1e}", "active (train)": "{:.0%}", "active (val)": "{:.0%}", "images/s": "{:,.0f}",
               "s": "{:.2f}"}  # the losses: "{:.3f}"
    best = f"; best validation epoch: {best_epoch}" if best_epoch is not None else ""
    split = ("; triplet: the loss without its reconstruction term" if "train_triplet" in history else "")
    return table.style.format({name: formats.get(name, "{:.3f}") for name in table.columns}).set_caption(
        f"Training history, {len(table)} of {len(history)} epochs{best}{split}; active: triplets "
        "still inside the margin").set_table_attributes(NUMBER_TABLE)


# ---- files ----
def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "city"


def write_tables(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """CSV views of a results table per split (``table1_``, ``table1_rmse_``, ``ablation_``,
    ``winners_``, ``location_vs_``; per-city tables prefixed by the city's slug when there are
    several); returns the paths."""
    _check_results(results, "r2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(df: pd.DataFrame, name: str, index: bool = True) -> None:
        with atomic_write(out / name) as handle:
            df.to_csv(handle, index=index)
        written.append(out / name)

    cities = list(dict.fromkeys(results["city"]))
    for split in dict.fromkeys(results["split"]):
        for city in cities:
            prefix = f"{_slug(city)}_" if len(cities) > 1 else ""
            rows = results[(results["city"] == city) & (results["split"] == split)]
            if rows.empty:
                continue
            for metric, name in (("r2", "table1"), ("rmse", "table1_rmse")):
                save(_as_text(*numeric_tables(results, metric, split, city=city), 4, metric),
                     f"{prefix}{name}_{split}.csv")
            if set(rows["method"]) & (set(ABLATION) - {TARGET}):
                save(results_table(results, "r2", split, methods_order=ABLATION, city=city, digits=4),
                     f"{prefix}ablation_{split}.csv")
        save(winners(results, split), f"winners_{split}.csv", index=False)
        if (results.loc[results["split"] == split, "method"] == LOCATION).any():
            save(location_vs(results, split), f"location_vs_{split}.csv", index=False)
    return written


# the rows a reader needs to judge MuseCL at a glance -> their group; on a city without images
# MuseCL's vector version stands in for it and OD SVD is the simple trip baseline
AT_A_GLANCE = {"MuseCL": "the method", VECTOR_TARGET: "the method", "SV only": "its parts", "RS only": "its parts",
               "POI only": "its parts", "Concat": "its parts", "Location kNN": "simple baselines",
               "Pretext features": "simple baselines", "EfficientNet-Lite0 (ImageNet)": "simple baselines",
               "Pretext + Lite0 features": "simple baselines", "OD SVD": "simple baselines",
               "Ceiling: all latents": "ceiling"}


def at_a_glance_seeds(results: pd.DataFrame, indicators: Sequence[str],
                      ceilings: pd.DataFrame | None = None, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Each seed's headline mean R2 for ``methods`` (default :data:`AT_A_GLANCE`), in their order."""
    methods = list(AT_A_GLANCE if methods is None else methods)
    per_seed = headline_means(pd.concat([results, ceilings]), indicators)  # concat drops None
    per_seed = per_seed[per_seed["method"].isin(methods)].dropna(subset=["r2"])
    rank = {m: k for k, m in enumerate(methods)}
    return per_seed.sort_values("method", key=lambda m: m.map(rank), kind="stable").reset_index(drop=True)


def at_a_glance(results: pd.DataFrame, indicators: Sequence[str], ceilings: pd.DataFrame | None = None,
                splits: Sequence[str] | None = None, methods: dict[str, str] | None = None
                ) -> pd.DataFrame:
    """The landing page's and README's table: group and headline R2 ± sd per method and split
    (default: the splits the run has), for the methods of ``methods`` (method -> group; default
    :data:`AT_A_GLANCE`) the run has."""
    per_seed = headline_means(pd.concat([results, ceilings]), indicators)  # concat drops None
    if splits is None:
        splits = [split for split in SPLITS if split in set(results["split"])]
    rows = []
    for method, group in (AT_A_GLANCE if methods is None else methods).items():
        mine = per_seed[per_seed["method"] == method]
        if mine.empty:
            continue
        row = {"method": method, "what": group}
        for split in splits:
            r2 = mine.loc[mine["split"] == split, "r2"].dropna()  # one seed: no std; none: ""
            row[f"R² ({split} split)"] = _format(r2.mean(), r2.std(), 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


README_START = "<!-- at-a-glance: written by `make readme` from the book's build; do not edit by hand -->"
README_END = "<!-- /at-a-glance -->"


def update_readme(readme: str | Path, run_dir: str | Path, city, figure: str | Path) -> str:
    """Write the README's "results at a glance" from a build (figure to ``figure``, table between
    the markers); return the new block. Raises when results.csv or the markers are missing."""
    readme, run_dir, figure = Path(readme), Path(run_dir), Path(figure)
    if not (run_dir / "results.csv").is_file():
        raise FileNotFoundError(f"{run_dir / 'results.csv'} is missing: build the book first (`make book`)")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no at-a-glance markers ({README_START!r} ... {README_END!r})")
    link = Path(os.path.relpath(figure.resolve(), readme.resolve().parent)).as_posix()  # checked before writing
    results = pd.read_csv(run_dir / "results.csv")
    ceilings = pd.read_csv(run_dir / "ceilings.csv") if (run_dir / "ceilings.csv").is_file() else None
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    headline = city.meta.headline_indicators()
    ax = plot_at_a_glance(at_a_glance_seeds(results, headline, ceilings), headline)
    figure.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(figure, dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    table = _render(at_a_glance(results, headline, ceilings), pd.DataFrame(), "markdown", "")
    when = pd.Timestamp.fromtimestamp((run_dir / "results.csv").stat().st_mtime).strftime("%Y-%m-%d")
    seeds = (f"{len(config['seeds'])} seeds each retraining every stage" if config["retrain"] == "per_seed" else
             f"stages trained once, {len(config['seeds'])} seeds of the split and probe")
    block = (f"{README_START}\n![MuseCL at a glance]({link})\n\n"
             + table + "\n"
             f"Mean R² over the headline indicators ({city.meta.spelled_out(headline)}) on {city.name} ({len(city)} regions), "
             f"{seeds} (`retrain: {config['retrain']}`), "
             f"{config['rs_arch']} / {config['sv_arch']} encoders, {config['n_triplets']} triplets; "
             f"from the book's build of {when}.\n{README_END}")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    with atomic_write(readme) as handle:  # a run cut off mid-write leaves the README whole
        handle.write(text[:start] + block + text[end:])
    return block
