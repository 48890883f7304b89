"""A cache of trained pieces keyed by configuration and data: rerunning a chapter never
retrains, and a changed setting or changed data never reuses a stale result.

An entry ``<root>/<stage>/<key-hash>/`` is filled in a temporary folder
``.<key-hash>.<pid>@<host>.<random>`` beside it and renamed into place only when complete, so an
interrupted run leaves nothing a later run trusts. Processes wanting the same missing entry take
turns on a lock file in ``<root>/.locks``: one computes, the others read its result.

The last file of an entry, ``contents.json``, holds the size and sha256 of the others; an entry
whose files no longer match, or that has none (an older entry cannot be told from a damaged
one), is recomputed with a warning naming it (:meth:`Cache.verify`). Temporary folders of killed
runs are removed by the first ``Cache`` on a root in a process (:func:`remove_stale_temporaries`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from musecl.city import CEILINGS_CSV, CITY_YAML, IMAGES_CSV, INDICATORS_CSV, LATENTS_CSV, City
from musecl.config import config_hash
from musecl.io import (
    atomic_save_json, atomic_write, exclusive_lock, process_alive, read_csv_ids, sha256_of,
)
from musecl.training import processes

DONE = "key.json"
CONTENTS = "contents.json"  # size and sha256 of every other file of an entry, written last
CONTENTS_FORMAT = 1
CHECKPOINTS = "checkpoints"  # training checkpoints of the stages being computed (Cache.checkpoints)
LOCKS = ".locks"  # one lock file per entry being computed, apart from the entries
STALE_TEMP_HOURS = 48  # a temporary folder not provably owned by a live process on this host

_CHECKED: dict[str, tuple[list, tuple, bool]] = {}  # entry -> (its files, their stat, it is sound)
_SWEPT: set[str] = set()  # cache roots whose leftover temporary folders this process removed
_TEMP_NAME = re.compile(r"^\.(?P<entry>[^.]+)\.(?:(?P<pid>\d+)@(?P<host>.+)\.)?[a-z0-9_]+$")
_FINGERPRINTS: dict[tuple, str] = {}  # stat signature of a city's files -> their hash, per process
# what a city says about its regions, not what they show: its files and its keys in city.yaml
LABEL_FILES = (INDICATORS_CSV, LATENTS_CSV, CEILINGS_CSV)
LABEL_KEYS = ("indicators", "oracle_r2", "latents", "modality_latents", "modality_oracle_r2")


def city_fingerprint(city: City, labels: bool = True) -> str:
    """Hash of the city folder's files (tables, metadata, images), recomputed only when one changes.
    ``labels=False`` leaves out the labels (indicators, latents, ceilings and their city.yaml keys):
    trained stages are keyed by it, so editing an indicator keeps them; a score uses the whole."""
    files = sorted(p for p in city.root.iterdir() if p.suffix in (".csv", ".yaml") and p.is_file()
                   and (labels or p.name not in (*LABEL_FILES, CITY_YAML)))
    images = (sorted(map(os.fspath, city.images["path"])) if (city.root / IMAGES_CSV).exists()
              else [])
    # os.stat on str, not Path: thousands of images, for every stage and evaluation (5x faster)
    signature = (labels, *((p, st.st_size, st.st_mtime_ns)
                           for p in [*map(os.fspath, files), *images] for st in [os.stat(p)]))
    if signature not in _FINGERPRINTS:
        digests = [(p.name, sha256_of(p)) for p in files]
        # paths relative to the city folder: the same city copied elsewhere keeps its fingerprint
        digests += [(str(Path(p).relative_to(city.root)) if Path(p).is_relative_to(city.root)
                     else str(p), sha256_of(p)) for p in images]
        if not labels:  # city.yaml's settings of the inputs (modalities, crs, ...), not its labels
            digests.append((CITY_YAML, {k: v for k, v in city.meta.to_yaml_dict().items()
                                        if k not in LABEL_KEYS}))
        _FINGERPRINTS[signature] = config_hash(digests)
    return _FINGERPRINTS[signature]


class Cache:
    """Folders of finished results under ``root``; see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if str(self.root.resolve()) not in _SWEPT:
            _SWEPT.add(str(self.root.resolve()))
            remove_stale_temporaries(self.root)

    def path(self, stage: str, key: dict) -> Path:
        return self.root / stage / config_hash(stage, key)

    def checkpoints(self, key: dict) -> Path:
        """Where a stage's training keeps checkpoints, so an interrupted run resumes; deleted
        once the stage is in place."""
        return self.path(CHECKPOINTS, key)

    def has(self, stage: str, key: dict) -> bool:
        """Whether the entry is there and complete (its files are checked, see :meth:`verify`)."""
        return self.verify(self.path(stage, key))

    def verify(self, entry: Path) -> bool:
        """True when ``entry`` is complete and its files match ``contents.json`` (hashed once per
        process, later only stat'ed); a damaged or old-format entry warns, naming the file."""
        entry = Path(entry)
        if not (entry / DONE).exists():
            return False  # absent (or never finished): nothing to warn about
        memo = _CHECKED.get(str(entry))
        if memo is not None and memo[1] == _stat(entry, memo[0]):
            return memo[2]
        problem, files = _check_contents(entry)
        if problem:
            warnings.warn(f"cache entry {entry}: {problem}; recomputing", stacklevel=3)
        _CHECKED[str(entry)] = (files, _stat(entry, files), problem is None)
        return problem is None

    def get_or_compute(self, stage: str, key: dict, compute: Callable[[Path], None]) -> Path:
        """The folder of ``stage`` for ``key``, after ``compute(folder)`` if absent. Under
        ``torchrun`` every process computes (training needs them all) and the first alone decides
        and moves the result into place; independent processes take turns on a lock."""
        group = processes()
        final = self.path(stage, key)
        # one decision for all processes
        if group.gather(self.verify(final) if group.is_main() else None)[0]:
            if group.is_main():  # a run killed after the entry's rename left its checkpoints
                shutil.rmtree(self.checkpoints(key), ignore_errors=True)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        if group.world_size() > 1:
            return self._compute(stage, key, final, compute)
        with exclusive_lock(self.root / LOCKS / f"{stage}-{final.name}.lock"):
            if self.verify(final):  # computed by another process while this one waited
                return final
            return self._compute(stage, key, final, compute)

    def _compute(self, stage: str, key: dict, final: Path, compute: Callable[[Path], None]) -> Path:
        group = processes()
        tmp = Path(tempfile.mkdtemp(dir=final.parent,
                                    prefix=f".{final.name}.{os.getpid()}@{_host()}."))
        try:
            compute(tmp)
            if group.is_main():
                atomic_save_json(tmp / DONE, {"stage": stage, "key": key})
                contents = {rel: {"size": (tmp / rel).stat().st_size,
                                  "sha256": sha256_of(tmp / rel)} for rel in _files(tmp)}
                atomic_save_json(tmp / CONTENTS, {"format": CONTENTS_FORMAT, "files": contents})
                if final.exists():  # a damaged entry, or an incomplete folder from an older layout
                    shutil.rmtree(final)
                os.replace(tmp, final)
                shutil.rmtree(self.checkpoints(key), ignore_errors=True)
                files = [CONTENTS, *contents]  # just hashed: not again in this process
                _CHECKED[str(final)] = (files, _stat(final, files), True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        group.barrier()
        return final


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but ``contents.json``, as sorted POSIX paths relative to it."""
    paths = (Path(parent, name).relative_to(folder).as_posix()
             for parent, _, names in os.walk(folder) for name in names)
    return sorted(rel for rel in paths if rel != CONTENTS)


def _stat(entry: Path, files: list[str]) -> tuple:
    """(inode, size, mtime) of each of ``files``; None for a missing one."""
    out = []
    for rel in files:
        try:
            st = (entry / rel).stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _check_contents(entry: Path) -> tuple[str | None, list[str]]:
    """(what is wrong with ``entry``'s files or None, the files to watch); sizes before hashes."""
    if not (entry / CONTENTS).exists():
        return (f"has no {CONTENTS} (written by an older musecl: its files cannot be checked)",
                [CONTENTS, DONE])
    try:
        manifest = json.loads((entry / CONTENTS).read_text())
        files = manifest["files"]
        if manifest.get("format") != CONTENTS_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"file {CONTENTS} is unreadable ({exc})", [CONTENTS]
    watched = [CONTENTS, *files]
    for rel, expected in files.items():
        try:
            size = (entry / rel).stat().st_size
        except FileNotFoundError:
            return f"file {rel} is missing", watched
        if size != expected["size"]:
            return (f"file {rel} changed (size {size} bytes, {expected['size']} when written)",
                    watched)
    for rel, expected in files.items():
        if sha256_of(entry / rel) != expected["sha256"]:
            return f"file {rel} changed (hash mismatch)", watched
    return None, watched


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove the temporary entry folders killed runs left under ``root/<stage>/``; return them.

    Stale: named by a process of this host that no longer runs, or (another host's, or without
    a pid) not modified for :data:`STALE_TEMP_HOURS`. A folder is written only when its compute
    ends, so its age says nothing about a compute still running elsewhere: keep that bound
    generous."""
    root, removed, now = Path(root), [], time.time()
    if not root.is_dir():
        return removed
    for stage in root.iterdir():
        if not stage.is_dir() or stage.name.startswith("."):
            continue
        for folder in stage.iterdir():
            match = _TEMP_NAME.match(folder.name)
            if not match or not folder.is_dir():
                continue
            try:
                old = now - folder.stat().st_mtime > STALE_TEMP_HOURS * 3600
            except FileNotFoundError:
                continue  # its owner finished meanwhile
            mine = match["pid"] is not None and match["host"] == _host()
            if (mine and not process_alive(int(match["pid"]))) or (not mine and old):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed:
        warnings.warn(f"cache {root}: removed {len(removed)} temporary folder(s) left by killed "
                      "runs: " + ", ".join(str(p) for p in removed), stacklevel=2)
    return removed


def entry_key(entry: Path) -> dict:
    """The stage and key of a finished entry: what a later stage's key names it by."""
    return json.loads((entry / DONE).read_text())


def save_table(df: pd.DataFrame, path: str | Path) -> None:
    """A region table as CSV (region_id first), written atomically."""
    with atomic_write(path) as handle:
        df.to_csv(handle, index=True, index_label="region_id")


def load_table(path: str | Path) -> pd.DataFrame:
    """A table :func:`save_table` wrote; region ids stay text ("NA" is an id, not missing)."""
    return read_csv_ids(path, index_col="region_id")
