"""Views of the results table on hand-made rows: formatting, bold/underline, the paper's
improvement row (checked against the paper's own Table 1 numbers), the published join, the
discussion tables and the CSV files."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from musecl import report
from musecl.city import CityMeta, Indicator
from musecl.evaluation import RESULT_COLUMNS

# The paper's Table 1 (Beijing), PD and NP, for four methods: R2 and RMSE.
BEIJING = {
    "Add-svrv": {"PD": (0.0995, 1.4027), "NP": (0.1290, 1.5909)},
    "Urban2vec-style": {"PD": (0.4982, 1.0471), "NP": (0.7955, 0.7708)},
    "Concat": {"PD": (0.4984, 1.0469), "NP": (0.7832, 0.7937)},
    "MuseCL": {"PD": (0.5310, 1.0123), "NP": (0.9471, 0.3921)},
}


def table_from(values: dict, seeds=(0,), split="random", city="Beijing", jitter=0.0) -> pd.DataFrame:
    rows = []
    for method, by_indicator in values.items():
        for indicator, (r2, rmse) in by_indicator.items():
            for seed in seeds:
                rows.append({"city": city, "indicator": indicator, "method": method, "split": split,
                             "seed": seed, "r2": r2 + jitter * seed, "rmse": rmse - jitter * seed, "n_test": 200})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


@pytest.fixture
def results():
    """Two seeds (r2 = v and v + 0.01), two splits, plus Location kNN."""
    values = {**BEIJING, "Location kNN": {"PD": (0.82, 0.6), "NP": (0.66, 0.9)}}
    return pd.concat([table_from(values, seeds=(0, 1), split=s, jitter=0.01) for s in ("random", "spatial")],
                     ignore_index=True)


def test_results_table_strings_and_numeric_twin(results):
    text = report.results_table(results, digits=3)
    assert list(text.index) == ["Urban2vec-style", "Add-svrv", "Concat", "MuseCL", "Location kNN"]  # Table 1 order
    assert list(text.columns) == ["PD", "NP"]
    std = np.std([0.5310, 0.5410], ddof=1)
    assert text.loc["MuseCL", "PD"] == f"{0.5360:.3f} ± {std:.3f}"
    mean = report.numeric_tables(results)[0]
    assert mean.loc["MuseCL", "PD"] == pytest.approx(0.5360)
    one_seed = report.results_table(table_from(BEIJING), digits=4)
    assert one_seed.loc["Concat", "NP"] == "0.7832"  # one seed: no deviation to show
    ordered = report.results_table(results, methods_order=["MuseCL", "Concat"], indicators=["NP"])
    assert list(ordered.index) == ["MuseCL", "Concat"] and list(ordered.columns) == ["NP"]
    assert list(report.results_table(results, indicators="NP").columns) == ["NP"]  # one name, not its letters
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['Concatt'\]"):
        report.results_table(results, methods_order=["MuseCL", "Concatt"])
    assert list(report.results_table(results, methods_order=["MuseCL", "Tile2vec-style"]).index) == ["MuseCL"]


def test_bold_and_underline_land_on_the_right_cells():
    res = table_from(BEIJING)
    marks = report.rank_marks(report.numeric_tables(res)[0], "r2")
    assert marks.loc["MuseCL", "PD"] == "best" and marks.loc["Concat", "PD"] == "second"  # as the paper
    assert marks.loc["MuseCL", "NP"] == "best" and marks.loc["Urban2vec-style", "NP"] == "second"
    assert (marks == "").sum().sum() == marks.size - 4
    rmse = report.rank_marks(report.numeric_tables(res, metric="rmse")[0], "rmse")
    assert rmse.loc["MuseCL", "PD"] == "best" and rmse.loc["Concat", "PD"] == "second"  # lowest wins
    md = report.styled_table(res, digits=4)
    assert "| MuseCL | **0.5310** | **0.9471** |" in md
    assert "| Concat | <u>0.4984</u> | 0.7832 |" in md
    html = styled_cells(report.styled_table(res, metric="rmse", fmt="html", digits=4))
    assert html["MuseCL"]["PD"] == ("1.0123", "font-weight: bold")
    assert html["Concat"]["PD"] == ("1.0469", "text-decoration: underline")
    with pytest.raises(ValueError, match="fmt must be one of .*; got 'latex'"):
        report.styled_table(res, fmt="latex")


def styled_cells(html: str) -> dict:
    """{row: {column: (text, css)}} of a Styler table: what a reader sees in each cell."""
    soup = BeautifulSoup(html, "html.parser")
    css = {}
    for selectors, props in re.findall(r"([^{}]+)\{([^}]*)\}", soup.style.string if soup.style else ""):
        for selector in selectors.split(","):
            css[selector.strip().lstrip("#")] = " ".join(props.split()).rstrip(";")
    columns = [th.get_text() for th in soup.thead.find("tr").find_all("th")[1:]]
    return {tr.th.get_text(): {c: (td.get_text(), css.get(td.get("id"), ""))
                               for c, td in zip(columns, tr.find_all("td"))}
            for tr in soup.tbody.find_all("tr")}


def test_styler_output():
    pytest.importorskip("jinja2")
    out = report.styled_table(table_from(BEIJING), fmt="styler").to_html()
    assert "font-weight: bold" in out and "text-decoration: underline" in out


def test_improvement_reproduces_the_papers_row():
    res = table_from(BEIJING)
    r2 = report.improvement(report.numeric_tables(res)[0], "r2")
    assert r2.round(2).to_dict() == {"PD": 6.54, "NP": 19.06}  # the paper's "Impr." row
    rmse = report.improvement(report.numeric_tables(res, metric="rmse")[0], "rmse")
    assert rmse.round(2).to_dict() == {"PD": 3.30, "NP": 49.13}
    md = report.styled_table(res)
    assert "| improvement over best baseline | 6.54% | 19.06% |" in md
    # only paper baselines count: a better Location kNN does not change the row
    more = pd.concat([res, table_from({"Location kNN": {"PD": (0.9, 0.5), "NP": (0.99, 0.1)}})])
    assert report.improvement(report.numeric_tables(more)[0]).round(2).to_dict() == r2.round(2).to_dict()
    no_target = report.improvement(report.numeric_tables(res)[0].drop("MuseCL"))
    assert no_target.isna().all()


def published_table() -> pd.DataFrame:
    rows = [("MuseCL paper Table 1", "Beijing", "PD", "Resnet-18", 0.0685, 1.4266),
            ("MuseCL paper Table 1", "Beijing", "PD", "Add-srv", 0.0995, 1.4027),
            ("MuseCL paper Table 1", "Beijing", "PD", "Urban2vec", 0.4982, 1.0471),
            ("MuseCL paper Table 1", "Beijing", "PD", "MuseCL", 0.5310, 1.0123),
            ("MuseCL paper Table 1", "Beijing", "MC", "MuseCL", 0.6229, 1.3906),
            ("MuseCL paper Table 2", "Shanghai", "PD", "MuseCL", 0.4301, 0.9089),
            ("Other paper", "Shanghai", "PD", "MuseCL", 0.4, 0.9)]
    return pd.DataFrame(rows, columns=["source", "city", "indicator", "method", "r2", "rmse"])


def test_with_published_maps_names_and_labels_columns(results):
    table = report.results_table(results)
    joined = report.with_published(table, published_table(), "Beijing")
    assert ("PD", "paper (Beijing)") in joined.columns and ("PD", "this run") in joined.columns
    assert ("MC", "paper (Beijing)") not in joined.columns  # only the run's indicators
    assert joined.loc["ResNet-18", ("PD", "paper (Beijing)")] == "0.0685"  # "Resnet-18" -> ours
    assert joined.loc["ResNet-18", ("PD", "this run")] == ""
    assert joined.loc["Add-svrv", ("PD", "paper (Beijing)")] == "0.0995"  # "Add-srv" -> ours
    # the paper's original sits beside the "-style" row that stands in for it
    assert joined.loc["Urban2vec-style", ("PD", "paper (Beijing)")] == "0.4982"
    assert "Urban2vec" not in joined.index
    assert joined.loc["MuseCL", ("PD", "this run")] == table.loc["MuseCL", "PD"]
    assert ("NP", "this run") in joined.columns and ("NP", "paper (Beijing)") not in joined.columns  # none there
    numeric = report.with_published(report.numeric_tables(results)[0], published_table(), "Beijing",
                                    metric="rmse")
    assert numeric.loc["MuseCL", ("PD", "paper (Beijing)")] == pytest.approx(1.0123)
    with pytest.raises(ValueError, match="several sources report 'Shanghai'"):
        report.with_published(table, published_table(), "Shanghai")
    other = report.with_published(table, published_table(), "Shanghai", source="Other paper")
    assert other.loc["MuseCL", ("PD", "paper (Shanghai)")] == "0.4000"  # not Table 2's 0.4301
    with pytest.raises(ValueError, match="no published numbers for city 'Paris'"):
        report.with_published(table, published_table(), "Paris")
    with pytest.warns(UserWarning, match="no published results"):
        assert report.with_published(table, None, "Beijing") is table


def test_winners_and_location_vs(results):
    w = report.winners(results, "random").set_index("indicator")
    assert w.loc["PD", "best"] == "Location kNN" and w.loc["PD", "runner_up"] == "MuseCL"
    assert w.loc["PD", "best_mean"] == pytest.approx(0.825)
    assert w.loc["PD", "margin"] == pytest.approx(0.825 - 0.536)
    assert w.loc["NP", "best"] == "MuseCL" and w.loc["NP", "runner_up"] == "Urban2vec-style"
    w_rmse = report.winners(results, "random", metric="rmse").set_index("indicator")
    assert w_rmse.loc["NP", "best"] == "MuseCL" and w_rmse.loc["NP", "margin"] > 0
    only = report.winners(results, "random", methods=["Concat", "Add-svrv"]).set_index("indicator")
    assert only.loc["PD", "best"] == "Concat"
    loc = report.location_vs(results, "random").set_index("indicator")
    assert loc.loc["PD", "location_minus_musecl"] == pytest.approx(0.825 - 0.536)
    assert loc.loc["PD", "location_rank"] == 1 and loc.loc["NP", "location_rank"] == 4
    assert loc.loc["NP", "best_other"] == "MuseCL"
    assert loc.loc["NP", "location_minus_best_other"] == pytest.approx(0.665 - 0.9521)
    with pytest.raises(ValueError, match="no 'Location kNN' rows"):
        report.location_vs(table_from(BEIJING))


def test_write_tables(results, tmp_path):
    written = report.write_tables(results, tmp_path)
    names = {p.name for p in written}
    for split in ("random", "spatial"):
        for stem in ("table1", "table1_rmse", "winners", "location_vs"):
            assert f"{stem}_{split}.csv" in names
    table = pd.read_csv(tmp_path / "table1_random.csv", index_col=0)
    assert table.loc[report.IMPROVEMENT_ROW, "PD"] == f"{100 * (0.536 - 0.5034) / 0.5034:.2f}%"  # vs Concat
    two = pd.concat([results, results.assign(city="New York")])
    names = {p.name for p in report.write_tables(two, tmp_path / "two")}
    assert {"beijing_table1_random.csv", "new-york_table1_random.csv"} <= names


def test_bad_input(results):
    with pytest.raises(ValueError, match="no results for split 'block'"):
        report.results_table(results, split="block")
    with pytest.raises(ValueError, match="several cities"):
        report.results_table(pd.concat([results, results.assign(city="Shanghai")]))
    with pytest.raises(ValueError, match="lacks column"):
        report.results_table(results.drop(columns=["rmse"]))
    with pytest.raises(ValueError, match="metric must be one of .*; got 'mae'"):
        report.results_table(results, metric="mae")
    with pytest.raises(ValueError, match=r"indicator\(s\) \['HD'\]"):
        report.results_table(results, indicators=["HD"])


# -- headline means and ceiling rows -------------------------------------------------------------

def per_seed_rows(values: dict, city="Toy City", split="random") -> pd.DataFrame:
    """{method: {indicator: [r2 of seed 0, r2 of seed 1, ...]}} -> results rows."""
    rows = [{"city": city, "indicator": indicator, "method": method, "split": split, "seed": seed,
             "r2": r2, "rmse": 1 - r2, "n_test": 30}
            for method, by_indicator in values.items() for indicator, r2s in by_indicator.items()
            for seed, r2 in enumerate(r2s)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# the per-seed headline (PD, HD) of MuseCL is 0.60, 0.55; of Concat 0.40, 0.50
HEAD = per_seed_rows({"MuseCL": {"PD": [0.5, 0.6], "HD": [0.7, 0.5], "NP": [0.9, 0.9]},
                      "Concat": {"PD": [0.4, 0.4], "HD": [0.4, 0.6], "NP": [0.8, 0.8]}})
CEIL = per_seed_rows({"Ceiling: all latents": {"PD": [0.95, 0.97], "HD": [0.90, 0.88], "NP": [0.99, 0.99]}})


def test_headline_means_per_seed():
    """One headline number per seed, from the indicators asked for only."""
    means = report.headline_means(HEAD, ["PD", "HD"])
    assert list(means.columns) == ["city", "method", "split", "seed", "r2"]
    got = means.set_index(["method", "seed"])["r2"]
    assert got[("MuseCL", 0)] == pytest.approx(0.6) and got[("MuseCL", 1)] == pytest.approx(0.55)
    assert got[("Concat", 0)] == pytest.approx(0.4) and got[("Concat", 1)] == pytest.approx(0.5)
    # a seed without one of the indicators has no headline mean, not the mean of what is left
    lacking = HEAD.drop(HEAD.index[(HEAD.method == "MuseCL") & (HEAD.seed == 1) & (HEAD.indicator == "HD")])
    got = report.headline_means(lacking, ["PD", "HD"]).set_index(["method", "seed"])["r2"]
    assert np.isnan(got[("MuseCL", 1)]) and got[("MuseCL", 0)] == pytest.approx(0.6)
    # nor a seed whose score is NaN (constant test targets): it would be compared with means over all
    nan_score = HEAD.copy()
    nan_score.loc[(nan_score.method == "MuseCL") & (nan_score.seed == 1) & (nan_score.indicator == "HD"), "r2"] = np.nan
    got = report.headline_means(nan_score, ["PD", "HD"]).set_index(["method", "seed"])["r2"]
    assert np.isnan(got[("MuseCL", 1)]) and got[("MuseCL", 0)] == pytest.approx(0.6)
    rmse = report.headline_means(HEAD, ["PD", "HD"], metric="rmse").set_index(["method", "seed"])["rmse"]
    assert rmse[("Concat", 1)] == pytest.approx(0.5)


def test_headline_column_is_over_seeds_of_per_seed_means():
    """The headline's spread is that of the per-seed means, not an average of columns' spreads."""
    mean, std = report.numeric_tables(HEAD, mean_of=["PD", "HD"])
    assert list(mean.columns) == [report.HEADLINE, "PD", "HD", "NP"]
    assert mean.loc["MuseCL", report.HEADLINE] == pytest.approx(0.575)
    assert std.loc["MuseCL", report.HEADLINE] == pytest.approx(np.std([0.6, 0.55], ddof=1))  # not a mean of stds
    assert std.loc["Concat", report.HEADLINE] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    text = report.results_table(HEAD, mean_of=["PD", "HD"], digits=3)
    assert text.loc["MuseCL", report.HEADLINE] == f"0.575 ± {np.std([0.6, 0.55], ddof=1):.3f}"
    plain = report.results_table(HEAD)
    assert report.HEADLINE not in plain.columns
    np_first = report.numeric_tables(HEAD, mean_of=["NP", "HD"])[0]  # its indicators first, in view when it scrolls
    assert list(np_first.columns) == [report.HEADLINE, "NP", "HD", "PD"]
    with pytest.raises(ValueError, match=r"indicator\(s\) \['CR'\]"):
        report.numeric_tables(HEAD, mean_of=["PD", "CR"])


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_ceiling_rows_are_listed_but_never_ranked(fmt):
    """Ceilings sit under the methods, plain even where they are the highest value."""
    out = report.styled_table(HEAD, mean_of=["PD", "HD"], ceilings=CEIL, digits=3, fmt=fmt)
    ceiling_cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"
                     for v in ([0.925, 0.925], [0.95, 0.97], [0.90, 0.88], [0.99, 0.99])]
    if fmt == "markdown":
        lines = out.splitlines()
        assert lines[0] == f"| method | {report.HEADLINE} | PD | HD | NP |"
        ceiling = [line for line in lines if line.startswith("| Ceiling: all latents |")]
        assert ceiling == ["| Ceiling: all latents | " + " | ".join(ceiling_cells) + " |"]  # plain text
        methods = [i for i, line in enumerate(lines) if line.startswith(("| MuseCL", "| Concat"))]
        assert lines.index(ceiling[0]) > max(methods)
        # the ranks are the methods' own, as if the ceiling were not there
        assert "| MuseCL | **0.575 ± 0.035** | **0.550 ± 0.071** | **0.600 ± 0.141** | **0.900 ± 0.000** |" in lines
        assert "| Concat | <u>0.450 ± 0.071</u> | <u>0.400 ± 0.000</u> | <u>0.500 ± 0.141</u> | <u>0.800 ± 0.000</u> |" in out
    else:
        cells = styled_cells(out)
        assert list(cells["Ceiling: all latents"].values()) == [(c, "") for c in ceiling_cells]  # plain
        assert list(cells)[-1] == "Ceiling: all latents"
        assert cells["MuseCL"]["PD"][1] == "font-weight: bold"  # the methods' own ranks
        assert cells["Concat"]["PD"][1] == "text-decoration: underline"
        assert f"{report.HEADLINE}: over PD, HD" in out  # the caption says what the mean is over
    without = report.styled_table(HEAD, mean_of=["PD", "HD"], digits=3, fmt=fmt)
    assert "Ceiling" not in without
    other_split = report.styled_table(HEAD, mean_of=["PD", "HD"], ceilings=CEIL.assign(split="spatial"), fmt=fmt)
    assert "Ceiling" not in other_split  # only the split shown


def test_ceiling_rows_without_headline_column():
    """Ceilings follow the table's indicator selection."""
    md = report.styled_table(HEAD, ceilings=CEIL, digits=2, indicators=["PD", "NP"])
    assert "| Ceiling: all latents | 0.96 ± 0.01 | 0.99 ± 0.00 |" in md and report.HEADLINE not in md


def test_paired_differences_pair_seeds_and_give_verdicts():
    """Pairing by seed removes what both methods share: a constant gap over noisy seeds is
    'better' even though the methods' own spreads overlap; RMSE keeps positive = target better."""
    shared = {0: -0.1, 1: 0.0, 2: 0.1, 3: 0.05}  # a hard or easy test part, the same for all
    rows = []
    for method, gap in (("MuseCL", 0.0), ("Concat", -0.05), ("SV only", 0.2), ("RS only", None)):
        for seed, common in shared.items():
            noise = {"RS only": [0.1, -0.1, 0.05, -0.05][seed]}.get(method, 0.0)
            r2 = 0.5 + common + (gap if gap is not None else 0.0) + noise
            for indicator in ("PD", "HD"):
                rows.append({"city": "c", "indicator": indicator, "method": method, "split": "random",
                             "seed": seed, "r2": r2, "rmse": 1 - r2, "n_test": 50})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table = report.paired_differences(results, ["PD", "HD"])
    assert list(table.index) == ["Concat", "SV only", "RS only"]  # the paper's order, then the added
    assert table.loc["Concat", "difference"] == pytest.approx(0.05) and table.loc["Concat", "verdict"] == "better"
    assert table.loc["SV only", "verdict"] == "worse"
    assert table.loc["RS only", "verdict"] == "unclear" and table.loc["RS only", "low"] < 0 < table.loc["RS only", "high"]
    assert (table["n_seeds"] == 4).all()
    rmse = report.paired_differences(results, ["PD", "HD"], metric="rmse")
    assert rmse.loc["Concat", "difference"] == pytest.approx(0.05) and rmse.loc["Concat", "verdict"] == "better"
    one_seed = report.paired_differences(results[results["seed"] == 0], ["PD", "HD"])
    assert one_seed["low"].isna().all() and (one_seed["verdict"] == "").all()
    with pytest.raises(ValueError, match="no 'Location kNN' rows"):
        report.paired_differences(results, ["PD"], target="Location kNN")


def test_at_a_glance_rows_and_the_readme_block(tmp_path):
    """The landing page's and README's table: per-seed headline means of the rows a reader needs;
    update_readme writes it with its figure between the markers, and only there."""
    import matplotlib
    import yaml

    matplotlib.use("Agg")
    table = report.at_a_glance(HEAD, ["PD", "HD"], CEIL, splits=("random",))
    assert list(table.index) == ["MuseCL", "Concat", "Ceiling: all latents"]
    assert table.loc["MuseCL", "R² (random split)"] == "0.575 ± 0.035"  # seeds 0.60 and 0.55
    assert table.loc["Concat", "what"] == "its parts"
    chosen = report.at_a_glance(HEAD, ["PD", "HD"], CEIL, splits=("random",),
                                methods={"Ceiling: all latents": "top", "MuseCL": "ours", "absent": "x"})
    assert list(chosen.index) == ["Ceiling: all latents", "MuseCL"] and chosen.loc["MuseCL", "what"] == "ours"
    assert chosen.loc["MuseCL", "R² (random split)"] == table.loc["MuseCL", "R² (random split)"]
    # by default one column per split the run has, in the order of SPLITS (here HEAD's random only,
    # then the same rows as a cross-fitted spatial split): none left out, none empty
    crossed = pd.concat([HEAD.assign(split="spatial-cv"), HEAD])
    assert list(report.at_a_glance(crossed, ["PD", "HD"]).columns) == [
        "what", "R² (random split)", "R² (spatial-cv split)"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    HEAD.to_csv(run_dir / "results.csv", index=False)
    CEIL.to_csv(run_dir / "ceilings.csv", index=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seeds": [0, 1], "retrain": "per_seed", "rs_arch": "a",
                                                         "sv_arch": "b", "n_triplets": 10}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{report.README_START}\nold\n{report.README_END}\nafter\n")

    class City:  # what update_readme reads of a city
        name = "Toy City"
        meta = CityMeta("Toy City", "EPSG:4326", ("poi",), {"PD": Indicator("PD", "population density"),
                                                             "HD": Indicator("HD", "housing density")})

        def __len__(self):
            return 30

    report.update_readme(readme, run_dir, City(), tmp_path / "docs" / "glance.png")
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith("after\n") and "old" not in text
    assert "![MuseCL at a glance](docs/glance.png)" in text and "| MuseCL | the method | 0.575 ± 0.035 |" in text
    assert (tmp_path / "docs" / "glance.png").stat().st_size > 1000
    assert "2 seeds each retraining every stage" in text
    assert "headline indicators (PD: population density; HD: housing density)" in text  # spelled out
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seeds": [0, 1], "retrain": "once", "rs_arch": "a",
                                                         "sv_arch": "b", "n_triplets": 10}))
    elsewhere = tmp_path / "elsewhere"  # a figure outside the README's folder: a relative link up
    report.update_readme(readme, run_dir, City(), elsewhere / "glance.png")
    text = readme.read_text()
    assert "stages trained once, 2 seeds of the split and probe (`retrain: once`)" in text
    assert "![MuseCL at a glance](elsewhere/glance.png)" in text
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "README.md").write_text(readme.read_text())
    report.update_readme(sub / "README.md", run_dir, City(), elsewhere / "glance.png")
    assert "![MuseCL at a glance](../elsewhere/glance.png)" in (sub / "README.md").read_text()


def test_the_readme_shows_results_from_a_build():
    """The README's results at a glance were written by `make readme` (not typed): the block is
    filled and its figure is in the repository."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text()
    block = text[text.index(report.README_START):text.index(report.README_END)]
    figure = block.split("](", 1)[1].split(")", 1)[0]
    assert (repo / figure).is_file() and "| MuseCL |" in block and "from the book's build of" in block


def test_readable_names_the_columns_in_words_and_indexes_by_indicator():
    import pandas as pd

    from musecl.report import READABLE, readable

    table = pd.DataFrame({"city": ["Toy", "Toy"], "indicator": ["PD", "HD"], "best": ["a", "b"],
                          "best_mean": [0.5, 0.4], "margin": [0.1, 0.0]})
    shown = readable(table)
    assert list(shown.index) == ["PD", "HD"] and shown.index.name == "indicator"
    assert list(shown.columns) == [READABLE["best"], READABLE["best_mean"], READABLE["margin"]]
    two = readable(table.assign(city=["Toy", "Other"]))
    assert two.index.names == ["city", "indicator"]


def test_latent_training_finding_reads_a_head_against_the_features_it_starts_from():
    """Training that only wins back what a head's random start hid is said to add nothing beyond
    the frozen features; a CNN (no frozen column) is read against its random start alone."""
    probes = pd.DataFrame({"trained encoder": [0.55, 0.51], "untrained encoder": [0.45, 0.45],
                           "frozen Lite0 features": [0.54, 0.52]}, index=["height", "water"])
    assert report.latent_training_finding(probes) == (
        "Training made the embedding tell more about the city's hidden fields, and about as much as the "
        "frozen features it reads show: it won back what its random start hid, no more.")
    beyond = probes.assign(**{"frozen Lite0 features": [0.45, 0.45]})
    assert report.latent_training_finding(beyond).endswith("beyond what the frozen features it reads show.")
    cnn = probes.drop(columns="frozen Lite0 features").assign(**{"untrained encoder": [0.54, 0.52]})
    assert report.latent_training_finding(cnn, "the street-view embedding") == (
        "Training left what the street-view embedding tells about the city's hidden fields about where it was.")
    worse = probes.assign(**{"trained encoder": [0.30, 0.30]})
    assert "tell less about the city's hidden fields, not more, and less than the frozen" in \
        report.latent_training_finding(worse)


def test_training_findings_follow_the_numbers():
    import pandas as pd

    from musecl.report import training_findings

    overfit = pd.DataFrame({"train_loss": [0.4, 0.0], "val_loss": [0.35, 0.30]})
    task, fit = training_findings(0.78, 0.63, overfit)
    assert task == "**The encoder learned its task.**"
    assert "from 0.400 to 0.000 while the validation one went only from 0.350 to 0.300" in fit
    steady = pd.DataFrame({"train_loss": [0.4, 0.2], "val_loss": [0.4, 0.25]})
    assert training_findings(0.60, 0.58, steady) == (
        "**The encoder learned little of its task.**",
        "its training loss went from 0.400 to 0.200 and the validation one from 0.400 to 0.250.")
    assert training_findings(0.50, 0.55, steady)[0] == "**The encoder did not learn its task.**"
    assert training_findings(0.60, 0.58, steady.head(1))[1] == (
        "its one epoch of training ended at a training loss of 0.400 and a validation one of 0.400.")
    # with a reconstruction term the sentence is about the triplet part, not the sum
    both = steady.assign(train_triplet=[0.35, 0.01], val_triplet=[0.36, 0.34])
    assert training_findings(0.71, 0.67, both)[1] == (
        "its training triplet loss (the reconstruction term aside) went from 0.350 to 0.010 while the "
        "validation one went only from 0.360 to 0.340: it fits its own triplets far better than new ones.")


def test_history_table_keeps_first_best_and_last_epochs():
    """About ``rows`` epochs, always the first, the best and the last; the triplet part is shown
    (and said) only when the loss has a reconstruction term; formats are per column."""
    import pandas as pd

    from musecl.io import n_of_regions
    from musecl.report import history_table

    history = pd.DataFrame({"epoch": range(1, 31), "lr": 5e-4, "train_loss": 1.0, "val_loss": 2.0,
                            "train_active": 0.5, "val_active": 0.25, "images_per_s": 12345.6,
                            "seconds": 0.1})
    styler = history_table(history, best_epoch=14, rows=10)
    assert list(styler.data.index) == [1, 4, 7, 10, 13, 14, 16, 19, 22, 25, 28, 30]
    assert "triplet" not in " ".join(styler.data.columns) and "triplet:" not in styler.caption
    assert "12 of 30 epochs; best validation epoch: 14" in styler.caption
    html = styler.to_html()
    assert "12,346" in html and "25%" in html and "5.0e-04" in html
    assert 'class="musecl-results"' in html  # the book's CSS keeps "5.0e-04" on one line (it wrapped)
    both = history.assign(train_triplet=0.3, val_triplet=0.4)
    assert {"triplet (train)", "triplet (val)"} <= set(history_table(both).data.columns)
    assert list(history_table(history.head(3)).data.index) == [1, 2, 3]
    assert n_of_regions(1, 600) == "1 of 600 regions has" and n_of_regions(0, 9, "is", "are").endswith("are")


def test_bar_checks_count_only_the_methods_the_run_scored():
    """A check passes only on a paired 'better'; a method the run did not score gets no row; the
    ceiling check is there only when the city has a ceiling."""
    verdicts = {"SV only": "better", "RS only": "unclear", "Concat": "worse"}
    paired = {split: pd.DataFrame({"verdict": verdicts}) for split in ("random", "spatial")}
    checks = report.bar_checks(paired, share=0.6)
    assert checks["beats SV only"] == {"random": True, "spatial": True}
    assert checks["beats RS only"] == {"random": False, "spatial": False}
    assert "beats POI only" not in checks and "beats Pretext features" not in checks
    assert checks["≥ 85% of the all-latent ceiling (is 60%)"] == {"random": False}
    assert report.bar_checks(paired, share=0.9)["≥ 85% of the all-latent ceiling (is 90%)"] == {"random": True}
    assert not any("ceiling" in name for name in report.bar_checks(paired, share=None))
    assert report.bar_sentence(checks) == "MuseCL clears 2 of the 7 checks."
    assert report.bar_sentence(checks, where_not="See why.") == "MuseCL clears 2 of the 7 checks. See why."
    passed = {"beats SV only": {"random": True, "spatial": True}}
    assert report.bar_sentence(passed, where_not="See why.") == "MuseCL clears 2 of the 2 checks."
    one_seed = {split: pd.DataFrame({"verdict": {"SV only": ""}}) for split in ("random", "spatial")}
    undecided = report.bar_checks(one_seed, share=0.9)
    assert undecided["beats SV only"] == {"random": None, "spatial": None}
    assert report.bar_sentence(undecided) == ("MuseCL clears 1 of the 1 checks that this run can decide; 2 more "
                                              "need two or more seeds for a paired interval.")
    assert report.bar_sentence(report.bar_checks(one_seed, share=None)).startswith("No check can be decided")
    table = report.bar_table(undecided, splits=["random", "spatial"])
    assert table.loc["beats SV only"].tolist() == ["one seed: no interval"] * 2
    assert table.loc["≥ 85% of the all-latent ceiling (is 90%)"].tolist() == ["yes", ""]  # no spatial ceiling check


def test_bar_failures_name_what_fails_and_where():
    """The landing page's verdict: each failed check by name and split, the ceiling share in words."""
    verdicts = {"random": {"SV only": "better", "Concat": "unclear", "Pretext features": "better"},
                "spatial": {"SV only": "better", "Concat": "unclear", "Pretext features": "unclear"}}
    checks = report.bar_checks({s: pd.DataFrame({"verdict": v}) for s, v in verdicts.items()}, share=0.77)
    assert report.bar_failures(checks) == (
        "MuseCL clears 3 of the 7 checks of the book's bar: it is not clearly better than *Concat* (random and "
        "spatial split) or *Pretext features* (spatial split); it reaches 77% of the all-latent ceiling, not the "
        "85% asked")
    # with the paired differences, a loss is said as a loss
    verdicts["spatial"]["Concat"] = "worse"
    paired = {s: pd.DataFrame({"verdict": v}) for s, v in verdicts.items()}
    assert report.bar_failures(report.bar_checks(paired, share=0.77), paired=paired) == (
        "MuseCL clears 3 of the 7 checks of the book's bar: it is worse than *Concat* (spatial split); it is not "
        "clearly better than *Concat* (random split) or *Pretext features* (spatial split); it reaches 77% of the "
        "all-latent ceiling, not the 85% asked")
    passed = report.bar_checks({"random": pd.DataFrame({"verdict": {"SV only": "better"}})}, share=0.9)
    assert report.bar_failures(passed) == "MuseCL clears every one of the 2 checks of the book's bar"
    one_seed = report.bar_checks({"random": pd.DataFrame({"verdict": {"SV only": ""}})}, share=None)
    assert report.bar_failures(one_seed).startswith("one seed decides none")


def test_ceiling_share_is_the_random_split_headline_over_the_all_latent_ceiling():
    rows = lambda method, r2: pd.DataFrame({"city": "c", "method": method, "split": "random", "seed": 0,  # noqa: E731
                                            "indicator": ["PD", "HD"], "r2": r2, "rmse": 1.0, "n_test": 10})
    results, ceilings = rows("MuseCL", [0.4, 0.6]), rows("Ceiling: all latents", [0.8, 0.8])
    assert report.ceiling_share(results, ceilings, ["PD", "HD"]) == pytest.approx(0.625)
    assert report.ceiling_share(results, None, ["PD", "HD"]) is None
    assert report.ceiling_share(results.assign(split="spatial"), ceilings, ["PD", "HD"]) is None


def test_paper_lead_sentence_sets_the_orderings_side_by_side():
    results = table_from({"MuseCL": {"PD": (0.60, 1.0)}, "Add-svrv": {"PD": (0.55, 1.0)}}, seeds=(0, 1))
    published = pd.DataFrame({"source": "MuseCL paper Table 1", "city": "Beijing", "indicator": ["PD", "PD", "HD", "HD"],
                              "method": ["MuseCL", "Add-svrv"] * 2, "r2": [0.5, 0.1, 0.7, 0.1]})
    words = report.paper_lead_sentence(results, published, ["PD"], "Here")
    assert "over *Add-svrv* +0.50 in the paper and +0.050 here" in words and "Fusion-svrv" not in words
    assert report.paper_lead_sentence(results, published[published["method"] == "MuseCL"], ["PD"], "Here") is None


def test_paired_text_and_readable_show_one_seed_without_nan():
    table = pd.DataFrame({"difference": [0.05, -0.1], "low": [0.01, np.nan], "high": [0.09, np.nan],
                          "n_seeds": [3, 1], "verdict": ["better", ""]}, index=["Concat", "SV only"])
    shown = report.paired_text({"random": table})
    assert list(shown[("random", "MuseCL minus method [95% interval]")]) == [
        "+0.050 [+0.010, +0.090]", "-0.100 (one seed: no interval)"]
    assert list(shown[("random", "MuseCL is")]) == ["better", ""]
    # splits are joined by method name: SV only has no spatial scores, RS only no random ones
    spatial = pd.DataFrame({"difference": [-0.2, 0.4], "low": [-0.3, 0.3], "high": [-0.1, 0.5], "n_seeds": [3, 3],
                            "verdict": ["worse", "better"]}, index=["Concat", "RS only"])
    shown = report.paired_text({"random": table, "spatial": spatial})
    assert shown.index.tolist() == ["Concat", "SV only", "RS only"]
    assert shown[("spatial", "MuseCL is")].tolist() == ["worse", "", "better"]
    assert shown[("random", "MuseCL is")].tolist() == ["better", "", ""]
    named = report.paired_text({"random": table}, target="MuseCL (vector views)")
    assert list(named.columns.get_level_values(1)) == ["MuseCL (vector views) minus method [95% interval]",
                                                       "MuseCL (vector views) is"]
    winners = pd.DataFrame({"city": ["c"], "indicator": ["PD"], "best": ["MuseCL"], "best_mean": [0.5],
                            "best_std": [np.nan]})
    assert list(report.readable(winners).columns) == ["best method", "its mean"]


def test_room_sentence_says_when_the_goal_asks_more_than_the_inputs_give():
    assert "no ceiling" in report.room_sentence({"Pretext features": 0.6}, None)
    assert "No row of raw inputs" in report.room_sentence({}, 0.8)
    low = report.room_sentence({"Pretext features": 0.6, "Lite0": 0.5}, 0.8)
    assert "at most 0.600 (*Pretext features*), 75% of" in low and "asks for more" in low
    assert "asks for more" not in report.room_sentence({"Pretext features": 0.75}, 0.8)


def test_shortfall_parts_add_up_and_follow_the_best_read_out():
    r2 = pd.Series({("perfect", "random"): 0.80, ("inputs", "random"): 0.65, ("images", "random"): 0.60,
                    ("own", "random"): 0.58, ("MuseCL", "random"): 0.56})
    parts = report.shortfall(r2, ceiling=0.8, inputs=["images", "inputs"], own="own")
    assert parts["best_inputs"] == "inputs"
    assert parts["goal"] == pytest.approx(0.68)
    assert parts["beyond_inputs"] == pytest.approx(0.03) and parts["kept_less"] == pytest.approx(0.07)
    assert parts["probe"] == pytest.approx(0.02)
    assert parts["beyond_inputs"] + parts["kept_less"] + parts["probe"] == pytest.approx(parts["total"])
    words = report.shortfall_sentence(r2, 0.8, "perfect", {"inputs": "every raw input", "images": "the images"},
                                      "own", columns=128)
    assert "every raw input the latents give 0.650 (81%), out of the images 0.600 (75%)" in words
    assert "(0.120 R²), 0.030 is beyond" in words and "128 columns" in words and "fitted to the latents reads" in words
    assert "loses little" in words
    r2[("MuseCL", "random")] = 0.70  # past the goal: no shortfall to split
    assert "MuseCL clears the check by 0.020." in report.shortfall_sentence(r2, 0.8, "perfect",
                                                                          {"inputs": "x"}, "own", 128)


def test_reference_vs_sentence_says_clearly_only_when_every_interval_is_above():
    r2 = pd.Series({("ref", "random"): 0.62, ("ref", "spatial"): 0.49, ("Pretext features", "random"): 0.60,
                    ("Pretext features", "spatial"): 0.45})
    row = {"difference": 0.02, "low": 0.01, "high": 0.03, "verdict": "better"}
    both = {"random": pd.Series(row), "spatial": pd.Series(row)}
    assert "would pass" in report.reference_vs_sentence(r2, both, "ref", "the images")
    one = {**both, "spatial": pd.Series({**row, "low": -0.01, "verdict": "unclear"})}
    words = report.reference_vs_sentence(r2, one, "ref", "the images")
    assert "would not clearly pass" in words and "0.620 / 0.490 against *Pretext features*' 0.600 / 0.450" in words
    assert "+0.020 [+0.010, +0.030], +0.020 [-0.010, +0.030]" in words
    nan = {"difference": 0.02, "low": np.nan, "high": np.nan, "verdict": ""}
    words = report.reference_vs_sentence(r2, {s: pd.Series(nan) for s in both}, "ref", "the images")
    assert "nan" not in words and "+0.020 (one seed: no interval)" in words and "one seed cannot tell" in words
    led = report.reference_vs_sentence(r2, {"random": both["random"]}, "ref", "the images", lead="With every block tested")
    assert led.startswith("With every block tested, read out of the images the latents give 0.620 against")


def test_information_sentence_uses_only_the_rows_the_run_scored():
    mean_r2 = pd.DataFrame({"random": {"MuseCL": 0.56, "POI only": 0.06, "Pretext features": 0.60,
                                       "Fusion-svrv": 0.55, "SV+RS": 0.50,
                                       "EfficientNet-Lite0 (ImageNet)": 0.58}})
    paired = {"random": pd.DataFrame({"verdict": {"Fusion-svrv": "unclear"}})}
    words = report.information_sentence(mean_r2, paired, poi_ceiling=0.4)
    assert words.startswith("Where the information goes: (1) its alignment target")
    assert "reaches only 0.060 alone (random split), although what the POIs show allows 0.400" in words
    assert "(*Fusion-svrv*) reaches 0.550 against MuseCL's 0.560" in words and "neither adds nor costs" in words
    assert "the frozen features their heads were trained on" in words and "stay below *Pretext features*" in words
    assert "no paired interval to tell" in words  # SV+RS against the frozen features: no paired row given
    lower = pd.Series({"difference": -0.08, "low": -0.1, "high": -0.06, "n_seeds": 5, "verdict": "worse"})
    words = report.information_sentence(mean_r2, paired, encoders_vs_features=lower)
    assert "(*SV+RS* minus *EfficientNet-Lite0 (ImageNet)*, paired, -0.080 [-0.100, -0.060])" in words
    assert "keep less than the images show" in words
    level = lower.copy()
    level[["difference", "low", "verdict"]] = [-0.002, -0.03, "unclear"]  # a mean lower, within the seeds' spread
    assert "keep about as much" in report.information_sentence(mean_r2, paired, encoders_vs_features=level)
    cnn = report.information_sentence(mean_r2.drop(index="POI only"), None, heads=False)
    assert "POI vector, reaches" not in cnn and "Fusion-svrv" not in cnn and "a frozen ImageNet model's" in cnn
    assert "were not run" in report.information_sentence(mean_r2.loc[["MuseCL"]])
    rich_text = mean_r2.assign(random=mean_r2["random"].replace({0.06: 0.65}))  # POI vector above the counts
    words_rich = report.information_sentence(rich_text, paired)
    assert "alignment target" not in words_rich and "point 1" not in words_rich
    assert "SV+RS*, paired" not in words  # no paired row of SV+RS: nothing said about the fusion itself


def test_information_sentence_says_what_the_fusion_itself_costs_per_split():
    mean_r2 = pd.DataFrame({"random": {"MuseCL": 0.64, "SV+RS": 0.645},
                            "spatial": {"MuseCL": 0.43, "SV+RS": 0.46}})
    row = {"difference": -0.03, "low": -0.05, "high": -0.01, "verdict": "worse"}
    level = {"difference": -0.005, "low": -0.03, "high": 0.02, "verdict": "unclear"}
    paired = {"random": pd.DataFrame({"SV+RS": level}).T, "spatial": pd.DataFrame({"SV+RS": row}).T}
    words = report.information_sentence(mean_r2, paired)
    assert "loses part of what the two show side by side (spatial split)" in words
    assert "random split -0.005 [-0.030, +0.020], spatial split -0.030 [-0.050, -0.010]" in words
    assert "Add-svrv" not in words  # not run: nothing said about the plain sum
    summed = report.information_sentence(pd.concat([mean_r2, pd.DataFrame(
        {"random": {"Add-svrv": 0.6}, "spatial": {"Add-svrv": 0.42}})]), paired)
    assert "(*Add-svrv*) stays below *SV+RS* too (0.420 against 0.460, spatial)" in summed
    both_level = {**paired, "spatial": pd.DataFrame({"SV+RS": level}).T}
    assert "neither adds nor loses measurably" in report.information_sentence(mean_r2, both_level)
    one_seed = {"random": pd.DataFrame({"SV+RS": {**level, "low": np.nan, "high": np.nan, "verdict": ""}}).T}
    assert "one seed gives no interval" in report.information_sentence(mean_r2, one_seed)
    # MuseCL (vector views): its two views side by side stand where SV+RS stands
    vector, both = "MuseCL (vector views)", "mobility view + POI view"
    renamed = {"MuseCL": vector, "SV+RS": both}
    words = report.information_sentence(mean_r2.rename(index=renamed),
                                        {s: t.rename(index=renamed) for s, t in paired.items()}, target=vector)
    assert f"as {vector} does, loses part of what the two show side by side (spatial split): {vector} minus " \
           f"*{both}*, paired, random split -0.005" in words


def test_floor_sentence_names_each_floor_the_method_does_not_clear():
    def scores(method, split, values):  # headline mean per seed = value (one indicator)
        return [{"city": "c", "indicator": "PD", "method": method, "split": split, "seed": seed, "r2": v,
                 "rmse": 1.0, "n_test": 10} for seed, v in enumerate(values)]
    rows = (scores("MuseCL", "random", [0.60, 0.62, 0.64]) + scores("MuseCL", "spatial", [0.40, 0.45, 0.42])
            + scores("Location kNN", "random", [0.50, 0.51, 0.52]) + scores("Location kNN", "spatial", [0.1, 0.2, 0.0])
            + scores("Pretext features", "random", [0.55, 0.57, 0.56])
            + scores("Pretext features", "spatial", [0.42, 0.40, 0.46]))
    results = pd.DataFrame(rows)
    floors = ["Location kNN", "Pretext features"]
    paired = {s: report.paired_differences(results, ["PD"], split=s) for s in ("random", "spatial")}
    text = report.floor_sentence(paired, floors)
    assert text.startswith("**MuseCL is not clearly better than Pretext features under the spatial split** (")
    assert "MuseCL minus Location kNN +0.110 [" in text and "(random: better)" in text
    assert "(spatial: unclear)" in text
    assert report.floor_sentence(paired, floors, with_numbers=False) == (
        "**MuseCL is not clearly better than Pretext features under the spatial split**.")  # the verdict alone
    only_random = {"random": paired["random"]}
    assert report.floor_sentence(only_random, floors).startswith(
        "**MuseCL is better than Location kNN and Pretext features in the random split**")
    one_seed = {s: report.paired_differences(results[results["seed"] == 0], ["PD"], split=s) for s in paired}
    assert report.floor_sentence(one_seed, floors).startswith("**With one seed there is no interval**")
    assert report.floor_sentence({s: t.drop(floors) for s, t in paired.items()}, floors).startswith(
        "No simple baseline ran beside MuseCL")
    # a loss is said as a loss, before what the seeds cannot tell
    lower = results.assign(r2=np.where((results["method"] == "Location kNN") & (results["split"] == "random"),
                                       results["r2"] + 0.2, results["r2"]))
    losing = {s: report.paired_differences(lower, ["PD"], split=s) for s in ("random", "spatial")}
    assert report.floor_sentence(losing, floors).startswith(
        "**MuseCL is worse than Location kNN under the random split, and not clearly better than "
        "Pretext features under the spatial split** (")
    # floors with the same verdict in the same splits are named together
    alike = results.copy()  # Location kNN under the spatial split as close to MuseCL as Pretext features
    alike.loc[(alike["method"] == "Location kNN") & (alike["split"] == "spatial"), "r2"] = [0.42, 0.44, 0.41]
    level = {s: report.paired_differences(alike, ["PD"], split=s) for s in ("random", "spatial")}
    assert report.floor_sentence(level, floors, with_numbers=False) == (
        "**MuseCL is not clearly better than Location kNN or Pretext features under the spatial split**.")


def test_by_split_words_the_splits_a_run_has():
    assert report.by_split({"random": 0.5634, "spatial": 0.335}) == "0.563 (random) and 0.335 (spatial)"
    assert report.by_split({"random": 3}) == "3 (random)"


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_paired_interval_is_student_t_over_the_seeds(confidence):
    """The interval is mean +- t(0.5 + confidence / 2, n - 1) * sd / sqrt(n) of the per-seed differences."""
    from scipy import stats

    target = [0.60, 0.55, 0.70, 0.52, 0.66]
    other = [0.50, 0.52, 0.55, 0.50, 0.48]
    results = per_seed_rows({"MuseCL": {"PD": target}, "Concat": {"PD": other}})
    row = report.paired_differences(results, ["PD"], confidence=confidence).loc["Concat"]
    diff = np.subtract(target, other)
    half = stats.t.ppf(0.5 + confidence / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    assert row["n_seeds"] == 5
    assert row["difference"] == pytest.approx(diff.mean())
    assert row["low"] == pytest.approx(diff.mean() - half)
    assert row["high"] == pytest.approx(diff.mean() + half)


def test_a_recorded_run_is_set_beside_this_run_seed_by_seed():
    """The recorded GPU rows against this run's: paired differences over the shared seeds only,
    and the sentence says which way they go and that rows without an image encoder agree."""
    def rows(shift: float, seeds) -> pd.DataFrame:
        values = {"MuseCL": 0.6, "SV only": 0.5, "Inception v3": 0.3, "Pretext features": 0.55}
        return pd.concat([table_from({m: {"PD": (v + (shift if m != "Pretext features" else 0), 1.0)}
                                      for m, v in values.items()}, seeds=seeds, split=s, jitter=0.01)
                          for s in ("random", "spatial")], ignore_index=True)

    recorded = {"encoders": [{"best_epoch": 4, "epochs": 4}, {"best_epoch": 2, "epochs": 4}]}
    mine = rows(0.0, seeds=(0, 1, 2, 3))
    def spread(t: pd.DataFrame) -> pd.Series:  # seeds that differ, so that the interval has a width
        return t["r2"] + np.where((t["seed"] == 1) & (t["method"] != "Pretext features"), 0.005, 0)

    lower = rows(-0.1, seeds=(0, 1, 2)).assign(r2=spread)
    ceilings = pd.concat([table_from({"Ceiling: all latents": {"PD": (0.9, 1.0)}}, seeds=(0, 1, 2, 3), split=s,
                                     jitter=0.01) for s in ("random", "spatial")], ignore_index=True)
    table, sentence = report.beside_recorded_run(mine, lower, recorded, ["PD"], ["random", "spatial"], "lite0 heads",
                                                 ceilings=ceilings)
    methods = ["MuseCL", "SV only", "Inception v3", "Pretext features", "Ceiling: all latents"]
    assert list(table.index) == [(s, m) for s in ("random", "spatial") for m in methods]  # a row per split
    assert "this build, seeds 0, 1, 2" in table.columns  # this run has seed 3 too: not in the table
    gap = "GPU run minus this build [95% interval]"
    assert table.loc[("random", "MuseCL"), gap].startswith("-0.098 [")
    assert table.loc[("spatial", "Pretext features"), gap] == "0.000 (the same)"
    # the ceiling of the shared seeds' test parts, the same in both columns
    same = report.results_table(ceilings[ceilings["seed"] < 3], "r2", "spatial", mean_of=["PD"])
    assert table.loc[("spatial", "Ceiling: all latents")].tolist() == [same[report.HEADLINE].iloc[0]] * 2 + ["(the same test parts)"]
    assert "seeds both runs have (0, 1, 2)" in sentence and "not a lower bound" in sentence
    assert "1 of the 2 encoders" in sentence and "*SV only* 0.412 against *Inception v3* 0.212" in sentence
    assert "score the same on both machines" in sentence
    _, higher = report.beside_recorded_run(mine, rows(0.1, seeds=(0, 1, 2)).assign(r2=spread), recorded, ["PD"],
                                           ["random"], "x")
    assert "understate MuseCL under the random split" in higher and "has no" not in higher
    # a split this run has and the recorded one lacks is left out, and said
    table, lacking = report.beside_recorded_run(mine, lower, recorded, ["PD"], ["random", "spatial-cv"], "x")
    assert set(table.index.get_level_values("split")) == {"random"}
    assert lacking.endswith("The recorded run has no spatial-cv split to compare.")
    with pytest.raises(ValueError, match="shares no seeds"):
        report.beside_recorded_run(mine, rows(0.0, seeds=(9,)), recorded, ["PD"], ["random"], "x")
    with pytest.raises(ValueError, match="no splits"):
        report.beside_recorded_run(mine, lower, recorded, ["PD"], ["spatial-cv"], "x")


def test_the_headline_method_is_musecl_else_its_vector_version():
    assert report.headline_method(["Concat", "MuseCL (vector views)", "MuseCL"]) == "MuseCL"
    assert report.headline_method(pd.Series(["POI only", "MuseCL (vector views)"])) == "MuseCL (vector views)"
    assert report.headline_method(["POI only", "Location kNN"]) is None
    note = report.vector_target_note("Grid City", "this chapter reads")
    assert note.startswith("**Grid City has no images, so this chapter reads *MuseCL (vector views)*:**")


def test_read_out_comparison_says_which_verdicts_the_probe_decides():
    def rows(values: dict) -> pd.DataFrame:  # method -> R2 of PD; seeds 0-3 differ a little
        return pd.concat([table_from({m: {"PD": (v, 1.0)} for m, v in values.items()}, seeds=(0, 1, 2, 3),
                                     split=s, jitter=0.01)
                          for s in ("random", "spatial")], ignore_index=True
                         ).assign(r2=lambda t: t["r2"] + np.where(t["seed"] == 1, 0.004, 0) * (t["method"] == "MuseCL"))
    mlp = rows({"MuseCL": 0.60, "Pretext features": 0.50, "SV only": 0.40})
    ridge = rows({"MuseCL": 0.61, "Pretext features": 0.62, "SV only": 0.40})  # the raw table, read linearly
    levels, ridge_minus, sentence = report.read_out_comparison(mlp, ridge, ["PD"], ["random", "spatial"])
    assert list(levels.index) == ["MuseCL", "Pretext features", "SV only"]
    assert levels.loc["Pretext features", ("random", "MLP probe")].startswith("0.515 ±")  # mean over seeds 0-3
    assert levels.loc["Pretext features", ("random", "ridge probe")].startswith("0.635 ±")
    assert ridge_minus.loc["Pretext features", ("spatial", "MuseCL minus method, ridge [95% interval]")].startswith("-0.009 [")
    assert ridge_minus.loc["Pretext features", ("spatial", "MuseCL is")] == "worse"
    assert "moves by +0.010" in sentence and "*Pretext features* (+0.120)" in sentence
    assert "*SV only*" not in sentence.split("move most")[1].split(".")[0]  # it did not move
    assert "under the random split *Pretext features* (better -> worse)" in sentence
    assert "the probe decides" in sentence and "ceiling" not in sentence
    ceilings = table_from({"Ceiling: all latents": {"PD": (0.8, 0.5)}}, seeds=(0, 1, 2, 3))
    with_ceiling, _, shared = report.read_out_comparison(mlp, ridge, ["PD"], ["random"], ceilings=ceilings)
    assert "(77% -> 78% of the all-latent ceiling)" in shared  # (0.600 + 0.015 + 0.001) / 0.8, then 0.626 / 0.8
    assert list(with_ceiling.index)[-1] == "Ceiling: all latents"  # the same test parts, below the methods
    assert with_ceiling.loc["Ceiling: all latents", ("random", "MLP probe")].startswith("0.800 ±")
    assert "Ceiling: all latents" not in levels.index  # none given
    *_, same = report.read_out_comparison(mlp, mlp, ["PD"], ["random"])
    assert "no other row moves" in same and "No verdict against MuseCL changes" in same
    one_seed = mlp[mlp["seed"] == 0]
    *_, untold = report.read_out_comparison(one_seed, one_seed, ["PD"], ["random"])
    assert "With one seed there are no intervals" in untold


def test_cross_fitting_sentence_says_how_the_intervals_and_verdicts_moved():
    def paired(rows):
        return pd.DataFrame(rows, columns=["method", "difference", "low", "high", "n_seeds", "verdict"]
                            ).set_index("method")
    one = paired([("A", 0.03, -0.05, 0.11, 5, "unclear"), ("B", 0.2, 0.1, 0.3, 5, "better")])
    every = paired([("A", 0.01, 0.002, 0.018, 5, "better"), ("B", 0.15, 0.12, 0.18, 5, "better")])
    text = report.cross_fitting_sentence(one, every)
    assert "4.7 times narrower" in text  # (0.16 + 0.2) / 2 against (0.016 + 0.06) / 2
    assert "better than *A* and *B*" in text and "*A* (unclear -> better)" in text
    assert "times wider" in report.cross_fitting_sentence(every, one)
    assert "No verdict changes" in report.cross_fitting_sentence(every, every)
