"""Figures and maps: hexagon maps of per-region values, image grids, mobility flows."""
from __future__ import annotations

from typing import Sequence

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox
from PIL import Image

from musecl.city import CATEGORY, DESTINATION, FLOW, INFLOW, LAT, LON, ORIGIN, OUTFLOW, WGS84, City


def region_outlines(city: City | gpd.GeoDataFrame | gpd.GeoSeries) -> gpd.GeoSeries:
    """Each region's outline in WGS84 lon/lat (a city's may be in another CRS; the maps use degrees)."""
    shapes = (city.regions if isinstance(city, City) else city).geometry
    return shapes.to_crs(WGS84) if shapes.crs is not None else shapes


def _rings(shapes: gpd.GeoSeries) -> tuple[list[np.ndarray], np.ndarray]:
    """The outer ring of every polygon part and its region's position, for one PolyCollection
    (``GeoSeries.plot`` redraws the whole figure on each call: far slower)."""
    parts = shapes.reset_index(drop=True).explode()
    return [np.asarray(part.exterior.coords) for part in parts], parts.index.to_numpy()


def plot_map(city: City | gpd.GeoDataFrame | Sequence, values: pd.Series | np.ndarray | None = None, ax=None,
             cmap: str = "viridis", title: str | None = None, label: str | None = None, categorical: bool = False,
             vmin=None, vmax=None, colorbar: bool = True, edgecolor: str = "none"):
    """Hexagon (or polygon) map of one value per region; regions without a value are grey.
    ``city``: a City or a GeoDataFrame of regions (values by region id, where a Series), or
    shapely polygons in lon/lat (values by position)."""
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    by_id = isinstance(city, (City, gpd.GeoDataFrame, gpd.GeoSeries))
    shapes = region_outlines(city) if by_id else gpd.GeoSeries(list(city), crs=WGS84)
    rings, region = _rings(shapes)
    if values is None:
        values = np.zeros(len(shapes))
    if isinstance(values, pd.Series) and by_id:
        if len(values) and not values.index.isin(shapes.index).any():
            raise ValueError(f"no index label of values is a region id (e.g. {values.index[0]!r}; the regions' are "
                             f"like {shapes.index[0]!r}): values are matched to regions by id, so an index of "
                             "positions would leave every region grey")
        values = values.reindex(shapes.index)
    values = np.asarray(values)
    if len(values) != len(shapes):
        raise ValueError(f"{len(values)} values for {len(shapes)} regions: give one per region, or a Series "
                         "indexed by region id")
    coll = PolyCollection(rings, edgecolor=edgecolor, linewidth=0 if edgecolor == "none" else 0.4)
    if categorical:
        codes, uniques = pd.factorize(values, sort=True)
        palette = plt.get_cmap("tab10" if len(uniques) <= 10 else "tab20")
        coll.set_facecolor([palette(c % palette.N) if c >= 0 else (0.85, 0.85, 0.85, 1) for c in codes[region]])
        handles = [plt.Line2D([], [], marker="h", ls="", color=palette(i % palette.N), label=str(u))
                   for i, u in enumerate(uniques)]
        ax.legend(handles=handles, title=label, loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    else:
        coll.set_array(np.ma.masked_invalid(values.astype(float)[region]))
        coll.set_cmap(plt.get_cmap(cmap).with_extremes(bad=(0.85, 0.85, 0.85)))
        coll.set_clim(vmin, vmax)
        if colorbar:
            plt.colorbar(coll, ax=ax, shrink=0.7, label=label)
    ax.add_collection(coll)
    if n_missing := int(pd.isna(values).sum()):  # said on the map: grey is in no colour bar
        ax.text(0, -0.01, f"grey: no value ({n_missing} of {len(values)} regions)",
                transform=ax.transAxes, fontsize=7, va="top", color="0.35")
    _lon_lat_axes(ax, shapes)
    if title:
        ax.set_title(title)
    return ax


def _lon_lat_axes(ax, shapes: gpd.GeoSeries) -> None:
    """Fit the axes to the shapes, a degree of longitude as long as it is at their latitude."""
    ax.autoscale_view()
    ax.set_aspect(1 / np.cos(np.deg2rad(shapes.total_bounds[[1, 3]].mean())))
    ax.set_xticks([]), ax.set_yticks([])


def plot_maps(city: City, table: pd.DataFrame, ncols: int = 3, cmap: str = "viridis",
              titles: dict[str, str] | None = None, size: float = 3.6):
    """One map per column of ``table`` (indexed by region_id)."""
    n = table.shape[1]
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax, col in zip(axes.flat, table.columns):
        plot_map(city, table[col], ax=ax, cmap=cmap, title=(titles or {}).get(col, col))
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


# where a point's name may go: offset in points, horizontal and vertical alignment
_LABEL_SIDES = [(3, 3, "left", "bottom"), (3, -3, "left", "top"), (-3, 3, "right", "bottom"),
                (-3, -3, "right", "top"), (0, 5, "center", "bottom"), (0, -5, "center", "top")]


def label_points(ax, xy: np.ndarray, labels: Sequence[str], fontsize: float = 7, dot_radius: float = 4) -> list:
    """Name each point on the first side where the name overlaps no earlier name or point (a disc
    of ``dot_radius`` typographic points), else up and right. Call it once the axes' limits are
    final; returns the text objects."""
    renderer = ax.figure.canvas.get_renderer()
    xy = np.asarray(xy, dtype=float)
    r = dot_radius * ax.figure.dpi / 72
    dots = [Bbox.from_extents(cx - r, cy - r, cx + r, cy + r) for cx, cy in ax.transData.transform(xy)]
    placed, texts = [], []
    for i, ((x, y), label) in enumerate(zip(xy, labels)):
        others = placed + dots[:i] + dots[i + 1:]
        for k, (dx, dy, ha, va) in enumerate(_LABEL_SIDES + _LABEL_SIDES[:1]):  # no free side: the first
            text = ax.annotate(str(label), (x, y), xytext=(dx, dy), textcoords="offset points",
                               fontsize=fontsize, ha=ha, va=va)
            box = text.get_window_extent(renderer)
            if k == len(_LABEL_SIDES) or not any(box.overlaps(other) for other in others):
                break
            text.remove()
        placed.append(box)
        texts.append(text)
    return texts


def plot_images(paths: Sequence, titles: Sequence[str] | None = None, ncols: int = 6, size: float = 1.8):
    """A grid of images (paths or arrays) with optional titles."""
    n = len(paths)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, paths)):
        ax.imshow(img if isinstance(img, np.ndarray) else np.asarray(Image.open(img).convert("RGB")))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def plot_flows(city: City, top: int = 300, ax=None, values: pd.Series | None = None, title: str | None = None):
    """The ``top`` largest origin-destination flows as lines over a map of ``values``."""
    if city.od is None:
        raise ValueError(f"{city.name} has no od.csv: flows cannot be drawn (in/outflows only)")
    light = values is None  # then a light grey city: the lines stand out, the outline still shows
    ax = plot_map(city, np.ones(len(city)) if light else values, ax=ax, cmap="Greys",
                  colorbar=False, title=title, vmin=0 if light else None, vmax=4 if light else None)
    od = city.od[city.od[ORIGIN] != city.od[DESTINATION]].nlargest(top, FLOW)
    centre = city.regions[[LON, LAT]]
    a, b = centre.loc[od[ORIGIN]].to_numpy(), centre.loc[od[DESTINATION]].to_numpy()
    w = od[FLOW].to_numpy(dtype=float)
    lines = LineCollection(np.stack([a, b], axis=1), linewidths=0.3 + 2.5 * w / w.max(),
                           colors=plt.get_cmap("plasma")(0.2 + 0.7 * w / w.max()), alpha=0.6)
    ax.add_collection(lines)
    return ax


def plot_category_counts(city: City, top: int = 15, ax=None, title: str | None = None):
    """Horizontal bars of the ``top`` most frequent POI categories (the K of eq. 3), largest on top."""
    if city.pois.empty:
        raise ValueError(f"{city.name} has no POIs: pois.csv is empty or absent")
    counts = city.pois[CATEGORY].value_counts().head(top).iloc[::-1]
    ax = ax or plt.subplots(figsize=(5, 0.25 * len(counts) + 1))[1]
    ax.barh(counts.index.astype(str), counts.to_numpy(), color="tab:blue")
    ax.set(xlabel="POIs", title=title or f"top {len(counts)} of {city.pois[CATEGORY].nunique()} categories")
    return ax


def plot_inflow_outflow(city: City, ax=None, values: pd.Series | None = None, label: str | None = None,
                        title: str | None = None):
    """Log-log scatter of 1 + outflow against 1 + inflow (eq. 1's M_i); dotted: inflow = outflow."""
    ax = ax or plt.subplots(figsize=(5, 4.5))[1]
    x, y = 1 + city.mobility[INFLOW].to_numpy(float), 1 + city.mobility[OUTFLOW].to_numpy(float)
    if values is None:
        ax.scatter(x, y, s=9, alpha=0.7, color="tab:blue")
    else:
        c = np.asarray(values.reindex(city.region_ids) if isinstance(values, pd.Series) else values, dtype=float)
        plt.colorbar(ax.scatter(x, y, c=c, s=9, alpha=0.7, cmap="viridis"), ax=ax, shrink=0.8, label=label)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], ls=":", color="k", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="1 + inflow", ylabel="1 + outflow", title=title)
    return ax


def plot_predicted_vs_true(predictions: pd.DataFrame, ncols: int = 3, size: float = 3.2,
                           log: dict[str, bool] | None = None):
    """The paper's Figure 4: predicted vs true per indicator, validation and test apart, with the
    45-degree line and the test R2. ``log``: indicator -> whether its values are ln(1 + x)."""
    indicators = list(dict.fromkeys(predictions["indicator"]))
    nrows = int(np.ceil(len(indicators) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    styles = {"val": ("#6baed6", "o", "validation"), "test": ("#54278f", "^", "test")}
    for ax, ind in zip(axes.flat, indicators):
        p = predictions[predictions["indicator"] == ind]
        for part, (colour, marker, name) in styles.items():
            q = p[p["split_part"] == part]
            ax.scatter(q["y_true"], q["y_pred"], s=10, alpha=0.75, color=colour, marker=marker, label=name)
        test = p[p["split_part"] == "test"]
        y, yhat = test["y_true"].to_numpy(), test["y_pred"].to_numpy()
        r2 = 1 - ((y - yhat) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        lo, hi = np.nanmin(p[["y_true", "y_pred"]].to_numpy()), np.nanmax(p[["y_true", "y_pred"]].to_numpy())
        ax.plot([lo, hi], [lo, hi], ls=":", color="k", lw=1)
        scale = ", ln(1 + x)" if (log or {}).get(ind) else ""
        ax.set(title=f"{ind}  (test $R^2$ = {r2:.2f})", xlabel=f"true{scale}", ylabel=f"predicted{scale}")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    for ax in axes.flat[len(indicators):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_region_groups(city: City, groups: dict[str, Sequence[str]], ax=None, colors: Sequence | None = None,
                       title: str | None = None):
    """Named sets of regions in colour over a grey map; a region in several sets takes the last's
    colour. Legend under the map, so maps side by side do not cover each other's."""
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    position = pd.Series(np.arange(len(city)), index=city.region_ids)
    colors = list(colors) if colors is not None else [plt.get_cmap("tab10")(i % 10) for i in range(len(groups))]
    if len(colors) < len(groups):
        raise ValueError(f"plot_region_groups: {len(groups)} groups but only {len(colors)} colours")
    faces = np.tile(np.array([0.88, 0.88, 0.88, 1.0]), (len(city), 1))
    handles = []
    for (name, regions), colour in zip(groups.items(), colors):
        regions = pd.Index([str(r) for r in regions])
        unknown = regions.difference(city.region_ids)
        if len(unknown):
            raise ValueError(f"plot_region_groups: group {name!r} names {len(unknown)} region(s) that are "
                             f"not in {city.name}, e.g. {list(unknown[:3])}")
        faces[position[regions].to_numpy()] = to_rgba(colour)
        handles.append(plt.Line2D([], [], marker="h", ls="", markersize=9, color=colour,
                                  label=f"{name} ({len(regions)})"))
    outlines = region_outlines(city)
    rings, region = _rings(outlines)
    ax.add_collection(PolyCollection(rings, facecolors=faces[region], edgecolor="white", linewidth=0.2))
    _lon_lat_axes(ax, outlines)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(2, len(handles)),
              frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_history(history: pd.DataFrame, parts: Sequence[str] = ("loss",), axes=None, size: float = 3.6,
                 title: str | None = None):
    """Training curves from a history table: a panel per part, ``train_<part>`` and ``val_<part>``."""
    missing = [f"train_{p}" for p in parts if f"train_{p}" not in history]
    if missing:
        raise ValueError(f"plot_history: history has no column(s) {missing}; "
                         f"it has {list(history.columns)}")
    if axes is None:
        axes = plt.subplots(1, len(parts), figsize=(size * len(parts), size * 0.8), squeeze=False)[1]
    axes = np.ravel(axes)
    if len(axes) < len(parts):
        raise ValueError(f"plot_history: {len(parts)} parts but {len(axes)} axes")
    for ax, part in zip(axes, parts):
        for split, style in (("train", "-o"), ("val", "--s")):
            column = f"{split}_{part}"
            if column in history:
                ax.plot(history["epoch"], history[column], style, ms=3,
                        label="validation" if split == "val" else split)
        ax.set(xlabel="epoch", ylabel=part)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if len(history) == 1:  # no whole number but the one epoch in the default limits
            ax.set_xticks(history["epoch"])
        ax.legend(fontsize=8)
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes[0].figure


def plot_triplet_training(history: pd.DataFrame, training: dict, arch: str):
    """A triplet encoder's curves: loss, the two similarities (or distances), the share inside the
    margin, and the reconstruction split where present. ``training``: config.json's "training"."""
    pos, neg = ("sim_pos", "sim_neg") if training["loss"] == "cosine" else ("d_pos", "d_neg")
    parts = ("loss", pos, neg, "active")
    if "train_reconstruction" in history:
        parts += ("triplet", "reconstruction")
    fig, axes = plt.subplots(2, len(parts) // 2, figsize=(2 * len(parts), 5.6))
    return plot_history(history, parts=parts, axes=axes.ravel(),
                        title=f"{arch}, {training['loss']} triplet loss (margin {training['margin']})")


def plot_at_a_glance(per_seed: pd.DataFrame, indicators: Sequence[str], ax=None):
    """Each seed's headline mean R2 (dots) and their mean (bar) per method and split: the spread is
    part of the result. ``per_seed``: :func:`musecl.report.at_a_glance_seeds` (methods drawn in
    its order)."""
    order = list(dict.fromkeys(per_seed["method"]))
    ax = ax or plt.subplots(figsize=(8, 0.42 * len(order) + 1.2))[1]
    sns.barplot(per_seed, y="method", x="r2", hue="split", order=order, errorbar=None, alpha=0.35, ax=ax)
    sns.stripplot(per_seed, y="method", x="r2", hue="split", order=order, dodge=True, size=4, ax=ax,
                  legend=False)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel=f"mean R² over {', '.join(indicators)} (bar: mean over seeds; dots: seeds)", ylabel="")
    ax.legend(title="split", fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    floor = AT_A_GLANCE_FLOOR
    if per_seed["r2"].min() < floor:  # one far-off row (location alone under the spatial split) would squash the rest
        ax.set_xlim(left=floor)
        splits = list(dict.fromkeys(per_seed["split"]))
        means = per_seed.groupby(["method", "split"])["r2"].mean()
        for (method, split), value in means[means < floor].items():
            y = order.index(method) - 0.4 + (splits.index(split) + 0.5) * 0.8 / len(splits)
            ax.annotate(f"◀ {value:.2f}", (floor, y), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7)
    return ax


AT_A_GLANCE_FLOOR = -0.3  # R2 below it is off the axis of plot_at_a_glance, its mean written at the edge
