# ---
# jupyter:
#   schedule:
#     needs: [08_results]  # it shows chapter 8's results; the book runs it last, or beside a chapter after 8
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
# # MuseCL, reproduced
#
# **MuseCL** (Yong and Zhou, IJCAI 2024, *Predicting Urban Socioeconomic Indicators via
# Multi-Semantic Contrastive Learning*) learns one vector per urban region from four kinds of data:
# satellite images, street-view images, the points of interest (POIs) in the region and the people
# moving in and out of it. Regions with similar POIs pull their satellite images together, regions
# with similar mobility pull their street views together (a triplet loss on cosine similarity), an
# attention module fuses the two image embeddings, and a contrastive InfoNCE loss aligns the result
# with a word2vec summary of the region's POIs. A small regressor then predicts indicators such as
# population density from the region vectors, scored by $R^2$ and RMSE.
#
# This book rebuilds that pipeline step by step on top of the `musecl` library. Every number,
# table and figure on these pages was computed when the book was built -- the chapters are notebooks
# executed from scratch by one command, and the code they show is the library's tested code --
# except the paper's numbers and a few runs this build cannot repeat (a GPU run, the scaling
# appendix's measurements), each labelled as recorded, with its date.
# Where the paper and the authors' released code disagree, both behaviours are available and the
# book says which one produced each result ({doc}`appendix_deviations`).

# %% tags=["parameters", "remove-cell"]
city = None  # the book's city folder; None: the generated toy city
out_dir = "../build/work"  # where chapter 8 wrote its results
params_file = "../params/ci.yaml"  # the run settings the chapters used

# %% tags=["remove-cell"]
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from musecl.methods.multisemantic import image_views
from musecl.plotting import plot_at_a_glance
from musecl.report import (BARS, at_a_glance, at_a_glance_seeds, bar_checks, bar_failures,
                           ceiling_share, floor_sentence, headline_method, mean_headline,
                           one_view_note, paired_differences, vector_target_note)
from musecl.runner import resolve_city

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # chapter 1 lists what loading the city warns about
    data = resolve_city(city or "toy", cities_dir=f"{out_dir}/cities")
run_dir = Path(out_dir) / "results" / "all_methods"  # chapter 8's run: every method, every seed
have_results = (run_dir / "results.csv").is_file()

# %% [markdown]
# ## The result in one figure
#
# {glue:md}`glance_sentence`

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Each seed's headline R² (dots) and the mean over seeds (bars) for the methods this city supports: MuseCL and the parts it fuses where it has them, the simple baselines and, where the city records them, the ceilings."}}
if have_results:
    results = pd.read_csv(run_dir / "results.csv")
    ceilings = (pd.read_csv(run_dir / "ceilings.csv") if (run_dir / "ceilings.csv").is_file()
                else None)
    headline = data.meta.headline_indicators()
    ax = plot_at_a_glance(at_a_glance_seeds(results, headline, ceilings), headline)
    means = mean_headline(results, headline)
    seeds = sorted(results["seed"].unique())
    # MuseCL; on a city without images its vector version
    target = headline_method(results["method"])
    has_musecl = (target, "random") in means.index
    ax.set_title(f"{data.name}: " + (f"{target}, the parts it fuses, " if has_musecl else "")
                 + ("simple baselines and the ceiling" if ceilings is not None
                    else "simple baselines"))
    plt.show()
    if has_musecl:
        paired = {split: paired_differences(results, headline, target=target, split=split)
                  for split in results["split"].unique()}
        checks = bar_checks(paired, ceiling_share(results, ceilings, headline, target),
                            bar=BARS[target])
        sentence = (f"Mean R² over the headline indicators ({data.meta.spelled_out(headline)}) on "
                    f"**{data.name}**, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
                    f"{' and '.join(results['split'].unique())} split, computed by "
                    f"this build with `params/{Path(params_file).name}`. "
                    f"**{bar_failures(checks, target, paired)}** "
                    "(paired over the seeds, 95% intervals; the results chapter sets the bar, "
                    "shows why, and reads the same embeddings with a ridge regression too, to "
                    "show which checks the probe decides).")
        frozen = [m for m in ("EfficientNet-Lite0 (ImageNet)", "Pretext + Lite0 features")
                  if all(m in table.index for table in paired.values())]
        if frozen:  # the inputs' frozen image features, not in the bar: level with MuseCL here?
            sentence += (" Beside the bar, against frozen ImageNet features of the same images "
                         "(rows of the table below; the results chapter gives the intervals): "
                         + floor_sentence(paired, frozen, target=target, with_numbers=False))
        if (note := one_view_note(data.name, image_views(data))) is not None:
            sentence += " " + note
        if target != "MuseCL":
            sentence += " " + vector_target_note(data.name, "MuseCL runs here as")
    else:
        sentence = (f"**{data.name}** lacks what MuseCL (and its version without images) needs, so "
                    "the figure shows the methods it supports, and the results chapter stops after "
                    "its tables.")
else:
    sentence = ("The results chapter has not run in this build, so there is no result to show "
                "here yet: `musecl book` runs it.")
glue("glance_sentence", Markdown(sentence), display=False)

# %% tags=["remove-input"]
# the table in its own cell: a figure's caption would also be printed under it
if have_results:
    # no header row for the index name
    display(at_a_glance(results, headline, ceilings).rename_axis(None))

# %% [markdown]
# The results chapter ({doc}`08_results`) has the full tables of every method the city supports
# and, where MuseCL runs, its paired differences with 95% intervals and the evidence of where its
# information goes.
#
# ## Run it on your own city
#
# A city is a folder of a few CSV files and images, described in `data/README.md` of the
# repository. Check yours, then build the book on it (from the repository, after `make book` or
# `make test` has set up `.venv/`):
#
# ```bash
# .venv/bin/musecl validate path/to/my_city
# .venv/bin/musecl book --city path/to/my_city   # the book: build/site/_build/html
# ```
#
# Without `--city` the book runs on a generated toy city (600 regions, written to
# `build/cities/toy/`). `--params FILE.yaml` gives the run settings every chapter reads (sizes,
# seeds, epochs: `params/*.yaml`); `--only 01_data` re-executes one chapter.
#
# ## Roadmap
#
# The book's parts, in the sidebar's order:
#
# 1. **Data**: the city format, the toy city and the real data sets.
# 2. **Similarity sampling**: mobility and POI similarity (eq. 1-4) and the triplets built from them.
# 3. **Encoders**: the satellite and street-view encoders trained with the triplet loss (eq. 5-6)
#    and the POI text embedding (eq. 7).
# 4. **Fusion**: attentive fusion of the image embeddings and the InfoNCE alignment (eq. 8-11).
# 5. **Prediction and results**: the indicator probes, the paper's tables side by side with ours,
#    a location-only baseline and spatial cross-validation.
# 6. **Real cities**: the paper's own Beijing labels ({doc}`09_beijing`) and the Manhattan-180
#    benchmark of the mobility-based region embeddings ({doc}`10_manhattan`).
# 7. **Your own city**: everything above, run on a folder you make.
# 8. **Appendices**: {doc}`appendix_provenance`, {doc}`appendix_deviations`,
#    {doc}`appendix_benchmark` and {doc}`appendix_scaling`.
