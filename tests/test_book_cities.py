"""The book on cities that lack modalities, as most real cities do (issue: any city a user brings).

Each city is the small toy city with some modalities dropped (:func:`musecl.city.restrict_city`).
The chapters that read the book's city are executed with ``params/smoke.yaml``; the others
(real-data and appendix chapters, which do not depend on the city) render as "not executed"
pages, so every page of the book is rendered. A chapter whose inputs the city lacks must end in
its note, never in an error. Marked ``book`` (run by ``make check-book`` after ``make book``):
the four small books with modalities dropped took 14 min on the 2-core machine (3.1-4.0 min each,
rendering included); the plain one (every modality, no latents or ceilings, as a real city; the
random split alone) runs every chapter.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from musecl.city import restrict_city
from musecl.datasets.toy import make_toy_city
from musecl.book import LATENTS_TAG, METADATA_KEY, build, chapter_sources, find_repo_root, parameter_names

pytestmark = [pytest.mark.book, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
CITIES = {  # name -> (modalities kept, POI text kept, a generated city's latents and ceilings kept)
    "poi-only": (("poi",), False, True),
    "poi-mobility": (("poi", "mobility"), True, True),
    "images-only": (("satellite", "streetview"), True, True),
    "images-poi": (("satellite", "streetview", "poi"), True, True),
    "plain": (("satellite", "streetview", "poi", "mobility"), True, False),  # as a real city: nothing hidden
}
# the paper's split alone, and with spatial cross-fitting (params/smoke.yaml: random and spatial)
SPLITS = {"plain": ["random"], "images-poi": ["random", "spatial-cv"]}
# chapters that must run to their end: without images, MuseCL (vector views) takes MuseCL's place;
# without trips (no street-view pairing), MuseCL fuses the satellite view alone
COMPLETE = {"poi-mobility": ("06_fusion", "07_prediction", "08_results"),
            "images-poi": ("06_fusion", "07_prediction", "08_results")}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|<IPython\.core\.display\.\w+ object>")


def city_chapters() -> list[str]:
    """Chapters with a ``city`` parameter: the ones whose content depends on the book's city."""
    import jupytext

    return [c.stem for c in chapter_sources(find_repo_root(REPO))
            if "city" in parameter_names(jupytext.read(c, fmt="py:percent"))]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_city(tmp_path_factory.mktemp("toy") / "toy", n_regions=150, seed=0, image_size=32,
                         progress=False)


@pytest.mark.parametrize("name", list(CITIES))
def test_book_renders_on_a_city_with_modalities_dropped(name, toy, tmp_path):
    modalities, poi_text, latents = CITIES[name]
    city = restrict_city(toy, tmp_path / name, modalities, poi_text=poi_text, latents=latents)
    chapters = city_chapters()
    params = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    params["splits"] = SPLITS.get(name, params["splits"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    html = build(city=city, params_file=tmp_path / "params.yaml", out=tmp_path / "book", only=chapters)
    assert (html / "index.html").is_file()
    for source in chapter_sources(find_repo_root(REPO)):
        executed = nbformat.read(tmp_path / "book" / "executed" / f"{source.stem}.ipynb", as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: {source.stem} shows an error: {errors[0].get('ename')}"
        page = html / source.relative_to(REPO).with_suffix(".html")
        assert page.is_file(), f"{name}: {page} was not rendered"
        text = page.read_text(errors="replace")
        assert not TRACEBACK.search(text), f"{name}: {page.name} shows a traceback or an object repr"
        assert "+nan" not in text, f"{name}: {page.name} shows a number that is not one (one seed's interval?)"
        tagged = [c for c in executed.cells if LATENTS_TAG in c.metadata.get("tags", [])]
        assert latents or not tagged, f"{name}: {source.stem} explains latents the city does not have"
        meta = executed.metadata.get(METADATA_KEY, {})
        assert meta.get("complete") or source.stem not in COMPLETE.get(name, ()), f"{name}: {source.stem} stopped"
        if source.stem in chapters and not meta.get("complete"):  # stopped: the reader is told why
            assert "does not have" in text, f"{name}: {source.stem} stopped without its note"
