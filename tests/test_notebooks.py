"""The book pipeline: chapters executed with papermill, skipped when current, staged for Jupyter Book."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from musecl.book import (
    METADATA_KEY, BookBuildError, ChapterExecutionError, _is_current, chapter_needs, chapter_sources,
    default_city, execute_chapters, leave_out_prose, parameter_names, select_chapters, stage_site, toc_files,
)

REPO = Path(__file__).resolve().parents[1]

CHAPTER = '''# %% [markdown]
# # A chapter

# %% tags=["parameters"]
x = 1
label: str = "default"

# %%
print(label, x * 2)
'''


def write_chapter(folder: Path, name: str = "01_demo.py", text: str = CHAPTER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def outputs_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_parameter_names_reads_the_parameters_cell():
    import jupytext

    nb = jupytext.reads(CHAPTER, fmt="py:percent")
    assert parameter_names(nb) == {"x", "label"}
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        parameter_names(jupytext.reads("# %%\nx = 1\n", fmt="py:percent"))


def test_select_chapters_by_stem_number_or_path():
    chapters = [Path("book/01_data.py"), Path("book/02_sampling.py")]
    assert select_chapters(chapters, None) == chapters
    assert select_chapters(chapters, ["02"]) == chapters[1:]
    assert select_chapters(chapters, ["book/01_data.py", "02_sampling"]) == chapters
    with pytest.raises(BookBuildError, match="no such chapter"):
        select_chapters(chapters, ["03"])


def test_the_books_toc_names_existing_chapters():
    entries = toc_files(REPO)
    dangling = [e for e in entries if not any((REPO / e).with_suffix(s).is_file() for s in (".py", ".md"))]
    assert len(entries) > 10 and not dangling, dangling
    assert [c.relative_to(REPO).with_suffix("").as_posix() for c in chapter_sources(REPO)] == [
        e for e in entries if (REPO / e).with_suffix(".py").is_file()]


@pytest.mark.slow
def test_execute_injects_only_known_parameters_and_skips_when_current(tmp_path):
    chapter = write_chapter(tmp_path / "book")
    out = tmp_path / "executed"
    params = {"x": 21, "label": "run", "city": "/not/used/here"}
    [executed] = execute_chapters([chapter], out, params, progress=False)
    nb = nbformat.read(executed, as_version=4)
    assert "run 42" in outputs_text(nb)
    assert nb.metadata["musecl"]["parameters"] == {"x": 21, "label": "run"}
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)

    stamp = executed.stat().st_mtime_ns
    execute_chapters([chapter], out, params, progress=False)
    assert executed.stat().st_mtime_ns == stamp, "an up-to-date chapter was executed again"
    execute_chapters([chapter], out, {**params, "x": 1}, progress=False)
    assert "run 2" in outputs_text(nbformat.read(executed, as_version=4)), "changed x not rerun"


def test_an_edited_params_file_runs_its_chapters_again(tmp_path):
    """Chapters read their run settings from the params file, not from parameters: a copy run with
    other file content is stale although the file's path, the parameter, is the same."""
    text = CHAPTER.replace('label: str = "default"', 'label: str = "default"\nparams_file = None') + (
        "\n# %%\nprint(open(params_file).read())\n")
    chapter = write_chapter(tmp_path / "book", text=text)
    settings = tmp_path / "ci.yaml"
    settings.write_text("n_triplets: 10\n")
    out = tmp_path / "executed"
    [executed] = execute_chapters([chapter], out, {"params_file": str(settings)}, progress=False)
    stamp = executed.stat().st_mtime_ns
    execute_chapters([chapter], out, {"params_file": str(settings)}, progress=False)
    assert executed.stat().st_mtime_ns == stamp, "an up-to-date chapter was executed again"
    settings.write_text("n_triplets: 20\n")
    execute_chapters([chapter], out, {"params_file": str(settings)}, progress=False)
    assert "n_triplets: 20" in outputs_text(nbformat.read(executed, as_version=4)), "edited settings not rerun"


@pytest.mark.slow
def test_a_failing_chapter_is_named_and_its_partial_notebook_kept(tmp_path):
    text = CHAPTER + '\n# %%\nraise ValueError("no city here")\n'
    chapter = write_chapter(tmp_path / "book", "02_broken.py", text)
    with pytest.raises(ChapterExecutionError) as caught:
        execute_chapters([chapter], tmp_path / "executed", {}, progress=False)
    message = str(caught.value)
    assert "02_broken.py" in message and "In [" in message and "no city here" in message
    partial = nbformat.read(tmp_path / "executed" / "02_broken.ipynb", as_version=4)
    assert "default 2" in outputs_text(partial)
    assert not partial.metadata.get("musecl", {}).get("complete")


LATENT_PROSE = CHAPTER + '''
# %% [markdown] tags=["needs-latents"]
# What the hidden causes show.

# %% [markdown]
# What every city shows.
'''


def test_prose_about_latents_is_left_out_on_a_city_folder_without_them(tmp_path):
    import jupytext

    real, generated = tmp_path / "real", tmp_path / "generated"
    for folder in (real, generated):
        folder.mkdir()
        (folder / "city.yaml").write_text("name: x\n")
    (generated / "latents.csv").write_text("region_id,a\n")

    def kept(city) -> list[str]:
        nb = jupytext.reads(LATENT_PROSE, fmt="py:percent")
        leave_out_prose(nb, city)
        return [c.source for c in nb.cells if c.cell_type == "markdown"]

    assert kept(real) == ["# A chapter", "What every city shows."]
    everything = ["# A chapter", "What the hidden causes show.", "What every city shows."]
    assert kept(generated) == kept(None) == kept("toy") == everything  # a name: not a folder to judge
    code = jupytext.reads(LATENT_PROSE.replace("# %% [markdown] tags", "# %% tags"), fmt="py:percent")
    with pytest.raises(ValueError, match="only markdown cells"):
        leave_out_prose(code, generated)


def with_schedule(schedule: str, body: str = "import time\ntime.sleep(2)\n") -> str:
    """A chapter whose jupytext header holds ``schedule`` (YAML lines under ``schedule:``)."""
    header = "# ---\n# jupyter:\n#   schedule:\n" + "".join(f"#     {line}\n" for line in schedule.splitlines())
    return header + "# ---\n\n" + CHAPTER + "\n# %%\n" + body


def test_chapter_needs_reads_the_header_and_waits_for_everything_before_by_default():
    import jupytext

    earlier = ["01_data", "02_similarity", "03_satellite_encoder"]
    assert chapter_needs(jupytext.reads(CHAPTER, fmt="py:percent"), earlier) == (earlier, False, False)
    declared = jupytext.reads(with_schedule("needs: [03_satellite_encoder, 99_later]\nalone: true"),
                              fmt="py:percent")
    assert chapter_needs(declared, earlier) == (["03_satellite_encoder"], True, False)  # a later one is no need
    assert chapter_needs(jupytext.reads(with_schedule("needs: []\nfirst: true"), fmt="py:percent"),
                         earlier) == ([], False, True)
    for bad in ("after: [01_data]", "needs: 01_data"):
        with pytest.raises(ValueError, match="schedule"):
            chapter_needs(jupytext.reads(with_schedule(bad), fmt="py:percent"), earlier)


CORES = 'import os, time\nimport torch\nassert torch.get_num_threads() == len(os.sched_getaffinity(0))\n' \
        'print(f"sees {len(os.sched_getaffinity(0))} cores")\ntime.sleep(2)\n'


needs_two_cores = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                     reason="chapters run side by side on two or more cores they can be pinned to")


def _timeline(out: Path, stem: str) -> tuple[float, float]:
    meta = nbformat.read(out / f"{stem}.ipynb", as_version=4).metadata[METADATA_KEY]
    return meta["started"], meta["finished"]


def run_side_by_side(tmp_path: Path, schedules: dict[str, tuple[str, ...]]) -> list[tuple[float, float]]:
    """Execute one chapter per ``stem: with_schedule arguments``, two at a time; their timelines."""
    chapters = [write_chapter(tmp_path / "book", f"{stem}.py", with_schedule(*spec))
                for stem, spec in schedules.items()]
    out = tmp_path / "executed"
    assert execute_chapters(chapters, out, {}, progress=False, at_once=2) == [out / f"{c.stem}.ipynb" for c in chapters]
    return [_timeline(out, c.stem) for c in chapters]


@pytest.mark.slow
@needs_two_cores
def test_chapters_run_side_by_side_after_what_they_need_and_alone_when_they_say_so(tmp_path):
    a, b, after, alone, free = run_side_by_side(tmp_path, {
        "01_a": ("needs: []",), "02_b": ("needs: []",), "03_after_both": ("needs: [01_a, 02_b]",),
        "04_alone": ("needs: []\nalone: true",), "05_free": ("needs: []", CORES)})
    out = tmp_path / "executed"
    assert b[0] < a[1] and a[0] < b[1], "two chapters without needs did not overlap"
    assert after[0] >= max(a[1], b[1]) - 0.1, "a chapter started before what it needs was done"
    for other in (a, b, after, free):
        assert other[1] <= alone[0] + 0.1 or other[0] >= alone[1] - 0.1, "a chapter ran beside the alone one"
    cores = len(os.sched_getaffinity(0))
    assert nbformat.read(out / "05_free.ipynb", as_version=4).metadata[METADATA_KEY]["cores"] == cores // 2
    assert f"sees {cores // 2} cores" in outputs_text(nbformat.read(out / "05_free.ipynb", as_version=4))
    assert nbformat.read(out / "04_alone.ipynb", as_version=4).metadata[METADATA_KEY]["cores"] == cores


@pytest.mark.slow
@needs_two_cores
def test_a_chapter_marked_first_starts_before_the_chapters_above_it(tmp_path):
    a, b, first = run_side_by_side(tmp_path, {"01_a": ("needs: []",), "02_b": ("needs: []",),
                                              "03_first": ("needs: []\nfirst: true",)})
    assert first[0] < b[0] and a[0] < b[0], "in book order 02_b would start beside 01_a"
    assert b[0] >= min(a[1], first[1]) - 0.1, "three chapters ran at once"


@pytest.mark.slow
def test_a_failure_side_by_side_stops_what_needs_it_and_lets_the_other_finish(tmp_path):
    book = tmp_path / "book"
    chapters = [write_chapter(book, "01_broken.py", with_schedule("needs: []", 'raise ValueError("broken")\n')),
                write_chapter(book, "02_slow.py", with_schedule("needs: []")),
                write_chapter(book, "03_needs_broken.py", with_schedule("needs: [01_broken]"))]
    out = tmp_path / "executed"
    with pytest.raises(ChapterExecutionError, match="01_broken.py"):
        execute_chapters(chapters, out, {}, progress=False, at_once=2)
    assert nbformat.read(out / "02_slow.ipynb", as_version=4).metadata[METADATA_KEY]["complete"]
    assert not (out / "03_needs_broken.ipynb").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_chapters_running_side_by_side(tmp_path):
    """Kernels run in sessions of their own, so Ctrl-C reaches only the book process; the
    chapters it waits on must still stop at their cell instead of running to their end."""
    import signal
    import subprocess
    import sys
    import time

    book = tmp_path / "book"
    chapter = write_chapter(book, "01_slow.py", with_schedule("needs: []", "import time\ntime.sleep(300)\n"))
    script = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal;
              # a job started in the background (CI) inherits SIGINT ignored
              "from pathlib import Path\nfrom musecl.book import execute_chapters\n"
              f"execute_chapters([Path({str(chapter)!r})], Path({str(tmp_path / 'out')!r}), {{}}, at_once=2)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while "executing 01_slow.py" not in (line := process.stderr.readline()) and time.time() < deadline:
        assert line or process.poll() is None, "the book process ended before executing the chapter"
    time.sleep(8)  # the kernel starts and enters the sleeping cell
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("Ctrl-C did not stop the running chapter within a minute") from None
    assert process.returncode != 0 and "KeyboardInterrupt" in err


def test_stage_site_puts_executed_notebooks_where_the_toc_points(tmp_path):
    repo = tmp_path / "repo"
    write_chapter(repo / "book", "01_demo.py")
    (repo / "book" / "index.md").write_text("# Home\n")
    (repo / "book" / "figures").mkdir()
    (repo / "book" / "figures" / "a.png").write_bytes(b"png")
    (repo / "musecl").mkdir()
    (repo / "musecl" / "sampling.py").write_text("def f():\n    pass\n")
    (repo / "_config.yml").write_text("title: t\n")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/index\n"
                                   "chapters:\n  - file: book/01_demo\n")
    executed = tmp_path / "executed"
    site = tmp_path / "site"
    with pytest.raises(BookBuildError, match="01_demo"):
        stage_site(repo, executed, site)
    executed.mkdir()
    (executed / "01_demo.ipynb").write_text("{}")
    (site / "book").mkdir(parents=True)
    (site / "book" / "stale.md").write_text("gone")
    (site / "_build").mkdir()
    (site / "_build" / "keep").write_text("kept")
    stage_site(repo, executed, site)
    staged = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert {"_config.yml", "_toc.yml", "book/index.md", "book/01_demo.ipynb",
            "book/figures/a.png", "_build/keep"} <= staged
    assert "book/01_demo.py" not in staged and "book/stale.md" not in staged
    assert "musecl/sampling.py" in staged  # chapters literalinclude ../musecl/<module>.py


@pytest.mark.slow
def test_data_chapter_runs_on_a_tiny_toy_city(tmp_path):
    toy = pytest.importorskip("musecl.datasets.toy", reason="musecl.datasets.toy not written yet")
    city = tmp_path / "city"
    toy.make_toy_city(city, n_regions=60, seed=0, image_size=32)
    [chapter] = select_chapters(chapter_sources(REPO), ["01"])
    params = {"city": str(city), "out_dir": str(tmp_path / "work")}
    [executed] = execute_chapters([chapter], tmp_path / "executed", params, progress=False)
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs, "the executed chapter has no outputs"
    assert not [o for o in outputs if o.output_type == "error"]


def test_what_makes_a_chapter_stale(tmp_path, monkeypatch):
    """The fingerprint changes with the chapter's text, a parameter, the content of a file a
    parameter names by default (not only when given), the city's tables and images, the data
    directory's published numbers and the library; it stays when nothing changed, so an
    executed copy with it is current."""
    import jupytext

    from musecl import book

    text = CHAPTER.replace('label: str = "default"', 'label: str = "default"\nparams_file = "ci.yaml"')
    source = write_chapter(tmp_path / "book", text=text)
    (tmp_path / "book" / "ci.yaml").write_text("n_triplets: 10\n")
    city = tmp_path / "city"
    city.mkdir()
    (city / "city.yaml").write_text("name: x\n")

    def fingerprint(parameters=None):
        nb = jupytext.read(source, fmt="py:percent")
        return book._fingerprint(source, nb, {"city": str(city), **(parameters or {})}, "python3")

    first = fingerprint()
    assert fingerprint() == first
    assert fingerprint({"x": 2}) != first
    (tmp_path / "book" / "ci.yaml").write_text("n_triplets: 20\n")  # the default params file, edited
    edited = fingerprint()
    assert edited != first
    (city / "indicators.csv").write_text("region_id,PD\n")  # the city made again
    assert fingerprint() != edited
    (city / "images.csv").write_text("region_id,kind,path\nr1,satellite,img/r1.png\n")
    (city / "img").mkdir()
    (city / "img" / "r1.png").write_bytes(b"one")
    with_image = fingerprint()
    (city / "img" / "r1.png").write_bytes(b"another")  # an image replaced, images.csv as it was
    assert fingerprint() != with_image
    data = tmp_path / "data"
    data.mkdir()
    without_published = fingerprint({"data_dir": str(data)})
    (data / "published_results.csv").write_text("source,city\n")  # the paper's numbers arrive
    assert fingerprint({"data_dir": str(data)}) != without_published
    remade = fingerprint()
    source.write_text(text + "\n# %%\nprint(3)\n")
    assert fingerprint() != remade
    edited_source = fingerprint()
    book._library_hash.cache_clear()
    monkeypatch.setattr(book, "_library_hash", lambda: "another library")
    assert fingerprint() != edited_source

    executed = tmp_path / "executed" / "01_demo.ipynb"
    executed.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata[METADATA_KEY] = {"fingerprint": "fp", "complete": True}
    nbformat.write(nb, executed)
    assert _is_current(executed, "fp") and not _is_current(executed, "other")
    nb.metadata[METADATA_KEY]["complete"] = False
    nbformat.write(nb, executed)
    assert not _is_current(executed, "fp") and not _is_current(tmp_path / "none.ipynb", "fp")


@pytest.mark.slow
def test_a_chapter_runs_again_when_a_chapter_it_needs_does(tmp_path):
    """b reads what a writes: editing a reruns a, and b with it, though b did not change."""
    book = tmp_path / "book"
    a = write_chapter(book, "01_a.py", CHAPTER.replace("x = 1", "x = 1\nout = ''") +
                      "\n# %%\nopen(out, 'w').write('VALUE-1')\n")
    b = write_chapter(book, "02_b.py", "# ---\n# jupyter:\n#   schedule:\n#     needs: [01_a]\n# ---\n\n" +
                      CHAPTER.replace("x = 1", "x = 1\nout = ''") + "\n# %%\nprint(open(out).read())\n")
    params = {"out": str(tmp_path / "x.txt")}
    execute_chapters([a, b], tmp_path / "executed", params, progress=False)
    a.write_text(a.read_text().replace("VALUE-1", "VALUE-2"))
    execute_chapters([a, b], tmp_path / "executed", params, progress=False)
    assert "VALUE-2" in outputs_text(nbformat.read(tmp_path / "executed" / "02_b.ipynb", as_version=4))


def test_a_syntax_error_in_a_parameters_cell_names_the_chapter(tmp_path):
    chapter = write_chapter(tmp_path / "book", "03_bad.py", CHAPTER.replace("x = 1", "x = [1"))
    with pytest.raises(ChapterExecutionError, match="chapter 03_bad.py"):
        execute_chapters([chapter], tmp_path / "executed", {}, progress=False)


def test_default_city_is_made_again_when_outdated(tmp_path, monkeypatch):
    """The book's toy city is regenerated when its folder holds an older generator version."""
    import yaml

    from musecl.datasets import toy

    made = []
    monkeypatch.setattr(toy, "make_toy_city", lambda out, **kw: made.append((Path(out), kw)) or Path(out))
    city = tmp_path / "cities" / "toy"
    assert default_city(tmp_path) == city and [m[0] for m in made] == [city]  # nothing there yet
    city.mkdir(parents=True)
    generator = {"name": toy.GENERATOR_NAME, "version": toy.GENERATOR_VERSION}
    (city / "city.yaml").write_text(yaml.safe_dump({"name": "Toy City", "generator": generator}))
    default_city(tmp_path)
    assert len(made) == 1  # current: reused
    (city / "city.yaml").write_text(yaml.safe_dump({"name": "Toy City", "generator": {**generator, "version": 1}}))
    default_city(tmp_path)
    assert len(made) == 2 and made[-1][1]["n_regions"] == 600


def test_book_tables_drop_row_numbers_and_put_the_index_name_in_the_header():
    import pandas as pd

    from musecl.notebooks import frame_html

    numbered = pd.DataFrame({"method": ["MuseCL", "Concat"], "r2": [0.4381, 0.4682]})
    html = frame_html(numbered)
    assert "<th>0</th>" not in html and "<th>1</th>" not in html
    assert "MuseCL" in html and "0.4381" in html and 'class="dataframe"' in html
    named = numbered.set_index("method")  # the index name moves into the header row, as a column
    assert frame_html(named) == frame_html(numbered)
    pivot = named.rename_axis(columns="metric")  # both axes named: pandas' own layout says both
    assert frame_html(pivot) == pivot._repr_html_()
    two_levels = named.assign(numbers="ours").set_index("numbers", append=True)  # (method, numbers) as columns
    assert frame_html(two_levels) == frame_html(numbered.assign(numbers="ours")[["method", "numbers", "r2"]])
    two_rows = pd.DataFrame([[0.1, "better", 0.2, "unclear"]], index=pd.Index(["Concat"], name="method"),
                            columns=pd.MultiIndex.from_product([["random", "spatial"], ["difference", "verdict"]]))
    head = frame_html(two_rows).split("</thead>")[0]
    assert head.count("<tr>") == 2 and "<th>method</th>\n      <th>difference</th>" in head  # no third row
    long = pd.DataFrame({"x": range(500)})  # truncated as pandas truncates it
    assert frame_html(long).count("<tr>") == long._repr_html_().count("<tr>")


def test_a_cell_that_drew_no_figure_loses_its_caption():
    """A chapter that shows a note instead of a figure (the city lacks the data) must not print
    the figure's caption under the note."""
    import nbformat

    from musecl.book import drop_captions_without_figures

    caption = {"figure": {"caption": "A map."}}
    drew = nbformat.v4.new_code_cell("plt.show()", metadata={"mystnb": dict(caption)})
    drew.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})]
    noted = nbformat.v4.new_code_cell("display(note)", metadata={"mystnb": {"figure": {"caption": "A map."}}})
    noted.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "*No POIs.*"})]
    nb = nbformat.v4.new_notebook(cells=[drew, noted])
    assert drop_captions_without_figures(nb) == 1
    assert drew.metadata["mystnb"]["figure"]["caption"] == "A map."
    assert "figure" not in noted.metadata["mystnb"]


def test_a_note_shown_beside_a_figure_moves_out_of_the_captioned_cell():
    """A warning note (or a table) shown by a captioned cell would carry the figure's caption:
    it moves into an input-less cell above (before the image) or below (after it)."""
    import nbformat

    from musecl.book import separate_figure_outputs

    note = nbformat.v4.new_output("display_data", data={"text/markdown": "> **UserWarning:** 12 regions imputed"})
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    table = nbformat.v4.new_output("execute_result", data={"text/html": "<table></table>"}, execution_count=1)
    captioned = nbformat.v4.new_code_cell("plot()", metadata={"mystnb": {"figure": {"caption": "Loss."}}})
    captioned.outputs = [note, image, table]
    plain = nbformat.v4.new_code_cell("x", metadata={})
    plain.outputs = [note]
    nb = nbformat.v4.new_notebook(cells=[plain, captioned])
    assert separate_figure_outputs(nb) == 2
    assert [c.outputs for c in nb.cells] == [[note], [note], [image], [table]]
    assert nb.cells[2] is captioned and nb.cells[2].metadata["mystnb"]["figure"]["caption"] == "Loss."
    assert [c.metadata.get("tags") for c in nb.cells] == [None, ["remove-input"], None, ["remove-input"]]
    nbformat.validate(nb)


def test_the_readme_names_every_chapters_papermill_parameters():
    """The README's "Rerun a chapter" section is where a researcher looks up what a chapter takes;
    a parameter added to a chapter must be named there. Chapter 11 and the appendix are not
    rerun on other cities (their own settings are listed by papermill --help-notebook)."""
    import re

    import jupytext

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Rerun a chapter"):]
    section = section[:section.index("\n## ", 1)]
    named = set(re.findall(r"`(\w+)`", section))
    for path in chapter_sources(REPO):
        if path.stem.startswith(("11_", "appendix_")):
            continue
        missing = parameter_names(jupytext.read(path)) - named
        assert not missing, f"{path.name}: parameters {sorted(missing)} are not named in README.md's rerun section"


def test_every_papermill_parameter_has_a_help_comment_that_fits_the_page():
    """The parameters cell is the one code cell a reader of the rendered book sees open: a line over
    78 characters scrolls sideways there. Its inline comments are papermill's help text
    (``papermill --help-notebook``), so each parameter keeps one, on its own line."""
    import jupytext

    for path in chapter_sources(REPO):
        cell = next(c for c in jupytext.read(path).cells if "parameters" in c.metadata.get("tags", []))
        for line in cell.source.splitlines():
            assert len(line) <= 78, f"{path.name}: parameters line of {len(line)} characters: {line!r}"
            if line and not line.startswith("#"):
                assert "  # " in line, f"{path.name}: parameter without a help comment: {line!r}"


def test_the_library_code_a_chapter_shows_fits_the_page():
    """Chapters show the library's functions (``literalinclude`` with ``:pyobject:``). The book's
    stylesheet (book/_static_css/musecl.css) shows about 100 characters of code on a 1440 px wide
    screen, so a longer line of a shown function would scroll sideways there."""
    import ast
    import re

    shown = 0
    for path in sorted((REPO / "book").glob("*.py")):
        text = path.read_text()
        for module, name in re.findall(r"literalinclude\} \.\./(musecl/[\w/]+\.py)\n# :pyobject: ([\w.]+)", text):
            source = (REPO / module).read_text()
            body, node = ast.parse(source).body, None
            for part in name.split("."):
                node = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
                body = node.body
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            lines = source.splitlines()[first - 1:node.end_lineno]
            long = [line for line in lines if len(line) > 100]
            assert not long, f"{path.name} shows {module}:{name}, with lines over 100 characters: {long}"
            shown += 1
    assert shown > 20  # the pattern still finds the chapters' listings


def test_reader_view_says_each_warning_once(monkeypatch):
    """Each seed's run warns again (the library's catch_warnings blocks reset Python's memory of
    what it said); the page says each warning once."""
    import warnings

    import IPython.display
    import pandas as pd

    from musecl.notebooks import reader_view

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    width = pd.get_option("display.max_colwidth")
    try:
        reader_view()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            for _ in range(3):
                warnings.warn("12 of 600 regions have no satellite image")
            warnings.warn("1 region has no POIs")
    finally:
        pd.set_option("display.max_colwidth", width)
    assert shown == ["> **UserWarning:** 12 of 600 regions have no satellite image",
                     "> **UserWarning:** 1 region has no POIs"]


def test_the_book_checks_its_settings_and_city_before_any_chapter_runs(tmp_path, monkeypatch):
    """A typo in the params file or a missing city is said at once, not minutes later in chapter 2
    (chapter 10 starts beside chapter 1 and would be waited for)."""
    from musecl import book
    from musecl.config import ConfigError

    monkeypatch.setattr(book, "execute_chapters", lambda *a, **k: pytest.fail("a chapter ran"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("n_triplet: 300\n")
    with pytest.raises(ConfigError, match="did you mean 'n_triplets'"):
        book.build(params_file=typo, out=tmp_path / "book")
    with pytest.raises(FileNotFoundError, match="neither a folder nor a named data set"):
        book.build(city=tmp_path / "no_such_city", out=tmp_path / "book")
    given = {}
    monkeypatch.setattr(book, "execute_chapters", lambda chapters, out, params, **k: given.update(params))
    monkeypatch.setattr(book, "build_book", lambda *a, **k: tmp_path)
    monkeypatch.setattr(book, "stage_site", lambda *a, **k: tmp_path)
    monkeypatch.setattr(book, "default_city", lambda out: tmp_path)
    one_seed = tmp_path / "one_seed.yaml"
    one_seed.write_text("seeds: 3\n")
    book.build(params_file=one_seed, out=tmp_path / "book", only=["01_data"])
    assert given["seeds"] == [3]  # as RunConfig reads it: chapter 10 iterates over it
    # the machine's speed at the start, which the benchmark appendix shows beside the book's times
    speed = json.loads((tmp_path / "book" / book.MACHINE_SPEED_JSON).read_text())
    assert 0 < speed["reference_s"] < 60
