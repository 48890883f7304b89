"""Every chapter executes on a small city, checked by nbval (``pytest --nbval-lax``).

The chapters are jupytext files; each is written as a notebook with its parameters set for a
small run (the small toy city, ``params/smoke.yaml``, one seed) and nbval executes it cell by
cell in the chapter's own folder. ``--nbval-lax`` checks that every cell runs, not that outputs
match stored ones (the chapters store none). Chapters whose real data are missing stop at their
note, which nbval would count as a failure, so they are left out when the data are absent (the
book test covers that note). The benchmark appendix is left out too: it measures speed, the book
runs it. About 10 minutes on the 2-core machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[1]
SMOKE = {"params_file": str(REPO / "params" / "smoke.yaml"), "seeds": [0], "quick": True}


def have_data(name: str) -> bool:
    from musecl.datasets.sources import DataMissingError, fetch

    try:
        fetch(name, download=False, progress=False)
    except DataMissingError:
        return False
    return True


def test_every_chapter_executes_under_nbval(tmp_path):
    import jupytext
    import nbformat
    from papermill.parameterize import parameterize_notebook

    from musecl.datasets.toy import make_toy_city
    from musecl.book import chapter_sources, parameter_names

    city = make_toy_city(tmp_path / "city", n_regions=150, seed=0, image_size=32, progress=False)
    values = {**SMOKE, "city": str(city), "out_dir": str(tmp_path / "work")}
    folder = REPO / "book"
    written = []
    for source in chapter_sources(REPO):
        if source.stem == "appendix_benchmark":  # measures speed (about 2 min even when quick): the book runs it
            continue
        nb = jupytext.read(source, fmt="py:percent")
        needs = [name for name in ("beijing", "manhattan") if f'require_data("{name}"' in source.read_text()]
        if needs and not all(have_data(name) for name in needs):
            continue
        nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
        used = {k: v for k, v in values.items() if k in parameter_names(nb)}
        path = folder / f".nbval-{source.stem}.ipynb"  # beside the chapter: relative paths as in the book
        nb.metadata["papermill"] = {}  # what papermill's loader adds before it parameterizes
        for cell in nb.cells:
            cell.metadata.setdefault("tags", [])
        nb = parameterize_notebook(nb, used, kernel_name="python3", language="python")
        nbformat.write(nb, path)
        written.append(path)
    try:
        env = dict(os.environ, TQDM_DISABLE="1")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
                               "-p", "no:cacheprovider", "-o", "addopts=", *map(str, written)],
                              cwd=folder, capture_output=True, text=True, env=env)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
