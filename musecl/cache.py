"""A cache of trained pieces keyed by configuration and data, so rerunning a chapter never
retrains, and a changed setting or changed data never reuses a stale result.

Each entry is a folder ``<root>/<stage>/<key-hash>/`` that is filled in a temporary folder and
renamed into place only when complete: an interrupted run leaves nothing a later run trusts.
Processes that want the same missing entry at once (methods fitted in parallel, two notebooks)
take turns on a lock file in ``<root>/.locks``: one computes, the others then read its result.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from musecl.city import City, IMAGES_CSV
from musecl.config import config_hash
from musecl.io import sha256_of

DONE = "key.json"
LOCKS = ".locks"  # one lock file per entry being computed, apart from the entries


_FINGERPRINTS: dict[tuple, str] = {}  # stat signature of a city's files -> their hash, per process


def city_fingerprint(city: City) -> str:
    """Hash of every file of the city folder that a method reads (tables, metadata, images).

    Every stage and every evaluation asks for it; the files are hashed once per process and
    hashed again only when one of them changes (size or modification time)."""
    files = sorted(p for p in city.root.iterdir() if p.suffix in (".csv", ".yaml") and p.is_file())
    images = sorted(city.images["path"]) if (city.root / IMAGES_CSV).exists() else []
    signature = tuple((str(p), st.st_size, st.st_mtime_ns) for p in [*files, *map(Path, images)]
                      for st in [Path(p).stat()])
    if signature not in _FINGERPRINTS:
        digests = [(p.name, sha256_of(p)) for p in files]
        # paths relative to the city folder: the same city copied elsewhere keeps its fingerprint
        digests += [(str(Path(p).relative_to(city.root)) if Path(p).is_relative_to(city.root) else str(p),
                     sha256_of(p)) for p in images]
        _FINGERPRINTS[signature] = config_hash(digests)
    return _FINGERPRINTS[signature]


class Cache:
    """Folders of finished results under ``root``; see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: dict) -> Path:
        return self.root / stage / config_hash(stage, key)

    def has(self, stage: str, key: dict) -> bool:
        return (self.path(stage, key) / DONE).exists()

    def get_or_compute(self, stage: str, key: dict, compute: Callable[[Path], None]) -> Path:
        """Return the folder of ``stage`` for ``key``; run ``compute(folder)`` first if absent.

        Under ``torchrun`` every process computes (training needs them all), the first process
        decides whether the folder exists and alone moves its result into place. Independent
        processes wanting the same entry wait for each other (a lock file per entry)."""
        from musecl import distributed as ddp

        final = self.path(stage, key)
        if ddp.gather((final / DONE).exists())[0]:  # one decision for all processes
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        if ddp.world_size() > 1:
            return self._compute(stage, key, final, compute)
        with _entry_lock(self.root / LOCKS / f"{stage}-{final.name}.lock"):
            if (final / DONE).exists():  # computed by another process while this one waited
                return final
            return self._compute(stage, key, final, compute)

    def _compute(self, stage: str, key: dict, final: Path, compute: Callable[[Path], None]) -> Path:
        from musecl import distributed as ddp

        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            compute(tmp)
            if ddp.is_main():
                (tmp / DONE).write_text(json.dumps({"stage": stage, "key": key}, indent=2, sort_keys=True,
                                                   default=str))
                if final.exists():  # an incomplete folder from an older layout
                    shutil.rmtree(final)
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        ddp.barrier()
        return final


@contextlib.contextmanager
def _entry_lock(path: Path):
    """Hold an exclusive lock on the file ``path`` (kept: deleting a lock file others may be
    waiting on is a race). Without ``fcntl`` (Windows) there is no lock: two processes may then
    both compute an entry, and the last rename wins."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_table(df: pd.DataFrame, path: str | Path) -> None:
    """A region table as CSV (region_id first), written atomically."""
    from musecl.io import atomic_write

    with atomic_write(path) as handle:
        df.to_csv(handle, index=True, index_label="region_id")


def load_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="region_id", dtype={"region_id": str})
