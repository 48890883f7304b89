# ---
# jupyter:
#   schedule:
#     needs: []  # its own city
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
# # Your own city
#
# Every chapter reads a *city folder* ({doc}`city_format`). This chapter starts where a reader
# with their own data starts: a CSV of points of interest with coordinates, a CSV of trips, a
# table of indicators published per district, and a folder of photos with where they were
# taken. It turns them into a city folder with `musecl.datasets.from_raw` (H3 hexagons or your
# own polygons as regions, every source joined to them by location), checks it, runs a few
# methods on it, and shows the commands that run the whole book on it. It ends with what
# happens when a modality is missing, and a second city built the way most real ones are:
# districts as regions and POIs only, run through the book's chapters with papermill.

# %% tags=["parameters"]
out_dir = "../build/work"  # raw files and city go under out_dir/your_city
resolution = 8  # H3 resolution of the regions (8: edge 450-540 m, as the toy)
demo_params = "../params/smoke.yaml"  # the fast demo runs at the end
methods = ["Location kNN", "Pretext features",  # the simple baselines, then
           "POI only", "RS only", "MuseCL"]  # cheap methods for the city
device = None  # None: as in demo_params
seed = 0  # seeds the jitter that makes the raw files

# %% tags=["hide-input"]
import json
import shutil
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shapely
from IPython.display import Markdown, display
from sklearn.cluster import KMeans

import musecl
from musecl.config import RunConfig
from musecl.datasets import from_raw
from musecl.plotting import plot_map
from musecl.runner import resolve_city, run

start = time.perf_counter()
work = Path(out_dir) / "your_city"
raw = work / "raw"
if raw.exists():
    shutil.rmtree(raw)  # the raw files are remade on every run; nothing else lives there
(raw / "photos").mkdir(parents=True)
warnings.simplefilter("always")  # show every converter's report, even when repeated
warnings.formatwarning = (lambda message, category, *args, **kwargs:
                          f"{category.__name__}: {message}\n")

# %% [markdown]
# ## The raw files
#
# The book ships no real city's raw exports, so we *make* the files a reader would have from the
# small generated toy city (`toy-small`, 150 regions; the book's own has 600), and forget its
# folder afterwards: POIs scattered inside their
# hexagon with made-up column names, one row per trip with the coordinates of both ends, a few
# POIs outside the city (every real export has some), districts of about five hexagons with
# their indicators (a density, a count), a city boundary, and the images renamed and listed with
# coordinates. Skip this cell with your own data; the sections after it are what you run.

# %% tags=["hide-input"]
toy = resolve_city("toy-small", cities_dir=f"{out_dir}/cities")
rng = np.random.default_rng(seed)
R = 6_371_000.0


def scatter(region_ids):
    """One random point per entry, within 0.8 x the hexagon's inner radius of its centre."""
    centre = toy.regions.loc[list(region_ids), ["lon", "lat"]].to_numpy()
    r = 0.8 * toy.meta.hexagon_size_m * np.sqrt(3) / 2 * np.sqrt(rng.random(len(centre)))
    t = rng.uniform(0, 2 * np.pi, len(centre))
    lat = centre[:, 1] + np.rad2deg(r * np.sin(t) / R)
    lon = centre[:, 0] + np.rad2deg(r * np.cos(t) / (R * np.cos(np.deg2rad(centre[:, 1]))))
    return np.round(lon, 6), np.round(lat, 6)


# POIs: a typical export names things its own way
lon, lat = scatter(toy.pois["region_id"])
raw_pois = pd.DataFrame({"longitude": lon, "latitude": lat, "type": toy.pois["category"],
                         "review": toy.pois["text"]})
raw_pois = pd.concat([raw_pois, pd.DataFrame({"longitude": [0.5, 0.51, -0.6],
                                              "latitude": [0.5, 0.5, 0.2],
                                              "type": ["cafe", "bar", "farm_supply"],
                                              "review": ""})])
raw_pois.to_csv(raw / "pois.csv", index=False)

# trips: one row per trip (the toy city's OD flows, expanded)
trips = toy.od.loc[toy.od.index.repeat(toy.od["flow"].to_numpy())]
o_lon, o_lat = scatter(trips["origin"])
d_lon, d_lat = scatter(trips["destination"])
pd.DataFrame({"start_lon": o_lon, "start_lat": o_lat, "end_lon": d_lon, "end_lat": d_lat}).to_csv(
    raw / "trips.csv", index=False)

# districts: about five hexagons each, published with a density and a count
cells = toy.regions.index
district = KMeans(n_clusters=len(cells) // 5, n_init=4, random_state=seed).fit_predict(toy.xy_m())
cell_district = toy.regions.assign(district=[f"D{d:02d}" for d in district])  # a GeoDataFrame
district_shapes = cell_district.dissolve("district").reset_index()[["district", "geometry"]]
(raw / "districts.geojson").write_text(district_shapes.to_json())
by_district = toy.indicators.groupby(district)
pd.DataFrame({"district": [f"D{d:02d}" for d in by_district.groups],
              # equal-area hexagons: the mean
              "pop_density": by_district["PD"].mean().round(1).to_numpy(),
              "crimes": by_district["CR"].sum().to_numpy()}).to_csv(raw / "district_indicators.csv",
                                                                    index=False)
(raw / "boundary.geojson").write_text(json.dumps(shapely.geometry.mapping(toy.regions.union_all())))

# images: anonymous file names, coordinates in a CSV (tile centre / camera position)
rows = []
for i, (rid, kind, path) in enumerate(toy.images[["region_id", "kind", "path"]]
                                      .itertuples(index=False)):
    name = f"photos/{'tile' if kind == 'satellite' else 'street'}_{i:04d}.png"
    shutil.copyfile(path, raw / name)
    if kind == "satellite":
        x, y = toy.regions.loc[rid, ["lon", "lat"]]
    else:
        (x,), (y,) = scatter([rid])
    rows.append((name, x, y, kind))
pd.DataFrame(rows, columns=["file", "lon", "lat", "kind"]).to_csv(raw / "images.csv", index=False)

sorted(str(p.relative_to(raw)) for p in raw.iterdir())

# %% [markdown]
# What the files look like:

# %%
for name in ["pois.csv", "trips.csv", "district_indicators.csv",
             "images.csv"]:
    table = pd.read_csv(raw / name)
    display(Markdown(f"`{name}`: {len(table):,} rows"), table.head(3))

# %% [markdown]
# ## Step 1: regions
#
# Regions are either H3 hexagons at a resolution you choose, covering your points, a bounding box
# or an area (here the city boundary: the cells whose centre lies inside it), or your own
# polygons (`polygon_regions`, e.g. census tracts). Hexagons all have the same size and six
# neighbours, which makes densities comparable and distances meaningful; polygons follow real
# boundaries, which is what published indicators use.
#
# ```{literalinclude} ../musecl/datasets/from_raw.py
# :pyobject: hexagon_regions
# :lines: 1-22
# ```

# %%
regions = from_raw.hexagon_regions(area=raw / "boundary.geojson",
                                   resolution=resolution)
districts = from_raw.polygon_regions(raw / "districts.geojson", id="district")
print(regions, "| hexagon size (centre to vertex):", regions.hexagon_size_m,
      "m |", districts)
regions.table.head(3)


# %% mystnb={"figure": {"caption": "Regions: H3 hexagons covering the city (left), and the districts the indicators are published for (right)."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
plot_map(regions.table, ax=axes[0], cmap="Blues", vmin=-1, vmax=1, colorbar=False,
         edgecolor="white", title=f"{len(regions)} H3 cells, resolution {resolution}")
plot_map(districts.table, ax=axes[1], cmap="Blues", vmin=-1, vmax=1, colorbar=False,
         edgecolor="black", title=f"{len(districts)} districts (polygons)")
plt.show()

# %% [markdown]
# ## Step 2: POIs and trips, joined by location
#
# Each point goes to the hexagon H3 puts it in (for polygons: an STRtree lookup); nothing
# compares every point with every region. A point outside every region is counted and reported,
# as the three POIs planted outside the city are here (with any scattered toy POI that lands
# just past its edge); with `outside="raise"` it stops the conversion.

# %%
pois = from_raw.pois_from_csv(raw / "pois.csv", regions, lon="longitude",
                              lat="latitude", category="type", text="review")
pois.head(3)

# %%
od = from_raw.od_from_csv(raw / "trips.csv", regions,
                          origin=("start_lon", "start_lat"),
                          destination=("end_lon", "end_lat"))
n_trips = len(pd.read_csv(raw / "trips.csv"))
print(f"{n_trips:,} trips -> {len(od):,} origin-destination pairs")
od.head(3)

# %% mystnb={"figure": {"caption": "POIs and trips joined to the hexagons by location."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
ids = regions.ids
pois_per_cell = pois["region_id"].value_counts().reindex(ids, fill_value=0)
arriving = od.groupby("destination")["flow"].sum().reindex(ids, fill_value=0)
plot_map(regions.table, pois_per_cell, ax=axes[0], title="POIs per cell", edgecolor="white")
plot_map(regions.table, np.log1p(arriving), ax=axes[1], title="ln(1 + trips arriving)",
         edgecolor="white")
plt.show()

# %% [markdown]
# ## Step 3: indicators published per district
#
# Indicators rarely come per hexagon. `indicators_by_area` moves them onto the regions by
# *areal weighting*: a density is averaged over the districts a cell overlaps, a count is shared
# out in proportion to the overlapping surface. The docstring gives the reasons and the cost:
#
# ```{literalinclude} ../musecl/datasets/from_raw.py
# :pyobject: indicators_by_area
# :lines: 1-36
# ```

# %%
values = pd.read_csv(raw / "district_indicators.csv").set_index("district")
indicators = from_raw.indicators_by_area(
    districts, values, regions,
    how={"pop_density": "density", "crimes": "count"})
indicators.head(3)

# %% [markdown]
# The price of coarse indicators, on the map: the toy city's true population density per cell
# (left), and what the districts let us recover (right). Every cell of a district now has the
# same value.
#
# So neighbouring cells share their targets, and `indicators_by_area` warns with how many do.
# Under the random split a test cell's neighbours, and with them its district's value, are in
# the training set: even a method that knows only where a cell is (`Location kNN`) then scores
# well. For a city whose indicators come by areal weighting, judge the methods on the spatial
# split, which holds out whole blocks of cells.

# %% mystnb={"figure": {"caption": "The price of areal weighting: the true population density per cell (left) and what the districts let us recover (right)."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
truth = np.log1p(toy.indicators["PD"].reindex(regions.ids))
by_district = np.log1p(indicators["pop_density"].reindex(regions.ids))
scale = dict(vmin=min(truth.min(), by_district.min()), vmax=max(truth.max(), by_district.max()))
plot_map(regions.table, truth, ax=axes[0], title="per cell (truth)", label="ln(1 + PD)", **scale)
plot_map(regions.table, by_district, ax=axes[1], title="by district", label="ln(1 + PD)", **scale)
plt.show()

# %% [markdown]
# ## Step 4: images
#
# The image table lists each file with where it was taken; each image goes to the region that
# holds that point. A region keeps one satellite image (the nearest to its centre, the others
# are reported) and any number of street views.

# %%
images = from_raw.images_from_folder(raw / "images.csv", regions, path="file")
images.groupby("kind").agg(images=("path", "size"),
                           regions=("region_id", "nunique"))

# %% [markdown]
# ## Step 5: the city folder
#
# `build_city` writes the folder through `musecl.city.write_city`, validates it, and moves it in
# place only if nothing is wrong. The modalities are the ones you pass.

# %%
indicator_meta = {
    "pop_density": {"long_name": "population density",
                    "unit": "persons/km2", "log": True},
    "crimes": {"long_name": "crime incidents",
               "unit": "incidents/year", "log": True},
}
provenance = ("Raw files made from the toy city (toy-small) by the chapter "
              "'Your own city': POIs, trips and street views jittered inside "
              "their cells, indicators per district.")
city_dir = from_raw.build_city(
    work / "city", regions, indicators, pois=pois, od=od, images=images,
    name="My City", provenance=provenance, indicator_meta=indicator_meta,
    overwrite=True)
print((city_dir / "city.yaml").read_text())

# %%
print("problems:", musecl.validate_city(city_dir) or "none")
my_city = musecl.load_city(city_dir)
my_city

# %% mystnb={"figure": {"caption": "The new city folder, loaded: POIs per region."}}
ax = plot_map(my_city, my_city.poi_counts().sum(axis=1),
              title="My City: POIs per region", label="POIs")
plt.show()

# %% [markdown]
# ## Step 6: run methods on it
#
# `musecl.runner.run` is what `musecl run` calls: sample, train, embed and evaluate each method,
# and write `results.csv` with figures. With the smoke settings (`demo_params`' default) this
# takes seconds and the numbers only say that every stage ran; use `params/ci.yaml` or
# `params/paper.yaml` for results.
# Like every results table of the book, it carries what location alone and the raw pretext inputs
# (trips, POI counts) reach through the same probe.

# %%
cfg = RunConfig.from_yaml(demo_params, device=device)
results = run(my_city, work / "run", cfg, methods=methods, progress=False)
results.pivot_table(index=["method", "split"], columns="indicator",
                    values="r2").reindex(methods, level="method").round(3)

# %% [markdown]
# ## The commands for your own city
#
# With your own files, the steps above are the whole script: `hexagon_regions` (or
# `polygon_regions`), one converter per source, `build_city`. Then, from the repository root with
# `.venv/bin` on the path (`source .venv/bin/activate`; `make book` or `make test` made it):
#
# ```bash
# musecl validate path/to/my_city              # every problem, by file, row and region
# musecl run path/to/my_city --out build/my_city_run --params params/ci.yaml \
#     --methods "Location kNN" "Pretext features" "POI only" "RS only" MuseCL
# # one chapter with papermill; chapters are jupytext .py files, which papermill cannot read,
# # so jupytext hands it the notebook; it runs in book/, so give absolute paths:
# jupytext --to ipynb -o - book/07_prediction.py | papermill - build/my_city/07_prediction.ipynb \
#     --cwd book -p city $PWD/path/to/my_city -p out_dir $PWD/build/my_city/work \
#     -p params_file $PWD/params/ci.yaml
# # every chapter, executed for this city into its own folder, and the book rendered:
# musecl book --city path/to/my_city --params params/ci.yaml --out build/my_city
# ```
#
# `musecl book` writes the executed chapters to `build/my_city/executed/`, the shared cache and
# results to `build/my_city/work/` and the HTML to `build/my_city/site/_build/html/`; another
# `--out` keeps each city apart. A chapter that needs a modality your city lacks shows a note
# saying what is missing and stops there; the book still renders every page (next sections).
# `--only 01 07` runs just some chapters; the others' pages then say they were not executed.

# %% [markdown]
# ## When a modality is absent
#
# A modality is absent when `city.yaml` does not list it; `build_city` lists only what it was
# given. Every method declares what it needs, so a run fits what the city supports and records the
# others, with the reason, in `run.json` (`musecl methods CITY` prints the same table). We build
# the same city three more times, each without one source, and ask each which methods it supports:

# %% tags=["hide-input"]
from musecl.runner import methods_table  # noqa: E402

variants = {"no street views": dict(pois=pois, od=od, images=images[images["kind"] == "satellite"]),
            "no mobility": dict(pois=pois, images=images),
            "no POIs": dict(od=od, images=images)}
support = {"My City": methods_table(my_city).set_index("method")["runs here"]}
for label, parts in variants.items():
    folder = from_raw.build_city(work / label.replace(" ", "_"), regions, indicators,
                                 name=f"My City, {label}",
                                 indicator_meta=indicator_meta, overwrite=True, **parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converters' reports were shown above
        support[label] = methods_table(musecl.load_city(folder)).set_index("method")["runs here"]
needs = methods_table().set_index("method")["needs"]
table = pd.DataFrame(support).apply(lambda col: col.str.replace(r"^no: .*", "–", regex=True))
with pd.option_context("display.max_colwidth", None):
    display(pd.concat([needs, table], axis=1))

# %% [markdown]
# "–" is a method the city cannot run (it lacks an input the *needs* column names). Street views
# or satellite images for only *some* regions are fine: the others get the column mean of that
# embedding where a method needs a full table, and MuseCL's fusion gives it no attention weight
# (such a region's fused vector is its one view). Without trips, MuseCL's street-view pairing
# (eq. 1-2) has nothing to go on, so the methods built on MuseCL's street-view encoder (*SV
# only* and the combinations with it) are not run rather than trained on meaningless triplets;
# street-view baselines that pair or read images another way (Inception v3, Urban2vec-style,
# EfficientNet-Lite0) still run. MuseCL itself runs on one image kind: without street views (or without
# the trips their pairing needs) it fuses the satellite view alone, still aligned to the POI
# text, and chapters 6 to 8 say so (chapter 6 then shows the alignment alone: one view has no
# attention to weigh). Without any
# images, `--methods all` adds the image-free methods (`MuseCL (vector views)`, `OD SVD`) where
# the city has origin-destination flows: chapter 6 shows its fusion and chapters 7 and 8 compare
# every method with *MuseCL (vector views)* in MuseCL's place.
#
# A region missing from a modality that *is* listed is handled per region, as
# {doc}`city_format` describes: no satellite image (imputed), no street view (imputed), no POI
# (zero vector), no trips (zero flows), no indicator value (left out of that indicator's
# evaluation); `load_city` warns with each count, as it did for *My City* above.
#
# ## A second city: districts as regions, POIs only
#
# Many cities publish indicators per district and have nothing but an OpenStreetMap extract of
# points of interest: a category per POI, no text, no trips, no pictures. Then the districts
# themselves can be the regions (no areal weighting, so no shared values), and the book runs the
# chapters it can. We build that city from the same raw files and run two chapters on it with
# papermill, exactly as a reader would from a terminal: the POI chapter (which learns from which
# categories share a district, as there is no text) and the results chapter (every method the
# city supports).

# %% tags=["hide-input"]
import subprocess  # noqa: E402
import sys  # noqa: E402

osm_pois = from_raw.pois_from_csv(raw / "pois.csv", districts, lon="longitude", lat="latitude",
                                  category="type")
district_values = values.rename(columns={"pop_density": "PD", "crimes": "CR"})
district_dir = from_raw.build_city(
    work / "districts", districts, district_values.reindex(districts.ids), pois=osm_pois,
    name="My City, districts", overwrite=True, log=True,
    indicator_meta={"PD": {"long_name": "population density"},
                    "CR": {"long_name": "crime incidents"}})
district_city = musecl.load_city(district_dir)
print(district_city)
book_dir = Path(musecl.__file__).resolve().parents[1] / "book"
executed = {}
for chapter in ("05_poi_text", "08_results"):
    notebook = work / "districts_book" / f"{chapter}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    command = (f"{sys.executable} -m jupytext --to ipynb -o - {book_dir / chapter}.py | "
               f"{sys.executable} -m papermill - {notebook} --cwd {book_dir} --no-progress-bar "
               f"-p city {district_dir.resolve()} "
               f"-p out_dir {(work / 'districts_book' / 'work').resolve()} "
               f"-p params_file {Path(demo_params).resolve()}")
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    if done.returncode == 0:
        executed[chapter] = "executed to the end"
    elif "DataUnavailable" in done.stderr:  # require_modalities: the chapter's note, then it stops
        executed[chapter] = ("executed up to its note on what the city lacks: "
                             + done.stderr.strip().splitlines()[-1])
    else:
        executed[chapter] = f"failed: {done.stderr.strip()[-300:]}"
    print(f"{chapter}: {executed[chapter]}")

# %% [markdown]
# The results the chapter wrote (with the smoke settings, `demo_params`' default, they say the
# chapter ran, not how good the methods are) and the methods it skipped:

# %%
run_dir = work / "districts_book" / "work" / "results" / "all_methods"
district_results = pd.read_csv(run_dir / "results.csv")
display(district_results.pivot_table(
    index="method", columns=["indicator", "split"], values="r2").round(3))
skipped = json.loads((run_dir / "run.json").read_text())["skipped_methods"]
print(f"{len(skipped)} of the methods `--methods all` names skipped (the fine-tuned MuseCL "
      "variants are not among them: they run only where named), e.g.",
      "; ".join(f"{m}: {r}" for m, r in list(skipped.items())[:3]))

# %%
print(f"chapter ran in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. Run the chapter with `resolution=7`. How many regions are there, how many satellite images
#    are left out, and why? What happens at `resolution=9` (hint: `max_missing_satellite`)?
# 2. Pass `outside="raise"` to `pois_from_csv`. What does the message tell you, and what would
#    you change: the regions, or the POIs?
# 3. Replace the hexagons by the districts themselves (`regions = districts`): which steps change?
#    Is `how` for the indicators still needed?
