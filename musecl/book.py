"""Execute the book's chapters (jupytext py:percent, no outputs) with papermill, then render them
with Jupyter Book, execution off, so the book shows exactly what one command computed:
:func:`build` chains :func:`execute_chapters`, :func:`stage_site` and :func:`build_book`.

Chapters run in ``book/``, as when a person opens one in Jupyter, but should take every path
from a parameter (:func:`build` passes absolute ones). They import :mod:`musecl.notebooks`, not
this module (bar the benchmark appendix, which times the machine as a build does). The toy
generator (scikit-learn) and the city resolver (torch) are imported inside the functions that
need them: only some builds do.
"""
from __future__ import annotations

import ast
import csv
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jupytext
import nbformat
import numpy as np
import papermill
import yaml
from threadpoolctl import threadpool_limits

from musecl.city import CITY_YAML, IMAGES_CSV, LATENTS_CSV, PATH
from musecl.config import RENAMED, RunConfig
from musecl.datasets.published import PUBLISHED_CSV, data_dir
from musecl.io import atomic_write, load_yaml
from musecl.notebooks import DataUnavailable

TOC_YML, CONFIG_YML = "_toc.yml", "_config.yml"
BOOK_DIR = "book"
PARAMETERS_TAG = "parameters"
METADATA_KEY = "musecl"  # executed notebooks record what they were run with under this key
KERNEL = "python3"  # the Jupyter kernel every chapter runs in

# never staged: the executed copy replaces a chapter's source
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "_build"}
_SKIP_SUFFIXES = {".ipynb", ".pyc"}


class ChapterExecutionError(RuntimeError):
    """A chapter raised while executing; the message names the chapter, the cell and the copy."""


class BookBuildError(RuntimeError):
    """The book could not be staged or rendered; the message says what to do."""


# ---- finding the book ----
def find_repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``_toc.yml`` and ``book/``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / TOC_YML).is_file() and (folder / BOOK_DIR).is_dir():
            return folder
    # an editable install sits in the repository: fall back to the package's own checkout
    fallback = Path(__file__).resolve().parents[1]
    if (fallback / TOC_YML).is_file():
        return fallback
    raise BookBuildError(f"no {TOC_YML} with a {BOOK_DIR}/ folder at or above {here}; "
                         "run from the repository root")


def toc_files(repo_root: Path) -> list[str]:
    """Every document named in ``_toc.yml`` (root first), as written there, without suffix."""
    def walk(node):
        if isinstance(node, dict):
            yield from (node[key] for key in ("root", "file") if isinstance(node.get(key), str))
            node = list(node.values())
        if isinstance(node, list):
            for item in node:
                yield from walk(item)

    def stem(entry: str) -> str:
        base, dot, suffix = entry.rpartition(".")
        return base if dot and suffix in ("md", "ipynb", "py") else entry

    return [stem(entry) for entry in walk(yaml.safe_load((repo_root / TOC_YML).read_text()))]


def chapter_sources(repo_root: Path) -> list[Path]:
    """The py:percent chapters named in ``_toc.yml``, in order (markdown pages are not chapters);
    an entry with neither a .py nor a .md file raises here, not as a Sphinx warning later."""
    chapters, missing = [], []
    for entry in toc_files(repo_root):
        base = repo_root / entry
        if base.with_suffix(".py").is_file():
            chapters.append(base.with_suffix(".py"))
        elif not base.with_suffix(".md").is_file():
            missing.append(entry)
    if missing:
        raise BookBuildError(f"{TOC_YML} names {missing} but neither <name>.py nor <name>.md "
                             "exists; add the file or remove the entry")
    return chapters


def select_chapters(chapters: list[Path], only: list[str] | None) -> list[Path]:
    """Chapters whose stem, number prefix ("01") or path matches one of ``only``."""
    if not only:
        return list(chapters)
    chosen, unknown = [], []
    for name in only:
        stem = Path(name).name.removesuffix(".py")
        hits = [c for c in chapters if c.stem == stem or c.stem.split("_", 1)[0] == stem]
        if not hits:
            unknown.append(name)
        chosen += hits
    if unknown:
        raise BookBuildError(f"--only {unknown}: no such chapter; chapters are "
                             f"{[c.stem for c in chapters]}")
    return [c for c in chapters if c in chosen]


# ---- executing ----
def _assignments(nb) -> list[tuple[list[ast.expr], ast.expr | None]]:
    """(targets, value) of each assignment in the cell tagged ``parameters``."""
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"no cell tagged {PARAMETERS_TAG!r}: add one with "
                         f"`# %% tags=[\"{PARAMETERS_TAG}\"]` above the chapter's settings")
    nodes = ast.parse(cells[0].source).body
    return [(n.targets if isinstance(n, ast.Assign) else [n.target], n.value)
            for n in nodes if isinstance(n, (ast.Assign, ast.AnnAssign))]


def parameter_names(nb) -> set[str]:
    """Names assigned in the ``parameters`` cell (the ones papermill may override)."""
    return {leaf.id for targets, _ in _assignments(nb) for target in targets
            for leaf in ast.walk(target) if isinstance(leaf, ast.Name)}


def parameter_defaults(nb) -> dict:
    """The ``parameters`` cell's literal values: what a chapter runs with by default."""
    values = {}
    for targets, value in _assignments(nb):
        try:
            values.update({t.id: ast.literal_eval(value)
                           for t in targets if isinstance(t, ast.Name)})
        except ValueError:  # not a literal (or no value)
            continue
    return values


@functools.cache
def _library_hash() -> str:
    """The musecl package's source: a chapter shows what the library computes."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.relative_to(Path(__file__).parent).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def _stat(path: Path) -> tuple | None:
    """(size, modification time) of a file; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _city_signature(folder: Path) -> list:
    """The city's tables and listed images by name, size and time (images hashed: they may be many)."""
    tables = [(p.name, _stat(p)) for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".yaml") and p.is_file()]
    images = hashlib.sha256()
    if (folder / IMAGES_CSV).is_file():
        with open(folder / IMAGES_CSV, newline="") as handle:
            for row in csv.DictReader(handle):
                images.update(f"{row.get(PATH)}|{_stat(folder / (row.get(PATH) or ''))}\n".encode())
    return [*tables, ("images", images.hexdigest())]


def _fingerprint(source: Path, nb, parameters: dict, kernel: str) -> str:
    """What an executed copy must have been run with to be current: the chapter's text, its
    parameters, the kernel, every file a parameter names (given or by default), the city's tables
    and images (by size and time), the published numbers and the library's source."""
    read, given = {}, {**parameter_defaults(nb), **parameters}
    for name, value in given.items():
        if isinstance(value, str) and value:
            path = Path(value) if Path(value).is_absolute() else source.parent / value  # a chapter's cwd
            if path.is_file():
                read[name] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif name == "city" and path.is_dir():
                read[name] = _city_signature(path)
    if "data_dir" in given:  # its published_results.csv joins chapters 7-8's tables
        root = data_dir(source.parent / given["data_dir"] if given["data_dir"] else None)
        read["data_dir"] = [str(root), _stat(root / PUBLISHED_CSV) if root is not None else None]
    blob = json.dumps({"source": hashlib.sha256(source.read_bytes()).hexdigest(), "parameters": parameters,
                       "kernel": kernel, "files": read, "library": _library_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _is_current(executed: Path, fingerprint: str) -> bool:
    """The executed copy ran to its end with this fingerprint (:func:`_fingerprint`)."""
    if not executed.is_file():
        return False
    try:
        meta = nbformat.read(executed, as_version=4).metadata.get(METADATA_KEY, {})
    except Exception:  # an unreadable copy is simply executed again
        return False
    return meta.get("fingerprint") == fingerprint and meta.get("complete") is True


def chapter_run(source: Path, parameters: dict, earlier: Sequence[str] = ()):
    """(notebook, parameters, fingerprint, schedule) of a chapter, the notebook without the prose
    :func:`leave_out_prose` drops; a bad parameters cell or header raises ChapterExecutionError."""
    nb = jupytext.read(source, fmt="py:percent")
    try:
        names = parameter_names(nb)
        needs, alone, first = chapter_needs(nb, list(earlier))
        used = {k: v for k, v in parameters.items() if k in names}
        leave_out_prose(nb, used.get("city"))
        fingerprint = _fingerprint(source, nb, used, KERNEL)
    except (ValueError, SyntaxError) as err:
        raise ChapterExecutionError(f"chapter {source.name}: {err}") from None
    return nb, used, fingerprint, (needs, alone, first)


def _without_error_outputs(nb):
    """A notebook stopped by :class:`DataUnavailable`, without traceback: it reads as a note."""
    nb.cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    stop = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                 and any(o.get("output_type") == "error" for o in c.get("outputs", []))), len(nb.cells) - 1)
    nb.cells = nb.cells[:stop + 1]  # the rest needs the data (and its text cites numbers never computed)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "error"]
    return nb


LATENTS_TAG = "needs-latents"  # a prose cell about a generated city's hidden causes: see leave_out_prose


def leave_out_prose(nb, city: str | Path | None) -> int:
    """On a city folder without latents (every real city), leave out the markdown cells tagged
    ``needs-latents``: they describe tables the chapter does not draw there. Raises ValueError
    for a tagged code cell (later cells read what it computes). A city given by name, or none,
    keeps every cell. Returns how many were left out."""
    tagged = [c for c in nb.cells if LATENTS_TAG in c.metadata.get("tags", [])]
    if any(c.cell_type != "markdown" for c in tagged):
        raise ValueError(f"only markdown cells may be tagged {LATENTS_TAG!r}: later cells read what code computes")
    folder = Path(city) if city is not None else None
    if not tagged or folder is None or not (folder / CITY_YAML).is_file() or (folder / LATENTS_CSV).is_file():
        return 0
    nb.cells = [c for c in nb.cells if LATENTS_TAG not in c.metadata.get("tags", [])]
    return len(tagged)


def _describe_failure(source: Path, error: BaseException, executed: Path) -> str:
    cell = getattr(error, "exec_count", None)
    where = f"cell In [{cell}]" if cell is not None else "a cell"
    code = (getattr(error, "source", "") or "").strip().splitlines()[:3]
    snippet = "".join(f"\n    | {line}" for line in code)
    what = (f"{getattr(error, 'ename', '')}: {getattr(error, 'evalue', '')}"
            if hasattr(error, "ename") else f"{type(error).__name__}: {error}")
    return (f"chapter {source.name} failed in {where}:{snippet}\n  {what}\n"
            f"  the partly executed notebook is {executed} (open it to see the traceback)")


SCHEDULE_KEY = "schedule"  # a chapter's header may say what it waits for: see chapter_needs


def chapter_needs(nb, earlier: list[str]) -> tuple[list[str], bool, bool]:
    """Which of the ``earlier`` chapters (stems, book order) this one waits for, whether it runs
    alone and whether it starts first. A chapter's jupytext header may declare each::

        # jupyter:
        #   schedule:
        #     needs: [03_satellite_encoder]   # chapters whose outputs it reads ([]: none)
        #     alone: true                     # it gets every core, and nothing runs beside it
        #     first: true                     # it starts before the chapters above it

    Without ``needs`` a chapter waits for every chapter before it, so a new chapter is safe by
    default. Stages two chapters share need no declaration: the cache makes the second wait for
    the first. A need outside ``earlier`` (not selected, or later in the book) is ignored.
    ``alone`` is for the chapter on the critical path that can use every core, and for one that
    times the machine. ``first`` is for a long chapter that needs none of those above it: started
    in book order it would begin late and hold up the end of the build."""
    schedule = nb.metadata.get(SCHEDULE_KEY) or {}
    if not isinstance(schedule, dict) or set(schedule) - {"needs", "alone", "first"}:
        raise ValueError(f"header key {SCHEDULE_KEY!r} takes only 'needs' (a list of chapter "
                         f"stems), 'alone' and 'first' (true/false); got {schedule!r}")
    alone, first = bool(schedule.get("alone", False)), bool(schedule.get("first", False))
    needs = schedule.get("needs")
    if needs is None:
        return list(earlier), alone, first
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise ValueError(f"{SCHEDULE_KEY}.needs must be a list of chapter stems; got {needs!r}")
    return [stem for stem in earlier if stem in needs], alone, first


@dataclass
class _Chapter:  # one chapter to execute
    source: Path
    nb: object
    used: dict
    fingerprint: str
    executed: Path
    needs: list[str]
    alone: bool
    first: bool


def execute_chapters(chapters: list[Path], out_dir: Path, parameters: dict, progress: bool = True,
                     force: bool = False, at_once: int = 1) -> list[Path]:
    """Execute each chapter into ``out_dir/<stem>.ipynb``; return those paths.

    Each chapter gets the keys of ``parameters`` its ``parameters`` cell defines, so one set
    serves every chapter without papermill's "unknown parameter" warnings. Unless
    ``force``, a chapter whose copy is current (:func:`_fingerprint`) and whose needs did not
    rerun is skipped. ``at_once`` > 1 (Linux) runs chapters side by side as :func:`chapter_needs`
    allows, each kernel pinned to its share of cores (most chapters keep one of two cores busy;
    unpinned, they slow each other threefold). Trained weights depend on the thread count in their
    last bits, so a build is repeatable only with the same ``at_once``. The first failure raises
    :class:`ChapterExecutionError` once running chapters finish; its partial notebook stays.
    """
    if at_once < 1:
        raise ValueError(f"at_once must be >= 1; got {at_once}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, done, stems = [], set(), []
    for source in (Path(c).resolve() for c in chapters):
        if not source.is_file():
            raise FileNotFoundError(f"chapter {source} does not exist")
        nb, used, fingerprint, (needs, alone, first) = chapter_run(source, parameters, stems)
        stems.append(source.stem)
        executed = out_dir / f"{source.stem}.ipynb"
        rerun_needs = [t.source.stem for t in todo if t.source.stem in needs]  # it reads what they write
        if not force and not rerun_needs and _is_current(executed, fingerprint):
            if progress:
                print(f"[book] {source.name}: up to date, not re-executed", file=sys.stderr)
            done.add(source.stem)
            continue
        todo.append(_Chapter(source, nb, used, fingerprint, executed, needs, alone, first))
    todo.sort(key=lambda chapter: not chapter.first)  # stable: book order within each group
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the kernels inherit it: no progress bars on the pages
    try:
        _run_schedule(todo, done, progress, at_once)
    finally:  # only this variable is restored: the process may have set others meanwhile
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet
    return [out_dir / f"{stem}.ipynb" for stem in stems]


def _run_schedule(todo: list[_Chapter], done: set[str], progress: bool, at_once: int) -> None:
    """Start each chapter in order once its needs are done and its share of cores is free (an
    ``alone`` chapter: an empty machine, and no later chapter overtakes it). A failure stops new starts."""
    # the cores this process may run on; None where they cannot be pinned (not Linux)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
    if cores is None or len(cores) < 2:
        at_once = 1  # nothing to share, or no way to pin
    share = max(1, len(cores) // at_once) if at_once > 1 else 0
    free = list(cores) if at_once > 1 else []
    running: dict = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        while todo or running:
            for chapter in list(todo):
                if failure is not None or len(running) >= at_once or any(c.alone for c, _ in running.values()):
                    break
                if not set(chapter.needs) <= done:
                    continue
                if chapter.alone and running:
                    break  # ready: nothing new starts, so it is not kept waiting by later chapters
                if len(free) < share:
                    continue
                todo.remove(chapter)
                pinned = [] if at_once == 1 else (list(cores) if chapter.alone else free[:share])
                free = [core for core in free if core not in pinned]
                bar = progress and at_once == 1  # side by side, two bars would garble each other
                future = pool.submit(_execute_one, chapter, progress, bar, pinned)
                running[future] = (chapter, pinned)
            if not running:
                if failure is None:  # cannot happen with needs drawn from earlier chapters only
                    raise ChapterExecutionError(f"chapters {[c.source.name for c in todo]} wait for each other")
                break
            try:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                _interrupt_kernels()  # the chapters running now stop at their cell, as in the foreground
                raise
            for future in finished:
                chapter, pinned = running.pop(future)
                free = sorted(set(free) | set(pinned)) if not chapter.alone else list(cores)
                if future.exception() is not None:
                    failure = failure or future.exception()
                else:
                    done.add(chapter.source.stem)
    if failure is not None:
        raise failure


def _interrupt_kernels() -> None:
    """SIGINT the chapters' kernels: in sessions of their own, Ctrl-C does not reach them."""
    for children in Path("/proc/self/task").glob("*/children"):  # Linux; elsewhere nothing to find
        for pid in children.read_text().split():
            try:
                os.kill(int(pid), signal.SIGINT)
            except OSError:  # already gone
                pass


def _execute_one(chapter: _Chapter, progress: bool, bar: bool, pinned: list[int]) -> Path:
    """Execute one chapter, its kernel pinned to ``pinned`` cores if any."""
    source, nb, executed = chapter.source, chapter.nb, chapter.executed
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    # pinned before anything imports torch, whose thread pool sizes itself from the cores it may use
    pin = f"import os\nos.sched_setaffinity(0, {set(pinned)})\n" if pinned else ""
    setup = pin + "from musecl.notebooks import reader_view\nreader_view()"  # the page's warnings
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup, metadata={"tags": ["remove-cell"]}))
    if progress:
        where = f" on cores {pinned}" if pinned else ""
        print(f"[book] executing {source.name}{where} with {chapter.used}", file=sys.stderr)
    start, started = time.perf_counter(), time.time()
    stopped_early = False
    try:
        # written once, not per cell: each write validates the whole notebook
        result = papermill.execute_notebook(
            nb, executed, parameters=chapter.used, kernel_name=KERNEL, progress_bar=bar,
            cwd=source.parent, language="python", request_save_on_cell_execute=False,
            # the kernel's own log, quiet: its TCP warning (a local kernel) and the "ERROR |
            # KeyboardInterrupt caught in kernel" that jupyter_client's shutdown (SIGINT first)
            # sometimes draws after the last cell; a failing cell or kernel still raises below
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except Exception as err:  # PapermillExecutionError, dead kernel, timeout, ...
        if getattr(err, "ename", None) != DataUnavailable.__name__:
            raise ChapterExecutionError(_describe_failure(source, err, executed)) from err
        result = _without_error_outputs(nbformat.read(executed, as_version=4))
        stopped_early = True  # executed again next time: the data may have arrived
        if progress:
            print(f"[book] {source.name}: stopped early, {err.evalue}", file=sys.stderr)
    hidden = any(PARAMETERS_TAG in c.metadata.get("tags", []) and "remove-cell" in c.metadata.get("tags", [])
                 for c in result.cells)  # a page that hides its settings (the landing page) hides this run's too
    for cell in result.cells:
        # the reader sees the chapter's defaults; the values of this run sit folded under them
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags and "remove-cell" not in tags:
            tags.append("remove-cell" if hidden else "hide-input")
    drop_captions_without_figures(result)
    separate_figure_outputs(result)
    seconds = round(time.perf_counter() - start, 1)
    result.metadata[METADATA_KEY] = {
        "source": source.name, "parameters": chapter.used, "fingerprint": chapter.fingerprint,
        "complete": not stopped_early, "seconds": seconds,
        # the build's timeline (epoch seconds) and the cores it was pinned to (None: not pinned)
        "started": round(started, 1), "finished": round(time.time(), 1), "cores": len(pinned) or None}
    with atomic_write(executed) as handle:
        nbformat.write(result, handle)
    if progress:
        print(f"[book] {source.name}: done in {seconds:.1f} s", file=sys.stderr)
    return executed


IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def _is_image(output) -> bool:
    return any(kind in output.get("data", {}) for kind in IMAGE_TYPES)


def drop_captions_without_figures(nb) -> int:
    """Remove the caption of every cell that drew no image (myst-nb prints it under a note); count them."""
    removed = 0
    for cell in nb.cells:
        mystnb = cell.get("metadata", {}).get("mystnb", {})
        if "figure" not in mystnb or cell.get("cell_type") != "code":
            continue
        if not any(map(_is_image, cell.get("outputs", []))):
            del mystnb["figure"]
            removed += 1
    return removed


def separate_figure_outputs(nb) -> int:
    """Move a captioned cell's outputs before its first and after its last image into input-less
    cells above and below (myst-nb captions every output). Returns how many cells were added."""
    def outputs_cell(part: list) -> list:
        return ([nbformat.v4.new_code_cell("", metadata={"tags": ["remove-input"]}, outputs=part)]
                if part else [])

    cells = []
    for cell in nb.cells:
        outputs = cell.get("outputs", []) if cell.get("cell_type") == "code" else []
        images = [k for k, output in enumerate(outputs) if _is_image(output)]
        if "figure" not in cell.get("metadata", {}).get("mystnb", {}) or not images:
            cells.append(cell)
            continue
        lead, tail = outputs[:images[0]], outputs[images[-1] + 1:]
        cell.outputs = outputs[images[0]:images[-1] + 1]
        cells += [*outputs_cell(lead), cell, *outputs_cell(tail)]
    added = len(cells) - len(nb.cells)
    nb.cells = cells
    return added


def write_placeholder(source: Path, path: Path) -> Path:
    """A page for a chapter ``--only`` left out, marked incomplete so the next run executes it."""
    nb = jupytext.read(source, fmt="py:percent")
    title = next((line for cell in nb.cells if cell.cell_type == "markdown"
                  for line in cell.source.splitlines() if line.startswith("# ")), f"# {source.stem}")
    note = (f"```{{note}}\nThis chapter was not executed in this build (`musecl book --only ...`). "
            f"`musecl book` executes it; `jupyter lab {BOOK_DIR}/{source.name}` opens it as a notebook.\n```")
    page = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"{title}\n\n{note}")])
    page.metadata[METADATA_KEY] = {"source": source.name, "complete": False, "placeholder": True}
    with atomic_write(path) as handle:  # makes the folder
        nbformat.write(page, handle)
    return path


# ---- staging and rendering ----
def _sync(files: dict[Path, Path], site_dir: Path) -> None:
    """Make ``site_dir`` (outside ``_build``) hold exactly ``files`` (relative path -> source);
    unchanged files keep their mtime, so Sphinx re-reads only what changed."""
    for rel, src in files.items():
        dest = site_dir / rel
        st = src.stat()
        if dest.is_file() and dest.stat().st_size == st.st_size and \
                int(dest.stat().st_mtime) == int(st.st_mtime):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    for folder, dirs, names in os.walk(site_dir, topdown=False):
        here = Path(folder)
        if here.relative_to(site_dir).parts[:1] == ("_build",):
            continue
        for name in names:
            if (here / name).relative_to(site_dir) not in files:
                (here / name).unlink()
        if here != site_dir and not any(here.iterdir()):
            here.rmdir()


def stage_site(repo_root: Path, executed_dir: Path, site_dir: Path) -> Path:
    """Lay the book out in ``site_dir`` with executed notebooks in place of chapter sources;
    ``musecl/*.py`` is copied too, so ``literalinclude`` of ``../musecl/...`` resolves."""
    repo_root, executed_dir, site_dir = (Path(p).resolve() for p in (repo_root, executed_dir, site_dir))
    for name in (CONFIG_YML, TOC_YML):
        if not (repo_root / name).is_file():
            raise BookBuildError(f"{repo_root / name} is missing")
    chapters = chapter_sources(repo_root)
    files: dict[Path, Path] = {Path(n): repo_root / n for n in (CONFIG_YML, TOC_YML)}
    files.update({Path(p.name): p for p in repo_root.glob("*.bib")})
    book = [path for path in (repo_root / BOOK_DIR).rglob("*")
            if not path.is_dir() and path not in chapters and path.suffix not in _SKIP_SUFFIXES
            and not _SKIP_DIRS & set(path.relative_to(repo_root).parts)]
    # the city format page includes data/README.md
    for path in (*book, *(repo_root / "data").glob("*.md"), *(repo_root / "musecl").rglob("*.py")):
        files[path.relative_to(repo_root)] = path
    executed = {c.relative_to(repo_root).with_suffix(".ipynb"): executed_dir / f"{c.stem}.ipynb"
                for c in chapters}
    files.update(executed)
    if missing := [path.stem for path in executed.values() if not path.is_file()]:
        raise BookBuildError(f"no executed notebook for {missing} in {executed_dir}; "
                             "execute them first (run `musecl book` without --only)")
    site_dir.mkdir(parents=True, exist_ok=True)
    _sync(files, site_dir)
    return site_dir


def build_book(site_dir: Path) -> Path:
    """Run ``jupyter-book build``; return the HTML folder."""
    site_dir = Path(site_dir).resolve()
    # jupyter_book has no ``__main__``; calling its CLI function keeps this interpreter's venv
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(site_dir)]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if done.returncode != 0:
        raise BookBuildError(f"jupyter-book build {site_dir} failed (exit {done.returncode}); "
                             "the messages above name the page")
    html = site_dir / "_build" / "html"
    if not (html / "index.html").is_file():
        raise BookBuildError(f"jupyter-book finished but {html / 'index.html'} is missing")
    return html


# ---- the one command ----
def default_city(out: Path) -> Path:
    """The default toy city, generated under ``out/cities/toy`` when missing or outdated."""
    # imported here: it loads scikit-learn (~1 s), which only a build on the default city needs
    from musecl.datasets.toy import is_current_toy_city, make_toy_city

    city = Path(out) / "cities" / "toy"
    if not is_current_toy_city(city):
        print(f"[book] generating the toy city in {city}", file=sys.stderr)
        make_toy_city(city, n_regions=600, seed=0)
    return city


MACHINE_SPEED_JSON = "machine_speed.json"  # in the build folder: the reference workload's time


def time_reference_workload(steps: int = 300, repeats: int = 3) -> float:
    """Seconds (median of ``repeats``) of ``steps`` forward and backward passes of the MLP
    probe's matrix products (batch 32, numpy, one thread). A machine's speed varies from hour
    to hour, so a build's times mean little without this; the benchmark appendix shows it."""
    rng = np.random.default_rng(0)
    widths = (128, 512, 256, 128, 64)
    weights = [rng.standard_normal((a, b), dtype=np.float32) for a, b in zip(widths, widths[1:])]
    x = rng.standard_normal((32, widths[0]), dtype=np.float32)
    times = []
    with threadpool_limits(1):
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                inputs, h = [], x
                for w in weights:
                    inputs.append(h)
                    h = np.maximum(h @ w, 0)
                grad = np.ones_like(h)
                for w, a in zip(weights[::-1], inputs[::-1]):
                    _ = a.T @ grad  # the weight's gradient
                    grad = grad @ w.T
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def build(city: str | Path | None = None, params_file: str | Path | None = None,
          out: str | Path = "build", only: list[str] | None = None, force: bool = False,
          at_once: int = 2) -> Path:
    """Execute the chapters, stage the site, render it; return the HTML folder. Chapters get
    ``city`` (a folder or data set name; default the toy city), ``out_dir`` (``out/work``, shared)
    and ``params_file``'s keys (RunConfig's, checked first). ``at_once``: see :func:`execute_chapters`.
    Files: ``out/executed/*.ipynb``, ``out/site`` (staged), ``out/site/_build/html``."""
    from musecl.runner import resolve_city

    if at_once < 1:  # before the toy city is generated
        raise ValueError(f"at_once must be >= 1; got {at_once}")
    out = Path(out).resolve()
    repo_root = find_repo_root()
    params = {}
    if params_file is not None:  # chapters read the rest of the run settings from the same file
        settings = RunConfig.from_yaml(params_file).to_dict()  # a typo or a bad value: said now, not in chapter 2
        given = load_yaml(params_file) or {}  # a mapping: from_yaml said so otherwise
        # as the chapters' RunConfig reads them (seeds: 0 -> [0]; old names renamed)
        params = {RENAMED.get(key, key): settings[RENAMED.get(key, key)] for key in given}
        params["params_file"] = str(Path(params_file).resolve())
    city = default_city(out) if city is None else resolve_city(city, out / "cities").root
    params["city"] = str(Path(city).resolve())
    params["out_dir"] = str(out / "work")
    chapters = select_chapters(chapter_sources(repo_root), only)
    root = repo_root / toc_files(repo_root)[0]  # the landing page shows what the chapters computed: last
    chapters.sort(key=lambda c: c.with_suffix("") == root)
    reference = time_reference_workload()
    print(f"[book] reference workload (machine speed): {reference:.2f} s", file=sys.stderr)
    with atomic_write(out / MACHINE_SPEED_JSON) as handle:
        json.dump({"reference_s": round(reference, 3), "measured": time.time()}, handle)
    start = time.perf_counter()
    execute_chapters(chapters, out / "executed", params, force=force, at_once=at_once)
    timings = {"execute": time.perf_counter() - start}
    for source in chapter_sources(repo_root):  # --only: the others render as a note, so the book is whole
        executed = out / "executed" / f"{source.stem}.ipynb"
        if source not in chapters and not _is_current(executed, chapter_run(source, params)[2]):
            print(f"[book] {source.name}: not executed with these settings (--only); its page says so",
                  file=sys.stderr)
            write_placeholder(source, executed)
    start = time.perf_counter()
    site = stage_site(repo_root, out / "executed", out / "site")
    timings["stage"] = time.perf_counter() - start
    start = time.perf_counter()
    html = build_book(site)
    timings["render"] = time.perf_counter() - start
    print("[book] " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), file=sys.stderr)
    return html
