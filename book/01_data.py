# ---
# jupyter:
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
# # The data
#
# *Placeholder chapter: it checks the book pipeline (papermill parameters, stored outputs,
# figures, glue, math) until the real data chapter replaces it.*
#
# A city is a set of regions; every indicator the book predicts is scored by the coefficient of
# determination
#
# $$R^2 = 1 - \frac{\sum_i (y_i - \hat y_i)^2}{\sum_i (y_i - \bar y)^2}.$$

# %% tags=["parameters"]
city = None  # a city folder (data/README.md); `musecl book` passes one

# %%
import matplotlib.pyplot as plt
from myst_nb import glue

import musecl
from musecl.city import LAT, LON

data = musecl.load_city(city) if city is not None else None
n_regions = len(data) if data is not None else 0
glue("n_regions", n_regions, display=False)
data

# %%
fig, ax = plt.subplots(figsize=(4, 4))
if data is not None:
    ax.scatter(data.regions[LON], data.regions[LAT], s=4)
ax.set(xlabel="longitude", ylabel="latitude", title="region centres")
ax.set_aspect("equal")
plt.show()

# %% [markdown]
# The city has {glue:text}`n_regions` regions, and $R^2$ is computed on $\ln(1 + x)$.
#
# The library code a chapter explains is shown straight from the tested source, so the page
# cannot drift from it:
#
# ```{literalinclude} ../musecl/city.py
# :pyobject: City.targets
# ```
