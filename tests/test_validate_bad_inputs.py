"""Nothing silent: each bad input, one small change to a valid city, is a Problem naming the file
and the row, column or key -- never a traceback, a hang or a silent pass."""
from __future__ import annotations

import io
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from musecl.city import MIN_REGIONS, CityFormatError, load_city, validate_city
from musecl.datasets.toy import make_toy_city

N_REGIONS = MIN_REGIONS + 5


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = make_toy_city(tmp_path_factory.mktemp("base") / "toy", n_regions=N_REGIONS, seed=0, image_size=16,
                         progress=False)
    assert validate_city(root) == []
    return root


@pytest.fixture()
def city(base, tmp_path) -> Path:
    """A fresh copy of the valid city; ``tmp_path / "outside.png"`` is a readable image beside it."""
    root = tmp_path / "city"
    shutil.copytree(base, root)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "outside.png")
    return root


def first(root: Path, file: str, col: str) -> str:
    return str(pd.read_csv(root / file, dtype=str, keep_default_na=False)[col].iloc[0])


def names(root: Path) -> dict[str, str]:
    """What expected messages refer to: the first region, satellite image path and latent."""
    return {"rid": first(root, "regions.csv", "region_id"), "origin": first(root, "od.csv", "origin"),
            "sat": first(root, "images.csv", "path"),
            "latent": pd.read_csv(root / "latents.csv", nrows=0).columns[1]}


# -- mutations: each is called as mutate(root, fill); fill() puts the city's real names into
# templates such as "{sat}" (the first satellite image) or "{rid}" (the first region)

def in_yaml(fn):
    def mutate(root: Path, fill=str) -> None:
        path = root / "city.yaml"
        raw = yaml.safe_load(path.read_text())
        fn(raw)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return mutate


def set_key(*keys_and_value):
    *keys, value = keys_and_value

    def fn(raw):
        for k in keys[:-1]:
            raw = raw[k]
        raw[keys[-1]] = value
    return in_yaml(fn)


def drop_key(key):
    return in_yaml(lambda raw: raw.pop(key))


def set_cell(file: str, col: str, text: str, row: int = 0):
    """Write ``text`` into a cell exactly as a person would type it in a spreadsheet."""
    def mutate(root: Path, fill=str) -> None:
        df = pd.read_csv(root / file, dtype=str, keep_default_na=False)
        df.loc[row, fill(col)] = fill(text)
        df.to_csv(root / file, index=False)
    return mutate


def set_column(file: str, col: str, text: str):
    """Write ``text`` into every cell of a column."""
    def mutate(root: Path, fill=str) -> None:
        df = pd.read_csv(root / file, dtype=str, keep_default_na=False)
        df[col] = text
        df.to_csv(root / file, index=False)
    return mutate


def keep_rows(file: str, n: int):
    def mutate(root: Path, fill=str) -> None:
        pd.read_csv(root / file, dtype=str, keep_default_na=False).iloc[:n].to_csv(root / file, index=False)
    return mutate


def yaml_text(edit):
    """Edit city.yaml as text (what yaml.safe_dump cannot write, e.g. a key given twice)."""
    def mutate(root: Path, fill=str) -> None:
        path = root / "city.yaml"
        path.write_text(edit(path.read_text()))
    return mutate


def both(*mutations):
    def mutate(root: Path, fill=str) -> None:
        for m in mutations:
            m(root, fill)
    return mutate


def write_bytes(rel: str, data: bytes):
    def mutate(root: Path, fill=str) -> None:
        path = root / fill(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return mutate


def sat_path(rel: str):
    """Point the first image row at ``rel`` (as typed; may be absolute or climb out)."""
    return set_cell("images.csv", "path", rel)


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data[: int(len(data) * 0.6)]  # header intact, so PIL's verify() passes; decoding fails


def sixteen_bit_png() -> bytes:
    """A 16-bit greyscale PNG (PIL mode I;16), as satellite tiles often come: values above 255."""
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size (a decompression bomb needs no more to be refused)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def fifo(rel: str):
    def mutate(root: Path, fill=str) -> None:
        (root / rel).unlink(missing_ok=True)
        os.mkfifo(root / rel)
    return mutate


def folder(rel: str):
    def mutate(root: Path, fill=str) -> None:
        (root / rel).unlink(missing_ok=True)
        (root / rel).mkdir(parents=True)
    return mutate


BOWTIE = "POLYGON ((0 0, 0.004 0.004, 0.004 0, 0 0.004, 0 0))"
needs_fifo = [pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here"),
              pytest.mark.timeout(60)]  # the old validator blocked forever on a FIFO

CASES = [
    # city.yaml: format_version
    ("version-99", set_key("format_version", 99),
     "city.yaml (format_version): format_version 99 is not supported: this musecl reads format_version 1"),
    ("version-text", set_key("format_version", "banana"),
     "city.yaml (format_version): must be the whole number 1, got 'banana' (text)"),
    ("version-bool", set_key("format_version", True), "(format_version): must be the whole number 1, got True"),
    ("version-missing", drop_key("format_version"),
     "city.yaml (format_version): required key is missing: add the line `format_version: 1`"),
    # city.yaml: typed indicator metadata
    ("allow-missing-text", set_key("indicators", "PD", "allow_missing", "no"),
     "city.yaml (indicators.PD.allow_missing): must be true or false (a YAML boolean, unquoted), got 'no' (text)"),
    ("log-text", set_key("indicators", "HD", "log", "false"),
     "city.yaml (indicators.HD.log): must be true or false (a YAML boolean, unquoted), got 'false' (text)"),
    ("allow-negative-number", set_key("indicators", "CR", "allow_negative", 1),
     "city.yaml (indicators.CR.allow_negative): must be true or false (a YAML boolean, unquoted), got 1 (a number)"),
    ("indicator-not-mapping", set_key("indicators", "CR", 5),
     "city.yaml (indicators.CR): must be a mapping of the indicator's metadata"),
    ("indicator-unknown-key", set_key("indicators", "CR", "colour", "red"),
     "city.yaml (indicators.CR): unknown key(s) ['colour']"),
    ("long-name-list", set_key("indicators", "PD", "long_name", ["a", "b"]),
     "city.yaml (indicators.PD.long_name): must be text, got ['a', 'b'] (a list)"),
    # city.yaml: other typed keys
    ("max-missing-text", set_key("max_missing_satellite", "lots"),
     "city.yaml (max_missing_satellite): must be a number from 0 to 1"),
    ("max-missing-above-1", set_key("max_missing_satellite", 1.5),
     "city.yaml (max_missing_satellite): must be a number from 0 to 1 (the fraction of regions allowed without a "
     "satellite image), got 1.5"),
    ("modalities-text", set_key("modalities", "poi"),
     "city.yaml (modalities): must be a list such as [satellite, poi]"),
    ("modalities-twice", set_key("modalities", ["poi", "poi"]), "city.yaml (modalities): 'poi' is listed twice"),
    ("hexagon-negative", set_key("hexagon_size_m", -5), "city.yaml (hexagon_size_m): must be a positive number"),
    ("oracle-r2-text", set_key("oracle_r2", "PD", "high"), "city.yaml (oracle_r2.PD): must be a number (an R2)"),
    ("name-null", set_key("name", None), "city.yaml (name): must be the city's name as text, got None"),
    ("yaml-not-utf8", write_bytes("city.yaml", b"name: \xff\xfe\n"), "city.yaml: is not UTF-8 text"),
    # city.yaml: a key given twice (PyYAML would keep the last value without a word)
    ("yaml-duplicate-key", yaml_text(lambda text: text + "name: Elsewhere\n"),
     "city.yaml (line {yaml_end}): key 'name' is given twice in one mapping (lines {name_line} and {yaml_end})"),
    ("yaml-duplicate-nested-key", yaml_text(lambda text: text.replace("\n  PD:\n", "\n  PD:\n    unit: people\n", 1)),
     "city.yaml (line {unit_line}): key 'unit' is given twice in one mapping (lines {pd_next} and {unit_line})"),
    ("yaml-is-folder", folder("city.yaml"), "city.yaml: is a folder, not a file"),
    # finite numbers everywhere
    ("indicator-inf", set_cell("indicators.csv", "PD", "inf"),
     "indicators.csv (row 2, region '{rid}', column PD): value inf is not a finite number"),
    ("indicator-Infinity", set_cell("indicators.csv", "HD", "Infinity", row=3),
     "(row 5, region '{rid4}', column HD): value inf is not a finite number"),
    ("indicator-minus-inf", set_cell("indicators.csv", "CR", "-inf"),
     "indicators.csv (row 2, region '{rid}', column CR): value -inf is not a finite number"),
    ("indicator-log-below-minus-1", both(set_key("indicators", "CR", "allow_negative", True),
                                         set_cell("indicators.csv", "CR", "-3")),
     "indicators.csv (row 2, region '{rid}', column CR): value -3.0 is -1 or less, where ln(1 + x) (log: true)"),
    # exactly -1: ln(1 + x) = -inf, as undefined for the probes as below -1
    ("indicator-log-exactly-minus-1", both(set_key("indicators", "CR", "allow_negative", True),
                                           set_cell("indicators.csv", "CR", "-1")),
     "indicators.csv (row 2, region '{rid}', column CR): value -1.0 is -1 or less, where ln(1 + x) (log: true)"),
    # an indicator the probes can learn (a run failed on these, naming no indicator)
    ("indicator-constant", set_column("indicators.csv", "CR", "5"),
     "indicators.csv (column CR): is 5 for every region that has a value: there is nothing to predict"),
    ("indicator-two-values", both(set_key("indicators", "HD", "allow_missing", True),
                                  set_column("indicators.csv", "HD", ""), set_cell("indicators.csv", "HD", "4"),
                                  set_cell("indicators.csv", "HD", "7", row=1)),
     f"indicators.csv (column HD): has a value for 2 of {N_REGIONS} regions; an indicator needs at least 5"),
    ("mobility-inf", set_cell("mobility.csv", "inflow", "inf"),
     "mobility.csv (row 2, region '{rid}', column inflow): value inf is not a finite number"),
    ("od-Infinity", set_cell("od.csv", "flow", "Infinity"),
     "od.csv (row 2, region '{origin}', column flow): value inf is not a finite number"),
    ("od-all-zero", set_column("od.csv", "flow", "0"),
     "od.csv (flow): every value is 0: the trips give nothing to tell regions apart by"),
    ("mobility-all-zero", both(set_column("mobility.csv", "inflow", "0"), set_column("mobility.csv", "outflow", "0")),
     "mobility.csv (inflow, outflow): every value is 0"),
    ("lon-inf", set_cell("regions.csv", "lon", "inf"), "regions.csv (row 2): lon inf is not a number in [-180, 180]"),
    ("lat-minus-inf", set_cell("regions.csv", "lat", "-Infinity"),
     "regions.csv (row 2): lat -inf is not a number in [-90, 90]"),
    ("latent-inf", set_cell("latents.csv", "{latent}", "inf"),
     "latents.csv (row 2, region '{rid}', column {latent}): value inf is not a finite number"),
    ("ceiling-inf", set_cell("ceilings.csv", "PD", "inf"),
     "ceilings.csv (row 2, region '{rid}', column PD): value inf"),
    # polygons
    ("self-intersecting", set_cell("regions.csv", "geometry", BOWTIE),
     "regions.csv (row 2, region '{rid}'): geometry is not a valid polygon: Self-intersection"),
    ("unclosed-ring", set_cell("regions.csv", "geometry", "POLYGON ((0 0, 1 0, 1 1, 0 1))"),
     "regions.csv (row 2, region '{rid}'): geometry is not a polygon in WKT"),
    ("polygon-empty", set_cell("regions.csv", "geometry", "POLYGON EMPTY"),
     "regions.csv (row 2, region '{rid}'): geometry is empty (POLYGON EMPTY)"),
    ("geometry-blank", set_cell("regions.csv", "geometry", ""),
     "regions.csv (row 2, region '{rid}'): geometry is empty; give a WKT POLYGON"),
    # images: decoded in full, size-limited, inside the folder, regular files
    ("truncated-jpeg", both(write_bytes("images/satellite/cut.jpg", truncated_jpeg()),
                            sat_path("images/satellite/cut.jpg")),
     "'images/satellite/cut.jpg': is not a readable image (OSError: image file is truncated"),
    ("truncated-png", lambda root, fill: (root / fill("{sat}")).write_bytes((root / fill("{sat}")).read_bytes()[:80]),
     "images.csv (row 2, region '{rid}'): '{sat}': is not a readable image"),
    # converted to RGB, every value above 255 became white: the run saw flat images, said nothing
    ("sixteen-bit-png", write_bytes("{sat}", sixteen_bit_png()),
     "images.csv (row 2, region '{rid}'): '{sat}': has I;16 pixels (16-bit or floating point)"),
    ("decompression-bomb", write_bytes("{sat}", png_header(20_000, 20_000)),
     "'{sat}': is too large to decode (Image size (400000000 pixels) exceeds limit"),
    ("over-pixel-limit", write_bytes("{sat}", png_header(10_000, 10_000)),
     "'{sat}': is 10000 x 10000 = 100,000,000 pixels, more than the 89,478,485 an image may have"),
    ("absolute-path", sat_path("{outside}"),
     "images.csv (row 2, region '{rid}'): '{outside}': is an absolute path; give the path relative to the city folder"),
    ("dot-dot", sat_path("../outside.png"), "'../outside.png': points outside the city folder ('..')"),
    ("dot-dot-inside", sat_path("images/../../outside.png"),
     "'images/../../outside.png': points outside the city folder"),
    pytest.param("image-fifo", both(fifo("images/satellite/pipe.png"), sat_path("images/satellite/pipe.png")),
                 "'images/satellite/pipe.png': is not a regular file (a named pipe, socket or device)",
                 marks=needs_fifo, id="image-fifo"),
    ("image-folder", sat_path("images"), "images.csv (row 2, region '{rid}'): 'images': is a folder, not a file"),
    ("image-path-empty", sat_path(""), "images.csv (row 2, region '{rid}'): path is empty"),
    pytest.param("regions-fifo", fifo("regions.csv"), "regions.csv: is not a regular file (a named pipe",
                 marks=needs_fifo, id="regions-fifo"),
    # regions: enough of them, ids without stray spaces
    ("too-few-regions", keep_rows("regions.csv", MIN_REGIONS - 1),
     f"regions.csv: has {MIN_REGIONS - 1} region(s); musecl needs at least {MIN_REGIONS} (MIN_REGIONS)"),
    ("one-region", keep_rows("regions.csv", 1), f"regions.csv: has 1 region(s); musecl needs at least {MIN_REGIONS}"),
    ("blank-region-id", set_cell("regions.csv", "region_id", "   "),
     "regions.csv (row 2): region_id '   ' is blank (only spaces)"),
    ("padded-region-id", set_cell("regions.csv", "region_id", " {rid}"),
     "regions.csv (row 2): region_id ' {rid}' has leading or trailing spaces"),
]


def text_edit(file: str, edit):
    """Edit a CSV as text, as a spreadsheet export would have written it."""
    def mutate(root: Path, fill=str) -> None:
        path = root / file
        path.write_bytes(edit(path.read_bytes().decode()).encode("utf-8") if callable(edit) else edit)
    return mutate


def column_first(file: str, col: str):
    def mutate(root: Path, fill=str) -> None:
        df = pd.read_csv(root / file, dtype=str, keep_default_na=False)
        df[[col, *[c for c in df.columns if c != col]]].to_csv(root / file, index=False)
    return mutate


# what spreadsheets and other countries do to a CSV: named, with what to do
CASES += [
    # a "Text" column was read as no text at all, without a word
    ("text-column-case", text_edit("pois.csv", lambda t: t.replace("text", "Text", 1)),
     "pois.csv (header): column 'Text' should be named 'text' (names are exact: case and spaces count)"),
    ("region-id-column-space", text_edit("mobility.csv", lambda t: " " + t),
     "mobility.csv (header): column ' region_id' should be named 'region_id'"),
    ("semicolons", text_edit("mobility.csv", lambda t: t.replace(",", ";")),
     "the values are separated by ';' or tabs (a spreadsheet's regional setting): save it as comma-separated CSV"),
    ("excel-sep-line", text_edit("mobility.csv", lambda t: "sep=,\n" + t),
     "the first line 'sep=...' is a spreadsheet's note: delete it"),
    ("not-utf-8", text_edit("pois.csv", "region_id,category,text\nx,caf\xe9,\n".encode("latin-1")),
     "pois.csv: is not UTF-8 text (unexpected end of data); save it as CSV UTF-8"),
    ("saved-row-index", lambda root, fill: pd.read_csv(root / "indicators.csv", dtype=str, keep_default_na=False)
     .to_csv(root / "indicators.csv"),
     "indicators.csv (column Unnamed: 0): has no header (a saved row index, or a stray value beside the table)"),
    # the message named the value of the first column as the region
    ("region-id-not-first", both(column_first("indicators.csv", "PD"), set_cell("indicators.csv", "PD", "abc")),
     "indicators.csv (row 2, region '{rid}', column PD): 'abc' is not a number"),
    ("id-case-changed", set_cell("indicators.csv", "region_id", "{RID}"),
     "region_id '{RID}' is not a region in regions.csv (did you mean '{rid}'? a spreadsheet may have changed the id"),
    ("windows-path", set_cell("images.csv", "path", "{sat_windows}"),
     "'{sat_windows}': image file is missing: the path uses '\\' (Windows); write it with '/'"),
]


def _id(case) -> str:
    return case.id if hasattr(case, "id") else case[0]


@pytest.mark.parametrize("name, mutate, expected", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_a_named_problem(city, name, mutate, expected):
    words = names(city)
    words["rid4"] = pd.read_csv(city / "regions.csv", dtype=str)["region_id"].iloc[3]
    words["outside"] = str(city.parent / "outside.png")
    words["RID"], words["sat_windows"] = words["rid"].upper(), words["sat"].replace("/", "\\")
    lines = (city / "city.yaml").read_text().splitlines()
    words["name_line"] = 1 + next(i for i, line in enumerate(lines) if line.startswith("name:"))
    words["yaml_end"] = len(lines) + 1
    pd_line = next(i for i, line in enumerate(lines) if line == "  PD:")  # 0-based: "unit" is added after it
    words["pd_next"] = pd_line + 2
    words["unit_line"] = 2 + next(i for i in range(pd_line + 1, len(lines)) if lines[i].startswith("    unit:"))
    fill = lambda text: text.format(**words)  # noqa: E731
    mutate(city, fill)
    problems = validate_city(city)  # must return, not raise
    text = "\n".join(str(p) for p in problems)
    assert fill(expected) in text, f"{name}: expected {fill(expected)!r} among:\n{text}"


# -- around the table ---------------------------------------------------------------------------

def test_what_spreadsheets_leave_at_the_edges_is_read_as_the_table(city):
    """Rows that end with a separator the header lacks (every value moved one column left, into
    the wrong region), and empty rows and columns after the table, are read as the table itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = load_city(city)
    path = city / "indicators.csv"
    lines = path.read_text().splitlines()
    n = lines[0].count(",")
    path.write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]] + ["," * (n + 1)] * 2) + "\n")
    pois = city / "pois.csv"
    rows = pois.read_text().splitlines()
    pois.write_text("\n".join([rows[0] + ","] + [row + "," for row in rows[1:]]) + "\n")
    assert validate_city(city) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after = load_city(city)
    pd.testing.assert_frame_equal(after.indicators, before.indicators)
    pd.testing.assert_frame_equal(after.pois, before.pois)


def test_words_that_look_missing_stay_words(city):
    """A POI named "None" and a category "NA" (North American food, an abbreviation) were read as
    missing: the text became empty, the category "empty"."""
    pois = pd.read_csv(city / "pois.csv", dtype=str, keep_default_na=False)
    pois.loc[0, "category"], pois.loc[0, "text"] = "NA", "None"
    pois.to_csv(city / "pois.csv", index=False)
    assert validate_city(city) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_city(city).pois
    assert (loaded["category"].iloc[0], loaded["text"].iloc[0]) == ("NA", "None")


def test_one_category_typed_several_ways_is_counted_once(city):
    """"Cafe", "cafe " and "cafe": the text vocabulary (eq. 7) merged them, the POI counts of eq. 3
    (similarity, triplets, Pretext features) counted them apart. One category now, said once."""
    pois = pd.read_csv(city / "pois.csv", dtype=str, keep_default_na=False)
    first = pois["category"].iloc[0]
    same = pois.index[pois["category"] == first]
    pois.loc[same[:2], "category"] = first.upper()
    pois.loc[same[2:3], "category"] = f" {first}  "
    pois.to_csv(city / "pois.csv", index=False)
    assert validate_city(city) == []
    with pytest.warns(UserWarning, match=rf"pois.csv writes 1 POI category in more than one way .*: "
                                         rf"'{first}' = '{first.upper()}' = ' {first}  '"):
        loaded = load_city(city)
    counts = loaded.poi_counts()
    assert first in counts.columns and first.upper() not in counts.columns
    assert counts[first].sum() == len(same)  # every spelling counted under the most common one



def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_load_city_raises_the_same_problems(city):
    set_key("indicators", "PD", "allow_missing", "no")(city)
    set_cell("mobility.csv", "inflow", "inf")(city)
    with pytest.raises(CityFormatError) as err:
        load_city(city)
    assert "city.yaml (indicators.PD.allow_missing): must be true or false" in str(err.value)
    assert "value inf is not a finite number" in str(err.value)


ID_COLUMNS = {"regions.csv": ["region_id"], "images.csv": ["region_id"], "pois.csv": ["region_id"],
              "mobility.csv": ["region_id"], "indicators.csv": ["region_id"], "latents.csv": ["region_id"],
              "ceilings.csv": ["region_id"], "od.csv": ["origin", "destination"]}


def shrink(root: Path, n: int) -> None:
    """Keep the first ``n`` regions, in every file."""
    keep = set(pd.read_csv(root / "regions.csv", dtype=str)["region_id"].iloc[:n])
    for file, cols in ID_COLUMNS.items():
        df = pd.read_csv(root / file, dtype={c: str for c in cols})
        df[df[cols].isin(keep).all(axis=1)].to_csv(root / file, index=False)


def rename_regions(root: Path, new: dict[str, str]) -> None:
    """Rename regions in every file, cells written as a person types them."""
    for file, cols in ID_COLUMNS.items():
        df = pd.read_csv(root / file, dtype=str, keep_default_na=False)
        df[cols] = df[cols].replace(new)
        df.to_csv(root / file, index=False)


LOOK_MISSING = ["NA", "null", "None", "nan", "NaN", "N/A"]  # what pandas reads as missing by default


def test_ids_that_look_missing_stay_ids(city):
    """A region called "NA" or "null" is a region in every id column of every file, never a missing
    value (which would make its rows vanish, or be reported as empty ids)."""
    od = pd.read_csv(city / "od.csv", dtype=str)
    chosen = [od["origin"].iloc[0], od["destination"].iloc[0]]  # so that od.csv has renamed ids in both columns
    chosen += [r for r in pd.read_csv(city / "regions.csv", dtype=str)["region_id"] if r not in chosen]
    new = dict(zip(chosen, LOOK_MISSING))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small city's regions without images or mobility
        before = load_city(city)
        rename_regions(city, new)
        assert validate_city(city) == []
        after = load_city(city)
    assert set(LOOK_MISSING) <= set(after.region_ids)
    renamed = lambda ids: [new.get(i, i) for i in ids]  # noqa: E731
    assert list(after.regions.index) == renamed(before.regions.index)
    pd.testing.assert_frame_equal(after.indicators, before.indicators.rename(index=new))
    pd.testing.assert_frame_equal(after.mobility, before.mobility.rename(index=new))
    pd.testing.assert_frame_equal(after.latents, before.latents.rename(index=new))
    for name, col in (("pois", "region_id"), ("images", "region_id"), ("ceilings", "region_id"), ("od", "origin"),
                      ("od", "destination")):
        assert list(getattr(after, name)[col]) == renamed(getattr(before, name)[col]), (name, col)
    assert after.poi_counts().loc["NA"].sum() == before.poi_counts().loc[chosen[0]].sum()


def test_too_few_regions_is_a_warning_for_load_city(city):
    """validate_city (musecl validate, build_city) refuses a city below MIN_REGIONS; load_city
    still reads it, e.g. for a map, and says why the pipeline cannot run on it."""
    shrink(city, MIN_REGIONS)
    assert validate_city(city) == []
    shrink(city, MIN_REGIONS - 1)
    assert [str(p) for p in validate_city(city)] == [
        f"regions.csv: has {MIN_REGIONS - 1} region(s); musecl needs at least {MIN_REGIONS} (MIN_REGIONS): triplets "
        f"draw 3 distinct regions and the probes' 60/20/20 split needs {MIN_REGIONS} to leave 2 test regions for R2"]
    with pytest.warns(UserWarning, match=f"has {MIN_REGIONS - 1} region"):
        loaded = load_city(city)
    assert len(loaded) == MIN_REGIONS - 1


def test_a_run_refuses_a_city_below_min_regions_before_any_work(city, tmp_path, capsys):
    """load_city only warns; `musecl run` and runner.run stop at once with one line naming the file
    and MIN_REGIONS (said once: the warning is not repeated), and make no output folder."""
    from musecl import cli
    from musecl.city import TooFewRegionsError, TooFewRegionsWarning
    from musecl.runner import run

    shrink(city, MIN_REGIONS - 1)
    out = tmp_path / "out"
    expected = f"regions.csv: has {MIN_REGIONS - 1} region(s); musecl needs at least {MIN_REGIONS} (MIN_REGIONS)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TooFewRegionsWarning)
        with pytest.raises(TooFewRegionsError) as caught:
            run(city, out, methods=["Location kNN"], progress=False)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not out.exists()

    code = cli.main(["run", str(city), "--out", str(out), "--methods", "Location kNN"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1 and expected in err
    assert not out.exists()


def test_an_image_spoiled_after_a_check_is_caught_again(city):
    """Decoded images are remembered per process by inode, size and times: a changed file is checked again."""
    assert validate_city(city) == []
    sat = names(city)["sat"]
    (city / sat).write_bytes((city / sat).read_bytes()[:80])
    assert f"'{sat}': is not a readable image" in "\n".join(map(str, validate_city(city)))


def test_a_symlink_inside_the_folder_may_point_elsewhere(city):
    """from_raw.build_city(copy_images=False) links images in: the path as written stays inside."""
    sat = names(city)["sat"]
    (city / sat).unlink()
    (city / sat).symlink_to(city.parent / "outside.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_city(city) == []
