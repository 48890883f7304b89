"""The generated toy city: the default data of every chapter, with known ground truth.

A fictional polycentric city on H3 resolution-8 hexagons around "Null Island" (0 N, 0 E, open sea
in the Gulf of Guinea; no real place or person is described).  It has a central business district
(CBD), two far-apart *twin* commercial and nightlife centres that are alike, an office park, an
affluent old town, a poor industrial quarter, a river with a lake and a park system, and suburbs
that fade into farmland at the edge.  Each region carries seven latent fields, smooth in space
but repeating far apart, so similarity by POIs or mobility differs from similarity by distance
(the paper's argument against Tobler's law as the only source of positives, eq. 1-4).

No modality sees every latent; that is what makes fusing them (eq. 8-11) worth testing:

=========  ==========  ============  ================  ==============  ===================
latent     satellite   street view   POIs (eq. 3, 7)   trips (eq. 1)   indicators it drives
=========  ==========  ============  ================  ==============  ===================
built      cover       heights       count             volume          PD HD MC NP NC CR
mix        roof size   shop signs    category shares   in/out balance  PD HD MC NP NC CR
affluence  no          weak (trees)  categories, text  no              PD HD NC CR
activity   no          people, cars  nightlife, text   attraction      MC NP NC CR
water      yes         sometimes     none there        none there      all (empty land)
green      yes         trees         park POIs         no              --
farm       yes         fields        farm supply       none            NP (a few)
=========  ==========  ============  ================  ==============  ===================

Satellite images are drawn from built, mix, green, water and farm only; street views from
built, mix, activity, green, water, farm and (weakly: street trees, litter) affluence; POI
categories and review words from mix, affluence and activity; the commute model from built, mix
and activity only.  Indicators (PD, HD, MC, NP, NC, CR) are known functions of the latents plus
Gaussian noise on the ln(1 + x) scale, with the noise set per indicator so that the *oracle*
R2 (the noiseless function vs the noisy value) is recorded in ``city.yaml``; no method that
sees only the data can beat it on average.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import yaml
from PIL import Image
from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

from musecl.city import (
    CATEGORY, CITY_YAML, DESTINATION, FLOW, GEOMETRY, KIND, LAT, LON, MODALITIES, ORIGIN, PATH,
    REGION_ID, SATELLITE, STREETVIEW, TEXT, CityMeta, Indicator, inflow_outflow, write_city,
)

TOY_SMOKE_REGIONS = 150
TOY_DEFAULT_REGIONS = 600
GENERATOR_NAME = "musecl toy-city"
GENERATOR_VERSION = 1
H3_RESOLUTION = 8
EARTH_RADIUS_M = 6_371_000.0
MISSING_SATELLITE_FRACTION = 0.02

LATENTS = {
    "built": "built-up intensity in [0, 1] (floor area, building cover); seen by satellite (cover, "
             "roof count), street view (facade heights), POI counts and trip volumes",
    "mix": "land-use mix in [0, 1], 0 residential to 1 commercial/office; seen by satellite (roof "
           "size), street view (shop signs), POI category shares and the in/out balance of trips",
    "affluence": "wealth in [0, 1]; invisible from above and in trips; seen by POI categories "
                 "(boutiques vs discount shops) and review words, weakly by street trees and litter",
    "activity": "footfall and nightlife in [0, 1]; invisible from above; seen by people and cars "
                "in street view, nightlife POIs and busy/quiet review words, and trip attraction",
    "water": "fraction of the hexagon under the river or lake; seen by satellite and some street "
             "views; water has no homes, jobs or POIs",
    "green": "fraction under parks, lawns and trees; seen by satellite, street-view trees and park POIs",
    "farm": "fraction under crop fields at the urban edge; seen by satellite stripes, rural street "
            "views and farm-supply POIs",
}

INDICATORS = {
    "PD": Indicator("PD", "population density", "persons/km2"),
    "HD": Indicator("HD", "housing density", "dwellings/km2"),
    "MC": Indicator("MC", "mobility count (all trips starting or ending in the region)", "trips/day"),
    "NP": Indicator("NP", "number of POIs registered by the city (not the rows of pois.csv)", "POIs"),
    "NC": Indicator("NC", "number of comments (online reviews)", "reviews"),
    "CR": Indicator("CR", "crime incidents", "incidents/year"),
}
# Oracle R2 each indicator's noise is set to reach (on ln(1+x)); easy ones high, crime lowest.
_TARGET_R2 = {"PD": 0.90, "HD": 0.80, "MC": 0.85, "NP": 0.92, "NC": 0.78, "CR": 0.70}

# --------------------------------------------------------------------------------------------
# POI taxonomy: log-weight = coef . [1, mix, affluence - 0.5, activity, built, farm, green]

_POI_TABLE = [
    # name               const  mix   aff   act  built  farm green  words
    ("restaurant",        1.2,  0.8,  0.0,  1.0,  0.5, -1.0, 0.0, "food dish menu dinner"),
    ("cafe",              0.8,  0.8,  0.8,  0.6,  0.5, -1.5, 0.3, "coffee latte pastry wifi"),
    ("fast_food",         0.3,  0.5, -1.5,  1.2,  0.4, -1.0, 0.0, "burger fries takeaway"),
    ("bar",               0.0,  0.6, -0.2,  2.2,  0.5, -2.0, 0.0, "beer drinks cocktails bartender"),
    ("nightclub",        -1.5,  0.8,  0.0,  3.0,  0.5, -3.0, 0.0, "dj dance music party"),
    ("supermarket",       0.5, -0.2,  0.0,  0.0,  0.3, -0.5, 0.0, "groceries aisles checkout fresh"),
    ("convenience_store", 1.0, -0.5, -1.2,  0.6,  0.5,  0.0, 0.0, "snacks counter open"),
    ("bank",             -0.3,  1.4,  0.8,  0.0,  0.5, -2.0, 0.0, "atm teller account"),
    ("hotel",            -0.8,  1.0,  0.6,  1.2,  0.3, -2.0, 0.0, "room lobby stay bed"),
    ("office",            0.2,  2.2,  0.4, -0.3,  1.0, -2.0, 0.0, "building meeting desk reception"),
    ("school",            0.3, -1.2,  0.2, -0.5,  0.2,  0.0, 0.0, "teachers pupils classes"),
    ("kindergarten",      0.0, -1.5,  0.3, -0.8,  0.2, -0.5, 0.0, "kids playground carers"),
    ("hospital",         -1.8,  0.2,  0.2,  0.0,  0.8, -2.0, 0.0, "doctors ward emergency"),
    ("clinic",           -0.5,  0.0,  0.4,  0.0,  0.3, -1.0, 0.0, "doctor appointment nurse"),
    ("pharmacy",          0.0, -0.2,  0.0,  0.0,  0.3, -0.5, 0.0, "medicine prescription pharmacist"),
    ("park",             -0.5, -0.5,  0.3,  0.0, -0.5, -1.0, 2.5, "trees lawn paths bench"),
    ("gym",              -0.4,  0.5,  0.8,  0.4,  0.3, -2.0, 0.0, "workout trainers equipment"),
    ("cinema",           -1.8,  0.8,  0.2,  1.5,  0.5, -3.0, 0.0, "movie screen seats popcorn"),
    ("museum",           -2.2,  0.5,  1.2,  0.5,  0.3, -3.0, 0.5, "exhibits art collection"),
    ("library",          -1.5,  0.0,  0.9, -0.3,  0.2, -1.0, 0.3, "books reading study"),
    ("church",           -0.8, -0.5,  0.3, -0.3,  0.0,  0.5, 0.0, "choir bells sermon"),
    ("bakery",            0.0, -0.2,  0.3,  0.2,  0.3,  0.0, 0.0, "bread croissant cakes"),
    ("luxury_boutique",  -2.5,  1.2,  3.5,  0.8,  0.5, -3.0, 0.0, "designer fashion handbags"),
    ("shopping_mall",    -1.8,  1.5,  0.6,  1.0,  0.6, -3.0, 0.0, "shops escalator foodcourt"),
    ("bus_station",      -0.6,  0.5, -0.5,  0.5,  0.3,  0.0, 0.0, "buses tickets platform"),
    ("parking",          -0.2,  0.6,  0.0,  0.3,  0.5,  0.0, 0.0, "spaces ticket garage"),
    ("gas_station",      -0.5,  0.0, -0.3,  0.0, -0.8,  1.0, 0.0, "fuel pump carwash"),
    ("hardware_store",   -0.5,  0.2, -0.8, -0.4,  0.0,  0.5, 0.0, "tools paint screws"),
    ("car_repair",       -0.5,  0.3, -1.5, -0.3,  0.0,  0.5, 0.0, "mechanic tyres workshop"),
    ("warehouse",        -0.8,  0.9, -2.5, -0.8,  0.2,  0.5, 0.0, "loading trucks storage"),
    ("farm_supply",      -2.5, -0.5, -0.5, -1.0, -2.0,  3.5, 0.0, "seeds feed tractor"),
]
POI_CATEGORIES = tuple(row[0] for row in _POI_TABLE)
_POI_COEF = np.array([row[1:8] for row in _POI_TABLE], dtype=float)
_WORDS = {
    "generic": "good nice place staff service time visit again okay friendly price recommend great "
               "fine clean".split(),
    "aff_hi": "elegant upscale stylish refined expensive pricey classy luxurious polished exclusive".split(),
    "aff_lo": "cheap basic worn affordable bargain shabby discount rundown simple budget".split(),
    "act_hi": "crowded noisy busy lively late packed buzzing queue night loud".split(),
    "act_lo": "quiet calm empty peaceful sleepy relaxed deserted slow early tranquil".split(),
}

# Landmarks in units of the city radius before the seed's rotation and jitter.  Near a landmark
# the latents are pulled towards its targets (weight exp(-d^2 / 2 width^2)); the two twins share
# every target: far apart, alike in POIs and trips, unlike their own outskirts.
#                 name          u      v     width  built  mix   aff   act
_CENTRES = [
    ("cbd",          0.00,  0.05,  0.17,  1.00,  0.75,  0.60,  0.95),
    ("twin_east",    0.50,  0.22,  0.12,  0.85,  0.80,  0.55,  0.90),
    ("twin_west",   -0.47, -0.27,  0.12,  0.85,  0.80,  0.55,  0.90),
    ("office_park",  0.12, -0.60,  0.11,  0.70,  0.85,  0.55,  0.08),
    ("old_town",    -0.30,  0.55,  0.14,  0.35,  0.15,  0.95,  0.55),
    ("industry",     0.45, -0.20,  0.12,  0.55,  0.45,  0.08,  0.08),
]


# --------------------------------------------------------------------------------------------
# geometry


def _plane(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres east and north of (0, 0) on an equirectangular plane (exact enough near Null Island)."""
    return np.deg2rad(lon) * EARTH_RADIUS_M, np.deg2rad(lat) * EARTH_RADIUS_M


def _hexagons(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ``n`` H3 cells whose centres are nearest (0, 0); ties broken by cell id."""
    centre = h3.latlng_to_cell(0.0, 0.0, H3_RESOLUTION)
    k = int(math.ceil(0.65 * math.sqrt(n))) + 3
    while True:
        cells = sorted(h3.grid_disk(centre, k))
        latlng = np.array([h3.cell_to_latlng(c) for c in cells])
        x, y = _plane(latlng[:, 0], latlng[:, 1])
        dist = np.round(np.hypot(x, y), 1)  # 0.1 m: platform-proof ties, then the id decides
        order = np.lexsort((np.array(cells), dist))
        outer = np.array([h3.grid_distance(centre, c) == k for c in cells])
        # the disk is big enough when every chosen cell is strictly closer than the outer ring
        if len(cells) > n and dist[order[n - 1]] < dist[outer].min():
            break
        k += 2
    chosen = order[:n]
    return [cells[i] for i in chosen], latlng[chosen, 0], latlng[chosen, 1]


def _polygon_wkt(cell: str) -> str:
    pts = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
    pts.append(pts[0])
    return "POLYGON ((" + ", ".join(f"{lng:.7f} {lat:.7f}" for lng, lat in pts) + "))"


def _hex_offsets(edge_m: float, n_side: int = 9) -> np.ndarray:
    """A fixed grid of points inside a regular hexagon of circumradius ``edge_m`` (for fractions)."""
    g = (np.arange(n_side) + 0.5) / n_side * 2 - 1
    gx, gy = np.meshgrid(g * edge_m, g * edge_m)
    ax, ay = np.abs(gx), np.abs(gy)
    inside = (ay <= edge_m * math.sqrt(3) / 2) & (math.sqrt(3) * ax + ay <= math.sqrt(3) * edge_m)
    return np.column_stack([gx[inside], gy[inside]])


class _SmoothField:
    """A smooth random field: a few random plane waves (cheap at any number of regions)."""

    def __init__(self, rng: np.random.Generator, scale_m: float, n_waves: int = 8,
                 wavelengths: tuple[float, float] = (0.35, 1.1)):
        lam = rng.uniform(*wavelengths, n_waves) * scale_m
        ang = rng.uniform(0, 2 * np.pi, n_waves)
        self.k = np.column_stack([np.cos(ang), np.sin(ang)]) * (2 * np.pi / lam)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, n_waves)
        self.norm = math.sqrt(2.0 / n_waves)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = x[..., None] * self.k[:, 0] + y[..., None] * self.k[:, 1] + self.phase
        return np.cos(arg).sum(-1) * self.norm  # roughly standard normal


@dataclass
class _Layout:
    """Where things are: landmarks, river, lake and parks, in metres; drawn once per seed."""

    radius_m: float
    theta: float
    centres: dict[str, tuple[float, float, float, tuple[float, float, float, float]]]
    river: tuple[float, float, float, float]  # v0, amplitude, wavelength, phase (units of radius)
    river_half_width_m: float
    lake: tuple[float, float, float]  # x, y, radius in metres
    hill_park: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, radius_m: float, edge_m: float) -> "_Layout":
        theta = float(rng.uniform(0, 2 * np.pi))
        c, s = math.cos(theta), math.sin(theta)
        centres = {}
        for name, u, v, width, *effects in _CENTRES:
            u, v = u + rng.uniform(-0.04, 0.04), v + rng.uniform(-0.04, 0.04)
            centres[name] = ((c * u - s * v) * radius_m, (s * u + c * v) * radius_m,
                             max(width * radius_m, 1.6 * edge_m), tuple(effects))  # >= a cell
        best = (-np.inf, None)
        for _ in range(200):  # a river that passes the CBD but not through the other centres
            river = (float(rng.uniform(-0.25, 0.05)), float(rng.uniform(0.08, 0.18)),
                     float(rng.uniform(0.9, 1.4)), float(rng.uniform(0, 2 * np.pi)))
            trial = cls(radius_m, theta, centres, river, max(180.0, 0.35 * edge_m), (0, 0, 0), (0, 0, 0))
            margin = min(float(trial._river_distance(np.array(cx), np.array(cy)))
                         - (0.8 if name == "cbd" else 1.6) * width
                         for name, (cx, cy, width, _e) in centres.items())
            if margin > best[0]:
                best = (margin, river)
            if margin > 0:
                break
        river = best[1]
        lake_r = max(0.06 * radius_m, 1.1 * edge_m)
        # the lake sits in a park between the CBD and the old town
        cx, cy = centres["cbd"][:2]
        ox, oy = centres["old_town"][:2]
        lake = (0.45 * cx + 0.55 * ox, 0.45 * cy + 0.55 * oy, lake_r)
        # a wooded hill beside the old town (to one side, so the old town itself stays built)
        hx, hy = centres["old_town"][:2]
        norm = math.hypot(hx, hy) or 1.0
        hill = (hx - 0.2 * radius_m * hy / norm, hy + 0.2 * radius_m * hx / norm,
                max(0.07 * radius_m, edge_m))
        return cls(radius_m, theta, centres, river, max(180.0, 0.35 * edge_m), lake, hill)

    def _river_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.theta), math.sin(self.theta)
        u = (c * x + s * y) / self.radius_m
        v = (-s * x + c * y) / self.radius_m
        v0, amp, lam, phase = self.river
        arg = 2 * np.pi * u / lam + phase
        f = v0 + amp * np.sin(arg)
        slope = amp * 2 * np.pi / lam * np.cos(arg)
        return np.abs(v - f) * self.radius_m / np.sqrt(1 + slope ** 2)

    def water(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lx, ly, lr = self.lake
        return (self._river_distance(x, y) < self.river_half_width_m) | (np.hypot(x - lx, y - ly) < lr)

    def park(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Park land (the lake park, a hill park and a riverside greenway on part of the river)."""
        lx, ly, lr = self.lake
        hx, hy, hr = self.hill_park
        d = self._river_distance(x, y)
        c, s = math.cos(self.theta), math.sin(self.theta)
        along = (c * x + s * y) / self.radius_m
        greenway = (d < self.river_half_width_m + 200.0) & (np.sin(3.0 * along + 1.0) > -0.2)
        for name, (cx, cy, width, _e) in self.centres.items():
            if name != "old_town":  # no parkland in the middle of the business centres
                greenway &= np.hypot(x - cx, y - cy) > 1.3 * width
        return (np.hypot(x - lx, y - ly) < 2.0 * lr) | (np.hypot(x - hx, y - hy) < hr) | greenway

    def landmarks_lonlat(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, (x, y, *_rest) in self.centres.items():
            out[name] = {"lon": round(float(np.rad2deg(x / EARTH_RADIUS_M)), 6),
                         "lat": round(float(np.rad2deg(y / EARTH_RADIUS_M)), 6)}
        return out


# --------------------------------------------------------------------------------------------
# latents


def _latents(layout: _Layout, x: np.ndarray, y: np.ndarray, edge_m: float,
             rng: np.random.Generator) -> pd.DataFrame:
    """Seven latent fields per region: smooth (landmark kernels + plane waves) plus a little
    per-region noise, so neighbours are alike but not identical and the twins match."""
    R = layout.radius_m
    n = len(x)
    fields = [_SmoothField(rng, R) for _ in range(5)]
    edge_field = _SmoothField(rng, R, wavelengths=(0.5, 1.5))
    offs = _hex_offsets(edge_m)
    px, py = x[:, None] + offs[:, 0], y[:, None] + offs[:, 1]
    water = layout.water(px, py).mean(1)
    park = (layout.park(px, py) & ~layout.water(px, py)).mean(1)

    r = np.hypot(x, y) / R
    urban = 1.0 / (1.0 + np.exp((r - 0.85 - 0.06 * edge_field(x, y)) / 0.05))

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0, sd, n)

    # background: a monocentric density decay fading into the countryside, plus smooth waves
    built = (0.12 + 0.4 * np.exp(-(r / 0.5) ** 2) + 0.07 * fields[0](x, y)) * (0.15 + 0.85 * urban)
    mix = 0.2 + 0.12 * fields[1](x, y)  # shopping streets and corner shops amid the houses
    affluence = 0.45 + 0.16 * fields[2](x, y)
    # footfall: a little everywhere people live, plus night strips that ignore density
    activity = (0.15 * built + 0.22 * np.clip(fields[3](x, y) + 0.3, 0, None)) * urban
    centre_pull = np.zeros(n)
    for cx, cy, width, (tb, tm, ta, tt) in layout.centres.values():
        k = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
        built, mix = (1 - k) * built + k * tb, (1 - k) * mix + k * tm
        affluence, activity = (1 - k) * affluence + k * ta, (1 - k) * activity + k * tt
        centre_pull = np.maximum(centre_pull, k)
    open_land = (1 - water) * (1 - 0.85 * park)
    built = np.clip(built * open_land + noise(0.03), 0, 1)
    activity = np.clip(activity * open_land + noise(0.03), 0, 1)
    mix = np.clip(mix + noise(0.04), 0, 1)
    affluence = np.clip(affluence + noise(0.04), 0, 1)
    farm = np.clip((1 - urban) - 1.5 * centre_pull, 0, 1) * (1 - water) * (1 - park)
    farm = np.clip(farm * (1 - built) + noise(0.03), 0, 1) * (farm > 0.05)
    green = np.clip(park + (1 - park) * 0.45 * (1 - built) * (1 - farm) + 0.05 * fields[4](x, y), 0, 1)
    green = green * (1 - water)
    out = pd.DataFrame({"built": built, "mix": mix, "affluence": affluence, "activity": activity,
                        "water": water, "green": green, "farm": farm})
    return out.round(4)


# --------------------------------------------------------------------------------------------
# POIs


def _poi_rate(lat: pd.DataFrame) -> np.ndarray:
    """Expected POIs per region: driven by built and activity, near zero on water and fields."""
    b, m, t, f = (lat[c].to_numpy() for c in ("built", "mix", "activity", "farm"))
    return 90 * b ** 1.3 * (0.25 + 0.75 * m) * (0.4 + 1.6 * t) + 3 * b + 0.6 * f


def _poi_probs(lat: pd.DataFrame) -> np.ndarray:
    z = np.column_stack([np.ones(len(lat)), lat["mix"], lat["affluence"] - 0.5, lat["activity"],
                         lat["built"], lat["farm"], lat["green"]])
    logits = z @ _POI_COEF.T
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def _pois(ids: list[str], lat: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    counts = rng.poisson(_poi_rate(lat))
    region = np.repeat(np.arange(len(ids)), counts)
    probs = _poi_probs(lat)
    cats = np.empty(len(region), dtype=np.int64)
    for start in range(0, len(region), 50_000):  # chunks keep the P x K cumulative table small
        idx = region[start:start + 50_000]
        cum = np.cumsum(probs[idx], axis=1)
        u = rng.random(len(idx))[:, None] * cum[:, -1:]
        cats[start:start + len(idx)] = np.minimum((u > cum).sum(1), len(POI_CATEGORIES) - 1)
    texts = _reviews(cats, lat["affluence"].to_numpy()[region], lat["activity"].to_numpy()[region], rng)
    return pd.DataFrame({REGION_ID: np.array(ids, dtype=object)[region],
                         CATEGORY: np.array(POI_CATEGORIES, dtype=object)[cats], TEXT: texts})


def _reviews(cats: np.ndarray, aff: np.ndarray, act: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Review-like texts of 5-15 words: generic and category words, plus rich/poor and busy/quiet
    words in proportion to the region's affluence and activity; some reviews are empty."""
    p = len(cats)
    a = np.clip(aff + rng.normal(0, 0.1, p), 0, 1)
    t = np.clip(act + rng.normal(0, 0.1, p), 0, 1)
    groups = ["generic", "category", "aff_hi", "aff_lo", "act_hi", "act_lo"]
    w = np.column_stack([np.full(p, 0.35), np.full(p, 0.2), 0.5 * a ** 2.5, 0.5 * (1 - a) ** 2.5,
                         0.4 * t ** 2, 0.4 * (1 - t) ** 2])
    cum = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    n_words = rng.integers(5, 16, p)
    group = (rng.random((p, 15))[:, :, None] > cum[:, None, :]).sum(2).clip(0, len(groups) - 1)
    pick = rng.integers(0, 1 << 30, (p, 15))
    empty = rng.random(p) < 0.05 + 0.12 * (1 - t)
    cat_words = [row[8].split() for row in _POI_TABLE]
    vocab = [_WORDS[g] if g != "category" else None for g in groups]
    out = []
    for i in range(p):
        if empty[i]:
            out.append("")
            continue
        words = []
        for j in range(n_words[i]):
            g = group[i, j]
            v = cat_words[cats[i]] if vocab[g] is None else vocab[g]
            words.append(v[pick[i, j] % len(v)])
        out.append(" ".join(words))
    return out


# --------------------------------------------------------------------------------------------
# mobility and indicators


def _homes_jobs(lat: pd.DataFrame, area_km2: float) -> tuple[np.ndarray, np.ndarray]:
    """Residents (affluence-free, so trips do not reveal wealth) and trip attraction per region."""
    b, m, t = (lat[c].to_numpy() for c in ("built", "mix", "activity"))
    homes = area_km2 * 14000 * b ** 1.3 * (1 - 0.65 * m)
    jobs = area_km2 * (9000 * b ** 1.2 * m + 5000 * t * b)
    return homes, jobs


def _od(ids: list[str], x: np.ndarray, y: np.ndarray, lat: pd.DataFrame, area_km2: float,
        rng: np.random.Generator, candidates: int = 150, keep: int = 30,
        decay_m: float = 2500.0) -> pd.DataFrame:
    """Origin-constrained gravity model of daily trips (homes to jobs and activities).

    T_ij = O_i A_j exp(-d_ij / decay) / sum_k A_k exp(-d_ik / decay) over the ``candidates``
    nearest regions (k-d tree, chunks of origins: never an N x N matrix), Poisson-rounded, and
    the ``keep`` largest flows of at least one trip per origin.
    """
    from scipy.spatial import cKDTree

    n = len(ids)
    homes, jobs = _homes_jobs(lat, area_km2)
    outgoing = 0.35 * homes + 0.05 * jobs  # commuters plus errands starting at work places
    k = min(n - 1, candidates)
    if k < 1:
        return pd.DataFrame({ORIGIN: [], DESTINATION: [], FLOW: []})
    tree = cKDTree(np.column_stack([x, y]))
    id_arr = np.array(ids, dtype=object)
    parts = []
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        d, j = tree.query(np.column_stack([x[start:stop], y[start:stop]]), k=k + 1)
        d, j = d[:, 1:], j[:, 1:]  # drop the origin itself
        w = jobs[j] * np.exp(-d / decay_m)
        total = w.sum(1, keepdims=True)
        share = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        flow = rng.poisson(outgoing[start:stop, None] * share)
        order = np.argsort(-flow, axis=1, kind="stable")[:, :keep]
        top = np.take_along_axis(flow, order, 1)
        dest = np.take_along_axis(j, order, 1)
        rows, cols = np.nonzero(top >= 1)
        parts.append(pd.DataFrame({ORIGIN: id_arr[start + rows], DESTINATION: id_arr[dest[rows, cols]],
                                   FLOW: top[rows, cols].astype(np.int64)}))
    return pd.concat(parts, ignore_index=True)


def _indicator_means(lat: pd.DataFrame, area_km2: float) -> dict[str, np.ndarray]:
    """The noiseless indicator functions g(latents); the data are ln(1+x) = ln(1+g) + noise.

    b, m, a, t, w = built, mix, affluence, activity, water; homes and jobs as in the trip model.
    """
    b, m, a, t, w = (lat[c].to_numpy() for c in ("built", "mix", "affluence", "activity", "water"))
    pd_ = 9000 * (b + 0.1) ** 1.3 * np.exp(-1.2 * (m - 0.3) - 0.4 * (a - 0.5)) * (1 - w) + 5
    hd = pd_ / (1.3 + 5.0 * (1 - a) ** 2) * (1 + 0.6 * m)  # poorer households are larger
    homes, jobs = _homes_jobs(lat, area_km2)
    mc = 0.9 * homes + 1.3 * jobs + area_km2 * 20000 * t ** 1.5 + 50  # + leisure trips
    np_ = 1.4 * _poi_rate(lat) + 0.5
    nc = np_ * 3 * np.exp(3.0 * (t - 0.3) + 3.0 * (a - 0.5))
    cr = 40 * (b + 0.05) ** 0.7 * np.exp(2.5 * t - 3.5 * (a - 0.5)) * (0.7 + 0.6 * m) + 1
    return {"PD": pd_, "HD": hd, "MC": mc, "NP": np_, "NC": nc, "CR": cr}


def _indicators(ids: list[str], lat: pd.DataFrame, area_km2: float, rng: np.random.Generator
                ) -> tuple[pd.DataFrame, dict[str, float], dict[str, float]]:
    """Noisy indicators, their oracle R2 on ln(1+x) (computed on this city) and noise sd."""
    means = _indicator_means(lat, area_km2)
    values, oracle, noise_sd = {}, {}, {}
    for name, g in means.items():
        m = np.log1p(g)
        r2 = _TARGET_R2[name]
        sd = float(m.std() * math.sqrt((1 - r2) / r2))
        x = np.expm1(np.maximum(m + rng.normal(0, sd, len(m)), 0.0))
        x = np.round(x) if name in ("MC", "NP", "NC", "CR") else np.round(x, 1)
        y = np.log1p(x)
        oracle[name] = round(float(1 - ((y - m) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 4)
        noise_sd[name] = round(sd, 4)
        values[name] = x
    return pd.DataFrame(values, index=pd.Index(ids, name=REGION_ID)), oracle, noise_sd


# --------------------------------------------------------------------------------------------
# images


def _jitter(rng: np.random.Generator, rgb, sd: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.normal(0, sd, 3), 0, 255)


def _box(img: np.ndarray, r0: float, r1: float, c0: float, c1: float, color) -> None:
    s = img.shape[0]
    r0, r1 = max(0, int(r0)), min(s, int(r1))
    c0, c1 = max(0, int(c0)), min(s, int(c1))
    if r1 > r0 and c1 > c0:
        img[r0:r1, c0:c1] = color


def _disc(img: np.ndarray, rc: float, cc: float, rad: float, color) -> None:
    s = img.shape[0]
    r0, r1 = max(0, int(rc - rad)), min(s, int(rc + rad) + 1)
    c0, c1 = max(0, int(cc - rad)), min(s, int(cc + rad) + 1)
    if r1 <= r0 or c1 <= c0:
        return
    rr, cc_ = np.ogrid[r0:r1, c0:c1]
    mask = (rr + 0.5 - rc) ** 2 + (cc_ + 0.5 - cc) ** 2 <= rad ** 2
    img[r0:r1, c0:c1][mask] = color


def _finish(img: np.ndarray, rng: np.random.Generator, noise_sd: float = 6.0) -> Image.Image:
    """Global exposure and tint jitter plus per-pixel noise: no two images are one template."""
    img = img * rng.normal(1.0, 0.05) + rng.normal(0, 4, 3)
    img = img + rng.normal(0, noise_sd, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


_ROOF_HOME = [(150, 80, 60), (120, 90, 70), (170, 110, 80), (140, 60, 50)]
_ROOF_WORK = [(185, 185, 190), (205, 205, 210), (140, 145, 155), (170, 175, 185)]
_CROPS = [(200, 180, 90), (120, 150, 60), (150, 120, 70), (170, 190, 100), (100, 130, 50)]


def _satellite(rng: np.random.Generator, s: int, lat: dict, cx: float, cy: float,
               layout: _Layout, side_m: float) -> Image.Image:
    """Top-down view: ground, crop stripes, road grid, roofs (count ~ built, size ~ mix), parks,
    trees and the river/lake where they really are.  Affluence and activity are not drawn."""
    b, m, g, f = lat["built"], lat["mix"], lat["green"], lat["farm"]
    off = ((np.arange(s) + 0.5) / s - 0.5) * side_m
    wx, wy = cx + off[None, :], cy - off[:, None]
    grass, urban = np.array([95, 130, 70], np.float32), np.array([150, 148, 142], np.float32)
    img = np.broadcast_to(grass + (urban - grass) * min(1.0, 1.3 * b), (s, s, 3)).astype(np.float32)
    coarse = rng.normal(0, 8, (4, 4, 1)).astype(np.float32)
    img += np.kron(coarse, np.ones((s // 4 + 1, s // 4 + 1, 1), np.float32))[:s, :s]

    if f > 0.05:  # fields with crop stripes, each field a random colour pair and direction
        k = int(rng.integers(2, 4))
        edges = np.linspace(0, s, k + 1).astype(int)
        rr, cc = np.mgrid[0:s, 0:s]
        for i in range(k):
            for j in range(k):
                if rng.random() > f * 1.2:
                    continue
                a = rng.uniform(0, np.pi)
                period = rng.uniform(0.06, 0.14) * s
                c1, c2 = (_CROPS[q] for q in rng.choice(len(_CROPS), 2, replace=False))
                sl = (slice(edges[i], edges[i + 1]), slice(edges[j], edges[j + 1]))
                stripe = ((rr[sl] * np.cos(a) + cc[sl] * np.sin(a)) / period).astype(int) % 2 == 0
                img[sl] = np.where(stripe[..., None], _jitter(rng, c1, 8), _jitter(rng, c2, 8))

    if b > 0.06:  # road grid: denser where more built up
        spacing = max(5.0, s * (0.55 - 0.35 * b) + rng.normal(0, 0.03 * s))
        width = max(1, int(round(s / 45 * (1 + m))))
        road = _jitter(rng, (72, 72, 78), 6)
        starts = {ax: rng.uniform(0, spacing) for ax in "rc"}
        lines = {ax: np.arange(starts[ax], s, spacing).astype(int) for ax in "rc"}
        blocks_r = np.concatenate([[0], lines["r"], [s]])
        blocks_c = np.concatenate([[0], lines["c"], [s]])
        # roofs: many small houses where residential, few large slabs where commercial
        roof_pal = [(_ROOF_WORK if rng.random() < m else _ROOF_HOME) for _ in range(4)]
        for r0, r1 in zip(blocks_r[:-1], blocks_r[1:]):
            for c0, c1 in zip(blocks_c[:-1], blocks_c[1:]):
                h, w = r1 - r0 - width, c1 - c0 - width
                if h < 2 or w < 2:
                    continue
                n_b = rng.poisson(0.5 + 12 * b ** 1.3 * (1 - 0.6 * m))
                for _ in range(n_b):
                    size = (0.3 + 0.6 * rng.random()) if rng.random() < m else rng.uniform(0.15, 0.3)
                    bh = max(1, int(h * rng.uniform(0.6, 1.4) * size))
                    bw = max(1, int(w * rng.uniform(0.6, 1.4) * size))
                    rr0 = r0 + width + int(rng.integers(0, max(1, h - bh + 1)))
                    cc0 = c0 + width + int(rng.integers(0, max(1, w - bw + 1)))
                    pal = roof_pal[int(rng.integers(0, 4))]
                    color = _jitter(rng, pal[int(rng.integers(0, len(pal)))], 10)
                    _box(img, rr0, rr0 + bh, cc0, cc0 + bw, color)
                    _box(img, rr0 + bh, rr0 + bh + 1, cc0 + 1, cc0 + bw + 1, color * 0.45)  # shadow
        for rpos in lines["r"]:
            _box(img, rpos, rpos + width, 0, s, road)
        for cpos in lines["c"]:
            _box(img, 0, s, cpos, cpos + width, road)

    park = layout.park(wx, wy)
    if park.any():
        img[park] = _jitter(rng, (80, 140, 70), 6) + rng.normal(0, 6, (int(park.sum()), 3))
    n_trees = rng.poisson(g * s * s / 40)
    tree_color = _jitter(rng, (45, 95, 45), 8)
    for _ in range(min(n_trees, 400)):
        _disc(img, rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.6, 1.6) * s / 40,
              tree_color * rng.uniform(0.8, 1.2))
    water = layout.water(wx, wy)
    if water.any():
        ripple = rng.normal(0, 4, (int(water.sum()), 3))
        img[water] = _jitter(rng, (40, 80, 140), 8) + ripple
    return _finish(img, rng)


def _streetview(rng: np.random.Generator, s: int, lat: dict) -> Image.Image:
    """A street-level view: facades (height ~ built), shop signs (~ mix), people and cars
    (~ activity), trees (~ green and, weakly, affluence), litter (~ low affluence)."""
    b, m, a, t = lat["built"], lat["mix"], lat["affluence"], lat["activity"]
    g, w, f = lat["green"], lat["water"], lat["farm"]
    img = np.zeros((s, s, 3), np.float32)
    horizon = int(s * rng.uniform(0.58, 0.68))
    top = _jitter(rng, (70, 120, 200) if rng.random() < 0.7 else (150, 155, 165), 10)
    bottom = _jitter(rng, (195, 212, 230), 8)
    frac = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = top * (1 - frac) + bottom * frac
    walk = max(2, int(s * 0.08))
    rural = f > 0.3 and b < 0.2
    if rural:  # fields up to the horizon, seen from a country road
        rows = np.arange(horizon, s)
        band = ((rows - horizon) ** 0.8 / max(1.0, s * 0.04)).astype(int) % 2
        c1, c2 = (_CROPS[q] for q in rng.choice(len(_CROPS), 2, replace=False))
        img[horizon:] = np.where(band[:, None, None] == 0, _jitter(rng, c1, 8), _jitter(rng, c2, 8))
        _box(img, s - walk, s, 0, s, _jitter(rng, (110, 105, 95), 6))
    else:
        _box(img, horizon, horizon + walk, 0, s, _jitter(rng, (175, 172, 165), 8))
        _box(img, horizon + walk, s, 0, s, _jitter(rng, (85, 85, 90), 6))
        lane = int((horizon + walk + s) / 2)
        for c in range(int(rng.integers(0, 6)), s, 10):
            _box(img, lane, lane + 1, c, c + 5, (220, 220, 200))
    if rng.random() < w:  # a river bank: water in the foreground
        _box(img, int(s * 0.8), s, 0, s, _jitter(rng, (45, 90, 150), 10))

    # facades, left to right
    c = -int(rng.integers(0, max(1, s // 6)))
    while c < s:
        fw = max(3, int(s * rng.uniform(0.15, 0.4)))
        if rng.random() < (0.15 + 0.85 * b) and not (rural and rng.random() < 0.7):
            height = s * np.clip(0.06 + 0.6 * b + rng.normal(0, 0.07), 0.05, 0.62)
            top_r = max(1, int(horizon - height))
            commercial = rng.random() < m
            pal = _ROOF_WORK if commercial else [(190, 120, 90), (220, 205, 180), (235, 235, 225),
                                                 (160, 110, 80)]
            color = _jitter(rng, pal[int(rng.integers(0, len(pal)))], 12)
            _box(img, top_r, horizon, c, c + fw - 1, color)
            # windows: a regular grid inside the facade
            pr, pc = max(3, int(s * 0.07)), max(3, int(s * 0.07))
            win = _jitter(rng, (70, 85, 110) if commercial else (90, 80, 70), 10)
            r0, r1, c0, c1 = top_r + 1, horizon - 2, max(0, c + 1), min(s, c + fw - 2)
            if r1 > r0 and c1 > c0:
                rr, cc = np.ogrid[r0:r1, c0:c1]
                mask = ((rr - r0) % pr < pr // 2 + 0) & ((cc - c0) % pc < pc // 2 + 0)
                img[r0:r1, c0:c1][mask] = win
            if rng.random() < 1.2 * m - 0.1:  # a shop sign at ground-floor level
                sign_h = max(1, int(s * 0.05))
                sr = horizon - int(s * 0.11)
                sc0 = c + int(fw * rng.uniform(0.05, 0.3))
                sc1 = sc0 + max(2, int(fw * rng.uniform(0.4, 0.7)))
                hue = rng.integers(0, 3)
                sign = np.full(3, 40.0, np.float32)
                sign[hue] = 230
                sign[(hue + 1) % 3] = rng.uniform(40, 220)
                _box(img, sr, sr + sign_h, sc0, sc1, sign)
        c += fw

    for _ in range(min(8, rng.poisson(5 * (0.6 * g + 0.4 * a)))):  # street trees
        tc = rng.uniform(0, s)
        trunk_h = s * rng.uniform(0.08, 0.14)
        _box(img, horizon + walk - trunk_h, horizon + walk, tc - max(1, s / 64), tc + max(1, s / 64),
             (90, 60, 40))
        _disc(img, horizon + walk - trunk_h, tc, s * rng.uniform(0.05, 0.09),
              _jitter(rng, (50, 110, 50), 12))
    if not rural:
        for _ in range(min(10, rng.poisson(6 * t * (0.3 + b)))):  # cars on the road
            cw = max(3, int(s * rng.uniform(0.12, 0.18)))
            ch = max(2, int(s * 0.06))
            cr = int(rng.uniform(horizon + walk + 1, s - ch - 1))
            cc0 = int(rng.uniform(-cw / 2, s - cw / 2))
            _box(img, cr, cr + ch, cc0, cc0 + cw, _jitter(rng, rng.uniform(30, 230, 3), 5))
            _box(img, cr + ch, cr + ch + 1, cc0 + 1, cc0 + 3, (20, 20, 20))
            _box(img, cr + ch, cr + ch + 1, cc0 + cw - 3, cc0 + cw - 1, (20, 20, 20))
    for _ in range(min(24, rng.poisson(14 * t))):  # people on the pavement
        pc = rng.uniform(0, s)
        foot = horizon + walk * rng.uniform(0.3, 1.0)
        ph = max(3, int(s * rng.uniform(0.07, 0.1)))
        _box(img, foot - ph, foot, pc, pc + max(1, s // 48), _jitter(rng, rng.uniform(20, 200, 3), 5))
        _disc(img, foot - ph - max(1, s / 80), pc + 0.5, max(0.8, s / 64), (220, 180, 150))
    for _ in range(rng.poisson(10 * (1 - a) ** 2)):  # litter specks on the pavement
        lr = int(rng.uniform(horizon, horizon + walk))
        lc = int(rng.uniform(0, s))
        _box(img, lr, lr + 1, lc, lc + 1, _jitter(rng, (60, 55, 50), 20))
    return _finish(img, rng)


# --------------------------------------------------------------------------------------------
# the city


def _check_args(n_regions, seed, image_size) -> None:
    if not isinstance(n_regions, (int, np.integer)) or n_regions < 7:
        raise ValueError(f"n_regions must be an integer >= 7 (one ring of hexagons), got {n_regions!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16 pixels, got {image_size!r}")


def _is_toy_city(path: Path) -> bool:
    try:
        raw = yaml.safe_load((path / CITY_YAML).read_text()) or {}
        return raw.get("generator", {}).get("name") == GENERATOR_NAME
    except (OSError, yaml.YAMLError, AttributeError):
        return False


def make_toy_city(out_dir: str | os.PathLike, n_regions: int = TOY_DEFAULT_REGIONS, seed: int = 0,
                  image_size: int = 64, progress: bool = True) -> Path:
    """Write the toy city to ``out_dir`` and return it; same arguments, same bytes.

    About 2% of regions get no satellite image on purpose, to exercise that path: loading the
    city warns about exactly those.  The folder is built beside ``out_dir`` and moved into
    place at the end, so an interrupted run never leaves half a city.  An existing toy city at
    ``out_dir`` is replaced; any other non-empty folder is left alone and an error is raised.
    """
    _check_args(n_regions, seed, image_size)
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_toy_city(out))):
        raise FileExistsError(f"{out} exists and is not a toy city made by {GENERATOR_NAME}; "
                              "choose an empty or new folder (it is not overwritten)")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write(tmp, int(n_regions), int(seed), int(image_size), progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(root: Path, n: int, seed: int, image_size: int, progress: bool) -> None:
    def stream(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k])

    edge_m = float(h3.average_hexagon_edge_length(H3_RESOLUTION, unit="m"))
    area_km2 = float(h3.average_hexagon_area(H3_RESOLUTION, unit="km^2"))
    ids, lat_deg, lon_deg = _hexagons(n)
    x, y = _plane(lat_deg, lon_deg)
    radius = float(np.hypot(x, y).max()) + edge_m
    layout = _Layout.draw(stream(1), radius, edge_m)
    lat = _latents(layout, x, y, edge_m, stream(2))
    lat.index = pd.Index(ids, name=REGION_ID)

    regions = pd.DataFrame({LON: np.round(lon_deg, 7), LAT: np.round(lat_deg, 7),
                            GEOMETRY: [_polygon_wkt(c) for c in ids]}, index=lat.index)
    pois = _pois(ids, lat, stream(3))
    od = _od(ids, x, y, lat, area_km2, stream(4))
    mobility = inflow_outflow(od).reindex(lat.index, fill_value=0.0).astype(np.int64)
    indicators, oracle, noise_sd = _indicators(ids, lat, area_km2, stream(5))

    # images: one satellite (except ~2% left out on purpose) and 1-6 street views per region
    plan = stream(6)
    n_missing = int(round(MISSING_SATELLITE_FRACTION * n))
    no_sat = set(plan.permutation(n)[:n_missing].tolist())
    drive = 0.6 * lat["built"].to_numpy() + 0.4 * lat["activity"].to_numpy()
    n_sv = np.clip(np.round(1 + 5 * drive + plan.normal(0, 0.6, n)), 1, 6).astype(int)
    (root / "images" / SATELLITE).mkdir(parents=True)
    (root / "images" / STREETVIEW).mkdir(parents=True)
    rows = []
    records = lat.to_dict("records")
    for i in tqdm(range(n), desc="toy city images", unit="region", disable=not progress):
        rid, rec = ids[i], records[i]
        if i not in no_sat:
            rel = f"images/{SATELLITE}/{rid}.png"
            _satellite(np.random.default_rng([seed, 7, i]), image_size, rec, x[i], y[i], layout,
                       2 * edge_m).save(root / rel, format="PNG")
            rows.append((rid, SATELLITE, rel))
        for k in range(n_sv[i]):
            rel = f"images/{STREETVIEW}/{rid}_{k}.png"
            view = _streetview(np.random.default_rng([seed, 8, i, k]), image_size, rec)
            view.save(root / rel, format="PNG")
            rows.append((rid, STREETVIEW, rel))
    images = pd.DataFrame(rows, columns=[REGION_ID, KIND, PATH])

    args = f"n_regions={n}, seed={seed}, image_size={image_size}"
    meta = CityMeta(
        name="Toy City", crs="EPSG:4326", modalities=MODALITIES, indicators=dict(INDICATORS),
        hexagon_size_m=round(edge_m, 3),
        provenance=(f"Generated by {GENERATOR_NAME} (musecl.datasets.toy.make_toy_city, generator "
                    f"version {GENERATOR_VERSION}) with {args}. A fictional city on H3 resolution-8 "
                    "hexagons around Null Island (0 N, 0 E, open sea): no real place or person."),
        max_missing_satellite=0.1, oracle_r2=oracle, latents=dict(LATENTS),
        extra={"generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "n_regions": n,
                             "seed": seed, "image_size": image_size, "h3_resolution": H3_RESOLUTION,
                             "noise_sd_log1p": noise_sd, "target_oracle_r2": dict(_TARGET_R2),
                             "regions_without_satellite": n_missing,
                             "landmarks": layout.landmarks_lonlat()}},
    )
    write_city(root, meta, regions, indicators, images=images, pois=pois, mobility=mobility, od=od,
               latents=lat)
