"""Image rows split over ``.npy`` shard files that stream from disk (book appendix, scaling step 3):
the run setting ``image_store: shards``, registered as an image store in pyproject.toml.

A country at 224 px is about 150 KB per image in uint8, so a million images (150 GB) do not fit
in memory. :class:`ShardedImages` stands in for the tensor ``ImageStore.images``: the rows
(N, 3, S, S) live in ``shard-00000.npy``, ``shard-00001.npy``, ... opened with
``np.load(mmap_mode="r")``, so only the rows a batch asks for are read (and the operating
system's page cache keeps hot shards in memory).

Folder layout::

    manifest.json     format, kind, size, n_images, n_regions, fingerprint, and for every shard
                      its file name, row count and sha256 -- written LAST
    index.csv         region_id, count (the rows of a region are contiguous, in this order)
    paths.csv         path of every row (when the store was decoded from files)
    shard-00000.npy   uint8 (shard_size, 3, S, S); the last shard may be shorter
    ...

Every file is written atomically (temporary name, then ``os.replace``) and the manifest last,
so a write that was interrupted leaves no manifest, and the folder is rebuilt on the next call.

Opening a folder re-hashes each shard against its manifest once per process (a shard is hashed
again only when its file changes: inode, size, modification time); shards this process wrote
count as checked. A changed byte raises :class:`ShardCheckError` naming the shard, and
:func:`shards_from_pairs` then rebuilds the folder with a warning.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from musecl.city import City
from musecl.encoders.image import ImageStore, city_image_pairs, decoded_images, plan_store
from musecl.io import atomic_save_json, atomic_write, exclusive_lock, sha256_of

SHARDS_FORMAT = 1
MANIFEST_JSON, INDEX_CSV, PATHS_CSV = "manifest.json", "index.csv", "paths.csv"
DEFAULT_SHARD_SIZE = 4096  # 620 MB per shard at 224 px, 110 MB at 96 px

_VERIFIED: set[tuple] = set()  # (shard path, inode, size, mtime, sha256) hashed (or written) by this process


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.npy"


class ShardCheckError(ValueError):
    """A shard does not match its manifest (changed, truncated or replaced on disk)."""


def read_manifest(folder: str | os.PathLike) -> dict:
    """The folder's manifest; FileNotFoundError when there is none (never written, or interrupted)."""
    path = Path(folder) / MANIFEST_JSON
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {MANIFEST_JSON}: it is not an image shard folder, or its "
                                "write was interrupted. Build it again with shards_from_pairs() or write_shards().")
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
        raise ValueError(f"{path} is not an image shard manifest of format {SHARDS_FORMAT}; "
                         "delete the folder and build it again")
    return manifest


class ShardedImages:
    """Read-only uint8 images (N, 3, S, S) over memory-mapped shards; indexes like a tensor.

    ``images[a:b]`` and ``images[rows]`` (a 1-d int tensor or array, any order, repeats allowed)
    return a new contiguous CPU ``torch.uint8`` tensor. Rows are grouped by shard and each
    shard's requested rows are read once, in file order, then put back in the requested order.

    Opening checks every shard's shape and dtype (from its .npy header) against the manifest and,
    with ``verify`` (the default), its sha256 -- once per process and shard file (hashing hundreds
    of GB takes minutes, so later opens in the same process only ``stat`` the shards).
    """

    def __init__(self, folder: str | os.PathLike, verify: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        size = int(self.manifest["size"])
        self.shard_rows = np.array([int(s["rows"]) for s in self.manifest["shards"]], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(self.shard_rows)[:-1]]).astype(np.int64)
        n_images = int(self.shard_rows.sum())
        if n_images != int(self.manifest["n_images"]):
            raise ValueError(f"{self.folder / MANIFEST_JSON}: shards hold {n_images} rows but the manifest says "
                             f"{self.manifest['n_images']}; delete the folder and build it again")
        self.shape = torch.Size((n_images, 3, size, size))
        self._open()
        if verify:
            self.verify(once=True)

    def _open(self) -> None:
        self._shards = []
        for entry in self.manifest["shards"]:
            path = self.folder / entry["file"]
            try:
                array = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise FileNotFoundError(f"shard {path} listed in {self.folder / MANIFEST_JSON} is missing; "
                                        "delete the folder and build it again") from None
            except ValueError as exc:  # a truncated file or a broken header
                raise ShardCheckError(f"shard {path} is not a readable .npy file ({exc}); delete the folder and "
                                      "build it again") from exc
            expected = (int(entry["rows"]), 3, self.shape[2], self.shape[3])
            if array.dtype != np.uint8 or tuple(array.shape) != expected:
                raise ShardCheckError(f"shard {path} holds {array.dtype} {tuple(array.shape)} but the manifest "
                                      f"says uint8 {expected}; delete the folder and build it again")
            self._shards.append(array)

    # memory maps must not be pickled (that would copy the data): reopen them instead
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_shards"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    # -- what ImageStore uses of a tensor ----------------------------------------------

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")

    def __len__(self) -> int:
        return int(self.shape[0])

    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    @property
    def nbytes(self) -> int:
        return self.numel()

    def __repr__(self) -> str:
        return (f"ShardedImages({str(self.folder)!r}, shape={tuple(self.shape)}, shards={self.n_shards}, "
                f"{self.numel() / 2**20:.1f} MiB on disk)")

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._read_range(start, max(start, stop))
            return self._read_rows(np.arange(start, stop, step, dtype=np.int64))
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {key} is out of range for {len(self)} images")
            return self._read_range(row, row + 1)[0]
        if isinstance(key, torch.Tensor):
            key = key.detach().cpu().numpy()
        rows = np.asarray(key)
        if rows.ndim == 0 and np.issubdtype(rows.dtype, np.integer):
            return self[int(rows)]
        if rows.dtype == np.bool_:
            if rows.shape != (len(self),):
                raise IndexError(f"a boolean mask must have one entry per image ({len(self)}); got {rows.shape}")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise IndexError("sharded images are indexed by a slice, an int, or a 1-d integer tensor/array of "
                             f"rows; got {rows.dtype} of shape {rows.shape}")
        return self._read_rows(rows.astype(np.int64, copy=False))

    def _read_range(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1: consecutive slices of the shards they span."""
        out = np.empty((stop - start, *self.shape[1:]), dtype=np.uint8)
        first = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        filled = 0
        for shard in range(max(first, 0), self.n_shards):
            lo = max(start, int(self.shard_starts[shard]))
            hi = min(stop, int(self.shard_starts[shard] + self.shard_rows[shard]))
            if lo >= hi:
                break
            offset = int(self.shard_starts[shard])
            out[filled:filled + hi - lo] = self._shards[shard][lo - offset:hi - offset]
            filled += hi - lo
        return torch.from_numpy(out)

    def _read_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Any rows, in any order, repeats allowed; each shard's distinct rows are read once, sorted."""
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row indices must lie in [-{n}, {n}) for {n} images; got {rows.min()}..{rows.max()}")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        shard_of = np.searchsorted(self.shard_starts, rows, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.flatnonzero(np.diff(shard_of[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:
            shard = int(shard_of[group[0]])
            local = rows[group] - self.shard_starts[shard]
            distinct, inverse = np.unique(local, return_inverse=True)
            out[group] = self._shards[shard][distinct][inverse.reshape(-1)]
        return torch.from_numpy(out)

    # -- checking ----------------------------------------------------------------------

    def verify(self, once: bool = False) -> None:
        """Re-hash every shard against the manifest; raise :class:`ShardCheckError` naming the first bad one.
        ``once``: skip the shards this process already hashed or wrote, unchanged since."""
        for entry in self.manifest["shards"]:
            path = self.folder / entry["file"]
            if not path.exists():
                raise ShardCheckError(f"shard {path} is missing; delete {self.folder} and build it again")
            seen = _signature(path, entry["sha256"])
            if once and seen in _VERIFIED:
                continue
            digest = sha256_of(path)
            if digest != entry["sha256"]:
                raise ShardCheckError(f"shard {path} is corrupted: its sha256 is {digest[:12]}..., the manifest "
                                      f"recorded {entry['sha256'][:12]}...; delete {self.folder} and build it again")
            _VERIFIED.add(seen)


def _signature(path: Path, sha256: str) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, sha256


# ------------------------------------------------------------------------------------------
# writing


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (no second read of a shard)."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        return self.handle.write(view)


class ShardWriter:
    """Appends uint8 image rows (3, S, S) and writes a shard each time ``shard_size`` rows are in.

    Only one shard is ever held in memory. Start-up removes the old manifest (so a crash from
    here on leaves a folder that is rebuilt, never trusted) and :meth:`finish` writes index,
    paths and the manifest last, then removes shard files left over from an earlier, larger store.
    """

    def __init__(self, folder: str | os.PathLike, size: int, shard_size: int = DEFAULT_SHARD_SIZE):
        if int(shard_size) < 1:
            raise ValueError(f"shard_size must be a positive number of images; got {shard_size}")
        self.folder = Path(folder)
        self.size, self.shard_size = int(size), int(shard_size)
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.folder / MANIFEST_JSON).unlink()
        for stale in self.folder.glob(".shard-*.tmp"):  # temporaries of a killed write
            stale.unlink()
        self.buffer = np.empty((self.shard_size, 3, self.size, self.size), dtype=np.uint8)
        self.filled = 0
        self.shards: list[dict] = []

    @property
    def n_written(self) -> int:
        return sum(s["rows"] for s in self.shards) + self.filled

    def append(self, image: np.ndarray | torch.Tensor) -> None:
        self.buffer[self.filled] = np.asarray(image)
        self.filled += 1
        if self.filled == self.shard_size:
            self._flush()

    def extend(self, images: np.ndarray | torch.Tensor) -> None:
        images = np.asarray(images)
        done = 0
        while done < len(images):
            take = min(self.shard_size - self.filled, len(images) - done)
            self.buffer[self.filled:self.filled + take] = images[done:done + take]
            self.filled, done = self.filled + take, done + take
            if self.filled == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        if not self.filled:
            return
        name = shard_name(len(self.shards))
        with atomic_write(self.folder / name, "wb") as handle:
            hashing = _HashingFile(handle)
            np.lib.format.write_array(hashing, self.buffer[:self.filled], allow_pickle=False)
        self.shards.append({"file": name, "rows": self.filled, "sha256": hashing.digest.hexdigest()})
        _VERIFIED.add(_signature(self.folder / name, hashing.digest.hexdigest()))  # hashed as written
        self.filled = 0

    def finish(self, region_ids: Sequence[str], counts: Sequence[int], kind: str | None,
               fingerprint: str | None, paths: Sequence[str] | None = None) -> Path:
        """Write the last shard, ``index.csv``, ``paths.csv`` and (last) ``manifest.json``."""
        self._flush()
        self.buffer = None  # free the shard buffer before anything else is read
        counts = [int(c) for c in counts]
        n_images = sum(s["rows"] for s in self.shards)
        if sum(counts) != n_images:
            raise ValueError(f"counts add up to {sum(counts)} images but {n_images} were written")
        with atomic_write(self.folder / INDEX_CSV) as handle:
            pd.DataFrame({"region_id": [str(r) for r in region_ids], "count": counts}).to_csv(handle, index=False)
        if paths is not None:
            with atomic_write(self.folder / PATHS_CSV) as handle:
                pd.DataFrame({"path": [str(p) for p in paths]}).to_csv(handle, index=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / PATHS_CSV).unlink()
        kept = {s["file"] for s in self.shards}
        for old in self.folder.glob("shard-*.npy"):
            if old.name not in kept:
                old.unlink()
        atomic_save_json(self.folder / MANIFEST_JSON, {
            "format": SHARDS_FORMAT, "kind": kind, "size": self.size, "n_images": n_images,
            "n_regions": len(counts), "shard_size": self.shard_size, "index": INDEX_CSV,
            "paths": PATHS_CSV if paths is not None else None, "fingerprint": fingerprint,
            "shards": self.shards})
        return self.folder


def read_index(folder: str | os.PathLike, manifest: dict) -> tuple[list[str], list[int], list[str] | None]:
    """(region_ids, counts, paths or None) of a shard folder."""
    folder = Path(folder)
    index = pd.read_csv(folder / INDEX_CSV, dtype={"region_id": str, "count": np.int64}, keep_default_na=False)
    paths = None
    if manifest.get("paths"):
        paths = pd.read_csv(folder / manifest["paths"], dtype={"path": str}, keep_default_na=False)["path"].tolist()
    return index["region_id"].tolist(), index["count"].tolist(), paths


# ------------------------------------------------------------------------------------------
# image stores over shards


def open_shards(folder: str | os.PathLike) -> ImageStore:
    """A store that streams from a shard folder (written by :func:`shards_from_pairs` or
    :func:`write_shards`). Opening checks each shard's header and, once per process and shard
    file, its sha256 (see :class:`ShardedImages`)."""
    images = ShardedImages(folder)
    region_ids, counts, paths = read_index(folder, images.manifest)
    store = ImageStore(images, region_ids, counts, paths, images.manifest.get("kind"))
    store.fingerprint = images.manifest.get("fingerprint")
    return store


def shards_from_pairs(pairs: Iterable[tuple[str, str | os.PathLike]], size: int, folder: str | os.PathLike,
                      kind: str | None = None, progress: bool = False,
                      shard_size: int = DEFAULT_SHARD_SIZE) -> ImageStore:
    """Decode ``(region_id, path)`` pairs straight into shards of ``shard_size`` images -- one shard
    in memory at a time, never the whole store -- and return the store that streams from them. A
    folder made from the same files at the same size is reused (whatever its shard size), else rebuilt."""
    size, region_ids, counts, paths, fingerprint = plan_store(pairs, size, kind)
    folder = Path(folder)
    # one writer per folder: two methods decoding the same images side by side (jobs > 1) would
    # otherwise delete each other's temporary shards
    with exclusive_lock(folder.parent / f".{folder.name}.lock"):
        if (folder / MANIFEST_JSON).exists():
            try:  # the manifest first: the shards of an out-of-date folder are neither hashed nor kept open
                if read_manifest(folder).get("fingerprint") == fingerprint:
                    return open_shards(folder)
            except Exception as exc:  # noqa: BLE001 - a bad shard folder is rebuilt, never trusted
                warnings.warn(f"image shards {folder} are unreadable ({exc}); rebuilding them", stacklevel=2)
        writer = ShardWriter(folder, size, shard_size)
        for image in decoded_images(paths, size, kind, progress):
            writer.append(image)
        writer.finish(region_ids, counts, kind, fingerprint, [str(p) for p in paths])
        return open_shards(folder)


def shards_from_city(city: City, kind: str, size: int, folder: str | os.PathLike, progress: bool = False,
                     shard_size: int = DEFAULT_SHARD_SIZE) -> ImageStore:
    """The city's satellite or street-view images as shards (see :func:`shards_from_pairs`)."""
    return shards_from_pairs(city_image_pairs(city, kind), size, folder, kind, progress, shard_size)


def write_shards(store: ImageStore, folder: str | os.PathLike, shard_size: int = DEFAULT_SHARD_SIZE) -> ImageStore:
    """Write ``store`` as shards of ``shard_size`` images to ``folder``; return the store over them."""
    if isinstance(store.images, ShardedImages) and Path(folder).resolve() == store.images.folder.resolve():
        raise ValueError(f"cannot rewrite the shards in {folder} while reading from them; write to another folder")
    writer = ShardWriter(folder, store.size, shard_size)
    for start in range(0, len(store), writer.shard_size):
        writer.extend(store.images[start:start + writer.shard_size].cpu())
    writer.finish(store.region_ids, store.counts.tolist(), store.kind, store.fingerprint, store.paths)
    return open_shards(folder)
