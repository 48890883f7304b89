"""The rendered book as a reader sees it: every page opened in headless Chromium after `make book`.

Checks that MathJax (served offline from the book) typeset every formula, that every image on a
page is a readable file, that no executed cell shows an error or anything on stderr, that no
table or object is shown as raw text, and that every figure has a caption. Also leaves screenshots of the landing page, the data
chapter and the results chapters in build/screenshots/ for a person to look at.
"""
from __future__ import annotations

import base64
import copy
import io
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.book

REPO = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("MUSECL_BOOK_HTML", REPO / "build" / "site" / "_build" / "html"))
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=10000",
]
RAW_MATH = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]")
ERROR_LINE = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception): ", re.M)
RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>|<IPython\.core\.display\.\w+ object>")
NOT_PROSE = ("script", "style", "pre", "code", "textarea", "mjx-container", "noscript")


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not installed: apt-get install chromium (or set CHROMIUM=/path)")
    return found


def pages() -> list[Path]:
    """Every real page of the book (not Sphinx's assets, not the root redirect)."""
    if not (HTML / "index.html").is_file():
        pytest.skip(f"the book is not built ({HTML} has no index.html): run `make book` first")
    found = []
    for page in sorted(HTML.rglob("*.html")):
        rel = page.relative_to(HTML)
        if rel.parts[0] in ("_static", "_sources", "_images"):
            continue
        if 'http-equiv="refresh"' in page.read_text(errors="replace")[:2000].lower():  # the root redirect
            continue
        found.append(page)
    return found


def run_chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra,
           page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def doms(tmp_path_factory) -> dict[Path, "object"]:
    """Each page's DOM after scripts ran (MathJax included), parsed once for every check."""
    bs4 = pytest.importorskip("bs4")
    tmp = tmp_path_factory.mktemp("chromium")
    found = pages()
    chromium()
    out = {}
    for page in found:
        done = run_chromium(page, tmp, "--dump-dom")
        assert done.returncode == 0 and "<html" in done.stdout, (
            f"chromium could not open {page}: exit {done.returncode}\n{done.stderr[-2000:]}")
        out[page] = bs4.BeautifulSoup(done.stdout, "html.parser")
    return out


def _name(page: Path) -> str:
    return str(page.relative_to(HTML))


def test_mathjax_typeset_every_formula(doms):
    problems = []
    pages_with_math = 0
    for page, dom in doms.items():
        maths = dom.select(".math")
        pages_with_math += bool(maths)
        raw = [m for m in maths if m.find("mjx-container") is None]
        if raw:
            problems.append(f"{_name(page)}: {len(raw)} formula(s) not typeset, first: "
                            f"{raw[0].get_text()[:80]!r}")
        if dom.find("mjx-merror") is not None:
            problems.append(f"{_name(page)}: MathJax reports a TeX error: "
                            f"{dom.find('mjx-merror').get('data-mjx-error', '')!r}")
        body = copy.copy(dom.find("main") or dom.body)  # a copy: other checks read the DOM too
        for tag in body.find_all(NOT_PROSE):
            tag.extract()
        left = RAW_MATH.search(body.get_text())
        if left:
            text = body.get_text()
            problems.append(f"{_name(page)}: unrendered math delimiter "
                            f"{text[max(0, left.start() - 40):left.end() + 40]!r}")
    assert pages_with_math, "no page has math; the data chapter and the index should"
    assert not problems, "\n".join(problems)


def test_every_image_is_a_readable_file(doms):
    from PIL import Image

    problems, seen = [], 0
    for page, dom in doms.items():
        for img in dom.find_all("img"):
            src = img.get("src", "")
            seen += 1
            if src.startswith("data:"):
                payload = src.split(",", 1)[1] if "," in src else ""
                data = base64.b64decode(payload) if ";base64" in src.split(",", 1)[0] else b""
            else:
                url = urlparse(src)
                if url.scheme not in ("", "file"):
                    problems.append(f"{_name(page)}: image from the network {src!r} (offline book)")
                    continue
                path = Path(unquote(url.path)) if url.scheme == "file" else \
                    (page.parent / unquote(url.path)).resolve()
                if not path.is_file() or path.stat().st_size == 0:
                    problems.append(f"{_name(page)}: image {src!r} is missing or empty ({path})")
                    continue
                data = path.read_bytes()
            if data.lstrip()[:5] in (b"<svg ", b"<?xml") or src.endswith(".svg"):
                if b"<svg" not in data:
                    problems.append(f"{_name(page)}: {src[:80]!r} is not an SVG image")
                continue
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    if min(im.size) == 0:
                        raise ValueError(f"size {im.size}")
            except Exception as err:  # any decoding failure is the finding
                problems.append(f"{_name(page)}: image {src[:80]!r} does not decode: {err}")
    assert seen, "no page has an image; the data chapter shows a figure"
    assert not problems, "\n".join(problems)


def test_no_page_shows_an_error(doms):
    problems = []
    for page, dom in doms.items():
        for block in dom.select(".output.traceback"):
            problems.append(f"{_name(page)}: error output: {block.get_text()[:300]!r}")
        if dom.find(id="papermill-error-cell") or "An Exception was encountered" in dom.get_text():
            problems.append(f"{_name(page)}: papermill marked a failed cell")
        for block in dom.select(".output.stderr"):  # warnings become notes (reader_view); nothing else belongs
            text = block.get_text()
            what = "error" if ERROR_LINE.search(text) else "output"
            problems.append(f"{_name(page)}: {what} on stderr: {text[:300]!r}")
        if "TqdmWarning" in dom.get_text():  # about the kernel's widgets, not about the city or the method
            problems.append(f"{_name(page)}: shows tqdm's warning about ipywidgets")
    assert not problems, "\n".join(problems)


def test_tables_render_and_no_object_reprs(doms):
    """A markdown table printed as text (``| a | b |`` over ``|---|``) or a Python object repr
    (``<IPython.core.display.Markdown object>``) is what the reader would see instead of content;
    a bare 0..n-1 row index only numbers the rows (the book hides it: notebooks.frame_html)."""
    problems = []
    for page, dom in doms.items():
        body = copy.copy(dom.find("main") or dom.body)
        for tag in body.find_all(("script", "style", "pre", "code", "textarea")):  # code may show such text
            tag.extract()
        text = body.get_text()
        for pattern, what in ((RAW_TABLE, "a markdown table shown as text"), (OBJECT_REPR, "an object repr")):
            found = pattern.search(text)
            if found:
                problems.append(f"{_name(page)}: {what}: {text[max(0, found.start() - 60):found.end() + 60]!r}")
        for block in dom.select(".output"):  # outputs are shown as <pre>: an object repr hides there
            found = OBJECT_REPR.search(block.get_text())
            if found:
                problems.append(f"{_name(page)}: an object repr in an output: {found.group(0)!r}")
        for table in dom.select("table.dataframe"):  # row numbers 0..n-1 as an unnamed index tell nothing
            labels = [row.find("th").get_text(strip=True) for row in table.select("tbody tr") if row.find("th")]
            if len(labels) > 1 and labels == [str(k) for k in range(len(labels))] and len(table.select("thead tr")) == 1:
                head = [th.get_text(strip=True) for th in table.select("thead th")][1:5]
                problems.append(f"{_name(page)}: a table numbered 0..{len(labels) - 1} by row (columns {head})")
        for cell in dom.select("table.dataframe td"):  # pandas cuts a long text at 50 characters
            text = cell.get_text(strip=True)
            if len(text) > 3 and text.endswith("..."):
                problems.append(f"{_name(page)}: a table cell cut short: {text!r}")
    assert not problems, "\n".join(problems)


def test_every_figure_has_a_caption_and_only_figures_do(doms):
    """Each image a cell draws sits in a figure with a caption (mystnb cell metadata), and a
    caption sits under nothing but an image: myst-nb puts a cell's caption under every output it
    displays, so a table shown by a captioned cell would carry the figure's caption too."""
    problems = []
    for page, dom in doms.items():
        for output in dom.select(".cell_output"):
            for img in output.find_all("img"):
                figure = img.find_parent("figure")
                caption = figure.find("figcaption") if figure is not None else None
                if caption is None or not caption.get_text(strip=True):
                    problems.append(f"{_name(page)}: a figure without a caption: {img.get('src', '')[-40:]}")
            for figure in output.find_all("figure"):
                if figure.find("img") is None:
                    text = figure.get_text(" ", strip=True)
                    problems.append(f"{_name(page)}: a caption under something that is not an image: {text[:120]!r}")
    assert not problems, "\n".join(problems)


SCREENSHOT_PAGES = (r"index", r"01_.*", r"07_.*", r"08_.*", r"10_.*")  # the landing page, data, results


@pytest.mark.parametrize("pattern", SCREENSHOT_PAGES)
def test_screenshots_for_a_person_to_look_at(pattern, tmp_path):
    """Leaves build/screenshots/<page>.png (the top of the landing page, the data chapter and each
    results chapter) and checks that none is blank."""
    found = [p for p in pages() if re.fullmatch(pattern + r"\.html", p.name)]
    if not found:
        pytest.skip(f"no page {pattern}.html in the build")
    page = max(found, key=lambda p: len(p.parts))  # book/index.html over the root redirect's folder
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{page.stem}.png"
    shot.unlink(missing_ok=True)
    done = run_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert done.returncode == 0 and shot.is_file(), f"no screenshot: {done.stderr[-2000:]}"
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        # a blank page is one colour; a rendered page has text and figures
        assert len(im.convert("L").getcolors(256)) > 16, f"{shot} looks blank"
