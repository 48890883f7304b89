"""Figures and maps on the hand-made four-region city: one polygon per region, grey where a value
is missing, one line per drawn flow, one bar per category."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from test_city import make_tiny_city  # noqa: E402

from musecl import plotting  # noqa: E402
from musecl.city import load_city  # noqa: E402

GREY = (0.85, 0.85, 0.85, 1.0)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("plotting") / "tiny"
    make_tiny_city(root)
    return load_city(root)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def polygons_of(ax) -> PolyCollection:
    found = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(found) == 1, f"expected one collection of region polygons, found {len(found)}"
    return found[0]


def test_region_outlines_are_closed_hexagons(city):
    outlines = plotting.region_outlines(city)
    assert list(outlines.index) == list(city.region_ids)
    for shape in outlines:
        ring = np.asarray(shape.exterior.coords)
        assert ring.shape == (7, 2) and np.allclose(ring[0], ring[-1])


def test_a_city_in_a_projected_crs_keeps_it_and_its_maps_are_in_degrees(city, tmp_path):
    """A city may give its outlines in another CRS (city.yaml): its regions keep that CRS, maps
    draw them in lon/lat, where the centres and flows are, and writing the city keeps the CRS."""
    import pyproj
    import shapely
    import yaml

    from musecl.city import write_city

    root = tmp_path / "projected"
    make_tiny_city(root)
    regions = pd.read_csv(root / "regions.csv", dtype={"region_id": str})
    to_m = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    geoms = shapely.from_wkt(regions["geometry"].to_numpy())
    regions["geometry"] = shapely.to_wkt(shapely.transform(geoms, lambda xy: np.column_stack(
        to_m.transform(xy[:, 0], xy[:, 1]))), rounding_precision=6)
    regions.to_csv(root / "regions.csv", index=False)
    meta = yaml.safe_load((root / "city.yaml").read_text())
    (root / "city.yaml").write_text(yaml.safe_dump({**meta, "crs": "EPSG:3857"}, sort_keys=False))
    projected = load_city(root)
    assert projected.regions.crs == "EPSG:3857"
    for got, want in zip(plotting.region_outlines(projected), plotting.region_outlines(city)):
        np.testing.assert_allclose(shapely.get_coordinates(got), shapely.get_coordinates(want), atol=1e-6)
    for given in (projected.regions, projected.regions.to_crs("EPSG:4326")):  # written in city.yaml's CRS
        written = pd.read_csv(write_city(tmp_path / "copy", projected.meta, given, projected.indicators)
                              / "regions.csv")["geometry"]
        want = shapely.get_coordinates(projected.regions.geometry.to_numpy())
        got = shapely.get_coordinates(shapely.from_wkt(written.to_numpy()))
        assert np.array_equal(got, want) if given is projected.regions else np.allclose(got, want, atol=1e-6)


def test_plot_map_draws_one_polygon_per_region_and_greys_missing(city):
    values = pd.Series({"a": 1.0, "b": np.nan, "c": 3.0, "d": 2.0})
    ax = plotting.plot_map(city, values.iloc[::-1], label="PD")  # reindexed to the city's order
    coll = polygons_of(ax)
    assert len(coll.get_paths()) == len(city)
    ax.figure.canvas.draw()
    colours = coll.get_facecolors()
    assert np.allclose(colours[1], GREY)  # region b has no value
    assert not any(np.allclose(colours[k], GREY) for k in (0, 2, 3))
    assert tuple(coll.get_clim()) == (1.0, 3.0)  # the colour scale ignores the missing value
    assert len(ax.figure.axes) == 2  # map and colour bar


def test_plot_map_keeps_hexagons_round(city):
    ax = plotting.plot_map(city, np.arange(4.0), colorbar=False)
    assert len(ax.figure.axes) == 1
    lat = city.regions["lat"].mean()
    assert ax.get_aspect() == pytest.approx(1 / np.cos(np.deg2rad(lat)))


def test_plot_map_of_shapes_draws_their_outlines_with_values_by_position():
    import shapely

    squares = [shapely.box(x, 40.0, x + 0.01, 40.01) for x in (0.0, 0.01, 0.02)]
    multi = shapely.MultiPolygon([shapely.box(0.03, 40.0, 0.04, 40.01), shapely.box(0.05, 40.0, 0.051, 40.001)])
    ax = plotting.plot_map([*squares, multi], np.array([1.0, np.nan, 3.0, 2.0]), edgecolor="white")
    coll = polygons_of(ax)
    assert len(coll.get_paths()) == 5  # each part of a multipolygon, in its region's colour
    assert np.allclose(coll.get_paths()[4].vertices[:, 0].max(), 0.051)
    ax.figure.canvas.draw()
    assert np.allclose(coll.get_facecolors()[1], GREY)
    assert np.allclose(coll.get_facecolors()[3], coll.get_facecolors()[4])
    assert ax.get_aspect() == pytest.approx(1 / np.cos(np.deg2rad(40.005)), rel=1e-4)


def test_plot_map_of_a_geodataframe_reads_values_by_id_and_draws_in_degrees():
    import geopandas as gpd
    import shapely

    squares = gpd.GeoDataFrame(geometry=[shapely.box(x, 40.0, x + 0.01, 40.01) for x in (0.0, 0.01, 0.02)],
                               index=pd.Index(["w", "m", "e"], name="region_id"), crs="EPSG:4326").to_crs(3857)
    ax = plotting.plot_map(squares, pd.Series({"e": 3.0, "w": 1.0}))  # "m" has no value
    coll = polygons_of(ax)
    assert coll.get_paths()[2].vertices[:, 0].max() == pytest.approx(0.03)  # back in lon/lat
    ax.figure.canvas.draw()
    assert np.allclose(coll.get_facecolors()[1], GREY)
    assert list(coll.get_array()[[0, 2]]) == [1.0, 3.0]


def test_label_points_keeps_names_of_close_points_apart():
    fig, ax = plt.subplots(figsize=(4, 3))
    xy = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.01, 0.01], [1.0, 1.0]])
    ax.scatter(*xy.T)
    texts = plotting.label_points(ax, xy, ["alpha", "beta", "gamma", "delta", "far"])
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in texts]
    assert [t.get_text() for t in texts] == ["alpha", "beta", "gamma", "delta", "far"]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert texts[-1].xy == (1.0, 1.0)  # each name stays tied to its point


def test_label_points_keeps_a_name_off_the_other_points():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set(xlim=(0, 10), ylim=(0, 10))
    xy = np.array([[5.0, 5.0], [5.4, 5.4]])  # the second point sits up and to the right of the first
    ax.scatter(*xy.T)
    first = plotting.label_points(ax, xy, ["a long first name", "b"])[0]
    box = first.get_window_extent(fig.canvas.get_renderer())
    assert not box.contains(*ax.transData.transform(xy[1]))  # the first name moved to another side
    assert first.get_position() != (3, 3)


def test_plot_map_categorical_has_one_legend_entry_per_class(city):
    ax = plotting.plot_map(city, np.array(["home", "work", "home", None], dtype=object),
                           categorical=True, label="use")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["home", "work"]
    ax.figure.canvas.draw()
    assert np.allclose(polygons_of(ax).get_facecolors()[3], GREY)


def test_plot_maps_one_panel_per_column_and_spare_panels_hidden(city):
    table = city.targets()
    fig = plotting.plot_maps(city, table, ncols=3, titles={"PD": "ln(1 + PD)"})
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in maps] == ["ln(1 + PD)", "HD"]
    assert all(len(polygons_of(ax).get_paths()) == len(city) for ax in maps)
    assert sum(not ax.axison for ax in fig.axes) == 1  # the third panel of the row is blank


def test_plot_images_shows_each_image_with_its_title(city):
    paths = list(city.satellite_paths())[:3] + [np.zeros((4, 4, 3), dtype=np.uint8)]
    fig = plotting.plot_images(paths, titles=["a", "b", "c", "array"], ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 4
    assert [ax.get_title() for ax in shown] == ["a", "b", "c", "array"]
    assert shown[0].images[0].get_array().shape == (8, 8, 3)


@pytest.mark.parametrize("top, expected", [(2, 2), (300, 4)])
def test_plot_flows_draws_the_largest_non_self_flows(city, top, expected):
    city = _with_self_flow(city)
    ax = plotting.plot_flows(city, top=top)
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    segments = lines[0].get_segments()
    assert len(segments) == expected  # the a -> a self-flow is never drawn
    centre = city.regions[["lon", "lat"]]
    assert np.allclose(segments[0], centre.loc[["a", "b"]].to_numpy())  # the largest flow first
    widths = lines[0].get_linewidths()
    assert widths[0] == max(widths)


def test_plot_flows_without_od_explains(city):
    no_od = _replace(city, od=None)
    with pytest.raises(ValueError, match="no od.csv"):
        plotting.plot_flows(no_od)


def test_plot_category_counts_one_bar_per_category_largest_on_top(city):
    ax = plotting.plot_category_counts(city, top=2)
    bars = ax.patches
    assert len(bars) == 2
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "cafe"  # two cafes; barh draws the last bar on top
    assert bars[-1].get_width() == 2
    assert "of 4 categories" in ax.get_title()


def test_plot_category_counts_without_pois_explains(city):
    empty = _replace(city, pois=city.pois.iloc[:0])
    with pytest.raises(ValueError, match="no POIs"):
        plotting.plot_category_counts(empty)


def test_plot_inflow_outflow_one_dot_per_region_on_log_axes(city):
    ax = plotting.plot_inflow_outflow(city)
    dots = ax.collections[0].get_offsets()
    assert len(dots) == len(city)
    assert np.allclose(dots[:, 0], 1 + city.mobility["inflow"].to_numpy())
    assert ax.get_xscale() == ax.get_yscale() == "log"
    coloured = plotting.plot_inflow_outflow(city, values=pd.Series({"d": 4.0, "a": 1.0, "b": 2.0, "c": 3.0}),
                                            label="mix")
    assert list(coloured.collections[0].get_array()) == [1.0, 2.0, 3.0, 4.0]  # in region order


def test_plot_predicted_vs_true_reports_test_r2(city):
    from sklearn.metrics import r2_score

    y = np.random.default_rng(0).normal(size=20)
    pred = np.r_[np.zeros(10), 0.5 * y[10:]]  # validation rows predicted by the mean, test rows by half the signal
    rows = pd.DataFrame({"indicator": "PD", "split_part": ["val"] * 10 + ["test"] * 10, "y_true": y, "y_pred": pred})
    want = r2_score(y[10:], pred[10:])
    assert abs(want - r2_score(y, pred)) > 0.05 and abs(want - r2_score(y[:10], pred[:10])) > 0.05
    fig = plotting.plot_predicted_vs_true(rows)
    assert f"(test $R^2$ = {want:.2f})" in fig.axes[0].get_title() and fig.axes[0].get_xlabel() == "true"
    logged = plotting.plot_predicted_vs_true(rows, log={"PD": True})
    assert logged.axes[0].get_ylabel() == "predicted, ln(1 + x)"


def _replace(city, **changes):
    import dataclasses

    return dataclasses.replace(city, **changes)


def _with_self_flow(city):
    od = pd.concat([city.od, pd.DataFrame({"origin": ["a"], "destination": ["a"], "flow": [99]})],
                   ignore_index=True)
    return _replace(city, od=od)


def test_plot_region_groups_colours_each_group_and_greys_the_rest(city):
    ax = plotting.plot_region_groups(city, {"anchor": ["a"], "similar": ["b", "c"], "near": ["c"]},
                                     colors=["black", "tab:red", "tab:blue"])
    faces = polygons_of(ax).get_facecolors()
    assert np.allclose(faces[0], (0, 0, 0, 1))
    assert np.allclose(faces[1], matplotlib.colors.to_rgba("tab:red"))
    assert np.allclose(faces[2], matplotlib.colors.to_rgba("tab:blue"))  # the last group wins
    assert np.allclose(faces[3][:3], 0.88)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["anchor (1)", "similar (2)", "near (1)"]


def test_plot_region_groups_names_unknown_regions(city):
    with pytest.raises(ValueError, match="'near' names 1 region"):
        plotting.plot_region_groups(city, {"near": ["a", "zz"]})


def test_plot_history_draws_train_and_validation_per_part():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.0], "val_loss": [3.5, 2.5, 2.0],
                            "train_active": [0.9, 0.6, 0.4]})
    fig = plotting.plot_history(history, parts=("loss", "active"))
    loss_ax, active_ax = fig.axes[:2]
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[3.0, 2.0, 1.0], [3.5, 2.5, 2.0]]
    assert len(active_ax.lines) == 1  # no val_active column: the training curve only
    with pytest.raises(ValueError, match="train_sim_pos"):
        plotting.plot_history(history, parts=("sim_pos",))


def test_plot_triplet_training_adds_the_reconstruction_terms_when_trained_with_them():
    history = pd.DataFrame({"epoch": [1, 2], **{f"{split}_{part}": [1.0, 0.5] for split in ("train", "val")
                                                for part in ("loss", "sim_pos", "sim_neg", "active")}})
    training = {"loss": "cosine", "margin": 0.5}
    assert len(plotting.plot_triplet_training(history, training, "lite0-head").axes) == 4
    history["train_triplet"] = history["train_reconstruction"] = [0.3, 0.2]
    fig = plotting.plot_triplet_training(history, training, "lite0-head")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "sim_pos", "sim_neg", "active", "triplet",
                                                    "reconstruction"]
    with pytest.raises(ValueError, match="train_d_pos"):  # the Euclidean loss logs distances
        plotting.plot_triplet_training(history, {"loss": "euclidean", "margin": 5.0}, "tiny")


def test_at_a_glance_keeps_a_far_off_row_from_squashing_the_others():
    rows = [{"method": m, "split": s, "seed": seed, "r2": r2 + 0.01 * seed}
            for m, by_split in {"MuseCL": {"random": 0.6, "spatial": 0.4}, "Location kNN": {"random": 0.5,
                                                                                            "spatial": -0.9}}.items()
            for s, r2 in by_split.items() for seed in (0, 1)]
    ax = plotting.plot_at_a_glance(pd.DataFrame(rows), ["PD"])
    assert ax.get_xlim()[0] == pytest.approx(plotting.AT_A_GLANCE_FLOOR)
    assert [t.get_text() for t in ax.texts] == ["◀ -0.90"]  # the mean of the row off the axis, at its edge
    near = plotting.plot_at_a_glance(pd.DataFrame([{**r, "r2": max(r["r2"], 0.0)} for r in rows]), ["PD"])
    assert not near.texts and near.get_xlim()[0] > plotting.AT_A_GLANCE_FLOOR


def test_plot_map_names_values_it_cannot_match_to_regions(city):
    n = len(city.region_ids)
    with pytest.raises(ValueError, match="no index label of values is a region id"):
        plotting.plot_map(city, pd.Series(np.arange(n, dtype=float), index=[10_000 + i for i in range(n)]))
    with pytest.raises(ValueError, match=f"{n - 1} values for {n} regions"):
        plotting.plot_map(city, np.arange(n - 1, dtype=float))
