"""Small file helpers shared by every layer.

Everything a long run writes goes through :func:`atomic_write`, so a run killed half-way never
leaves a half-written file that a later run would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class FolderBusyError(RuntimeError):
    """Another live process writes the folder with other settings."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextlib.contextmanager
def owned_folder(folder: str | os.PathLike, settings: str, poll_s: float = 2.0) -> Iterator[Path]:
    """Own ``folder`` while the block runs, through ``folder/.musecl.lock`` (pid and a digest of
    the settings). Another live owner with other settings: :class:`FolderBusyError` naming it;
    with the same settings: wait for it (its cached stages then make this run quick). A lock left
    by a dead process, and its staging folders, are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".musecl.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):  # being written this instant, or removed
                time.sleep(0.1)
                continue
            if not _alive(int(holder.get("pid", -1))):
                lock.unlink(missing_ok=True)
                continue
            if holder.get("settings") != settings:
                raise FolderBusyError(f"{folder} is being written by another run (pid {holder['pid']}) with other "
                                      "settings; wait for it or choose another output folder") from None
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "settings": settings}, handle)
        break
    try:
        for old in folder.glob(".staging-*"):  # left by a killed run
            if old.name.removeprefix(".staging-").isdigit() and not _alive(int(old.name.removeprefix(".staging-"))):
                shutil.rmtree(old, ignore_errors=True)
        yield folder
    finally:
        lock.unlink(missing_ok=True)


def publish(staging: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Move everything in ``staging`` into ``folder`` (replacing what is there), then remove
    ``staging``: the outputs of a run arrive together, after it succeeded."""
    staging, folder = Path(staging), Path(folder)
    for item in sorted(staging.iterdir()):
        target = folder / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


_WATCHED: set[int] = set()


def in_worker(parent: int, function, *args, **kwargs):
    """Call ``function`` in a worker process that ends itself when ``parent`` (the process that
    started it: pass ``os.getpid()`` there) dies, instead of lingering for minutes after a killed
    run (a daemon thread checks once a second; only worker processes should call this). Returns
    ``(result, warnings)``; :func:`rewarn` unpacks it in the parent."""
    import threading

    if parent not in _WATCHED and parent != os.getpid():
        _WATCHED.add(parent)

        def watch() -> None:
            while os.getppid() == parent and _alive(parent):
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="musecl-parent-watch").start()
    with warnings.catch_warnings(record=True) as caught:  # a worker's stderr is not the reader's:
        result = function(*args, **kwargs)               # its warnings go back with the result
    return result, [(w.category, str(w.message)) for w in caught]


def rewarn(outcome):
    """The result of :func:`in_worker`, its warnings raised again here, where the caller's filters
    and display apply (a notebook shows them as notes, a chapter may silence them)."""
    result, caught = outcome
    for category, message in caught:
        warnings.warn(message, category, stacklevel=2)
    return result
