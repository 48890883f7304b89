"""Small helpers shared by every layer: files written atomically (a killed run leaves no
half-written file to trust), YAML read strictly, locks, and how warnings word a count of regions."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import pandas as pd
import yaml

try:
    import fcntl
except ImportError:  # Windows: folders and files are not locked
    fcntl = None

CONFIG_JSON = "config.json"  # the readable settings every saved model or method folder holds
WEIGHTS_PT = "weights.pt"  # a saved torch model's state dict, beside its config.json
_UMASK = os.umask(0o022)  # read once at import (setting it is the only way to read it), restored
os.umask(_UMASK)


def n_of_regions(n: int, total: int, has: str = "has", have: str = "have") -> str:
    """"1 of 600 regions has" / "12 of 600 regions have": the library's warnings agree in number."""
    return f"{n} of {total} regions {has if n == 1 else have}"


def check_choice(name: str, value, choices, note: str = "") -> None:
    """A ValueError naming the setting, its choices and ``value``, unless it is one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}{note}; got {value!r}")


def check_region_table(df, name: str) -> None:
    """``df`` must be a DataFrame indexed by region_id, each region once."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a DataFrame indexed by region_id; got {type(df).__name__}")
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{name} has duplicate region_id(s), e.g. {dup}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # as open() would: mkstemp's 0600 hid results from the group
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_save_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True, default=str)


def read_saved_config(directory: str | os.PathLike, needs: tuple[str, ...] = (),
                      writer: str = "") -> dict:
    """The ``config.json`` of a folder ``writer`` saved; an error names the first of ``needs``
    missing."""
    directory = Path(directory)
    for name in needs:
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory / name} is missing; was this folder written by "
                                    f"{writer}?")
    return json.loads((directory / CONFIG_JSON).read_text())


def sha256_of(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


NA_TEXTS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
            "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
"""The cells pandas reads as missing by default (its ``STR_NA_VALUES``)."""


def read_csv_ids(path: str | os.PathLike, ids=("region_id",), **kwargs):
    """Read a CSV with the ``ids`` columns as text as written: "NA" stays an id, only "" is missing.
    Without ``index_col``, the first column is never taken as the index: rows that end with a
    separator their header lacks (spreadsheet exports) would otherwise shift every value left."""
    header = pd.read_csv(path, nrows=0).columns
    na_values = {c: [""] if c in ids else list(NA_TEXTS) for c in header}
    kwargs.setdefault("index_col", False)
    return pd.read_csv(path, dtype={c: str for c in ids if c in header}, keep_default_na=False,
                       na_values=na_values, **kwargs)


class YamlFileError(ValueError):
    """A YAML file :func:`load_yaml` refuses; ``problem`` lacks the file name, ``line`` is 1-based
    or None."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem, self.line = path, problem, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping (``<<`` merges may still override)."""

    path: str | os.PathLike = ""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    hash(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if key in seen:
                    lines = f"line {line}" if seen[key] == line else f"lines {seen[key]} and {line}"
                    raise YamlFileError(self.path, f"key {key!r} is given twice in one mapping "
                                        f"({lines}); YAML would keep only the last value: remove "
                                        "one", line=line)
                seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | os.PathLike):
    """The contents of the YAML file ``path``. Not UTF-8, not YAML, or a key given twice in one
    mapping (PyYAML would silently keep the last): :class:`YamlFileError`; missing: OSError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise YamlFileError(path, f"is not UTF-8 text: {err}") from None
    loader = _StrictLoader(text)
    loader.path = path
    loader.name = Path(path).name  # PyYAML's marks name the file (the message starts with its path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise YamlFileError(path, f"is not valid YAML: {' '.join(str(err).split())}",
                            line=mark.line + 1 if mark is not None else None) from None
    finally:
        loader.dispose()


class FolderBusyError(RuntimeError):
    """Another live process writes the folder with other settings."""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a lock or temporary folder may be stale)."""
    if pid <= 0:  # os.kill(0 or -1, 0) signals a group and succeeds: no process has such a pid
        return False
    if os.name == "nt":  # there os.kill(pid, 0) would end the process (TerminateProcess): say alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


LOCK_FILE = ".musecl.lock"


@contextlib.contextmanager
def owned_folder(folder: str | os.PathLike, settings: str, poll_s: float = 2.0) -> Iterator[Path]:
    """Own ``folder`` while the block runs: an exclusive ``flock`` on ``folder/.musecl.lock``, which
    names the owner (pid, settings digest). The system releases it however the owner ends, so a
    killed run never blocks the next (a pid in a file could be reused or half written). Another
    owner with other settings: :class:`FolderBusyError`; with the same: wait for it, said once (its
    cached stages make this run quick). Staging folders of killed runs are removed. The file is
    kept, empty between runs: deleting it under a waiting run would let two own the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield folder
        return
    lock = folder / LOCK_FILE
    with open(lock, "a+") as handle:
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(lock)  # None: the owner is writing its name this instant
                if holder is not None and holder.get("settings") != settings:
                    raise FolderBusyError(
                        f"{folder} is being written by another run (pid {holder.get('pid')}) with "
                        "other settings; wait for it or choose another output folder") from None
                if holder is not None and not waiting:
                    warnings.warn(f"{folder} is being written by another run with the same "
                                  f"settings (pid {holder.get('pid')}); waiting for it to end",
                                  stacklevel=3)
                    waiting = True
                time.sleep(poll_s if holder is not None else 0.1)
        try:
            handle.truncate(0)
            json.dump({"pid": os.getpid(), "settings": settings}, handle)
            handle.flush()
            for old in folder.glob(".staging-*"):  # a live run's would hold the lock: killed runs'
                shutil.rmtree(old, ignore_errors=True)
            yield folder
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_holder(lock: Path) -> dict | None:
    """The owner a folder's lock file names, or None while it is empty or half written."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


@contextlib.contextmanager
def folder_built_beside(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces it if the block succeeds, else is removed."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(staging: str | os.PathLike, folder: str | os.PathLike, last: tuple[str, ...] = (),
            stale: tuple[str, ...] = ()) -> None:
    """Move all of ``staging`` into ``folder`` (replacing), then remove it: a run's outputs arrive
    together. The names in ``last`` (the results table) are removed from ``folder`` first and moved
    in last, so a folder cut off half way has no table that belongs to other files than its own;
    the names in ``stale`` are removed from ``folder`` unless ``staging`` has them."""
    staging, folder = Path(staging), Path(folder)
    for name in last + tuple(n for n in stale if not (staging / n).exists()):
        (folder / name).unlink(missing_ok=True)
    items = sorted(item for item in staging.iterdir() if item.name not in last)
    for item in items + [staging / name for name in last if (staging / name).exists()]:
        target = folder / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


_WATCHED: set[int] = set()


def in_worker(parent: int, function, *args, **kwargs):
    """Call ``function`` from a worker process only: the worker exits when ``parent`` (the
    starter's ``os.getpid()``) dies, rather than linger after a killed run. Returns
    ``(result, warnings)`` for :func:`rewarn` in the parent."""
    if parent not in _WATCHED and parent != os.getpid():
        _WATCHED.add(parent)

        def watch() -> None:
            while os.getppid() == parent and process_alive(parent):
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="musecl-parent-watch").start()
    with warnings.catch_warnings(record=True) as caught:  # a worker's stderr is not the reader's:
        result = function(*args, **kwargs)               # its warnings go back with the result
    return result, [(w.category, str(w.message)) for w in caught]


def rewarn(outcome):
    """The result of :func:`in_worker`, its warnings raised again under the caller's filters."""
    result, caught = outcome
    for category, message in caught:
        warnings.warn(message, category, stacklevel=2)
    return result


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive lock on the file ``path``, which is kept (deleting it under waiters is a
    race). Without ``fcntl`` two processes may both compute: the last rename wins."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
