"""The generated toy city: the default data of every chapter, with known ground truth.

A fictional polycentric city on H3 resolution-8 hexagons around "Null Island" (0 N, 0 E, open
sea; no real place or person), built to *test the paper's claim* that satellite images, street
views, POIs and trips carry complementary information, so fusing them beats any one of them.

Eight latent fields per region are smooth in space, repeat far apart (so similarity by POIs or
trips differs from nearness: the paper's argument against Tobler's law, eq. 1-4) and are
nearly uncorrelated (no single "urbanity" factor).  No modality sees every latent:

==========  =========  ===========  ================  ====================  ================
latent      satellite  street view  POIs (eq. 3, 7)   trips (eq. 1)         drives
==========  =========  ===========  ================  ====================  ================
footprint   roofs      --           --                volume                PD HD NC CR MC
height      --         facades      --                volume                PD HD NC CR MC
landuse     roof size  --           category shares   in/out balance        PD HD NC CR MC NP
affluence   --         facades,     categories, text  trip rate             PD HD NC CR MC
                       litter
activity    --         people,      nightlife, text   trip rate, leisure    PD NC CR MC NP
                       cars, signs
green       parks      trees        park POIs         leisure               NC CR MC
water       yes        --           none there        none there            all (no land)
farm        fields     --           farm supply       few                   NP, a little NC CR MC
==========  =========  ===========  ================  ====================  ================

Indicators are known functions of the latents plus Gaussian noise on the ln(1 + x) scale, set
per indicator to reach a target *oracle* R2; NP and MC aggregate an input, as in the paper, so
they are marked ``derived_from_input``.  Each modality's *ceiling* conditions on what it shows
(trips: the two noiseless counts of eq. 1); ``city.yaml`` records the ceilings' R2 and
``ceilings.csv`` their predictions, so a results table can score them on its own test parts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import yaml
from PIL import Image
from scipy.spatial import cKDTree
from scipy.special import softmax
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from threadpoolctl import threadpool_limits
from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

from musecl.city import (
    CATEGORY,
    CEILING_ALL,
    CITY_YAML,
    DESTINATION,
    FLOW,
    KIND,
    MOBILITY,
    MODALITIES,
    ORIGIN,
    PATH,
    POI,
    REGION_ID,
    SATELLITE,
    SOURCE,
    STREETVIEW,
    TEXT,
    CityMeta,
    Indicator,
    inflow_outflow,
    write_city,
)
from musecl.datasets.from_raw import cell_table, hexagon_size_m
from musecl.io import folder_built_beside
from musecl.tables import standardise_columns

TOY_SMOKE_REGIONS = 150
TOY_DEFAULT_REGIONS = 600
GENERATOR_NAME = "musecl toy-city"
GENERATOR_VERSION = 3  # bump on any change to the output: a toy city of another version is made again
H3_RESOLUTION = 8
EARTH_RADIUS_M = 6_371_000.0
MISSING_SATELLITE_FRACTION = 0.02

LATENTS = {
    "footprint": "share of the ground covered by buildings, in [0, 1]; seen from above (roofs, roads), "
                 "not from the street (a facade does not tell how deep the block is), not in POIs; with "
                 "height it sets floor area, hence how many trips start and end there",
    "height": "building height, in [0, 1] (1 to 25 floors); of the images only street views show it "
              "(facade height); with footprint it sets floor area, hence residents, jobs and trips",
    "landuse": "0 homes to 1 work places (offices, shops, industry); seen from above (roof size and "
               "colour), in POI category shares and in the balance of trips arriving and leaving",
    "affluence": "wealth in [0, 1]; invisible from above; seen in street views (facade upkeep, boarded "
                 "windows, litter), in POI categories (boutiques and organic grocers vs pawn and discount shops) "
                 "and review words, and in how often residents take the trips recorded",
    "activity": "footfall and nightlife in [0, 1]; invisible from above; seen in street views (people, "
                "cars, shop signs), nightlife POIs, busy/quiet review words and leisure trips",
    "green": "share under parks, lawns and trees; seen from above, as street trees, as park POIs and in "
             "leisure trips",
    "water": "share under the river or the lake; seen from above; water has no homes, jobs, POIs or trips, "
             "so their absence shows it too",
    "farm": "share under crop fields at the urban edge; seen from above and as farm-supply POIs",
}
LATENT_NAMES = tuple(LATENTS)
# what each modality is drawn from (its ceiling conditions on these; mobility's on TRIPS)
MODALITY_LATENTS = {
    SATELLITE: ["footprint", "landuse", "green", "water", "farm"],
    STREETVIEW: ["height", "affluence", "activity", "green"],
    POI: ["landuse", "affluence", "activity", "green", "water", "farm"],
    MOBILITY: ["footprint", "height", "landuse", "affluence", "activity", "green", "water"],
}
TRIPS = ("expected_outflow", "expected_inflow")  # what trips show: the two numbers of eq. 1

INDICATORS = {
    "PD": Indicator("PD", "population density", "persons/km2"),
    "HD": Indicator("HD", "housing density", "dwellings/km2"),
    # MC counts the expected trips, not those od.csv keeps (the largest flows per origin): it
    # follows the input but is not its sum
    "MC": Indicator("MC", "mobility count (trips starting or ending in the region)", "trips/day",
                    derived_from_input=MOBILITY),
    "NP": Indicator("NP", "number of POIs registered by the city (not the rows of pois.csv)", "POIs",
                    derived_from_input=POI),
    "NC": Indicator("NC", "number of comments (online reviews)", "reviews"),
    "CR": Indicator("CR", "crime incidents", "incidents/year"),
}
# Oracle R2 each indicator's noise is set to reach (on ln(1+x)); crime is the noisiest.
_TARGET_R2 = {"PD": 0.90, "HD": 0.86, "MC": 0.88, "NP": 0.92, "NC": 0.80, "CR": 0.72}

# POI taxonomy: log-weight = coef . [1, landuse, affluence - 0.5, activity, farm, green].
# No footprint or height term: POIs tell what a place is used for and by whom, not how much is built.

_POI_TABLE = [
    # name               const  land   aff   act  farm  green  words
    ("restaurant",        1.2,  0.8,  0.0,  1.0, -1.0,  0.0, "food dish menu dinner"),
    ("cafe",              0.8,  0.8,  0.8,  0.6, -1.5,  0.3, "coffee latte pastry wifi"),
    ("fast_food",         0.3,  0.5, -1.5,  1.2, -1.0,  0.0, "burger fries takeaway"),
    ("bar",               0.0,  0.6, -0.2,  2.2, -2.0,  0.0, "beer drinks cocktails bartender"),
    ("wine_bar",         -1.5,  0.6,  2.2,  1.8, -3.0,  0.0, "wine tasting sommelier terrace"),
    ("nightclub",        -1.5,  0.8,  0.0,  3.0, -3.0,  0.0, "dj dance music party"),
    ("supermarket",       0.5, -0.2,  0.0,  0.0, -0.5,  0.0, "groceries aisles checkout fresh"),
    ("organic_grocer",   -1.5, -0.2,  2.5,  0.0, -1.0,  0.0, "organic produce local farmers"),
    ("discount_store",   -0.5,  0.0, -2.5,  0.3, -0.5,  0.0, "deals bulk shelves"),
    ("convenience_store", 1.0, -0.5, -1.2,  0.6,  0.0,  0.0, "snacks counter open"),
    ("pawn_shop",        -2.0,  0.3, -3.0,  0.5, -1.0,  0.0, "loans jewellery secondhand"),
    ("betting_shop",     -1.8,  0.3, -2.5,  1.0, -1.0,  0.0, "odds bets football screens"),
    ("bank",             -0.3,  1.4,  0.8,  0.0, -2.0,  0.0, "atm teller account"),
    ("hotel",            -0.8,  1.0,  0.6,  1.2, -2.0,  0.0, "room lobby stay bed"),
    ("office",            0.2,  2.2,  0.4, -0.3, -2.0,  0.0, "building meeting desk reception"),
    ("school",            0.3, -1.2,  0.2, -0.5,  0.0,  0.0, "teachers pupils classes"),
    ("kindergarten",      0.0, -1.5,  0.3, -0.8, -0.5,  0.0, "kids playground carers"),
    ("hospital",         -1.8,  0.2,  0.2,  0.0, -2.0,  0.0, "doctors ward emergency"),
    ("clinic",           -0.5,  0.0,  0.4,  0.0, -1.0,  0.0, "doctor appointment nurse"),
    ("pharmacy",          0.0, -0.2,  0.0,  0.0, -0.5,  0.0, "medicine prescription pharmacist"),
    ("park",             -0.5, -0.5,  0.3,  0.0, -1.0,  2.5, "trees lawn paths bench"),
    ("gym",              -0.4,  0.5,  0.8,  0.4, -2.0,  0.0, "workout trainers equipment"),
    ("cinema",           -1.8,  0.8,  0.2,  1.5, -3.0,  0.0, "movie screen seats popcorn"),
    ("museum",           -2.2,  0.5,  1.2,  0.5, -3.0,  0.5, "exhibits collection history"),
    ("art_gallery",      -2.5,  0.6,  2.8,  0.6, -3.0,  0.0, "paintings exhibition artists"),
    ("library",          -1.5,  0.0,  0.9, -0.3, -1.0,  0.3, "books reading study"),
    ("church",           -0.8, -0.5,  0.3, -0.3,  0.5,  0.0, "choir bells sermon"),
    ("bakery",            0.0, -0.2,  0.3,  0.2,  0.0,  0.0, "bread croissant cakes"),
    ("luxury_boutique",  -2.5,  1.2,  3.5,  0.8, -3.0,  0.0, "designer fashion handbags"),
    ("shopping_mall",    -1.8,  1.5,  0.6,  1.0, -3.0,  0.0, "shops escalator foodcourt"),
    ("bus_station",      -0.6,  0.5, -0.5,  0.5,  0.0,  0.0, "buses tickets platform"),
    ("parking",          -0.2,  0.6,  0.0,  0.3,  0.0,  0.0, "spaces ticket garage"),
    ("gas_station",      -0.5,  0.0, -0.3,  0.0,  1.0,  0.0, "fuel pump carwash"),
    ("hardware_store",   -0.5,  0.2, -0.8, -0.4,  0.5,  0.0, "tools paint screws"),
    ("car_repair",       -0.5,  0.3, -1.5, -0.3,  0.5,  0.0, "mechanic tyres workshop"),
    ("warehouse",        -0.8,  0.9, -2.5, -0.8,  0.5,  0.0, "loading trucks storage"),
    ("farm_supply",      -2.5, -0.5, -0.5, -1.0,  3.5,  0.0, "seeds feed tractor"),
]
POI_CATEGORIES = tuple(row[0] for row in _POI_TABLE)
_POI_COEF = np.array([row[1:7] for row in _POI_TABLE], dtype=float)
_WORDS = {
    "generic": "good nice place staff service time visit again okay friendly price recommend great "
               "fine clean".split(),
    "aff_hi": "elegant upscale stylish refined expensive pricey classy luxurious polished exclusive".split(),
    "aff_lo": "cheap basic worn affordable bargain shabby discount rundown simple budget".split(),
    "act_hi": "crowded noisy busy lively late packed buzzing queue night loud".split(),
    "act_lo": "quiet calm empty peaceful sleepy relaxed deserted slow early tranquil".split(),
}

# Landmarks in units of the city radius, before the seed's rotation and jitter; nearby latents are
# pulled towards their targets (weight exp(-d^2 / 2 width^2)).  No two latents rise together across
# them (industry dense but low and poor, towers tall but sparse, villas rich but empty); the twins
# share every target: far apart, alike in POIs and trips.
#                 name          u      v     width  footprint height landuse affluence activity
_CENTRES = [
    ("cbd",          0.00,  0.05,  0.13,  0.90,  0.95,  0.85,  0.60,  0.85),
    ("twin_east",    0.50,  0.22,  0.11,  0.45,  0.35,  0.70,  0.45,  0.95),
    ("twin_west",   -0.47, -0.27,  0.11,  0.45,  0.35,  0.70,  0.45,  0.95),
    ("office_park",  0.12, -0.60,  0.10,  0.35,  0.75,  0.95,  0.65,  0.10),
    ("old_town",    -0.30,  0.55,  0.12,  0.85,  0.20,  0.30,  0.90,  0.40),
    ("industry",     0.45, -0.25,  0.11,  0.80,  0.10,  0.80,  0.10,  0.10),
    ("towers",      -0.55,  0.10,  0.10,  0.30,  0.90,  0.05,  0.15,  0.30),
    ("villas",       0.30,  0.60,  0.12,  0.25,  0.10,  0.05,  0.90,  0.10),
]
_SHAPED = ("footprint", "height", "landuse", "affluence", "activity")  # the latents landmarks pull
# background level and spread of each shaped latent (the rest of the city between landmarks)
_BACKGROUND = {"footprint": (0.45, 0.17), "height": (0.30, 0.14), "landuse": (0.30, 0.15),
               "affluence": (0.50, 0.17), "activity": (0.30, 0.14)}


# --- geometry ---
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
        # the lake sits in a park between the CBD and the old town
        cx, cy = centres["cbd"][:2]
        ox, oy = centres["old_town"][:2]
        lake = (0.45 * cx + 0.55 * ox, 0.45 * cy + 0.55 * oy, max(0.06 * radius_m, 1.1 * edge_m))
        # a wooded hill beside the old town (to one side, so the old town itself stays built)
        norm = math.hypot(ox, oy) or 1.0
        hill = (ox - 0.2 * radius_m * oy / norm, oy + 0.2 * radius_m * ox / norm,
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
        return {name: {"lon": round(float(np.rad2deg(x / EARTH_RADIUS_M)), 6),
                       "lat": round(float(np.rad2deg(y / EARTH_RADIUS_M)), 6)}
                for name, (x, y, *_rest) in self.centres.items()}


# --- latents ---
def _decorrelated(values: np.ndarray) -> np.ndarray:
    """Columns whitened to uncorrelated unit variance: independent smooth fields correlate by chance."""
    centred = values - values.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(centred, rowvar=False))
    return centred @ eigvec @ np.diag(1.0 / np.sqrt(np.maximum(eigval, 1e-12))) @ eigvec.T


def _latents(layout: _Layout, x: np.ndarray, y: np.ndarray, edge_m: float,
             rng: np.random.Generator) -> pd.DataFrame:
    """The eight latents per region: smooth backgrounds pulled towards the landmarks; water and
    parks from the layout, farmland at the edge."""
    R = layout.radius_m
    waves = _decorrelated(np.column_stack([_SmoothField(rng, R)(x, y) for _ in _SHAPED]))
    canopy_field = _SmoothField(rng, R)
    edge_field = _SmoothField(rng, R, wavelengths=(0.5, 1.5))
    offs = _hex_offsets(edge_m)
    px, py = x[:, None] + offs[:, 0], y[:, None] + offs[:, 1]
    water = layout.water(px, py).mean(1)
    park = (layout.park(px, py) & ~layout.water(px, py)).mean(1)
    r = np.hypot(x, y) / R
    urban = 1.0 / (1.0 + np.exp((r - 0.93 - 0.06 * edge_field(x, y)) / 0.04))

    level, spread = np.array([_BACKGROUND[k] for k in _SHAPED]).T
    shaped = level + spread * waves
    for cx, cy, width, targets in layout.centres.values():
        k = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))[:, None]
        shaped = (1 - k) * shaped + k * np.asarray(targets)
    shaped = np.clip(shaped + rng.normal(0, 0.03, shaped.shape), 0, 1)
    footprint, height, landuse, affluence, activity = shaped.T

    open_land = (1 - water) * (1 - 0.85 * park)
    footprint = footprint * open_land * (0.3 + 0.7 * urban)  # villages beyond the edge
    height = height * (1 - water)
    activity = activity * open_land * (0.5 + 0.5 * urban)
    farm = np.clip((1 - urban) * (1 - water) * (1 - park) * (1 - footprint), 0, 1)
    canopy = np.clip(0.3 + 0.15 * canopy_field(x, y), 0, 1)  # street trees, gardens
    green = np.clip(park + (1 - park) * canopy * (1 - 0.6 * footprint) * (1 - farm), 0, 1) * (1 - water)
    out = pd.DataFrame({"footprint": footprint, "height": height, "landuse": landuse,
                        "affluence": affluence, "activity": activity, "green": green,
                        "water": water, "farm": farm})
    return out.clip(0, 1).round(4)


# --- POIs ---
def _poi_rate(lat: pd.DataFrame) -> np.ndarray:
    """Expected POIs per region: shop fronts follow land use and footfall, not floor area."""
    u, t, r, w = (lat[c].to_numpy() for c in ("landuse", "activity", "farm", "water"))
    return (60 * (0.2 + 0.8 * u) * (0.3 + 1.7 * t) * (1 - 0.9 * r) + 1.5 * r) * (1 - w)


def _poi_probs(lat: pd.DataFrame) -> np.ndarray:
    z = np.column_stack([np.ones(len(lat)), lat["landuse"], lat["affluence"] - 0.5, lat["activity"],
                         lat["farm"], lat["green"]])
    return softmax(z @ _POI_COEF.T, axis=1)


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
    """Review-like texts: generic and category words, rich/poor and busy/quiet ones by affluence and activity."""
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
    cat_words = [row[-1].split() for row in _POI_TABLE]
    vocab = [_WORDS.get(g) for g in groups]  # None: the POI's own category words

    def word(i: int, j: int) -> str:
        v = vocab[group[i, j]] or cat_words[cats[i]]
        return v[pick[i, j] % len(v)]

    return ["" if empty[i] else " ".join(word(i, j) for j in range(n_words[i])) for i in range(p)]


# --- homes, jobs, trips and indicators ---
NEAR_CANDIDATES = 120  # nearest regions every origin may send trips to
FAR_CANDIDATES = 120  # plus this many drawn at random from the rest of the city (long-range links)
COMMUTE_DECAY_M = 5000.0  # distance decay of ordinary trips: commuting crosses the city
LINK_DECAY_M = 30000.0  # functional links (centre to centre) barely decay
LINK_WEIGHT = 0.5
RETURN_SHARE = 0.7  # recorded trips whose return is recorded too
KEEP_FLOWS = 40  # largest flows kept per origin in od.csv


def _densities(lat: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per km2: dwellings, residents, jobs and leisure visitors; homes take (1 - landuse) of the floor area."""
    f, h, u, a, t, g, w, r = (lat[c].to_numpy() for c in LATENT_NAMES)
    floor_ratio = f * (1 + 24 * h ** 1.5) * (1 - w)  # floor area per ground area
    dwellings = 0.48e6 * floor_ratio * (1 - u) / (45 + 110 * a)  # 60% of floor area, 45-155 m2 each
    household = 1.5 + 2.0 * (1 - a) ** 2 - 0.3 * t
    return {"dwellings": dwellings, "residents": dwellings * household,
            "jobs": 0.6e6 * floor_ratio * u / 25, "leisure": 3000 * t ** 2 + 800 * g * (1 - r)}


def _trip_ends(lat: pd.DataFrame, area_km2: float) -> tuple[np.ndarray, np.ndarray]:
    """Recorded trips a region produces and attracts per day (before returns): a ride service's,
    taken more with affluence and street life, so trip counts alone do not tell population."""
    d = _densities(lat)
    a, t, w = (lat[c].to_numpy() for c in ("affluence", "activity", "water"))
    rate = 0.12 * np.exp(3.0 * (a - 0.5) + 1.5 * t)
    produced = area_km2 * (d["residents"] * rate + 0.05 * d["jobs"] + 0.3 * d["leisure"]) + 3 * (1 - w)
    attracted = area_km2 * (0.6 * d["jobs"] + d["leisure"]) + 3 * (1 - w)
    return produced, attracted


def _od(ids: list[str], x: np.ndarray, y: np.ndarray, lat: pd.DataFrame, area_km2: float,
        rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Daily trips between regions, and each region's expected outflow and inflow.

    Origin i sends its trips P_i to candidate j in proportion to
    A_j [exp(-d_ij / 5 km) + 0.5 (t_i t_j + u_i u_j) exp(-d_ij / 30 km)]: attraction, a commute
    across the city, and links between alike centres (activity t, landuse u) at any distance.
    Candidates are the nearest regions plus a random sample of the rest, in chunks of origins:
    never an N x N matrix.
    A sampled region that is also near gets no weight, so long-range trips come out somewhat
    rarer than the formula says (kept: fixing it would change every toy city).
    """
    n = len(ids)
    produced, attracted = _trip_ends(lat, area_km2)
    t, u = lat["activity"].to_numpy(), lat["landuse"].to_numpy()
    expected_in = np.zeros(n)
    near = min(n - 1, NEAR_CANDIDATES)
    n_rest = n - 1 - near
    far = FAR_CANDIDATES if n_rest > 0 else 0
    tree = cKDTree(np.column_stack([x, y]))
    id_arr = np.array(ids, dtype=object)
    parts = []
    for start in range(0, n, 4096):
        rows = np.arange(start, min(n, start + 4096))
        _, j_near = tree.query(np.column_stack([x[rows], y[rows]]), k=near + 1)
        j_near = j_near[:, 1:]  # drop the origin itself
        weight = np.ones((len(rows), near + far))
        if far:
            j_far = rng.integers(0, n - 1, (len(rows), far))
            j_far += j_far >= rows[:, None]  # never the origin
            is_near = (j_far[:, :, None] == j_near[:, None, :]).any(2)
            weight[:, near:] = np.where(is_near, 0.0, n_rest / far)  # a sample standing for the rest
            j = np.concatenate([j_near, j_far], axis=1)
        else:
            j = j_near
        dist = np.hypot(x[j] - x[rows, None], y[j] - y[rows, None])
        alike = t[rows, None] * t[j] + u[rows, None] * u[j]
        w = weight * attracted[j] * (np.exp(-dist / COMMUTE_DECAY_M)
                                     + LINK_WEIGHT * alike * np.exp(-dist / LINK_DECAY_M))
        total = w.sum(1, keepdims=True)
        mean = produced[rows, None] * np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        np.add.at(expected_in, j.ravel(), mean.ravel())
        flow = rng.poisson(mean)
        order = np.argsort(-flow, axis=1, kind="stable")[:, :KEEP_FLOWS]
        top, dest = np.take_along_axis(flow, order, 1), np.take_along_axis(j, order, 1)
        r_idx, c_idx = np.nonzero(top >= 1)
        parts.append(pd.DataFrame({ORIGIN: id_arr[rows[r_idx]], DESTINATION: id_arr[dest[r_idx, c_idx]],
                                   FLOW: top[r_idx, c_idx].astype(np.int64)}))
    forward = pd.concat(parts, ignore_index=True)
    back = forward.assign(**{FLOW: rng.binomial(forward[FLOW].to_numpy(), RETURN_SHARE)})
    back = back.rename(columns={ORIGIN: DESTINATION, DESTINATION: ORIGIN})
    od = pd.concat([forward, back[back[FLOW] > 0]], ignore_index=True)
    od = od.groupby([ORIGIN, DESTINATION], sort=True, as_index=False)[FLOW].sum()
    expected_out = produced + RETURN_SHARE * expected_in
    expected_in = expected_in + RETURN_SHARE * produced
    return od[[ORIGIN, DESTINATION, FLOW]], expected_out, expected_in


def _indicator_means(world: pd.DataFrame) -> dict[str, np.ndarray]:
    """The noiseless indicator functions g; the data are ln(1+x) = ln(1+g) + noise.

    ``world`` holds the latents and each region's expected trips (``TRIPS``);
    a, t, g = affluence, activity, green; residents, dwellings, jobs, leisure from
    :func:`_densities`; NP follows the POI rate and MC the expected trips (both inputs)."""
    d = _densities(world)
    a, t, g = (world[c].to_numpy() for c in ("affluence", "activity", "green"))
    poi_rate = _poi_rate(world)
    visitors = (d["jobs"] + d["leisure"]) / 1000
    people = (d["residents"] + d["jobs"] + d["leisure"]) / 1000
    return {
        "PD": d["residents"] + 5,
        "HD": d["dwellings"] + 2,
        "MC": world[TRIPS[0]].to_numpy() + world[TRIPS[1]].to_numpy() + 20,
        "NP": 1.4 * poi_rate + 0.5,
        "NC": (poi_rate + 1) * (1 + visitors) ** 0.5 * np.exp(2.2 * (t - 0.3) + 1.8 * (a - 0.5)),
        "CR": (25 * (people + 0.2) ** 0.6 * np.exp(2.0 * t - 2.2 * (a - 0.5))
               * (1 + 0.8 * g * (1 - a)) + 1),
    }


def _indicators(ids: list[str], means: dict[str, np.ndarray], rng: np.random.Generator
                ) -> tuple[pd.DataFrame, dict[str, float], dict[str, float]]:
    """Noisy indicators, their oracle R2 on ln(1+x) (computed on this city) and noise sd."""
    values, oracle, noise_sd = {}, {}, {}
    for name, g in means.items():
        m = np.log1p(g)
        r2 = _TARGET_R2[name]
        sd = float(m.std() * math.sqrt((1 - r2) / r2))
        x = np.expm1(np.maximum(m + rng.normal(0, sd, len(m)), 0.0))
        x = np.round(x) if name in ("MC", "NP", "NC", "CR") else np.round(x, 1)
        oracle[name] = round(_r2(np.log1p(x), m), 4)
        noise_sd[name] = round(sd, 4)
        values[name] = x
    return pd.DataFrame(values, index=pd.Index(ids, name=REGION_ID)), oracle, noise_sd


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


# --- ceilings ---
CEILING_NEIGHBOURS = 30
CEILING_FOLDS = 5
CEILING_ESTIMATOR = (
    "E[ln(1 + g) | what the modality shows], estimated two ways and the one closer to the noiseless "
    "ln(1 + g) kept per indicator: (a) the mean of ln(1 + g) evaluated at the region's own shown "
    "values and the hidden values of the 30 regions nearest it in the shown values (itself "
    "excluded); (b) a cubic-polynomial ridge of ln(1 + g) on the shown values, cross-fitted over 5 "
    "folds. Both are out-of-sample; from every latent the ceiling is the noiseless function itself")


def _views() -> dict[str, list[str]]:
    """The columns each ceiling conditions on: a modality's latents; for trips, eq. 1's two counts."""
    views = {m: list(TRIPS if m == MOBILITY else cols) for m, cols in MODALITY_LATENTS.items()}
    return {CEILING_ALL: [*LATENT_NAMES, *TRIPS], **views}


def _shown_values(world: pd.DataFrame, shown: list[str]) -> np.ndarray:
    """The shown columns standardised (trip counts on a log scale first)."""
    z = world[shown].to_numpy(dtype=float)
    z = np.where(np.isin(shown, TRIPS), np.log1p(np.maximum(z, 0)), z)
    return standardise_columns(z)


def _neighbour_means(world: pd.DataFrame, shown: list[str]) -> dict[str, np.ndarray]:
    """Estimate (a): ln(1 + g) averaged over the hidden columns of the regions nearest in the
    shown ones, which keeps their dependence on the shown ones. O(N k) rows, never N x N."""
    hidden = [c for c in world.columns if c not in shown]
    n = len(world)
    k = min(CEILING_NEIGHBOURS, n - 1)
    z = _shown_values(world, shown)
    _, nearest = cKDTree(z).query(z, k=k + 1)
    nearest = nearest[:, 1:]  # never the region itself
    mixed = pd.DataFrame({c: np.repeat(world[c].to_numpy(), k) for c in shown})
    for c in hidden:
        mixed[c] = world[c].to_numpy()[nearest.ravel()]
    return {name: np.log1p(g).reshape(n, k).mean(1) for name, g in _indicator_means(mixed).items()}


def _polynomial_means(world: pd.DataFrame, shown: list[str], exact: dict[str, np.ndarray],
                      seed: int) -> dict[str, np.ndarray]:
    """Estimate (b): a cubic-polynomial ridge of ln(1 + g) on the shown values, cross-fitted."""
    z = _shown_values(world, shown)
    out = {name: np.empty(len(world)) for name in exact}
    folds = KFold(min(CEILING_FOLDS, len(world)), shuffle=True, random_state=seed)
    for train, test in folds.split(z):
        for name, m in exact.items():
            model = make_pipeline(PolynomialFeatures(3), StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
            out[name][test] = model.fit(z[train], m[train]).predict(z[test])
    return out


def _ceilings(world: pd.DataFrame, indicators: pd.DataFrame, seed: int
              ) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Every ceiling's prediction per region (``ceilings.csv``, modelled scale) and each
    modality's R2 against the data (``modality_oracle_r2``)."""
    exact = {name: np.log1p(g) for name, g in _indicator_means(world).items()}
    targets = np.log1p(indicators.to_numpy(dtype=float))
    frames, ceilings = [], {}
    for source, shown in _views().items():
        if source == CEILING_ALL:
            pred = exact
        else:
            with threadpool_limits(1):  # many small ridge fits: more BLAS threads only slow them
                first, second = _neighbour_means(world, shown), _polynomial_means(world, shown, exact, seed)
            pred = {name: min(first[name], second[name], key=lambda p: float(((p - m) ** 2).mean()))
                    for name, m in exact.items()}
            ceilings[source] = {name: round(_r2(targets[:, j], pred[name]), 4)
                                for j, name in enumerate(indicators.columns)}
        frames.append(pd.DataFrame(pred, index=indicators.index)[list(indicators.columns)]
                      .assign(**{SOURCE: source}))
    table = pd.concat(frames)
    table.index.name = REGION_ID
    return table[[SOURCE, *indicators.columns]].round(5), ceilings


# --- images ---
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
_FACADES = [(190, 120, 90), (220, 205, 180), (235, 235, 225), (160, 110, 80), (200, 200, 205),
            (175, 185, 200)]


def _satellite(rng: np.random.Generator, s: int, lat: dict, cx: float, cy: float,
               layout: _Layout, side_m: float) -> Image.Image:
    """Top-down view: roofs (cover ~ footprint, size and colour ~ landuse), fields, parks, trees
    and water where they are.  Height, affluence and activity are not drawn (shadows have one length)."""
    b, m, g, f = lat["footprint"], lat["landuse"], lat["green"], lat["farm"]
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

    if b > 0.04:  # road grid: denser where more of the ground is built on
        spacing = max(5.0, s * (0.55 - 0.35 * b) + rng.normal(0, 0.03 * s))
        width = max(1, int(round(s / 45 * (1 + m))))
        road = _jitter(rng, (72, 72, 78), 6)
        starts = {ax: rng.uniform(0, spacing) for ax in "rc"}
        lines = {ax: np.arange(starts[ax], s, spacing).astype(int) for ax in "rc"}
        blocks_r = np.concatenate([[0], lines["r"], [s]])
        blocks_c = np.concatenate([[0], lines["c"], [s]])
        # roofs: many small red houses where residential, few large grey slabs where work places
        for r0, r1 in zip(blocks_r[:-1], blocks_r[1:]):
            for c0, c1 in zip(blocks_c[:-1], blocks_c[1:]):
                h, w = r1 - r0 - width, c1 - c0 - width
                if h < 2 or w < 2:
                    continue
                n_b = rng.poisson(0.5 + 14 * b ** 1.2 * (1 - 0.6 * m))
                for _ in range(n_b):
                    work = rng.random() < m
                    size = (0.3 + 0.6 * rng.random()) if work else rng.uniform(0.15, 0.3)
                    bh = max(1, int(h * rng.uniform(0.6, 1.4) * size))
                    bw = max(1, int(w * rng.uniform(0.6, 1.4) * size))
                    rr0 = r0 + width + int(rng.integers(0, max(1, h - bh + 1)))
                    cc0 = c0 + width + int(rng.integers(0, max(1, w - bw + 1)))
                    pal = _ROOF_WORK if work else _ROOF_HOME
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
    """A street-level view: facade height ~ height, upkeep ~ affluence, people, cars and signs ~
    activity, trees ~ green.  Footprint and landuse are not drawn: a facade looks the same before
    a deep or a shallow block, of offices or of flats."""
    h, a, t, g = lat["height"], lat["affluence"], lat["activity"], lat["green"]
    built_up = lat["footprint"] > 0.04  # a street with houses, or an empty road
    upkeep = float(np.clip(a + rng.normal(0, 0.08), 0, 1))
    img = np.zeros((s, s, 3), np.float32)
    horizon = int(s * rng.uniform(0.58, 0.68))
    top = _jitter(rng, (70, 120, 200) if rng.random() < 0.7 else (150, 155, 165), 10)
    bottom = _jitter(rng, (195, 212, 230), 8)
    frac = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = top * (1 - frac) + bottom * frac
    walk = max(2, int(s * 0.08))
    verge = max(1, int(s * 0.04))
    pavement = _jitter(rng, np.array((110, 104, 96)) + 80 * upkeep, 8)  # grimy to clean
    _box(img, horizon - 1, horizon + walk, 0, s, pavement)
    grass = rng.random() < g  # a green verge between pavement and road
    _box(img, horizon + walk, horizon + walk + verge, 0, s,
         _jitter(rng, (80, 140, 60), 8) if grass else pavement * 0.9)
    _box(img, horizon + walk + verge, s, 0, s, _jitter(rng, (85, 85, 90), 6))
    lane = int((horizon + walk + verge + s) / 2)
    for c in range(int(rng.integers(0, 6)), s, 10):
        _box(img, lane, lane + 1, c, c + 5, (220, 220, 200))

    # facades, left to right: height ~ floors, upkeep ~ affluence
    c = -int(rng.integers(0, max(1, s // 6)))
    while c < s:
        fw = max(3, int(s * rng.uniform(0.15, 0.4)))
        if rng.random() < (0.9 if built_up else 0.12):
            height = s * np.clip(0.07 + 0.5 * h + rng.normal(0, 0.05), 0.05, 0.6)
            top_r = max(1, int(horizon - height))
            base = np.asarray(_FACADES[int(rng.integers(0, len(_FACADES)))], np.float32)
            drab = np.array((95, 88, 80), np.float32)  # dark, grey-brown: neglected plaster
            color = _jitter(rng, drab + (base - drab) * upkeep, 10)
            _box(img, top_r, horizon, c, c + fw - 1, color)
            pr = pc = max(3, int(s * 0.07))
            r0, r1, c0, c1 = top_r + 1, horizon - 2, max(0, c + 1), min(s, c + fw - 2)
            if r1 > r0 and c1 > c0:
                rr, cc = np.ogrid[r0:r1, c0:c1]
                mask = ((rr - r0) % pr < pr // 2) & ((cc - c0) % pc < pc // 2)
                img[r0:r1, c0:c1][mask] = _jitter(rng, (80, 90, 110), 10)
                boarded = mask & (rng.random(mask.shape) < 0.7 * (1 - upkeep) ** 1.5)
                img[r0:r1, c0:c1][boarded] = _jitter(rng, (125, 95, 55), 8)
                for _ in range(rng.poisson(5 * (1 - upkeep) ** 2)):  # stains
                    _disc(img, rng.uniform(r0, r1), rng.uniform(c0, c1), rng.uniform(1.5, 3) * s / 64,
                          color * 0.5)
                low = min(max(r0, horizon - 0.15 * s), r1)
                for _ in range(rng.poisson(3 * (1 - upkeep) ** 2)):  # sprayed tags low on the wall
                    gr = int(rng.uniform(low, r1))
                    gc = int(rng.uniform(c0, c1))
                    _box(img, gr, gr + max(1, s // 40), gc, gc + max(2, s // 10), _jitter(rng, rng.uniform(40, 255, 3), 5))
            if rng.random() < 1.3 * t - 0.1:  # a lit shop sign at ground-floor level
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

    for _ in range(min(10, rng.poisson(9 * g))):  # street trees
        tc = rng.uniform(0, s)
        trunk_h = s * rng.uniform(0.1, 0.16)
        _box(img, horizon + walk - trunk_h, horizon + walk, tc - max(1, s / 64), tc + max(1, s / 64),
             (90, 60, 40))
        _disc(img, horizon + walk - trunk_h, tc, s * rng.uniform(0.07, 0.11),
              _jitter(rng, (50, 110, 50), 12))
    for _ in range(min(10, rng.poisson(8 * t))):  # cars on the road
        cw = max(3, int(s * rng.uniform(0.14, 0.2)))
        ch = max(2, int(s * 0.07))
        road_top = horizon + walk + verge + 1
        cr = int(rng.uniform(road_top, max(road_top, s - ch - 1)))
        cc0 = int(rng.uniform(-cw / 2, s - cw / 2))
        _box(img, cr, cr + ch, cc0, cc0 + cw, _jitter(rng, rng.uniform(30, 230, 3), 5))
        _box(img, cr + ch, cr + ch + 1, cc0 + 1, cc0 + 3, (20, 20, 20))
        _box(img, cr + ch, cr + ch + 1, cc0 + cw - 3, cc0 + cw - 1, (20, 20, 20))
    for _ in range(min(30, rng.poisson(22 * t))):  # people on the pavement
        pc = rng.uniform(0, s)
        foot = horizon + walk * rng.uniform(0.3, 1.0)
        ph = max(4, int(s * rng.uniform(0.09, 0.14)))
        _box(img, foot - ph, foot, pc, pc + max(2, s // 30), _jitter(rng, rng.uniform(20, 200, 3), 5))
        _disc(img, foot - ph - max(1, s / 60), pc + max(1, s / 60), max(1.0, s / 50), (220, 180, 150))
    for _ in range(rng.poisson(20 * (1 - upkeep) ** 2)):  # litter on the pavement
        lr = int(rng.uniform(horizon, horizon + walk))
        lc = int(rng.uniform(0, s))
        _box(img, lr, lr + 2, lc, lc + 2, _jitter(rng, (50, 45, 40), 20))
    return _finish(img, rng)


# --- the city ---
def _check_args(n_regions, seed, image_size) -> None:
    if not isinstance(n_regions, (int, np.integer)) or n_regions < 7:
        raise ValueError(f"n_regions must be an integer >= 7 (one ring of hexagons), got {n_regions!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16 pixels, got {image_size!r}")


def _generator_info(path: Path) -> dict | None:
    try:
        raw = yaml.safe_load((path / CITY_YAML).read_text()) or {}
        info = raw.get("generator", {})
        return info if info.get("name") == GENERATOR_NAME else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def is_current_toy_city(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a toy city of this generator version (else the named city
    ``toy`` is made again rather than silently reused)."""
    info = _generator_info(Path(path))
    return info is not None and info.get("version") == GENERATOR_VERSION


def make_toy_city(out_dir: str | os.PathLike, n_regions: int = TOY_DEFAULT_REGIONS, seed: int = 0,
                  image_size: int = 64, progress: bool = True) -> Path:
    """Write the toy city to ``out_dir`` and return it; same arguments, same bytes.

    About 2% of regions get no satellite image on purpose, to exercise that path.  The folder is
    built beside ``out_dir`` and moved into place, so an interrupted run never leaves half a city;
    an existing toy city at ``out_dir`` is replaced, any other non-empty folder raises.
    """
    _check_args(n_regions, seed, image_size)
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _generator_info(out) is not None)):
        raise FileExistsError(f"{out} exists and is not a toy city made by {GENERATOR_NAME}; "
                              "choose an empty or new folder (it is not overwritten)")
    with folder_built_beside(out) as tmp:
        _write(tmp, int(n_regions), int(seed), int(image_size), progress)
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

    regions = cell_table(ids)
    pois = _pois(ids, lat, stream(3))
    od, expected_out, expected_in = _od(ids, x, y, lat, area_km2, stream(4))
    mobility = inflow_outflow(od).reindex(lat.index, fill_value=0.0).astype(np.int64)
    world = lat.assign(**{TRIPS[0]: expected_out, TRIPS[1]: expected_in})
    indicators, oracle, noise_sd = _indicators(ids, _indicator_means(world), stream(5))
    ceilings, modality_oracle = _ceilings(world, indicators, seed)

    # images: one satellite (except ~2% left out on purpose) and 1-6 street views per region
    plan = stream(6)
    n_missing = int(round(MISSING_SATELLITE_FRACTION * n))
    no_sat = set(plan.permutation(n)[:n_missing].tolist())
    busy = lat["activity"].to_numpy()  # busy streets are photographed more
    n_sv = np.clip(np.round(1.5 + 4 * busy + plan.normal(0, 0.6, n)), 1, 6).astype(int)
    (root / "images" / SATELLITE).mkdir(parents=True)
    (root / "images" / STREETVIEW).mkdir(parents=True)
    rows = []
    records = lat.to_dict("records")
    # disable=None: a bar on a terminal, none where stderr is not one (a notebook, a log)
    for i in tqdm(range(n), desc="toy city images", unit="region", disable=None if progress else True):
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
        hexagon_size_m=hexagon_size_m(ids),  # the cells' own size; edge_m (H3's average) only scales the drawing
        provenance=(f"Generated by {GENERATOR_NAME} (musecl.datasets.toy.make_toy_city, generator "
                    f"version {GENERATOR_VERSION}) with {args}. A fictional city on H3 resolution-8 "
                    "hexagons around Null Island (0 N, 0 E, open sea): no real place or person."),
        max_missing_satellite=0.1, oracle_r2=oracle, latents=dict(LATENTS),
        modality_latents={k: list(v) for k, v in MODALITY_LATENTS.items()},
        modality_oracle_r2=modality_oracle,
        extra={"generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "n_regions": n,
                             "seed": seed, "image_size": image_size, "h3_resolution": H3_RESOLUTION,
                             "noise_sd_log1p": noise_sd, "target_oracle_r2": dict(_TARGET_R2),
                             "ceiling_estimator": CEILING_ESTIMATOR,
                             "regions_without_satellite": n_missing,
                             "landmarks": layout.landmarks_lonlat()}},
    )
    write_city(root, meta, regions, indicators, images=images, pois=pois, mobility=mobility, od=od,
               latents=lat, ceilings=ceilings)
