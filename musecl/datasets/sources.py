"""Where the real data sets' raw files come from, and how to get each one safely.

``registry.csv`` (shipped with the package) lists every raw file of the real cities: its path in
the data directory, size, sha256, and the public repository, commit and path it was copied from.
:func:`locate` looks in the data directory (``$MUSECL_DATA_DIR``, else ``../shared/data`` beside
the repository), then the download cache (``$MUSECL_CACHE``, else pooch's per-user cache), then
downloads from ``raw.githubusercontent.com`` at the recorded commit (when ``download`` is on and
``$MUSECL_OFFLINE`` is not set). A copy whose sha256 differs raises :class:`ChecksumError` and is
never read. Files the registry marks converted or downscaled cannot be fetched byte for byte:
they come only from a data directory. Nothing is ever unpickled.
"""
from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import pandas as pd
from tqdm import tqdm

from musecl.datasets.published import data_dir as default_data_dir
from musecl.io import sha256_of

DATASETS = {
    "beijing": "beijing/",      # the MuseCL paper's Beijing labels and its 15 image regions
    "manhattan": "manhattan/",  # the Manhattan-180 benchmark (MVURE / MGFN / HREP)
    "naip": "fixtures/tile2vec_naip/",  # 60 real NAIP tiles, for testing image code
}
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
DOWNLOAD_TIMEOUT_S = 30


class DataMissingError(FileNotFoundError):
    """A raw file is in neither the data directory nor the cache and could not be downloaded."""


class ChecksumError(ValueError):
    """A copy of a raw file does not have the sha256 recorded in the registry."""


@functools.lru_cache(maxsize=1)
def registry() -> pd.DataFrame:
    """One row per raw file: file, bytes, sha256, source_repo, commit, source_path, license, note."""
    with resources.files("musecl.datasets").joinpath("registry.csv").open() as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    return table.set_index("file", drop=False)


def files_of(name: str) -> list[str]:
    """The registry paths of one data set (``beijing``, ``manhattan``, ``naip``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    return [f for f in registry()["file"] if f.startswith(DATASETS[name])]


def downloadable(file: str) -> bool:
    """False for files that were converted or downscaled before they entered the data directory."""
    note = registry().loc[file, "note"].lower()
    return not ("converted" in note or "downscaled" in note)


def source_of(file: str) -> str:
    """Where a file comes from, in one line (repository, commit, path, licence)."""
    row = registry().loc[file]
    return (f"{row['source_repo']} @ {row['commit'][:10]}: {row['source_path']} "
            f"(licence: {row['license'] or 'none stated'})")


def cache_dir() -> Path:
    """Where downloaded files are kept: ``$MUSECL_CACHE`` or pooch's per-user cache."""
    import pooch  # local: pooch imports tqdm.auto, which warns in a notebook kernel without ipywidgets

    return Path(os.environ.get("MUSECL_CACHE") or pooch.os_cache("musecl"))


@functools.lru_cache(maxsize=4096)
def _verified(path: str, size: int, mtime: float, expected: str) -> bool:
    return sha256_of(path) == expected


def _check(path: Path, file: str) -> Path:
    expected = registry().loc[file, "sha256"]
    stat = path.stat()
    if not _verified(str(path), stat.st_size, stat.st_mtime, expected):
        raise ChecksumError(f"{path}: sha256 differs from the registry's {expected[:12]}... for {file}; "
                            f"the file was not used. Replace it with the original from {source_of(file)}")
    return path


def how_to_get(file: str) -> str:
    """The sentence a user needs when ``file`` is missing."""
    where = source_of(file)
    if downloadable(file):
        dataset = next((name for name, prefix in DATASETS.items() if file.startswith(prefix)), "?")
        return (f"{file} is missing. It comes from {where}. Run `musecl fetch {dataset}` with "
                "internet access, or put the data directory in place and set MUSECL_DATA_DIR "
                "to it.")
    return (f"{file} is missing. It was derived from {where} ({registry().loc[file, 'note']}), so it "
            "cannot be downloaded byte for byte: get the project's data directory and set MUSECL_DATA_DIR.")


def locate(file: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified local path of one registry file (see the module docstring for the order)."""
    if file not in registry().index:
        raise KeyError(f"{file!r} is not in the data registry (musecl/datasets/registry.csv)")
    root = default_data_dir(data_dir)
    if root is not None and (root / file).is_file():
        return _check(root / file, file)
    cached = cache_dir() / file
    if cached.is_file():
        return _check(cached, file)
    if not (download and downloadable(file)) or os.environ.get("MUSECL_OFFLINE"):
        raise DataMissingError(f"{how_to_get(file)} Looked in {_searched(data_dir, root)} and the download cache "
                               f"{cache_dir()}.")
    return _download(file)


def _searched(data_dir, root: Path | None) -> str:
    """Which data directory was searched, in words (a given folder that does not exist is named)."""
    if root is not None:
        return f"the data directory {root}"
    given = data_dir if data_dir is not None else os.environ.get("MUSECL_DATA_DIR")
    return f"no data directory ({given} does not exist)" if given else "no data directory (none is set or found)"


def _download(file: str) -> Path:
    import pooch  # local, as in cache_dir

    row = registry().loc[file]
    url = RAW_URL.format(repo=row["source_repo"], commit=row["commit"], path=quote(row["source_path"]))
    target = cache_dir() / file
    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{row['sha256']}", fname=target.name,
                              path=target.parent, downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S))
    except ValueError as err:  # pooch deletes a download whose hash differs
        raise ChecksumError(f"download of {file} from {url} has the wrong sha256; rejected ({err})") from None
    except Exception as err:  # offline, DNS, HTTP 404, timeout
        raise DataMissingError(f"{how_to_get(file)} (download from {url} failed: "
                               f"{type(err).__name__}: {err})") from None
    return Path(path)


def fetch(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
          progress: bool = True, files: Sequence[str] | None = None) -> dict[str, Path]:
    """Every raw file of a data set (or only ``files``, registry paths of it), verified:
    ``{registry path: local path}``. Stops at the first file that cannot be had (offline, one
    failed download says enough)."""
    every = files_of(name)
    if files is not None and set(files) - set(every):
        raise ValueError(f"not files of the {name} data set: {sorted(set(files) - set(every))}")
    bar = tqdm(every if files is None else list(files), desc=f"fetch {name}", unit="file",
               disable=None if progress else True)
    return {file: locate(file, data_dir=data_dir, download=download) for file in bar}


def available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether every file of a data set is here already (no download, no checksum)."""
    root = default_data_dir(data_dir)
    return all((root is not None and (root / f).is_file()) or (cache_dir() / f).is_file()
               for f in files_of(name))
